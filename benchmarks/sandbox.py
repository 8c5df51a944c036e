"""A sandboxed plugin against the same plugin in process, side by side in one real `xcore serve`.

The server runs with one worker on a fresh data dir holding the same hello-world plugin twice: `inproc`, in
the Granian worker, and `boxed`, whose plugin.json says `"sandbox": true`, in a worker process of its own (a
forked by the fork server the Granian worker started). Their routes, /app/inproc and /app/boxed, are
public by an access rule. The server and its children are pinned to core 0 (`taskset`), so both routes get the
same one core; the load generator and this script run on core 1. The script measures, in this order:

- memory: the idle VmRSS of the Granian worker and of the sandbox worker (a child of the sandbox's fork server,
  `xcore.plugin_zygote`), and the worker's PSS (its share of the pages it shares with the fork server), from
  /proc, once both routes answer and before any load;
- throughput: after a warm-up (`--warmup` s per route), `--rounds` rounds of `--duration` s per route, the two
  routes in turns (the first of each round alternates), `--connections` keep-alive connections from `wrk -t1`
  (or a small asyncio client when wrk is missing). Per route: requests/s and the CPU time per request of the
  whole server process tree (the Granian worker and the sandbox worker included: user and system time from
  /proc), medians over the rounds; the ratio boxed / in process is the median of the rounds' own ratios;
- latency: `--requests` single requests per route, one at a time, each route on a keep-alive connection of
  its own (raw sockets) and the two routes alternating, after 200 unmeasured; p50 and p99, boxed minus in
  process;
- start: `--starts` times, a new plugin's zip (`procstart<N>` in process, `boxstart<N>` sandboxed, in turns) is
  written into the plugins folder; the time from the file closed until its public route answers 200 (polled
  every 5 ms): p50 and max;
- reload: `--reloads` times each, `procstart1.zip` and `boxstart1.zip` are rewritten in place with a new
  version (as `cp` would, 0.2 s apart, in turns); the time from the file closed until the route answers with
  the new version (polled every 5 ms): p50 and max;
- tasks: `--tasks` runs of each plugin's `ping` task, in turns, each queued by the plugin's own code
  (`ping.enqueue()` in a route), timed from enqueued to finished as the host's journal records them (the
  `task_runs` table of the server's database): p50 and max;
- at the end, the RSS and PSS of every sandbox worker then running (one per sandboxed plugin), median and max.

    python benchmarks/sandbox.py [--rounds 5] [--duration 2] [--warmup 2] [--connections 32] [--requests 2000]
                                 [--starts 5] [--reloads 10] [--tasks 30] [--generator auto|wrk|python]

Targets (the sandbox issue; reported, not enforced): boxed requests/s >= 0.6x in process; p50 latency added by
the sandbox < 0.5 ms; a sandboxed plugin's start to its first 200 < 500 ms; its reload p50 < 500 ms; <= 40 MB
PSS per sandbox worker (its RSS counts the pages it shares with the fork server); a task's round trip p50
< 30 ms. The exit code is 0 when the run completed, 1 when the server failed (its stderr's tail is printed).

benchmarks/http.py provides wrk, the pinning and the server's start and stop; it is loaded under another name,
since imported as `http` it would shadow the standard package.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import io
import json
import os
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any, NamedTuple

from machine import children, cpu_model, describe, yardsticks

ROUTES = {"inproc": "/app/inproc", "boxed": "/app/boxed"}
KINDS = {"inproc": ("procstart", False), "boxed": ("boxstart", True)}  # start/reload plugins: id prefix, sandbox
HELLO = (
    "from xcore.sdk import get, task\n\n\n"
    '@get("/")\nasync def hello() -> dict[str, str]:\n    return {"hello": "world"}\n\n\n'
    "@task(retries=0)\ndef ping() -> None:\n    pass\n\n\n"
    '@get("/ping", sync_to_thread=True)\ndef queue_ping() -> dict[str, int]:\n    return {"run": ping.enqueue()}\n\n\n'
    "router = [hello, queue_ping]\n"
)
VERSIONED = (
    'from xcore.sdk import get\n\nVERSION = "{version}"\n\n\n'
    '@get("/")\nasync def which() -> dict[str, str]:\n    return {{"version": VERSION}}\n\n\n'
    "router = [which]\n"
)
LATENCY_WARMUP = 200
POLL = 0.005
RELOAD_GAP = 0.2
WAIT = 30.0


def load_http_bench() -> ModuleType:
    """load_http_bench imports benchmarks/http.py as `http_bench`, so that it does not shadow `http`."""
    spec = importlib.util.spec_from_file_location("http_bench", Path(__file__).with_name("http.py"))
    if spec is None or spec.loader is None:
        raise ImportError("benchmarks/http.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_http_bench()


class Server(NamedTuple):
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    plugins: Path


def bundle(plugin_id: str, sandbox: bool, run_py: str = HELLO, version: str = "1.0.0") -> bytes:
    """bundle is a plugin's zip, built in memory."""
    manifest: dict[str, Any] = {"id": plugin_id, "version": version}
    if sandbox:
        manifest["sandbox"] = True
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plugin.json", json.dumps(manifest))
        archive.writestr("run.py", run_py)
    return buffer.getvalue()


