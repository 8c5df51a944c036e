"""Three `xcore serve` nodes on 127.0.0.1 (ports and data directories of their own), one PostgreSQL, one Redis and a
real nginx in front with the shipped site (packaging/nginx-cluster.conf), as a self-hoster runs xcore on several
machines (README, "Several machines").

- a plugin uploaded through one node serves on all three within 2 s; disabled through another, it is gone from
  all three within 2 s;
- a logout on one node refuses the old token on the other two within 1 s;
- a new version uploaded while requests go through nginx, and while one node restarts, fails none of them, and
  the restarted node serves what was uploaded while it was down;
- killing the node that runs the task consumer: another takes over within 15 s, the run it had started is run
  again to the end, and no tick of a periodic task runs twice.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PASSWORDS, XcoreServer, create_account, free_port, until
from postgres import PostgresServer
from test_tasks_redis import redis_url  # noqa: F401 - the module's Redis server, a fixture
from xcore.runtime import open_runtime
from xcore.server import prepare_database

pytestmark = pytest.mark.e2e
SITE = Path(__file__).resolve().parent.parent / "packaging" / "nginx-cluster.conf"
SECRET = "the-secret-key-every-node-of-this-cluster-shares-0123456789"
PLUGIN = """\
from xcore.sdk import get

VERSION = "{version}"


@get("/hello", sync_to_thread=False)
def hello() -> dict:
    return {{"version": VERSION}}


router = [hello]
"""


def bundle(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hello-{version}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "hello", "version": version}))
        archive.writestr("run.py", PLUGIN.format(version=version))
    return path


class Nginx:
    """Nginx is a real nginx on 127.0.0.1:`port` with the shipped site (packaging/nginx-cluster.conf), its nodes
    `xcore1..3:8000` replaced by `upstreams` (one to three ports), everything it writes in `folder`."""

    def __init__(self, folder: Path, upstreams: list[int]) -> None:
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        assert binary, "nginx is missing: `python3 tasks.py test` installs it (apt nginx-light)"
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lines = []  # the site, with the first len(upstreams) nodes on their ports and the others left out
        for line in SITE.read_text().replace("listen 80;", f"listen 127.0.0.1:{self.port};").splitlines():
            node = re.search(r"server xcore(\d):8000", line)
            if node and int(node.group(1)) > len(upstreams):
                continue
            if node:
                line = line.replace(node.group(0), f"server 127.0.0.1:{upstreams[int(node.group(1)) - 1]}")
            lines.append(line)
        site = "\n".join(lines)
        assert "xcore1:" not in site and 1 <= len(upstreams) <= 3
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in kinds)
        (folder / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\ndaemon off;\nerror_log {folder / 'error.log'} warn;\npid {folder / 'nginx.pid'};\n"
            + f"events {{ worker_connections 512; }}\nhttp {{\naccess_log off;\n{temp}\n{site}\n}}\n"
        )
        self.process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        until(lambda: self._listening(), "nginx to listen", timeout=10)

    def _listening(self) -> bool:
        assert self.process.poll() is None, f"nginx exited: {self.process.stderr.read() if self.process.stderr else ''}"
        try:
            httpx.get(self.url + "/api/version", timeout=1)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer, redis_url: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    """cluster: three nodes on one PostgreSQL database and one Redis, with nginx in front, and root's account."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    database = postgres.create_database()
    env = {"DATABASE_URL": database, "REDIS_URL": redis_url, "XCORE_SECURE__SECRET_KEY": SECRET}
    owner = open_runtime(tmp_path / "owner", environ=env, logs=False)
    prepare_database(owner)
    create_account(owner, "root", ["superadmin"])
    owner.close()
    for n in range(3):
        (tmp_path / f"node{n}").mkdir()
    nodes = [XcoreServer(tmp_path / f"node{n}" / "data", free_port(), env=env) for n in range(3)]
    nginx: Nginx | None = None
    try:
        for node in nodes:
            node.wait_ready(timeout=60)
        nginx = Nginx(tmp_path / "nginx", [node.port for node in nodes])
        yield {"nodes": nodes, "nginx": nginx, "env": env}
    finally:
        if nginx is not None:
            nginx.stop()
        for node in nodes:
            node.kill()
            node._output.close()


