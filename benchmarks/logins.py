"""A login flood against a real `xcore serve`: how `/health` answers while many clients send wrong passwords.

The server runs from source with one worker on a fresh data dir, behind 127.0.0.1 as a trusted proxy, so each
client has an address of its own (10.0.0.k in X-Forwarded-For). `--clients` clients each send wrong passwords
for random names, together about `--rate` logins/s, on a fixed schedule whatever the answers (an attacker does
not wait): over `--duration` seconds each client stays under the address lockout (20 failures) and no name
is tried twice, so the lockout never turns them away and every attempt reaches the password check. Meanwhile a
probe asks `/health` every 50 ms, and a real user logs in with the right password every 2 s. The worker's RSS
is sampled every 100 ms: before the flood, during it and after it.

    python benchmarks/logins.py [--clients 50] [--rate 6] [--duration 30]
                                [--workers N] [--queue N] [--checkout DIR] [--label TEXT]

`--workers`/`--queue` set `secure.hashing` (the password-hashing pool); `--checkout DIR` serves another checkout
of xcore (e.g. `git worktree add /tmp/old HEAD`) to compare with, and then leaves the settings alone.

Targets (issue 21): `/health` p99 below 100 ms during the flood, worker RSS growth below 50 MB.

Careful: Python puts this folder first on sys.path, where http.py would shadow the standard `http` package: this
script imports nothing that needs it and speaks raw sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from machine import cpu_model, describe, process_tree, yardsticks

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "flood-owner", "only-for-this-benchmark-42"
PROBE_EVERY = 0.05
USER_EVERY = 2.0
RSS_EVERY = 0.1
SETTLE = 3.0  # seconds of quiet before the flood (the baseline) and after it
TIMEOUT = 30.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def xcore_command(checkout: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command that runs xcore's CLI (this checkout's, or `checkout`'s from source) and its environment."""
    env = dict(os.environ)
    if checkout is None:
        exe = Path(sys.executable).with_name("xcore")
        return ([str(exe)] if exe.exists() else [sys.executable, "-m", "xcore"]), env
    env["PYTHONPATH"] = str(checkout / "app") + os.pathsep + env.get("PYTHONPATH", "")
    return [sys.executable, "-m", "xcore"], env


async def request(port: int, raw: bytes) -> tuple[int, float]:
    """One request over a new connection: (status, seconds); status 0 for a socket error or a timeout."""
    start = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                await reader.readexactly(int(lower[at + 17 : lower.index(b"\r\n", at + 2)]))
            return int(head[9:12]), time.perf_counter() - start
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return 0, time.perf_counter() - start
    finally:
        if writer is not None:
            writer.close()


def post(path: str, body: dict[str, str], address: str) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Forwarded-For: {address}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


async def every(
    seconds: float,
    until: float,
    job: Callable[[], Awaitable[tuple[int, float]]],
    results: list[tuple[int, float]],
    offset: float = 0.0,
) -> None:
    """every starts `job()` each `seconds` from `offset` seconds on until `until`, without waiting for the last one,
    and collects the answers."""
    pending = []
    next_at = time.perf_counter() + offset
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        pending.append(asyncio.ensure_future(job()))
        next_at += seconds
    results.extend(await asyncio.gather(*pending))


async def phase(port: int, seconds: float, clients: int, rate: float) -> dict[str, list[tuple[int, float]]]:
    """One phase: the /health probe, the real user and (`clients` > 0) the flood, for `seconds`."""
    until = time.perf_counter() + seconds
    out: dict[str, list[tuple[int, float]]] = {"health": [], "user": [], "flood": []}
    jobs = [
        every(PROBE_EVERY, until, lambda: request(port, HEALTH), out["health"]),
        every(
            USER_EVERY,
            until,
            lambda: request(port, post("/api/auth/login", {"username": USER, "password": PASSWORD}, "10.1.0.1")),
            out["user"],
        ),
    ]
    for k in range(clients):

        def attempt(k: int = k) -> Awaitable[tuple[int, float]]:
            body = {"username": f"guess-{secrets.token_hex(6)}", "password": secrets.token_urlsafe(12)}
            return request(port, post("/api/auth/login", body, f"10.0.{k // 250}.{k % 250 + 1}"))

        period = clients / rate  # each client's; their schedules are spread over it
        jobs.append(every(period, until, attempt, out["flood"], offset=random.random() * period))
    await asyncio.gather(*jobs)
    return out