def versioned(kind: str, n: int, version: str) -> tuple[str, bytes]:
    """versioned is the id and zip of the n-th start plugin of `kind`, whose route answers its version."""
    prefix, sandbox = KINDS[kind]
    plugin_id = f"{prefix}{n}"
    return plugin_id, bundle(plugin_id, sandbox, VERSIONED.format(version=version), version)


def drop(path: Path, payload: bytes) -> float:
    """drop writes `payload` to `path` in place, as `cp` would; returns the moment the file was closed."""
    with open(path, "wb") as out:
        out.write(payload)
    return time.perf_counter()


def access_rules(starts: int) -> str:
    """access_rules make the two plugins' routes and every start plugin's route public."""
    paths = [f"{path}*" for path in ROUTES.values()]  # the hello route and /ping, which queues the task
    paths += [f"/app/{KINDS[kind][0]}{n}" for n in range(1, starts + 1) for kind in KINDS]
    return json.dumps({path: {"public": True} for path in paths})


@contextmanager
def serving(tmp: Path, starts: int, pin: list[str]) -> Iterator[Server]:
    """serving starts `xcore serve` with the two plugins installed, waits until both routes answer, yields it,
    and stops it afterwards."""
    data = tmp / "data"
    plugins = data / "plugins"
    plugins.mkdir(parents=True)
    for name, (_, sandbox) in KINDS.items():
        drop(plugins / f"{name}.zip", bundle(name, sandbox))
    port = bench.free_port()
    env = {**os.environ, "XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": access_rules(starts)}
    with open(tmp / "server.stderr", "w+b") as log:
        proc = bench.spawn([*pin, *bench.server_command("xcore", port, data)], env, log)
        try:
            for path in ("/health", *ROUTES.values()):
                bench.wait_ready("xcore", proc, port, path, log)
            yield Server(port, proc, log, plugins)
        finally:
            bench.stop(proc)


class Connection:
    """Connection is one keep-alive HTTP/1.1 connection over a raw socket, one request at a time; it reconnects
    once when the server has closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def get(self, path: str) -> tuple[int, bytes]:
        """get sends one GET and returns the status and the body."""
        try:
            return self._get(path)
        except (OSError, ValueError):
            self.close()
            return self._get(path)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def _get(self, path: str) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = self._until(b"\r\n\r\n").lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("a response without Content-Length")
        body = self._exactly(int(head[at + 17 : head.index(b"\r\n", at + 2)]))
        if b"\r\nconnection: close" in head:
            self.close()
        return int(head[9:12]), body

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _until(self, separator: bytes) -> bytes:
        while (end := self.buffer.find(separator)) < 0:
            self._fill()
        end += len(separator)
        found, self.buffer = self.buffer[:end], self.buffer[end:]
        return found

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found


def in_turns(n: int) -> list[str]:
    """in_turns is the order of the two kinds in turn `n`: the first alternates."""
    kinds = list(ROUTES)
    return kinds[n % 2 :] + kinds[: n % 2]


def check_alive(server: Server) -> None:
    if server.proc.poll() is not None:
        raise bench.BenchError(f"xcore died mid-run (code {server.proc.returncode}): {bench.stderr_tail(server.log)}")


def measured_load(server: Server, route: str, args: argparse.Namespace, pin: list[str], seconds: float) -> Any:
    """measured_load runs the load generator on `route`; its Result, with the server tree's CPU per request."""
    before = bench.tree_cpu_seconds(server.proc.pid)
    result = bench.load(args.generator, server.port, route, seconds, args.connections, pin, [])
    cpu = bench.tree_cpu_seconds(server.proc.pid) - before
    check_alive(server)
    return result._replace(cpu_us=cpu / result.requests * 1e6) if cpu > 0 and result.requests else result


