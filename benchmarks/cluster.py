"""Several nodes (issue 27): three real `xcore serve` nodes on one PostgreSQL and one Redis, nginx in front with the
shipped site (packaging/nginx-cluster.conf), all on this machine, as tests/test_cluster_e2e.py runs them.

- convergence, over `--trials` trials each (p50, p95, max): a new version of a plugin uploaded through node 1
  until all three nodes serve it; the plugin disabled through node 2 until none serves it (then enabled again);
  a logout on node 1 until nodes 2 and 3 refuse the token;
- throughput of a plugin's route through nginx with 1, 2 and 3 nodes behind it (`--connections` Python clients
  for `--seconds` seconds each, `--rounds` rounds in turns), with each node's CPU time over the run. On a 2-core
  machine that also runs the clients, PostgreSQL and nginx, the curve flattens: the table says how far.

    .venv/bin/python benchmarks/cluster.py [--trials 20] [--seconds 5] [--connections 16] [--rounds 2]

Targets (issue 27): convergence within 2 s (plugins) and 1 s (revocation), at p95.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.append(str(HERE))  # machine.py; after the standard library, whose http this folder's http.py would hide

import httpx  # noqa: E402
from machine import tree_cpu_seconds  # noqa: E402

from conftest import XcoreServer, create_account, free_port  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from test_cluster_e2e import SECRET, Nginx, bundle, login  # noqa: E402
from xcore.runtime import open_runtime  # noqa: E402
from xcore.server import prepare_database  # noqa: E402


def redis_server(folder: Path) -> tuple[Any, str]:
    import shutil
    import subprocess

    port = free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: apt install redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def poll(check: Any, timeout: float = 30.0) -> float:
    """poll returns the seconds until `check()` is true (every 5 ms); raises past `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"not within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - started


def upload(url: str, path: Path, headers: dict[str, str]) -> None:
    with path.open("rb") as data:
        response = httpx.post(f"{url}/api/admin/plugins", files={"data": (path.name, data)}, headers=headers)
    assert response.is_success, response.text


def serves(url: str, headers: dict[str, str], version: str | None) -> bool:
    response = httpx.get(f"{url}/app/hello/hello", headers=headers, timeout=5)
    if version is None:
        return response.status_code == 404
    return response.status_code == 200 and response.json() == {"version": version}


UPLOAD, DISABLE, LOGOUT = "upload -> served on all 3", "disable -> gone from all 3", "logout -> refused on the other 2"


def convergence(nodes: list[XcoreServer], trials: int, folder: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {UPLOAD: [], DISABLE: [], LOGOUT: []}
    for number in range(trials):
        version = f"1.0.{number}"
        for what, seconds in trial(nodes, bundle(folder / version, version), version).items():
            times[what].append(seconds)
    return times


def trial(nodes: list[XcoreServer], path: Path, version: str) -> dict[str, float]:
    """trial measures one upload, one disable and one logout; a logout ends every session of the account, so each
    trial logs in afresh."""
    token = login(nodes[0].url)
    took = {}
    started = time.monotonic()
    upload(nodes[0].url, path, token)
    for node in nodes:
        poll(lambda n=node: serves(n.url, token, version))
    took[UPLOAD] = time.monotonic() - started
    started = time.monotonic()
    assert httpx.post(f"{nodes[1].url}/api/admin/plugins/hello/disable", headers=token).is_success
    for node in nodes:
        poll(lambda n=node: serves(n.url, token, None))
    took[DISABLE] = time.monotonic() - started
    assert httpx.post(f"{nodes[2].url}/api/admin/plugins/hello/enable", headers=token).is_success
    for node in nodes:
        poll(lambda n=node: serves(n.url, token, version))
    for node in nodes[1:]:
        assert httpx.get(f"{node.url}/api/me", headers=token).status_code == 200
    started = time.monotonic()
    assert httpx.post(f"{nodes[0].url}/api/auth/logout", headers=token).status_code == 204
    for node in nodes[1:]:
        poll(lambda n=node: httpx.get(f"{n.url}/api/me", headers=token).status_code == 401)
    took[LOGOUT] = time.monotonic() - started
    return took


def throughput(url: str, headers: dict[str, str], seconds: float, connections: int) -> tuple[int, int]:
    """throughput runs `connections` clients on `url` for `seconds`; returns (answers, failures)."""
    done = threading.Event()
    counts = [0, 0]
    lock = threading.Lock()

    def client() -> None:
        ok = bad = 0
        with httpx.Client(headers=headers, timeout=10) as http:
            while not done.is_set():
                if http.get(url).status_code == 200:
                    ok += 1
                else:
                    bad += 1
        with lock:
            counts[0] += ok
            counts[1] += bad

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    done.set()
    for thread in threads:
        thread.join()
    return counts[0], counts[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="xcore-cluster-bench-"))
    pg = PostgresServer()
    redis_process, redis_url = redis_server(tmp)
    env = {"DATABASE_URL": pg.create_database(), "REDIS_URL": redis_url, "XCORE_SECURE__SECRET_KEY": SECRET}
    owner = open_runtime(tmp / "owner", environ=env, logs=False)
    prepare_database(owner)
    create_account(owner, "root", ["superadmin"])
    owner.close()
    nodes: list[XcoreServer] = []
    try:
        for n in range(3):
            (tmp / f"node{n}").mkdir()
            nodes.append(XcoreServer(tmp / f"node{n}" / "data", free_port(), env=env))
        for node in nodes:
            node.wait_ready(timeout=60)
        times = convergence(nodes, args.trials, tmp / "bundles")
        print(f"convergence over {args.trials} trials (seconds)\n")
        print("| what | p50 | p95 | max |\n|---|---|---|---|")
        for what, values in times.items():
            p95 = statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]
            print(f"| {what} | {statistics.median(values):.3f} | {p95:.3f} | {max(values):.3f} |")

        token = login(nodes[0].url)
        results: dict[int, list[tuple[float, list[float]]]] = {1: [], 2: [], 3: []}
        for _ in range(args.rounds):
            for count in (1, 2, 3):
                nginx = Nginx(tmp / f"nginx-{count}-{time.monotonic_ns()}", [n.port for n in nodes[:count]])
                try:
                    before = [tree_cpu_seconds(n.process.pid) for n in nodes]
                    answers, failures = throughput(
                        f"{nginx.url}/app/hello/hello", token, args.seconds, args.connections
                    )
                    cpu = [tree_cpu_seconds(n.process.pid) - b for n, b in zip(nodes, before, strict=True)]
                finally:
                    nginx.stop()
                assert failures == 0, f"{failures} failed requests with {count} node(s)"
                results[count].append((answers / args.seconds, cpu))
        print(
            f"\nplugin route through nginx, {args.connections} Python clients, {args.seconds:.0f} s x {args.rounds}\n"
        )
        print("| nodes | requests/s (median) | vs 1 node | CPU s per node over one run (median) |\n|---|---|---|---|")
        base = statistics.median(r for r, _ in results[1])
        for count, runs in results.items():
            rate = statistics.median(r for r, _ in runs)
            cpu = [statistics.median(c[i] for _, c in runs) for i in range(3)]
            print(f"| {count} | {rate:.0f} | {rate / base:.2f}x | {' / '.join(f'{c:.1f}' for c in cpu)} |")
        print(f"\nmachine: {os.cpu_count()} cores; clients, nginx, PostgreSQL, Redis and the nodes share them")
    finally:
        for node in nodes:
            node.kill()
        redis_process.terminate()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
