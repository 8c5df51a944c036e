"""HTTP throughput of xcore against a bare Litestar app on Granian and a FastAPI app on uvicorn.

Each server runs alone, one after another, with one worker pinned to CPU core 0 while the load generator
(wrk, or a small asyncio client when wrk is missing) runs on core 1. xcore is started through its real CLI
with its request logging left on (to a JSON file in a fresh data dir and to stderr, which goes to a temp
file here), because that is what a request costs in production.

What matters are the ratios printed at the end, not the absolute requests/s: benchmark machines are shared
and noisy, so the same server can differ by tens of percent from one run to the next, while servers measured
back to back in the same run share that noise. To tame it further, all servers run side by side (each idle
while another is measured) and each path's 10 s are cut into interleaved slices (--rounds, default 5): a
round measures every path once, in a rotated order, and the report gives the median of the per-round ratios
next to each round's own value. Each ratio is given three ways: by requests/s; by the server's CPU time per
request (user and system time of its whole process tree, from /proc, over the requests of the slice), which
does not depend on how much of its core a server got during its slice (in the runs so far it followed
requests/s round by round: the noise was in what a request cost); and by the least CPU time per request of
any slice. Targets: xcore /api/version >= 0.85x bare Litestar on Granian, and > 1.0x FastAPI on uvicorn; a
plugin's hello-world route (public by an access rule) >= 0.92x bare Litestar; an authenticated admin GET
(/api/admin/system with a Bearer JWT, through the ACCESS_RULES check) >= 0.88x xcore's own unauthenticated
/api/version; and /api/version with metrics on (every request counted for /metrics, the default) >= 0.95x the same
xcore with them off (`server.metrics` false, the server `xcore-nometrics`). A target is judged on the median of
several runs (benchmarks/README.md). The login endpoint's latency is reported apart: argon2 is slow on purpose.
Prefer wrk: the Python client spends more CPU per request and can become the bottleneck on fast servers, which
pulls the ratios towards 1.

    python benchmarks/http.py [--duration 10] [--warmup 3] [--connections 32] [--rounds 3]
                              [--only xcore,xcore-nometrics,litestar,fastapi] [--paths /api/version,...]
                              [--generator auto|wrk|python]

Careful: this file is named http.py and Python puts its directory first on sys.path, so it must not import
anything that imports the standard `http` package (urllib.request, http.client...); it speaks raw sockets.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

from machine import cpu_model, describe, tree_cpu_seconds, yardsticks

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("xcore", "xcore-nometrics", "litestar", "fastapi")
PATHS = {
    "xcore": ["/api/version", "/health", "/api/admin/system", "/app/bench", "/app/bench/me"],
    "xcore-nometrics": ["/api/version"],
    "litestar": ["/"],
    "fastapi": ["/"],
}
# Paths measured with a logged-in admin's access token (Bearer JWT), set once xcore is up.
AUTHENTICATED = {("xcore", "/api/admin/system"), ("xcore", "/app/bench/me")}
# A plugin installed in xcore's data dir before it starts: the hello-world route of the baseline, made public by
# an access rule (it still passes the guard, which finds that rule), and the same behind a login.
BENCH_PLUGIN = {
    "plugin.json": '{"id": "bench", "version": "1.0.0"}',
    "run.py": (
        "from xcore.sdk import get\n\n\n"
        '@get("/")\nasync def hello() -> dict[str, str]:\n    return {"hello": "world"}\n\n\n'
        '@get("/me")\nasync def me() -> dict[str, str]:\n    return {"hello": "world"}\n\n\n'
        "router = [hello, me]\n"
    ),
}
BENCH_RULES = '{"/app/bench": {"public": true}}'
BENCH_USER, BENCH_PASSWORD = "bench-admin", "only-for-this-benchmark-42"
LOGINS = 20
LABELS = {
    "xcore": "xcore",
    "xcore-nometrics": "xcore, metrics off",
    "litestar": "Litestar+Granian",
    "fastapi": "FastAPI+uvicorn",
}
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
COMMANDS = {  # the first word is replaced by the interpreter, or the xcore script next to it
    "xcore": "xcore serve --host 127.0.0.1 --port {port} --workers 1 --data-dir {data}",
    "xcore-nometrics": "xcore serve --host 127.0.0.1 --port {port} --workers 1 --data-dir {data}",
    "litestar": "python -m granian --interface asgi --host 127.0.0.1 --port {port} --workers 1 "
    "--log-level warning benchmarks.apps.litestar_hello:app",
    "fastapi": "python -m uvicorn benchmarks.apps.fastapi_hello:app --host 127.0.0.1 --port {port} "
    "--workers 1 --log-level warning --no-access-log",
}
RATIOS = [  # path of xcore, baseline (server, path), its description, target (None: for information only)
    ("/api/version", ("litestar", "/"), "bare Litestar on Granian", ">= 0.85"),
    ("/api/version", ("fastapi", "/"), "FastAPI on uvicorn", "> 1.0"),
    ("/api/admin/system", ("xcore", "/api/version"), "xcore /api/version (unauthenticated)", ">= 0.88"),
    ("/health", ("litestar", "/"), "bare Litestar on Granian", None),
    ("/app/bench", ("litestar", "/"), "bare Litestar on Granian", ">= 0.92"),
    ("/app/bench/me", ("xcore", "/app/bench"), "the same plugin route, public", None),
    ("/api/version", ("xcore-nometrics", "/api/version"), "the same, metrics off (server.metrics false)", ">= 0.95"),
]


class Result(NamedTuple):
    """One measured run: requests/s, median and 99th percentile latency in ms, the failed requests, how many
    requests were answered and the server's CPU time per request in microseconds (set by measure_all)."""

    rps: float
    p50: float
    p99: float
    non2xx: int
    socket_errors: int
    requests: int
    cpu_us: float = float("nan")