def login(url: str) -> dict[str, str]:
    response = httpx.post(f"{url}/api/auth/login", json={"username": "root", "password": PASSWORDS["root"]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def within(seconds: float, check: Callable[[], bool], what: str) -> float:
    """within waits for `check` and returns how long it took; fails past `seconds`."""
    started = time.monotonic()
    until(check, what, timeout=seconds, interval=0.02)
    return time.monotonic() - started


def test_three_nodes_behind_nginx_converge_and_revoke(cluster: dict[str, Any], tmp_path: Path) -> None:
    nodes: list[XcoreServer] = cluster["nodes"]
    nginx: Nginx = cluster["nginx"]
    token = login(nodes[0].url)

    def serving(node: XcoreServer, version: str | None) -> bool:
        response = httpx.get(f"{node.url}/app/hello/hello", headers=token, timeout=5)
        if version is None:
            return response.status_code == 404
        return response.status_code == 200 and response.json() == {"version": version}

    def everywhere(version: str | None, what: str, among: list[XcoreServer] | None = None, seconds: float = 2) -> None:
        """everywhere waits for every node (of `among`) to serve `version` of hello (None: not at all)."""
        for node in among or nodes:
            within(seconds, lambda n=node: serving(n, version), f"node {node.port} {what}")

    # Uploaded through one node: every node serves it within 2 s.
    first = bundle(tmp_path / "bundles", "1.0.0")
    with first.open("rb") as data:
        uploaded = httpx.post(f"{nodes[0].url}/api/admin/plugins", files={"data": (first.name, data)}, headers=token)
    assert uploaded.status_code in (200, 201), uploaded.text
    everywhere("1.0.0", "to serve the upload")

    # Disabled through another: gone from every node within 2 s; enabled again, back.
    assert httpx.post(f"{nodes[1].url}/api/admin/plugins/hello/disable", headers=token).status_code == 200
    everywhere(None, "to stop serving it")
    assert httpx.post(f"{nodes[2].url}/api/admin/plugins/hello/enable", headers=token).status_code == 200
    everywhere("1.0.0", "to serve it again")

    # A new version uploaded while requests go through nginx: none of them fails.
    failures: list[str] = []
    done = threading.Event()
    count = 0

    def load() -> None:
        nonlocal count
        with httpx.Client(base_url=nginx.url, headers=token, timeout=10) as client:
            while not done.is_set():
                response = client.get("/app/hello/hello")
                count += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    # One node restarts mid-way: stopped (nginx sends its share to the others), the upload made while it is
    # down, then started again: it fetches what it missed at its start.
    assert nodes[1].stop() == 0
    second = bundle(tmp_path / "bundles", "2.0.0")
    with second.open("rb") as data:
        uploaded = httpx.post(f"{nodes[2].url}/api/admin/plugins", files={"data": (second.name, data)}, headers=token)
    assert uploaded.status_code in (200, 201), uploaded.text
    everywhere("2.0.0", "to serve 2.0.0", among=[nodes[0], nodes[2]], seconds=5)
    nodes[1] = XcoreServer(nodes[1].data_dir, nodes[1].port, env=cluster["env"])
    cluster["nodes"][1] = nodes[1]
    nodes[1].wait_ready(timeout=60)
    assert serving(nodes[1], "2.0.0"), "the restarted node serves what was uploaded while it was down"
    time.sleep(0.5)
    done.set()
    for worker in workers:
        worker.join()
    assert count > 50 and failures == [], f"{len(failures)} of {count} requests failed: {failures[:5]}"

    # The restarted node is a full member again: a disable through it reaches the others, an enable through
    # another reaches it.
    assert httpx.post(f"{nodes[1].url}/api/admin/plugins/hello/disable", headers=token).status_code == 200
    everywhere(None, "to stop serving it after the restart")
    assert httpx.post(f"{nodes[0].url}/api/admin/plugins/hello/enable", headers=token).status_code == 200
    everywhere("2.0.0", "to serve it again after the restart")

    # A logout on one node: the token is refused on the other two within 1 s.
    session = login(nodes[0].url)
    for node in nodes[1:]:
        assert httpx.get(f"{node.url}/api/me", headers=session).status_code == 200
    assert httpx.post(f"{nodes[0].url}/api/auth/logout", headers=session).status_code == 204
    for node in nodes[1:]:
        within(1, lambda n=node: httpx.get(f"{n.url}/api/me", headers=session).status_code == 401, "the refusal")


TASKS_PLUGIN = """\
import time

from xcore.sdk import get, periodic, task


@periodic(every=1, retries=0)
def tick() -> None:
    pass


@task(retries=0)
def slow() -> str:
    time.sleep(4)
    return "done"


@get("/slow", sync_to_thread=True)
def start_slow() -> dict:
    return {"run": slow.enqueue()}


@get("/ping", sync_to_thread=False)
def ping() -> str:
    return "pong"


router = [start_slow, ping]
"""


def runs_of(url: str, headers: dict[str, str], name: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/admin/tasks/runs", params={"name": name, "per_page": 500}, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_when_the_node_running_the_consumer_dies_another_takes_over(cluster: dict[str, Any], tmp_path: Path) -> None:
    """Killing the node that runs the task consumer (kill -9, its workers too): another node's consumer takes over
    within 15 s, the run the dead one had started is run again to the end, and the periodic task goes on with
    no tick run twice."""
    nodes: list[XcoreServer] = cluster["nodes"]
    token = login(nodes[0].url)
    path = tmp_path / "tq-1.0.0.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "tq", "version": "1.0.0"}))
        archive.writestr("run.py", TASKS_PLUGIN)
    with path.open("rb") as data:
        assert httpx.post(
            f"{nodes[0].url}/api/admin/plugins", files={"data": (path.name, data)}, headers=token
        ).is_success

    def consumer_at() -> list[XcoreServer]:
        return [n for n in nodes if n.process.poll() is None and health(n)["consumer"] == "running here"]

    def health(node: XcoreServer) -> dict[str, Any]:
        return dict(httpx.get(f"{node.url}/health", timeout=5).json()["scheduler"])

    (leader,) = until(consumer_at, "one node to run the consumer")
    until(lambda: len(runs_of(leader.url, token, "tq.tick")) >= 3, "the periodic task to tick")
    for node in nodes:
        until(lambda n=node: httpx.get(f"{n.url}/app/tq/ping", headers=token).status_code == 200, "tq to serve")
    run_id = httpx.get(f"{leader.url}/app/tq/slow", headers=token).json()["run"]
    until(
        lambda: httpx.get(f"{leader.url}/api/admin/tasks/runs/{run_id}", headers=token).json()["status"] == "started",
        "the slow run to start",
    )
    leader.kill()
    killed_at, killed_wall = time.monotonic(), time.time()
    others = [n for n in nodes if n is not leader]
    (successor,) = until(consumer_at, "another node to take the consumer over", timeout=20)
    took = time.monotonic() - killed_at
    assert took < 15, f"the takeover took {took:.1f} s"

    def settled() -> list[dict[str, Any]] | None:
        runs = runs_of(successor.url, token, "tq.slow")  # the interrupted run, and the one run again
        return runs if [r["status"] for r in runs] == ["succeeded", "interrupted"] else None

    until(
        settled,
        "the interrupted run to be run again to the end",
        timeout=30,
        context=lambda: json.dumps(runs_of(successor.url, token, "tq.slow"), indent=1),
    )
    time.sleep(3)  # a few ticks under the new consumer
    ticks = sorted(r["enqueued_at"] for r in runs_of(others[0].url, token, "tq.tick"))
    from datetime import datetime

    moments = [datetime.fromisoformat(t).timestamp() for t in ticks]
    gaps = [b - a for a, b in itertools.pairwise(moments)]
    assert min(gaps) > 0.5, f"a tick was run twice: gaps {gaps}"
    assert len([m for m in moments if m > moments[-1] - 3.5]) >= 2, "the ticks go on under the new consumer"
    # The schedule counts from the journal's last run: the tick that fell due while no consumer ran is run once
    # the successor takes over, not skipped (and not once per missed second either: the gaps above).
    taken_over = killed_wall + took
    assert any(taken_over - 1 <= m <= taken_over + 3 for m in moments), (taken_over, moments)