def throughput(server: Server, args: argparse.Namespace, pin: list[str]) -> dict[str, list[Any]]:
    """throughput is each route's Result in each round, after the warm-up."""
    for kind, route in ROUTES.items():
        if args.warmup > 0:
            print(f"warm-up {kind}: {args.warmup:g} s", file=sys.stderr)
            measured_load(server, route, args, pin, args.warmup)
    found: dict[str, list[Any]] = {kind: [] for kind in ROUTES}
    for n in range(args.rounds):
        for kind in in_turns(n):
            print(f"round {n + 1}/{args.rounds}: {kind} for {args.duration:g} s", file=sys.stderr)
            found[kind].append(measured_load(server, ROUTES[kind], args, pin, args.duration))
    return found


def latencies(server: Server, requests: int) -> dict[str, list[float]]:
    """latencies are the seconds of `requests` sequential requests per route, the two routes alternating."""
    connections = {kind: Connection(server.port) for kind in ROUTES}
    found: dict[str, list[float]] = {kind: [] for kind in ROUTES}
    for n in range(LATENCY_WARMUP + requests):
        for kind in in_turns(n):
            start = time.perf_counter()
            status, body = connections[kind].get(ROUTES[kind])
            elapsed = time.perf_counter() - start
            if status != 200:
                raise bench.BenchError(f"{ROUTES[kind]} answered {status}: {body[:200]!r}")
            if n >= LATENCY_WARMUP:
                found[kind].append(elapsed)
    for connection in connections.values():
        connection.close()
    return found


def wait_for(connection: Connection, path: str, expected: bytes, since: float) -> float:
    """wait_for polls `path` until it answers 200 with a body holding `expected`; the seconds since `since`."""
    while time.perf_counter() - since < WAIT:
        status, body = connection.get(path)
        if status == 200 and expected in body:
            return time.perf_counter() - since
        time.sleep(POLL)
    raise bench.BenchError(f"{path} did not answer as expected within {WAIT:.0f} s")


def starts(server: Server, count: int) -> dict[str, list[float]]:
    """starts are the seconds from a new plugin's zip written until its route answers 200, per kind."""
    connection = Connection(server.port)
    found: dict[str, list[float]] = {kind: [] for kind in ROUTES}
    for n in range(1, count + 1):
        for kind in in_turns(n):
            plugin_id, payload = versioned(kind, n, "1.0.0")
            written = drop(server.plugins / f"{plugin_id}.zip", payload)
            found[kind].append(wait_for(connection, f"/app/{plugin_id}", b"", written))
            check_alive(server)
    connection.close()
    return found


def reloads(server: Server, count: int) -> dict[str, list[float]]:
    """reloads are the seconds from the first start plugin's zip rewritten with a new version until that version
    answers, per kind."""
    connection = Connection(server.port)
    found: dict[str, list[float]] = {kind: [] for kind in ROUTES}
    for n in range(1, count + 1):
        version = f"1.1.{n}"
        for kind in in_turns(n):
            plugin_id, payload = versioned(kind, 1, version)
            written = drop(server.plugins / f"{plugin_id}.zip", payload)
            expected = f'"version":"{version}"'.encode()
            found[kind].append(wait_for(connection, f"/app/{plugin_id}", expected, written))
            check_alive(server)
            time.sleep(RELOAD_GAP)
    connection.close()
    return found


def task_round_trips(server: Server, count: int) -> dict[str, list[float]]:
    """task_round_trips queue `count` runs of each plugin's `ping` task, in turns, each through a route of the
    plugin (`ping.enqueue()` in the plugin's code), and return each run's time from enqueued to finished, as
    the host's journal records them (the task_runs table of the server's database)."""
    found: dict[str, list[float]] = {kind: [] for kind in ROUTES}
    connection = Connection(server.port)
    database = sqlite3.connect(server.plugins.parent / "xcore.db", timeout=5)
    try:
        for n in range(count):
            for kind in in_turns(n):
                status, body = connection.get(f"{ROUTES[kind]}/ping")
                if status != 200:
                    raise bench.BenchError(f"{ROUTES[kind]}/ping answered {status}: {body[:200]!r}")
                found[kind].append(finished(database, json.loads(body)["run"]))
    finally:
        connection.close()
        database.close()
    return found