class RssSampler(threading.Thread):
    """RssSampler samples the RSS of the server's worker processes every RSS_EVERY seconds, with a phase label."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.label, self.samples = pid, "before", []  # type: list[tuple[str, float]]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(RSS_EVERY):
            workers = [p for p in process_tree(self.pid) if p != self.pid]
            total = 0
            for pid in workers:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            if total:
                self.samples.append((self.label, total / 1024))

    def of(self, label: str) -> list[float]:
        return [mb for lab, mb in self.samples if lab == label]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def serve(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    command, env = xcore_command(args.checkout)
    data = tmp / "data"
    created = subprocess.run(
        [*command, "user", "create", USER, "--superadmin", "--password-stdin", "--data-dir", str(data)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=120,
    )
    if created.returncode != 0:
        raise SystemExit(f"xcore user create failed: {created.stderr.strip()}")
    env["XCORE_SERVER__TRUSTED_PROXIES"] = '["127.0.0.1"]'
    env["XCORE_XCORE__LOGS__CONSOLE"] = "false"
    if args.workers is not None:
        env["XCORE_SECURE__HASHING__WORKERS"] = str(args.workers)
    if args.queue is not None:
        env["XCORE_SECURE__HASHING__QUEUE"] = str(args.queue)
    port = free_port()
    log = open(tmp / "server.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--data-dir", str(data)],
        env=env,
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"xcore exited: {log.read().decode(errors='replace')[-2000:]}")
        if asyncio.run(request(port, HEALTH))[0] == 200:
            return proc, port
        time.sleep(0.2)
    raise SystemExit("xcore did not answer /health within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def report(args: argparse.Namespace, runs: dict[str, dict[str, list[tuple[int, float]]]], rss: RssSampler) -> None:
    print(
        f"{'phase':<8} {'/health p50 ms':>14} {'p99 ms':>8} {'max ms':>8} {'failed':>6}  "
        f"{'user logins ok':>14}  {'flood answers (status: count, median s)':<40}"
    )
    for label, out in runs.items():
        ms = [s * 1e3 for status, s in out["health"]]
        failed = sum(1 for status, _ in out["health"] if status != 200)
        user_ok = f"{sum(1 for status, _ in out['user'] if status == 200)}/{len(out['user'])}"
        by_status: dict[int, list[float]] = {}
        for status, s in out["flood"]:
            by_status.setdefault(status, []).append(s)
        flood = ", ".join(
            f"{status or 'error'}: {len(v)}, {statistics.median(v):.2f}" for status, v in sorted(by_status.items())
        )
        print(
            f"{label:<8} {statistics.median(ms):>14.1f} {percentile(ms, 0.99):>8.1f} {max(ms):>8.1f} {failed:>6}  "
            f"{user_ok:>14}  {flood or '-'}"
        )
    before, during, after = rss.of("before"), rss.of("flood"), rss.of("after")
    base = statistics.median(before) if before else float("nan")
    peak = max(during) if during else float("nan")
    print()
    print(
        f"worker RSS: before {base:.1f} MB, during the flood median {statistics.median(during):.1f} MB and peak "
        f"{peak:.1f} MB (+{peak - base:.1f} MB), after {statistics.median(after):.1f} MB"
    )
    health = [s * 1e3 for _, s in runs["flood"]["health"]]
    verdicts = [
        ("/health p99 during the flood", percentile(health, 0.99), 100.0, "ms"),
        ("worker RSS growth (peak during the flood - before)", peak - base, 50.0, "MB"),
    ]
    for what, value, target, unit in verdicts:
        print(f"{what}: {value:.1f} {unit} (target < {target:g} {unit}) {'met' if value < target else 'MISSED'}")


def _or_default(value: int | None) -> str:
    return "default" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=6.0, help="wrong logins per second, all clients together")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, help="secure.hashing.workers (default: the setting's default)")
    parser.add_argument("--queue", type=int, help="secure.hashing.queue (default: the setting's default)")
    parser.add_argument("--checkout", type=Path, help="serve this checkout of xcore instead (from source)")
    parser.add_argument("--label", default="", help="a name for this run in the report")
    args = parser.parse_args()
    if args.checkout is not None and (args.workers is not None or args.queue is not None):
        parser.error("--workers and --queue set this checkout's settings; --checkout serves another one")
    sticks = yardsticks()
    print(f"{args.label or 'login flood'}: {cpu_model()}; {describe(sticks)}")
    print(
        f"{args.clients} clients, {args.rate:g} wrong logins/s in all, {args.duration:g} s; "
        f"server: {args.checkout or ROOT} "
        f"(secure.hashing workers={_or_default(args.workers)}, queue={_or_default(args.queue)})"
    )
    with tempfile.TemporaryDirectory(prefix="xcore-logins-") as tmp:
        proc, port = serve(args, Path(tmp))
        rss = RssSampler(proc.pid)
        rss.start()
        try:
            runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
            runs["before"] = asyncio.run(phase(port, SETTLE * 2, 0, args.rate))
            rss.label = "flood"
            runs["flood"] = asyncio.run(phase(port, args.duration, args.clients, args.rate))
            rss.label = "drain"
            time.sleep(SETTLE)
            rss.label = "after"
            runs["after"] = asyncio.run(phase(port, SETTLE, 0, args.rate))
        finally:
            rss.done.set()
            rss.join()
            stop(proc)
    report(args, runs, rss)


if __name__ == "__main__":
    main()
