"""Hot reload of a plugin on a real `xcore serve`: how fast a new zip goes live, whether any request fails, whether
memory stays flat, and how all of that changes with the number of plugins installed.

For each count N of `--plugins` (default 1; e.g. `--plugins 1,25,100`, run side by side), the server runs with
one worker and a fresh data dir holding N plugins: N-1 idle ones (`filler001`...) and a tiny plugin
(`reloadbench`, whose route answers its version). The script measures, per N:

- start: the time from starting `xcore serve` until /health answers, and until every plugin's route does;
- the worker's RSS once all are served, and from it the RSS per installed idle plugin (against N=1);
- the throughput of the plugin route (`--connections` clients for `--seconds` seconds, no reload): the
  requests/s, which the Python clients on the same machine limit, and the worker's CPU time per request,
  whose ratio (1 plugin's over N plugins', higher is better) says what N plugins cost a request;
- reloads: `reloadbench.zip` is rewritten in place with a new version each time, the way `cp` would; one
  reload's latency is the time from the moment the new file is closed until the first response from the new
  version (polled every 5 ms). Meanwhile the clients keep requests going on the plugin route and on /health,
  and every response that is not a 200 is counted;
- memory: the plugin is reloaded until `--memory-reloads` reloads have happened, and the worker's RSS after the
  first reload is compared with its RSS after the last one (0 skips it).

    python benchmarks/reload.py [--plugins 1,25,100] [--reloads 30] [--connections 32] [--memory-reloads 100]

Targets (issues 4 and 22): p50 below 150 ms, and at 100 plugins within 1.3x of the p50 with 1; 0 failed
requests; start to all routes served with 100 plugins within 2 s; plugin route throughput with 100 plugins at
least 0.95x of that with 1; RSS growth over the memory reloads below 10 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

# benchmarks/http.py would shadow the standard `http` package that httpx imports: drop this folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "reloadbench"
RUN_PY = """from xcore.sdk import get

VERSION = "{version}"


@get("/")
async def which() -> dict[str, str]:
    return {{"version": VERSION}}


router = [which]
"""


def bundle(version: str, plugin: str = PLUGIN) -> bytes:
    """bundle is the zip of a bench plugin at `version`, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin, "version": version}))
        archive.writestr("run.py", RUN_PY.format(version=version))
    return buffer.getvalue()


def filler(n: int) -> str:
    """filler is the id of the n-th idle plugin."""
    return f"filler{n:03d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_pids(pid: int) -> list[int]:
    """worker_pids are the Granian worker processes of the server `pid` (its child processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def cpu_seconds(pids: list[int]) -> float:
    """cpu_seconds is the user and system CPU time the processes `pids` have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime and stime, the 14th and 15th fields of the line
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Server:
    """Server is a real `xcore serve` on a temporary data dir, with the bench plugin's route public."""

    def __init__(self, tmp: Path, plugins: int) -> None:
        self.data = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.plugins = self.data / "plugins"
        self.plugins.mkdir(parents=True)
        self.ids = [filler(n) for n in range(1, plugins)] + [PLUGIN]
        for pid in self.ids:
            (self.plugins / f"{pid}.zip").write_bytes(bundle("1.0.0", pid))
        env = dict(os.environ)
        env["XCORE_XCORE__MIDDLEWARE__ACCESS_RULES"] = json.dumps({"/app/*": {"public": True}})
        env["XCORE_XCORE__LOGS__CONSOLE"] = "false"
        exe = Path(sys.executable).with_name("xcore")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "xcore"]
        self.log = open(tmp / "server.log", "w+b")  # noqa: SIM115
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port), "--data-dir", str(self.data)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> tuple[float, float]:
        """wait_ready returns the seconds from the start until /health answered, and until every plugin did."""
        deadline = time.monotonic() + 60
        pending = ["/health"] + [f"/app/{pid}/" for pid in self.ids]
        health = 0.0
        with httpx.Client(base_url=self.url, timeout=1) as client:
            while pending:
                if time.monotonic() > deadline:
                    raise SystemExit(f"xcore did not answer {pending[0]} within 60 s")
                if self.process.poll() is not None:
                    self.log.seek(0)
                    raise SystemExit(f"xcore exited: {self.log.read().decode(errors='replace')[-2000:]}")
                try:
                    while pending and client.get(pending[0]).status_code == 200:
                        if pending.pop(0) == "/health":
                            health = time.perf_counter() - self.started
                except httpx.HTTPError:
                    pass
                if pending:
                    time.sleep(0.005)
        return health, time.perf_counter() - self.started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Load:
    """Load keeps `connections` clients busy on the plugin route and /health; it counts what is not a 200."""

    def __init__(self, url: str, connections: int, paths: tuple[str, ...] = (f"/app/{PLUGIN}/", "/health")) -> None:
        self.url = url
        self.paths = paths
        self.connections = connections
        self.ok = 0
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        paths = self.paths
        self._tasks = [asyncio.create_task(self._client(paths[i % len(paths)])) for i in range(self.connections)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, path: str) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    self.failed.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{path}: {response.status_code} {response.text[:120]}")


