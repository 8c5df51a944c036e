"""Hot reload of a plugin on a real `xcore serve`: how fast a new zip goes live, whether any request fails, and
whether memory stays flat.

The server runs with one worker and a fresh data dir. A tiny plugin (`reloadbench`, whose route answers its
version) is rewritten in place as `<data>/plugins/reloadbench.zip` with a new version each time, the way `cp`
would. The latency of one reload is the time from the moment the new file is closed until the first response
from the new version (polled every 5 ms). While the reloads run, `--connections` clients keep requests going on
the plugin route and on /health, and every response that is not a 200 is counted.

Then the plugin is reloaded until `--memory-reloads` reloads have happened, and the worker's RSS after the
first reload is compared with its RSS after the last one.

    python benchmarks/reload.py [--reloads 30] [--connections 32] [--memory-reloads 100]

Targets (issue 4): p50 below 300 ms and p95 below 600 ms; 0 failed requests; RSS growth below 10 MB.
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


def bundle(version: str) -> bytes:
    """bundle is the zip of the bench plugin at `version`, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plugin.json", json.dumps({"id": PLUGIN, "version": version}))
        archive.writestr("run.py", RUN_PY.format(version=version))
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_pids(pid: int) -> list[int]:
    """worker_pids are the Granian worker processes of the server `pid` (its child processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Server:
    """Server is a real `xcore serve` on a temporary data dir, with the bench plugin's route public."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.plugins = self.data / "plugins"
        self.plugins.mkdir(parents=True)
        env = dict(os.environ)
        env["XCORE_XCORE__MIDDLEWARE__ACCESS_RULES"] = json.dumps({f"/app/{PLUGIN}/*": {"public": True}})
        env["XCORE_XCORE__LOGS__CONSOLE"] = "false"
        exe = Path(sys.executable).with_name("xcore")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "xcore"]
        self.log = open(tmp / "server.log", "w+b")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port), "--data-dir", str(self.data)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"xcore exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("xcore did not answer /health within 30 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Load:
    """Load keeps `connections` clients busy on the plugin route and /health; it counts what is not a 200."""

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self.connections = connections
        self.ok = 0
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        paths = [f"/app/{PLUGIN}/", "/health"]
        self._tasks = [asyncio.create_task(self._client(paths[i % 2])) for i in range(self.connections)]

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
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await reload_once(server, client, "1.0.0")  # the first load
        load = Load(server.url, args.connections)
        load.start()
        await asyncio.sleep(1.0)
        latencies = [await reload_once(server, client, f"1.0.{n}") for n in range(1, args.reloads + 1)]
        await asyncio.sleep(0.5)
        await load.stop()
        pids = worker_pids(server.process.pid)
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
        "failed": load.failed,
        "rss_first": rss_first or 0.0,
        "rss_last": rss_last,
        "memory_reloads": args.memory_reloads,
    }


def report(result: dict[str, object]) -> None:
    failed = result["failed"]
    assert isinstance(failed, list)
    growth = float(result["rss_last"]) - float(result["rss_first"])  # type: ignore[arg-type]
    rows = [
        ("reload latency p50", f"{result['p50']:.0f} ms", "< 300 ms"),
        ("reload latency p95", f"{result['p95']:.0f} ms", "< 600 ms"),
        ("reload latency max", f"{result['max']:.0f} ms", ""),
        (
            f"requests during {result['reloads']} reloads",
            f"{result['ok']} ok, {len(failed)} failed",
            "0 failed",
        ),
        (
            f"worker RSS after 1 / {result['memory_reloads']} reloads",
            f"{result['rss_first']:.1f} / {result['rss_last']:.1f} MB (+{growth:.1f} MB)",
            "< +10 MB",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':<34}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<34}  {target}")
    for line in failed[:10]:
        print(f"  failed: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--memory-reloads", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcore-reload-") as tmp:
        server = Server(Path(tmp))
        try:
            server.wait_ready()
            result = asyncio.run(run(args, server))
        finally:
            server.stop()
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
