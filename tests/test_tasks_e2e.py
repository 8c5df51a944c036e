"""End to end: the embedded task scheduler in real `xcore serve` processes (real Granian workers, real Huey queue
in `<data>/tasks.db`, real file lock deciding which worker runs the consumer).

Each test drops a small plugin zip (plugin.json + run.py) into `<data>/plugins/` before the server starts; its
tasks write to files in their `ctx.data_dir`, so what ran, when and in which process is read from disk and
checked against the run journal (GET /api/admin/tasks/runs).

The servers here run in their own session (process group), so a crash can be simulated by SIGKILL of the
whole group: the `xcore serve` parent and every Granian worker die at once, nothing shuts down cleanly.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conftest import CLEAN_ENV, free_port, xcore_command
from conftest import until as wait_for

pytestmark = pytest.mark.e2e

OWNER, OWNER_PASSWORD = "root", "first-owner-secret-1"
DEADLINE = 15.0  # seconds a server may take to start, or a run to finish
CONSUMERS = {"running here", "running in another process"}
FINISHED = {"succeeded", "failed", "dropped", "interrupted"}

T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------------------------


class Server:
    """Server is a real `xcore serve` in a new session (its own process group), set up and logged in as owner."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_path = data.parent / f"serve-{self.port}.out"
        self._output = self.output_path.open("w")
        self.process = subprocess.Popen(
            xcore_command("serve", "--port", str(self.port), "--data-dir", str(data), *args),
            env=CLEAN_ENV,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # pgid == pid: the parent and its Granian workers can be killed together
        )
        self.pgid = self.process.pid
        # No keep-alive: every request opens a new connection, so requests spread over the workers.
        self.http = httpx.Client(base_url=self.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        self.headers: dict[str, str] = {}

    @property
    def output(self) -> str:
        if not self._output.closed:
            self._output.flush()
        return self.output_path.read_text()

    def ready(self) -> Server:
        """ready waits for /health, then sets up the owner (on a fresh data dir) and logs in."""
        self.until(lambda: self.process.poll() is None and self.http.get("/health").status_code == 200, "/health")
        token_file = self.data / "setup-token"
        if token_file.exists():
            token = token_file.read_text().strip()
            setup = self.http.post("/api/setup", json={"token": token, "username": OWNER, "password": OWNER_PASSWORD})
            assert setup.status_code == 201, setup.text
        login = self.http.post("/api/auth/login", json={"username": OWNER, "password": OWNER_PASSWORD})
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        return self

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, headers=self.headers, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(path, headers=self.headers, json=body)
        assert response.status_code in (200, 201), f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    def runs(self, name: str) -> list[dict[str, Any]]:
        """runs is the journal of task `name`, oldest first."""
        page = self.get("/api/admin/tasks/runs", name=name, per_page=500)
        assert page["total"] == len(page["items"]), page
        return list(reversed(page["items"]))

    def until(self, check: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
        """until polls `check` until it returns something truthy; fails naming `what`, the last value and the log."""

        def alive() -> None:
            if self.process.poll() is not None:
                raise AssertionError(f"xcore exited with {self.process.returncode} while waiting for {what}")

        def tail() -> str:
            lines = (line for line in self.output.splitlines()[-40:] if " api " not in line)
            return "server output (tail):\n" + "\n".join(lines)

        return wait_for(check, what, timeout, alive=alive, context=tail)

    def group_alive(self) -> list[int]:
        """group_alive lists the live (not zombie) processes of the server's process group."""
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                alive.append(int(entry.name))
        return alive

    def crash(self) -> None:
        """crash SIGKILLs the whole process group (parent and workers) and waits until none of it is left."""
        os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := self.group_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes of the killed server still alive: {left}"
        self.close()

    def stop(self) -> int:
        """stop asks the server to stop (SIGTERM) and returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"xcore did not stop within 30 s:\n{self.output}") from None
        finally:
            self.close()
        return code

    def close(self) -> None:
        """close kills whatever is left of the server (a failed test) and closes its client and output file."""
        if self.group_alive():
            os.killpg(self.pgid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        self.http.close()
        self._output.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """serve(data, *args) starts `xcore serve` and waits until it is ready; every server is gone at the end."""
    servers: list[Server] = []

    def start(data: Path, *args: str) -> Server:
        servers.append(Server(data, *args))
        return servers[-1].ready()

    yield start
    for server in servers:
        server.close()


def drop_plugin(data: Path, plugin_id: str, code: str) -> Path:
    """drop_plugin writes a plugin zip (plugin.json + run.py) into `<data>/plugins/`, as an admin would."""
    plugins = data / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    staged = data.parent / f"{plugin_id}.zip.part"
    with zipfile.ZipFile(staged, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0", "name": plugin_id.title()}))
        archive.writestr("run.py", code)
    return staged.replace(plugins / f"{plugin_id}-1.0.0.zip")


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def health_consumers(server: Server, count: int) -> list[str]:
    """health_consumers asks /health `count` times on fresh connections; returns what each answer's scheduler says."""
    seen = []
    for _ in range(count):
        response = server.http.get("/health")
        assert response.status_code == 200, response.text
        scheduler = response.json()["scheduler"]
        assert scheduler is not None and scheduler["status"] == "ok", scheduler
        seen.append(scheduler["consumer"])
    return seen


# --- 1. a crash loses no task ----------------------------------------------------------------------------------

SLOW = """\
import os
import time

from xcore.sdk import task


@task(retries=0)
def slow(ctx, label):
    with open(ctx.data_dir / "events.log", "a") as log:
        log.write(f"started {label} {os.getpid()}\\n")
    time.sleep(3)
    with open(ctx.data_dir / "events.log", "a") as log:
        log.write(f"done {label} {os.getpid()}\\n")
"""


def test_a_run_interrupted_by_kill_9_is_journalled_interrupted_and_runs_again_after_a_restart(serve, tmp_path) -> None:
    data = tmp_path / "data"
    drop_plugin(data, "slow", SLOW)
    events = data / "plugin-data" / "slow" / "events.log"
    first = serve(data)
    assert first.get("/api/admin/plugins/slow")["state"] == "active"
    assert "slow.slow" in {t["name"] for t in first.get("/api/admin/tasks")}

    run_id = first.post("/api/admin/tasks/slow.slow/run", {"args": ["crashme"]})["run"]
    first.until(lambda: lines(events), "the task wrote 'started'")
    [(what, label, pid)] = lines(events)
    assert (what, label) == ("started", "crashme")
    worker = int(pid)
    assert worker != first.process.pid, "the task runs in a Granian worker, not in the `xcore serve` parent"
    assert os.getpgid(worker) == first.pgid, "the worker is in the group that is killed"
    [running] = first.runs("slow.slow")
    assert (running["id"], running["status"], running["pid"], running["args"]) == (
        run_id,
        "started",
        worker,
        "'crashme'",
    )

    first.crash()
    assert lines(events) == [["started", "crashme", pid]], "the killed run did not finish"

    second = serve(data)
    runs = second.until(
        lambda: (r := second.runs("slow.slow")) and len(r) == 2 and r[1]["status"] in FINISHED and r,
        "the interrupted run to be run again",
    )
    interrupted, again = runs
    assert interrupted["id"] == run_id
    assert interrupted["status"] == "interrupted"
    assert interrupted["finished_at"] is not None and f"pid {worker}" in interrupted["error"], interrupted
    assert again["id"] > run_id
    assert (again["status"], again["attempt"], again["args"], again["error"]) == ("succeeded", 1, "'crashme'", None)
    assert again["pid"] != worker
    assert lines(events) == [
        ["started", "crashme", pid],
        ["started", "crashme", str(again["pid"])],
        ["done", "crashme", str(again["pid"])],
    ]
    assert second.get("/health")["scheduler"]["consumer"] == "running here"
    assert second.stop() == 0


# --- 2 and 4. two workers: one consumer, one schedule ----------------------------------------------------------

PAIR = """\
import os
import time

from xcore.sdk import Ctx, FromQuery, get, periodic, task


@periodic(every=1, retries=0)
def tick(ctx):
    with open(ctx.data_dir / "ticks.log", "a") as log:
        log.write(f"{time.time():.6f} {os.getpid()}\\n")


@task(retries=0)
def note(ctx, n):
    with open(ctx.data_dir / "notes.log", "a") as log:
        log.write(f"{n} {os.getpid()}\\n")


@get("/enqueue", sync_to_thread=True)
def enqueue(ctx: Ctx, n: FromQuery[int]) -> dict:
    return {"run": note.enqueue(n), "pid": os.getpid()}


router = [enqueue]
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """pair is one `xcore serve --workers 2` with the PAIR plugin, shared by the two-worker tests."""
    data = tmp_path_factory.mktemp("pair") / "data"
    drop_plugin(data, "pair", PAIR)
    server = Server(data, "--workers", "2")
    try:
        yield server.ready()
        assert server.stop() == 0
    finally:
        server.close()


def test_with_two_workers_a_periodic_task_fires_once_per_period_on_one_consumer(pair: Server) -> None:
    ticks = pair.data / "plugin-data" / "pair" / "ticks.log"
    pair.until(lambda: lines(ticks), "the first tick")
    start = time.time()
    time.sleep(6)
    end = time.time()
    stamps = [(float(t), int(pid)) for t, pid in lines(ticks)]
    window = [t for t, _ in stamps if start <= t < end]
    assert 4 <= len(window) <= 8, f"{len(window)} runs in 6 s with every=1 on 2 workers: {stamps}"
    gaps = [round(b - a, 3) for (a, _), (b, _) in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.5, f"two runs closer than 0.5 s (fired twice in a period?): {gaps}"
    assert len({pid for _, pid in stamps}) == 1, f"every run is on the one consumer: {stamps}"

    runs = [r for r in pair.runs("pair.tick") if r["status"] != "queued"]
    assert len(runs) >= len(stamps), (runs, stamps)
    assert {r["status"] for r in runs if r["status"] != "started"} == {"succeeded"}, runs
    assert {r["pid"] for r in runs} == {stamps[0][1]}, runs

    # Both workers answer /health; one runs the consumer, the other sees it running elsewhere.
    seen: set[str] = set()

    def both_workers_answered() -> bool:
        seen.update(health_consumers(pair, 10))
        assert seen <= CONSUMERS, f"a worker reports the consumer {seen - CONSUMERS}"
        return seen == CONSUMERS

    pair.until(both_workers_answered, "/health answered by both workers")
    assert seen == CONSUMERS


def test_with_two_workers_a_task_enqueued_from_a_route_runs_on_the_consumer_whichever_worker_served(
    pair: Server,
) -> None:
    served: dict[int, int] = {}  # n -> the worker that answered the request
    runs: dict[int, int] = {}  # n -> run id
    n = 0
    while n < 10 or (len(set(served.values())) < 2 and n < 60):  # until both workers have enqueued some
        answer = pair.get("/app/pair/enqueue", n=n)
        served[n], runs[n] = answer["pid"], answer["run"]
        n += 1
    assert len(set(served.values())) == 2, f"the requests all reached one worker: {served}"

    def journal() -> list[dict[str, Any]] | None:
        found = {r["id"]: r for r in pair.runs("pair.note")}
        done = [found[run] for run in runs.values() if run in found and found[run]["status"] in FINISHED]
        return done if len(done) == len(runs) else None

    done = pair.until(journal, "every enqueued run to finish")
    assert {r["status"] for r in done} == {"succeeded"}, done
    consumer = {r["pid"] for r in done}
    assert len(consumer) == 1, f"every run is on the one consumer: {done}"
    assert set(served.values()) - consumer, "some requests were served by the worker that is not the consumer"
    notes = {int(k): int(pid) for k, pid in lines(pair.data / "plugin-data" / "pair" / "notes.log")}
    assert notes == dict.fromkeys(runs, consumer.pop()), notes


# --- 3. every=2 on one worker ----------------------------------------------------------------------------------

EVERY_TWO = """\
import os
import time

from xcore.sdk import periodic


@periodic(every=2, retries=0)
def beat(ctx):
    with open(ctx.data_dir / "beats.log", "a") as log:
        log.write(f"{time.time():.6f} {os.getpid()}\\n")
"""


def test_a_periodic_task_every_two_seconds_runs_at_least_four_times_in_ten_seconds(serve, tmp_path) -> None:
    data = tmp_path / "data"
    drop_plugin(data, "beat", EVERY_TWO)
    server = serve(data)
    started = time.time()  # the server answers: its plugin is loaded and the consumer runs
    beats = data / "plugin-data" / "beat" / "beats.log"
    server.until(lambda: len(lines(beats)) >= 4, "4 runs", timeout=10)
    stamps = [float(t) for t, _ in lines(beats)]
    assert stamps[3] - started <= 10, stamps
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(stamps)]
    assert all(1.5 <= gap <= 3.0 for gap in gaps), f"every=2 should space runs ~2 s apart: {gaps}"
    server.until(
        lambda: (r := server.runs("beat.beat")) and sum(x["status"] == "succeeded" for x in r) >= 4,
        "4 succeeded runs in the journal",
    )
    task = next(t for t in server.get("/api/admin/tasks") if t["name"] == "beat.beat")
    assert (task["kind"], task["every"], task["paused"], task["failures"]) == ("periodic", 2.0, False, 0)
    assert server.stop() == 0