def finished(database: sqlite3.Connection, run: int) -> float:
    """finished waits until task run `run` has finished; returns its seconds from enqueued to finished."""
    deadline = time.perf_counter() + WAIT
    while time.perf_counter() < deadline:
        row = database.execute("SELECT status, enqueued_at, finished_at FROM task_runs WHERE id = ?", (run,)).fetchone()
        if row is not None and row[2] is not None:
            if row[0] != "succeeded":
                raise bench.BenchError(f"task run {run} {row[0]}")
            return (dt.datetime.fromisoformat(row[2]) - dt.datetime.fromisoformat(row[1])).total_seconds()
        time.sleep(0.002)
    raise bench.BenchError(f"task run {run} did not finish within {WAIT:.0f} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """pss_mb is the process's proportional set size: its own pages, and its share of the pages it shares with
    others (a sandbox worker shares most of its memory with the fork server it was forked from)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def command_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def processes(server: Server) -> tuple[list[int], list[int], list[int]]:
    """processes are the Granian workers of the server, their sandbox fork servers, and the sandbox workers (the
    fork servers' children)."""
    workers = children(server.proc.pid)
    zygotes, boxes = [], []
    for worker in workers:
        for pid in children(worker):
            command = command_of(pid)
            if b"plugin_zygote" in command or b"plugin-zygote" in command:
                zygotes.append(pid)
                boxes += children(pid)
    return workers, zygotes, boxes


def memory(server: Server) -> dict[str, Any]:
    """memory is the RSS in MB of the Granian worker(s), in all, of the fork servers, and the RSS and PSS of each
    sandbox worker."""
    workers, zygotes, boxes = processes(server)
    return {
        "granian": sum(rss_mb(pid) for pid in workers),
        "zygotes": sum(rss_mb(pid) for pid in zygotes),
        "boxes": [rss_mb(pid) for pid in boxes],
        "pss": [pss_mb(pid) for pid in boxes],
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def throughput_rows(rounds: dict[str, list[Any]]) -> list[tuple[str, ...]]:
    inproc, boxed = rounds["inproc"], rounds["boxed"]
    by_rps = statistics.median(b.rps / i.rps for i, b in zip(inproc, boxed, strict=True))
    by_cpu = statistics.median(b.cpu_us / i.cpu_us for i, b in zip(inproc, boxed, strict=True))
    rps = [statistics.median(r.rps for r in rounds[kind]) for kind in ROUTES]
    cpu = [statistics.median(r.cpu_us for r in rounds[kind]) for kind in ROUTES]
    errors = [f"{sum(r.non2xx for r in rounds[k])}/{sum(r.socket_errors for r in rounds[k])}" for k in ROUTES]
    return [
        (
            "requests/s (median of rounds)",
            f"{rps[0]:,.0f}",
            f"{rps[1]:,.0f}",
            f"{by_rps:.2f}x",
            f">= 0.6x {verdict(by_rps >= 0.6)}",
        ),
        ("server tree CPU per request", f"{cpu[0]:.0f} us", f"{cpu[1]:.0f} us", f"{by_cpu:.2f}x", ""),
        ("errors under load (non-2xx/socket)", errors[0], errors[1], "", "0/0"),
    ]


def latency_rows(found: dict[str, list[float]]) -> list[tuple[str, ...]]:
    p50 = [statistics.median(found[kind]) for kind in ROUTES]
    p99 = [percentile(found[kind], 0.99) for kind in ROUTES]
    added = p50[1] - p50[0]
    return [
        (
            "single request p50",
            ms(p50[0]),
            ms(p50[1]),
            f"+{added * 1e3:.3f} ms",
            f"< +0.5 ms {verdict(added < 0.0005)}",
        ),
        ("single request p99", ms(p99[0]), ms(p99[1]), f"+{(p99[1] - p99[0]) * 1e3:.3f} ms", ""),
    ]


def timing_rows(label: str, found: dict[str, list[float]], target: float = 0.5) -> list[tuple[str, ...]]:
    """timing_rows are the p50 and max of `found` (seconds, by kind), the sandboxed p50 held to `target`."""
    p50 = [statistics.median(found[kind]) for kind in ROUTES]
    top = [max(found[kind]) for kind in ROUTES]
    return [
        (
            f"{label} p50",
            ms(p50[0]),
            ms(p50[1]),
            f"+{(p50[1] - p50[0]) * 1e3:.1f} ms",
            f"boxed < {target * 1e3:.0f} ms {verdict(p50[1] < target)}",
        ),
        (f"{label} max", ms(top[0]), ms(top[1]), f"+{(top[1] - top[0]) * 1e3:.1f} ms", ""),
    ]


def memory_rows(idle: dict[str, Any], end: dict[str, Any]) -> list[tuple[str, ...]]:
    box = idle["boxes"][0] if len(idle["boxes"]) == 1 else float("nan")
    pss = idle["pss"][0] if len(idle["pss"]) == 1 else float("nan")
    boxes = end["boxes"] or [float("nan")]
    shares = end["pss"] or [float("nan")]
    return [
        (
            "idle RSS: Granian worker | sandbox worker",
            f"{idle['granian']:.1f} MB",
            f"{box:.1f} MB",
            f"+{box:.1f} MB per sandboxed plugin",
            "",
        ),
        (
            "idle PSS of the sandbox worker",
            "",
            f"{pss:.1f} MB",
            f"fork server RSS {idle['zygotes']:.1f} MB, once",
            f"<= 40 MB {verdict(pss <= 40)}",
        ),
        (
            f"RSS | PSS at the end ({len(end['boxes'])} sandbox workers)",
            f"{end['granian']:.1f} MB",
            f"median {statistics.median(boxes):.1f} | {statistics.median(shares):.1f} MB",
            f"max {max(boxes):.1f} | {max(shares):.1f} MB",
            "",
        ),
    ]


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("metric", "in process", "sandboxed", "ratio / difference", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())


def server_errors(log: IO[bytes], limit: int = 5) -> list[str]:
    """server_errors are the last lines of the server's stderr that read as errors or tracebacks."""
    log.flush()
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    marks = ("error", "traceback", "exception", "critical")
    return [line[:200] for line in lines if any(mark in line.lower() for mark in marks)][-limit:]


def run(args: argparse.Namespace, pins: tuple[list[str], list[str]], tmp: Path) -> list[tuple[str, ...]]:
    """run starts the server, measures everything and returns the table's rows."""
    with serving(tmp, args.starts, pins[0]) as server:
        time.sleep(1.0)  # let the start's work settle before the idle RSS
        idle = memory(server)
        rounds = throughput(server, args, pins[1])
        print(f"latency: {args.requests} requests per route", file=sys.stderr)
        found = latencies(server, args.requests)
        print(f"start: {args.starts} plugins per kind", file=sys.stderr)
        started = starts(server, args.starts)
        print(f"reload: {args.reloads} reloads per kind", file=sys.stderr)
        reloaded = reloads(server, args.reloads)
        print(f"tasks: {args.tasks} runs per kind", file=sys.stderr)
        trips = task_round_trips(server, args.tasks)
        time.sleep(1.0)  # let the retired versions' workers exit
        end = memory(server)
        errors = server_errors(server.log)
    rows = throughput_rows(rounds) + latency_rows(found)
    rows += timing_rows("start to first 200", started) + timing_rows("reload to new version", reloaded)
    rows += memory_rows(idle, end)
    rows += timing_rows("task round trip (enqueued to finished)", trips, target=0.03)
    by_round = ", ".join(f"{b.rps / i.rps:.2f}" for i, b in zip(rounds["inproc"], rounds["boxed"], strict=True))
    rows.append(("(requests/s ratio by round)", "", "", by_round, ""))
    rows += [("server stderr, error line", "", "", line, "") for line in errors]
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of load per route (default 5)")
    parser.add_argument("--duration", type=float, default=2, help="seconds per route and round (default 2)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds per route first (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per route (default 2000)")
    parser.add_argument("--starts", type=int, default=5, help="new plugins started per kind (default 5)")
    parser.add_argument("--reloads", type=int, default=10, help="reloads per kind (default 10)")
    parser.add_argument("--tasks", type=int, default=30, help="task runs per kind (default 30)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if found")
    args = parser.parse_args()
    if (
        min(args.rounds, args.connections, args.requests, args.starts, args.reloads, args.tasks) < 1
        or args.duration <= 0
    ):
        parser.error(
            "--rounds, --duration, --connections, --requests, --starts, --reloads and --tasks must be positive"
        )
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk but wrk is not installed")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    return args


def main() -> int:
    args = parse_args()
    server_pin, client_pin, pin_note = bench.pinning()
    if client_pin:
        os.sched_setaffinity(0, {1})  # this script's own clients (and the Python load generator) on core 1
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"cpu: {cpu_model()}")
    print(f"machine speed: {describe(yardsticks())}")
    print(f"versions: {bench.versions()}")
    print(f"pinning: {pin_note}")
    gen = "wrk -t1" if args.generator == "wrk" else "built-in Python asyncio client"
    print(f"load: {gen}, {args.connections} connections, {args.rounds} rounds of {args.duration:g} s per route")
    with tempfile.TemporaryDirectory(prefix="xcore-sandbox-") as tmp:
        try:
            rows = run(args, (server_pin, client_pin), Path(tmp))
        except bench.BenchError as exc:
            print(f"FAILED: {exc}")
            return 1
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted")