Row = tuple[str, str, Result]  # server, path, result


class BenchError(Exception):
    """A server did not start or the load generator failed: reported in one line, exit code 1."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(name: str, port: int, data_dir: Path) -> list[str]:
    """The command line of one server; every token is formatted after splitting, so paths may hold spaces."""
    template = COMMANDS[name].split()
    if name.startswith("xcore"):
        exe = Path(sys.executable).with_name("xcore")
        template[:1] = [str(exe)] if exe.exists() else [sys.executable, "-m", "xcore"]
    else:
        template[0] = sys.executable
    return [token.format(port=port, data=data_dir) for token in template]


def http_post_json(port: int, path: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """One POST with a JSON body and Connection: close over a raw socket: (status, response body)."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def create_bench_account(data_dir: Path) -> None:
    """The admin account the authenticated paths use, made with the real CLI before the server starts."""
    serve = server_command("xcore", 0, data_dir)
    command = [*serve[: serve.index("serve")], "user", "create", BENCH_USER, "--superadmin", "--password-stdin"]
    command += ["--data-dir", str(data_dir)]
    done = subprocess.run(command, input=BENCH_PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"xcore user create failed: {done.stderr.strip()}")


def install_bench_plugin(data_dir: Path) -> None:
    """The bench plugin's zip, dropped into the plugins folder before the server starts."""
    import zipfile

    (data_dir / "plugins").mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data_dir / "plugins" / "bench-1.0.0.zip", "w") as archive:
        for name, text in BENCH_PLUGIN.items():
            archive.writestr(name, text)


def login(port: int) -> tuple[str, float]:
    """Log the bench account in: (access token, seconds the login took)."""
    body = f'{{"username": "{BENCH_USER}", "password": "{BENCH_PASSWORD}"}}'.encode()
    start = time.perf_counter()
    status, payload = http_post_json(port, "/api/auth/login", body)
    elapsed = time.perf_counter() - start
    found = re.search(rb'"access_token":"([^"]+)"', payload)
    if status != 200 or not found:
        raise BenchError(f"login failed with {status}: {payload[:200]!r}")
    return found[1].decode(), elapsed


def measure_logins(port: int, count: int) -> list[float]:
    """`count` sequential logins (argon2 verification included): their latencies in seconds."""
    return [login(port)[1] for _ in range(count)]