async def reload_once(server: Server, client: httpx.AsyncClient, version: str) -> float:
    """reload_once writes the zip of `version` in place; returns seconds until the new version answered."""
    payload = bundle(version)
    target = server.plugins / f"{PLUGIN}.zip"
    with open(target, "wb") as out:
        out.write(payload)
    written = time.perf_counter()
    deadline = written + 30
    while time.perf_counter() < deadline:
        response = await client.get(f"/app/{PLUGIN}/")
        if response.status_code == 200 and response.json()["version"] == version:
            return time.perf_counter() - written
        await asyncio.sleep(0.005)
    raise SystemExit(f"version {version} did not go live within 30 s")


async def run(args: argparse.Namespace, server: Server) -> dict[str, object]:
    pids = worker_pids(server.process.pid)
    rss_idle = rss_mb(pids)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        busy = Load(server.url, args.connections, paths=(f"/app/{PLUGIN}/",))
        cpu = cpu_seconds(pids)
        busy.start()
        await asyncio.sleep(args.seconds)
        await busy.stop()
        cpu = cpu_seconds(pids) - cpu
        load = Load(server.url, args.connections)
        load.start()
        await asyncio.sleep(1.0)
        latencies = [await reload_once(server, client, f"1.0.{n}") for n in range(1, args.reloads + 1)]
        await asyncio.sleep(0.5)
        await load.stop()
        done = args.reloads + 1
        rss_first = None
        for n in range(done, args.memory_reloads + 1):
            await reload_once(server, client, f"2.0.{n}")
            if rss_first is None:
                rss_first = rss_mb(pids)
        await asyncio.sleep(1.0)  # let the last retired version's on_unload and cleanup run
        rss_last = rss_mb(pids)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "reloads": len(ms),
        "p50": statistics.median(ms),
        "p95": ms[max(0, round(0.95 * len(ms)) - 1)],
        "max": ms[-1],
        "ok": load.ok,
        "failed": load.failed + busy.failed,
        "throughput": busy.ok / args.seconds,
        "cpu_per_request": cpu / max(busy.ok, 1),
        "rss_idle": rss_idle,
        "rss_first": rss_first or 0.0,
        "rss_last": rss_last,
        "memory_reloads": args.memory_reloads,
    }


def report(results: dict[int, dict[str, Any]]) -> None:
    """report prints one column per number of plugins installed, with the ratios against the first."""
    counts = list(results)
    base = results[counts[0]]
    rows: list[tuple[str, list[str], str]] = [
        ("start: /health answers", [f"{r['health']:.2f} s" for r in results.values()], ""),
        ("start: every plugin route answers", [f"{r['served']:.2f} s" for r in results.values()], "<= 2 s at 100"),
        ("worker RSS, all served, idle", [f"{r['rss_idle']:.1f} MB" for r in results.values()], ""),
        (
            "RSS per installed idle plugin",
            [
                "-" if n == counts[0] else f"{(r['rss_idle'] - base['rss_idle']) / (n - counts[0]) * 1024:.0f} KB"
                for n, r in results.items()
            ],
            "",
        ),
        (
            "plugin route: requests/s",
            [f"{r['throughput']:.0f}/s ({r['throughput'] / base['throughput']:.2f}x)" for r in results.values()],
            "",
        ),
        (
            "plugin route: worker CPU per request",
            [
                f"{r['cpu_per_request'] * 1e3:.2f} ms ({base['cpu_per_request'] / r['cpu_per_request']:.2f}x)"
                for r in results.values()
            ],
            ">= 0.95x",
        ),
        (
            "reload latency p50",
            [f"{r['p50']:.0f} ms ({r['p50'] / base['p50']:.2f}x)" for r in results.values()],
            "< 150 ms, <= 1.3x",
        ),
        ("reload latency p95", [f"{r['p95']:.0f} ms" for r in results.values()], ""),
        ("reload latency max", [f"{r['max']:.0f} ms" for r in results.values()], ""),
        (
            "requests during the reloads",
            [f"{r['ok']} ok, {len(r['failed'])} failed" for r in results.values()],
            "0 failed",
        ),
    ]
    if base["memory_reloads"] > base["reloads"]:
        rows.append(
            (
                "RSS growth over the memory reloads",
                [f"+{r['rss_last'] - r['rss_first']:.1f} MB" for r in results.values()],
                "< +10 MB",
            )
        )
    width = max(len(r[0]) for r in rows)
    cells = max(len(c) for r in rows for c in r[1])
    print(f"\n{'plugins installed':<{width}}  " + "  ".join(f"{n:<{cells}}" for n in counts) + "  target")
    for name, values, target in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{v:<{cells}}" for v in values) + f"  {target}")
    for n, r in results.items():
        for line in r["failed"][:10]:
            print(f"  {n} plugins, failed: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--memory-reloads", type=int, default=100)
    parser.add_argument("--plugins", default="1", help="numbers of plugins installed, comma-separated (1,25,100)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the throughput measure")
    args = parser.parse_args()
    counts = [int(n) for n in args.plugins.split(",")]
    if any(n < 1 for n in counts):
        parser.error("--plugins: each number must be at least 1 (the reloaded plugin itself)")
    results: dict[int, dict[str, Any]] = {}
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="xcore-reload-") as tmp:
            server = Server(Path(tmp), n)
            try:
                health, served = server.wait_ready()
                results[n] = {"health": health, "served": served, **asyncio.run(run(args, server))}
            finally:
                server.stop()
        print(f"{n} plugins: reload p50 {results[n]['p50']:.0f} ms", file=sys.stderr)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