def argon2_verify_seconds(count: int = 10) -> float:
    """The median time of one argon2 verification with xcore's parameters, in this process."""
    from xcore.auth.passwords import HASHER

    stored = HASHER.hash(BENCH_PASSWORD)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        HASHER.verify(stored, BENCH_PASSWORD)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """One GET with Connection: close over a raw socket; the status code, or None if nothing answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def stderr_tail(log: IO[bytes], lines: int = 8) -> str:
    log.flush()
    log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
    tail = log.read().decode(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(line.strip() for line in tail) or "(no stderr output)"


def spawn(argv: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """spawn starts a server in a process group of its own (so `stop` reaches its workers), its stderr in `log`."""
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        start_new_session=True,
    )  # fmt: skip


def wait_ready(name: str, proc: subprocess.Popen[bytes], port: int, path: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited (code {proc.returncode}) before answering: {stderr_tail(log)}")
        if http_status(port, path) == 200:
            return
        time.sleep(0.1)
    raise BenchError(f"{name} did not answer 200 on {path} within {READY_TIMEOUT:.0f} s: {stderr_tail(log)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to the whole process group (Granian's workers too) after STOP_TIMEOUT."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers only; the group is the one start_new_session made
    proc.wait()


def parse_time_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(url: str, seconds: float, connections: int, pin: list[str], headers: list[str]) -> Result:
    extra = [arg for header in headers for arg in ("-H", header)]
    cmd = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if done.returncode != 0 or not (rps and p50 and p99):
        raise BenchError(f"wrk failed (code {done.returncode}): {(done.stderr or out).strip()[-300:]}")
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx[1]) if non2xx else 0, sum(map(int, sockets.groups())) if sockets else 0)
    requests = int(total[1]) if total else round(float(rps[1]) * seconds)
    return Result(float(rps[1]), parse_time_ms(p50[1]), parse_time_ms(p99[1]), *errors, requests)


async def client(port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection sending GETs back to back until deadline; errors is [non2xx, socket]."""
    reader = writer = None
    try:
        async with asyncio.timeout(deadline - time.perf_counter() + 5):  # a hung response ends it
            while time.perf_counter() < deadline:
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    start = time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
                    lower = head.lower()
                    at = lower.find(b"\r\ncontent-length:")
                    if at < 0:
                        raise ConnectionError("response without Content-Length")
                    length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
                    await reader.readexactly(length)  # type: ignore[union-attr]
                    latencies.append(time.perf_counter() - start)
                    if not 200 <= int(head[9:12]) < 300:
                        errors[0] += 1
                    if b"\r\nconnection: close" in lower:
                        writer.close()
                        writer = None
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    errors[1] += 1
                    if writer is not None:
                        writer.close()
                    writer = None
                    await asyncio.sleep(0.01)
    except TimeoutError:
        errors[1] += 1
    finally:
        if writer is not None:
            writer.close()


async def python_load(port: int, path: str, seconds: float, connections: int, headers: list[str]) -> Result:
    lines = "".join(f"{header}\r\n" for header in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode()
    latencies: list[float] = []
    errors = [0, 0]
    start = time.perf_counter()
    await asyncio.gather(*(client(port, request, start + seconds, latencies, errors) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    if not latencies:
        raise BenchError(f"the Python load generator got no response from {path} ({errors[1]} socket errors)")
    latencies.sort()
    n = len(latencies)
    p50, p99 = latencies[n // 2] * 1e3, latencies[min(n - 1, n * 99 // 100)] * 1e3
    return Result(n / elapsed, p50, p99, errors[0], errors[1], n)


def load(
    generator: str, port: int, path: str, seconds: float, connections: int, pin: list[str], headers: list[str]
) -> Result:
    if generator == "wrk":
        return run_wrk(f"http://127.0.0.1:{port}{path}", seconds, connections, pin, headers)
    return asyncio.run(python_load(port, path, seconds, connections, headers))


@contextlib.contextmanager
def running(name: str, pin: list[str], tmp: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], IO[bytes]]]:
    """Start one server, wait until it answers, yield (port, process, stderr log); stop it afterwards."""
    port = free_port()
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir()
    env = dict(os.environ)
    if name.startswith("xcore"):
        create_bench_account(data_dir)
        env["XCORE_SECURE__ACCESS_TTL"] = "86400"  # outlives any run, so no refresh mid-measurement
        env["XCORE_XCORE__MIDDLEWARE__ACCESS_RULES"] = BENCH_RULES
        install_bench_plugin(data_dir)
    if name == "xcore-nometrics":
        env["XCORE_SERVER__METRICS"] = "false"  # no request is counted for /metrics
    with open(tmp / f"{name}.stderr", "w+b") as log:
        proc = spawn([*pin, *server_command(name, port, data_dir)], env, log)
        try:
            wait_ready(name, proc, port, "/health" if name.startswith("xcore") else "/", log)
            yield port, proc, log
        finally:
            stop(proc)


def measure_all(
    names: list[str], args: argparse.Namespace, generator: str, pins: tuple[list[str], list[str]], tmp: Path
) -> tuple[list[list[Row]], list[str], list[float]]:
    """All servers run side by side (idle while not measured); the paths are measured in interleaved slices.

    Each path gets `--duration` seconds in all, in `--rounds` slices; a round measures every path once, in a
    rotated order. Noise on a shared machine drifts over tens of seconds, so slices of a few seconds, close
    together, let the ratios of one round compare like with like.
    """
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        ports: dict[str, tuple[int, subprocess.Popen[bytes], IO[bytes]]] = {}
        for name in names:
            try:
                ports[name] = stack.enter_context(running(name, pins[0], tmp))
            except BenchError as exc:
                failures.append(str(exc))
                print(f"error: {exc}", file=sys.stderr)
        targets = [
            (name, path)
            for name in names
            if name in ports
            for path in PATHS[name]
            if not args.paths or path in args.paths
        ]
        headers: dict[tuple[str, str], list[str]] = {target: [] for target in targets}
        logins: list[float] = []
        if "xcore" in ports:
            port = ports["xcore"][0]
            logins = measure_logins(port, LOGINS)
            token, _ = login(port)
            for target in AUTHENTICATED & set(targets):
                headers[target] = [f"Authorization: Bearer {token}"]
        if args.warmup > 0:  # discarded: lazy imports, caches and connections settle
            for name, path in targets:
                print(f"warm-up {name} {path}: {args.warmup:g} s", file=sys.stderr)
                load(generator, ports[name][0], path, args.warmup, args.connections, pins[1], headers[(name, path)])
        slice_seconds = args.duration / args.rounds
        rounds: list[list[Row]] = []
        for n in range(args.rounds):
            order = targets[n % len(targets) :] + targets[: n % len(targets)] if targets else []
            results: list[Row] = []
            for name, path in order:
                port, proc, log = ports[name]
                print(f"round {n + 1}/{args.rounds}: {name} {path} for {slice_seconds:g} s", file=sys.stderr)
                cpu_before = tree_cpu_seconds(proc.pid)
                measured = load(generator, port, path, slice_seconds, args.connections, pins[1], headers[(name, path)])
                cpu = tree_cpu_seconds(proc.pid) - cpu_before
                if cpu > 0 and measured.requests:
                    measured = measured._replace(cpu_us=cpu / measured.requests * 1e6)
                results.append((name, path, measured))
                if proc.poll() is not None:
                    raise BenchError(f"{name} died mid-run (code {proc.returncode}): {stderr_tail(log)}")
            rounds.append(results)
    return rounds, failures, logins


def pinning() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server (core 0) and the load generator (core 1), and a line saying so."""
    taskset = shutil.which("taskset")
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if taskset and {0, 1} <= cores:
        return [taskset, "-c", "0"], [taskset, "-c", "1"], "server on core 0, load generator on core 1"
    why = "taskset not found" if not taskset else f"cores 0 and 1 not both available (have {sorted(cores)})"
    return [], [], f"UNPINNED: {why}; servers and load generator share the CPUs"


def versions() -> str:
    found = []
    for dist in ("xcore", "litestar", "granian", "fastapi", "uvicorn"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} (not installed)")
    wrk = "wrk (not installed)"
    if shutil.which("wrk"):
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("wrk")]
        wrk = lines[0].split(" Copyright")[0].strip() if lines else "wrk (unknown version)"
    return ", ".join([f"Python {platform.python_version()}", *found, wrk])


def ratio_lines(rounds: list[list[Row]]) -> list[str]:
    """Each ratio of RATIOS three ways: by requests/s and by the server's CPU time per request (the baseline's
    over xcore's, so that above 1 still means xcore is faster), each the median of the rounds' own ratios; and
    the ratio of the least CPU time per request each got in any slice. Interference on a shared machine only
    ever adds time, so the least is the closest to what a request costs (as `timeit` reports its best)."""
    per_round = [{(server, path): result for server, path, result in results} for results in rounds]
    lines = []
    for path, base, label, target in RATIOS:
        pairs = [(got[("xcore", path)], got[base]) for got in per_round if ("xcore", path) in got and base in got]
        by_rps = [mine.rps / theirs.rps for mine, theirs in pairs if theirs.rps]
        cpu = [(mine.cpu_us, theirs.cpu_us) for mine, theirs in pairs if mine.cpu_us > 0 and theirs.cpu_us > 0]
        by_cpu = [theirs / mine for mine, theirs in cpu]
        best = [min(theirs for _, theirs in cpu) / min(mine for mine, _ in cpu)] if cpu else []
        for measure, ratios in (("requests/s", by_rps), ("CPU time per request", by_cpu), ("least CPU time", best)):
            line = f"xcore {path} vs {label}, by {measure}: "
            if not ratios:
                lines.append(line + "n/a (not measured in this run)")
                continue
            value = statistics.median(ratios)
            detail = f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
            if target is None:
                lines.append(line + f"{value:.2f}{detail} (for information)")
            else:
                op, bound = target.split()
                met = value >= float(bound) if op == ">=" else value > float(bound)
                lines.append(line + f"{value:.2f}{detail} (target {target}) {'met' if met else 'MISSED'}")
    return lines


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """The median of each server and path over the rounds (requests/s, latencies, CPU time per request), errors
    and requests summed."""
    keys = list(dict.fromkeys((server, path) for results in rounds for server, path, _ in results))
    merged: list[Row] = []
    for server, path in keys:
        found = [r for results in rounds for s, p, r in results if (s, p) == (server, path)]
        merged.append(
            (
                server,
                path,
                Result(
                    statistics.median(r.rps for r in found),
                    statistics.median(r.p50 for r in found),
                    statistics.median(r.p99 for r in found),
                    sum(r.non2xx for r in found),
                    sum(r.socket_errors for r in found),
                    sum(r.requests for r in found),
                    statistics.median(r.cpu_us for r in found),
                ),
            )
        )
    order = {name: i for i, name in enumerate(SERVERS)}
    return sorted(merged, key=lambda row: order[row[0]])


def login_lines(logins: list[float]) -> list[str]:
    """What a login costs: argon2 is slow on purpose, so it is reported apart from the throughput table."""
    if not logins:
        return []
    ordered = sorted(logins)
    p50, p90 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, len(ordered) * 9 // 10)]
    argon2 = argon2_verify_seconds()
    return [
        f"login (POST /api/auth/login, {len(logins)} sequential): p50 {p50 * 1e3:.0f} ms, p90 {p90 * 1e3:.0f} ms, "
        f"{1 / p50:.1f} logins/s per worker; one argon2id verification alone: {argon2 * 1e3:.0f} ms "
        f"({argon2 / p50:.0%} of a login)"
    ]


def report(rounds: list[list[Row]], logins: list[float]) -> None:
    rows: list[tuple[str, ...]] = [
        ("server", "path", "requests/s", "p50 ms", "p99 ms", "CPU us/request", "errors (non-2xx/socket)")
    ]
    for server, path, r in median_rows(rounds):
        numbers = f"{r.rps:,.0f} {r.p50:.2f} {r.p99:.2f} {r.cpu_us:.0f} {r.non2xx}/{r.socket_errors}"
        rows.append((LABELS[server], path, *numbers.split()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(f"{cell:{align}{w}}" for cell, align, w in zip(row, "<<>>>>>", widths, strict=True)))
    if len(rounds) > 1:
        print(f"(medians over {len(rounds)} rounds)")
    print("", *ratio_lines(rounds), *login_lines(logins), sep="\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per path, all rounds (default 10)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per path (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers to run (default: all)")
    parser.add_argument("--paths", default="", help="only these paths of the servers run (default: all of them)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved slices per path; medians reported (default 5)"
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if found")
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    args.paths = [path.strip() for path in args.paths.split(",") if path.strip()]
    if unknown := sorted(set(args.only) - set(SERVERS)):
        parser.error(f"unknown server(s) in --only: {', '.join(unknown)}")
    if args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration, --connections and --rounds must be positive, --warmup not negative")
    if args.generator == "wrk" and not shutil.which("wrk"):
        parser.error("--generator wrk but wrk is not installed")
    return args


def main() -> int:
    args = parse_args()
    generator = args.generator if args.generator != "auto" else ("wrk" if shutil.which("wrk") else "python")
    server_pin, client_pin, pin_note = pinning()
    if client_pin and generator == "python":
        os.sched_setaffinity(0, {1})  # the asyncio client runs in this process
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"cpu: {cpu_model()}")
    print(f"machine speed: {describe(yardsticks())}")
    print(f"versions: {versions()}")
    print(f"pinning: {pin_note}")
    why = "wrk not installed" if args.generator == "auto" else "--generator python"
    gen_note = "wrk -t1" if generator == "wrk" else f"built-in Python asyncio client ({why})"
    timing = (
        f"{args.duration:g} s per path in {args.rounds} interleaved slices of {args.duration / args.rounds:g} s, "
        f"after a {args.warmup:g} s warm-up"
    )
    print(f"load generator: {gen_note}, {args.connections} connections, {timing}")
    names = [s for s in SERVERS if s in args.only]
    with tempfile.TemporaryDirectory(prefix="xcore-bench-") as tmp:
        try:
            rounds, failures, logins = measure_all(names, args, generator, (server_pin, client_pin), Path(tmp))
        except BenchError as exc:
            rounds, failures, logins = [], [str(exc)], []
    print()
    report(rounds, logins)
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # servers are already stopped and the temp dir removed by then
        sys.exit("interrupted")
