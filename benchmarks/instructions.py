"""CPU instructions per request, counted by valgrind (callgrind): a noise-free companion to http.py.

Throughput on a shared machine swings by tens of percent from one second to the next; instruction counts do
not. This runs /api/version in-process (no server, no sockets) through three stacks and counts what one
request costs in each:

- `bare`: the bare Litestar hello app of benchmarks/apps/litestar_hello.py;
- `app`: xcore's Litestar app as build_app makes it, called directly;
- `xcore`: what a worker serves: the Switch (request id, request log) in front of the generation's dispatch
  (core app and plugins' app, built by the plugin manager with one plugin installed);
- `xcore-auth`: like `xcore`, on the admin route /api/admin/system with a Bearer access token, so the request
  also passes the access guard (token check, account lookup, ACCESS_RULES);
- `xcore-plugin`: like `xcore`, on a plugin's hello-world route (`/app/bench`, made public by an access rule),
  so the request goes to the plugins' app;
- `xcore-nometrics`: like `xcore`, with `server.metrics` off: no request is counted for /metrics, and no thread
  flushes the counts (the metrics' whole cost per request is `xcore` minus this).

Each stack runs twice under callgrind, with N and 3N requests after a warm-up, so start-up costs cancel out:
instructions per request = (count(3N) - count(N)) / 2N. The server's own work (Granian) is the same for every
stack and is left out, so the ratios here are a little lower than the throughput ratios of http.py.

`--served` counts what http.py measures instead: bare Litestar and xcore's plugin route served by Granian, each
server started through its real command line under callgrind (every process of its tree), one client sending
N requests on one keep-alive connection. Counters are dumped after a warm-up and after the N requests; the
server then idles as long as the requests took and is dumped again, and that idle work (xcore's task
consumer, the plugin watcher) is subtracted. Valgrind runs a server about 50 times slower, so xcore's request
log, which writes its lines in batches every `FLUSH_AFTER` seconds of wall time, gets that interval scaled by
SLOWDOWN (a sitecustomize on the server's path): its batches stay the size they have in a real run.

    python benchmarks/instructions.py [--requests 2000] [--stacks bare,xcore] [--served]

Needs valgrind (`python3 tasks.py bench` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Python put this folder first on sys.path, where benchmarks/http.py would shadow the standard `http`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import process_tree  # noqa: E402  (after the path is set)

STACKS = ("bare", "app", "xcore", "xcore-auth", "xcore-plugin", "xcore-nometrics")
SERVED = ("bare", "xcore-plugin")
SLOWDOWN = 50  # how much slower a server runs under callgrind, roughly: the request log's flush interval scales by it
BENCH_PLUGIN = {
    "plugin.json": '{"id": "bench", "version": "1.0.0"}',
    "run.py": 'from xcore.sdk import get\n\n\n@get("/")\nasync def hello() -> dict[str, str]:\n'
    '    return {"hello": "world"}\n\n\nrouter = [hello]\n',
}
# The plugin route is public; the long interval keeps the plugin watcher's periodic rescan out of the counts.
BENCH_ENV = {
    "XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/app/bench": {"public": true}}',
    "XCORE_MANAGER__PLUGINS__INTERVAL": "60",
}
BENCH_USER, BENCH_PASSWORD = "bench-admin", "only-for-this-benchmark-42"


async def _drive(stack: str, requests: int) -> None:
    """The measured loop: `requests` GET /api/version (or / for bare) through one stack."""
    from benchmarks.apps.litestar_hello import app as bare

    from xcore.logs import access
    from xcore.plugins.manager import PluginManager
    from xcore.plugins.store import plugins_dir, settled
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database
    from xcore.web.app import build_app
    from xcore.web.calls import direct
    from xcore.web.plugin_apps import PluginApps

    runtime = open_runtime()
    prepare_database(runtime)
    install_bench_plugin(plugins_dir(runtime), settled)
    app = build_app(runtime)
    manager = PluginManager(runtime)
    apps = PluginApps(runtime, manager)
    switch = apps.switch()
    await apps.start(switch)
    served = direct(switch)  # as create_switch hands it to Granian
    targets = {
        "bare": (bare, "/"),
        "app": (app, "/api/version"),
        "xcore": (served, "/api/version"),
        "xcore-auth": (served, "/api/admin/system"),
        "xcore-plugin": (served, "/app/bench"),
        "xcore-nometrics": (served, "/api/version"),
    }
    target, path = targets[stack]
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    if stack == "xcore-auth":
        headers.append((b"authorization", f"Bearer {bench_token(runtime)}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        pass

    for _ in range(200 + requests):  # 200 of warm-up
        await target({**scope, "state": {}}, receive, send)
    access.flush()
    await switch.close()
    await manager.stop()


def install_bench_plugin(folder: Path, settled: Any) -> None:
    """The bench plugin's zip in the plugins folder, written once (a rewrite would be a reload)."""
    import zipfile

    target = folder / "bench-1.0.0.zip"
    if not target.exists():
        with zipfile.ZipFile(target, "w") as archive:
            for name, text in BENCH_PLUGIN.items():
                archive.writestr(name, text)
        settled(target)


def bench_token(runtime: Any) -> str:
    """An access token of the benchmark's superadmin, made at the first run (outside the counted ones).

    The token is signed directly: a login would run argon2 under valgrind, which takes minutes and is not
    what a request costs.
    """
    from sqlalchemy import select

    from xcore.auth import accounts
    from xcore.auth.service import Client
    from xcore.db.models import User

    auth = runtime.auth
    if auth.setup_required():
        accounts.complete_setup(auth, Client(), None, username=BENCH_USER, password=BENCH_PASSWORD)
    with auth.sessions() as session:
        user = session.scalars(select(User).where(User.username == BENCH_USER)).one()
        token, _ = auth.signer.issue(user.id, user.token_version, "bench")
    return token


def count(stack: str, requests: int, data_dir: str) -> int:
    """Total instructions of one run of the loop under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **BENCH_ENV, "XCORE_DATA_DIR": data_dir}
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'app'}"
        if stack == "xcore-nometrics":
            env["XCORE_SERVER__METRICS"] = "false"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--drive",
                stack,
                "--requests",
                str(requests),
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"valgrind failed for {stack}: {done.stderr.strip()[-500:]}")
    return int(found[1])


# --- served requests ------------------------------------------------------------------------------------------

SERVED_READY_TIMEOUT = 600.0  # seconds: xcore takes about a minute to start under callgrind
SERVED_WARMUP = 300


def served_command(stack: str, port: int, data_dir: Path) -> tuple[list[str], str]:
    """The command line that serves `stack` (as benchmarks/http.py starts it) and the path to request."""
    if stack == "bare":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", "benchmarks.apps.litestar_hello:app",
        ], "/"  # fmt: skip
    command = [sys.executable, "-m", "xcore", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--workers", "1", "--data-dir", str(data_dir)], "/app/bench"


def get_requests(port: int, path: str, count: int) -> None:
    """`count` GETs of `path`, one after another on one keep-alive connection; each must answer 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    buffer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for _ in range(count):
            sock.sendall(request)
            while True:
                head, found, rest = buffer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head) if found else None
                if length and len(rest) >= int(length[1]):
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"{path}: {head.splitlines()[0].decode(errors='replace')}")
                    buffer = rest[int(length[1]) :]
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{path}: the server closed the connection")
                buffer += chunk


def dump(pids: list[int], outdir: Path) -> int:
    """Dumps (and zeroes) the counters of every process in `pids`; returns the instructions of the new dumps."""
    before = set(outdir.glob("cg.*.*"))
    subprocess.run(["callgrind_control", "-d", *map(str, pids)], capture_output=True, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(outdir.glob("cg.*.*")) - before
        if len(new) >= len(pids):
            break
        time.sleep(0.2)
    time.sleep(0.5)  # let the last file be written out
    total = 0
    for path in set(outdir.glob("cg.*.*")) - before:
        found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
        total += int(found[1]) if found else 0
    return total


def served_count(stack: str, requests: int) -> tuple[float, int, int]:
    """Instructions per served request of `stack`: (per request, busy total, idle total)."""
    with tempfile.TemporaryDirectory(prefix="xcore-served-") as tmp:
        root = Path(tmp)
        data_dir, outdir, site = root / "data", root / "out", root / "site"
        for folder in (data_dir / "plugins", outdir, site):
            folder.mkdir(parents=True)
        with zipfile.ZipFile(data_dir / "plugins" / "bench-1.0.0.zip", "w") as archive:
            for name, text in BENCH_PLUGIN.items():
                archive.writestr(name, text)
        (site / "sitecustomize.py").write_text(
            "import contextlib\n"
            "with contextlib.suppress(ImportError):\n"
            "    import xcore.logs.access as access\n"
            f"    access.FLUSH_AFTER *= {SLOWDOWN}\n"
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command, path = served_command(stack, port, data_dir)
        env = {**os.environ, **BENCH_ENV, "PYTHONHASHSEED": "0"}
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(ROOT / "app")])
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outdir}/cg.%p", "--trace-children=yes"]
        with open(root / "server.log", "wb") as log:
            proc = subprocess.Popen(
                [*valgrind, *command], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
        try:
            deadline = time.monotonic() + SERVED_READY_TIMEOUT
            while True:
                try:
                    get_requests(port, path, 1)
                    break
                except (OSError, RuntimeError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = (root / "server.log").read_text(errors="replace")[-1500:]
                        sys.exit(f"{stack} did not serve {path}: {tail}")
                    time.sleep(1)
            get_requests(port, path, SERVED_WARMUP)
            pids = process_tree(proc.pid)
            dump(pids, outdir)
            started = time.monotonic()
            get_requests(port, path, requests)
            took = time.monotonic() - started
            busy = dump(pids, outdir)
            time.sleep(took)
            idle = dump(pids, outdir)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return (busy - idle) / requests, busy, idle


def served_main(requests: int, stacks: list[str]) -> int:
    unknown = set(stacks) - set(SERVED)
    if unknown:
        sys.exit(f"unknown served stack(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVED)}")
    per_request: dict[str, float] = {}
    for stack in stacks:
        print(f"serving {stack} under callgrind ...", file=sys.stderr)
        per_request[stack], busy, idle = served_count(stack, requests)
        print(f"  {stack}: {busy:,} instructions for {requests} requests, {idle:,} idle", file=sys.stderr)
    print(f"instructions per served request (callgrind, Granian, {requests} requests on one connection)")
    for stack in stacks:
        ratio = f"   bare / this = {per_request['bare'] / per_request[stack]:.3f}" if "bare" in per_request else ""
        print(f"  {stack:<12} {per_request[stack]:>10,.0f}{ratio}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="N: runs of N and 3N requests (default 2000)")
    parser.add_argument("--stacks", help=f"comma-separated, of {', '.join(STACKS)} (default: all)")
    parser.add_argument("--served", action="store_true", help=f"count served requests ({', '.join(SERVED)})")
    parser.add_argument("--drive", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        sys.path[:0] = [str(ROOT), str(ROOT / "app")]
        asyncio.run(_drive(args.drive, args.requests))
        return 0
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind, or python3 tasks.py bench)")
    if args.served:
        return served_main(args.requests, args.stacks.split(",") if args.stacks else list(SERVED))
    stacks = args.stacks.split(",") if args.stacks else list(STACKS)
    unknown = set(stacks) - set(STACKS)
    if unknown:
        sys.exit(f"unknown stack(s): {', '.join(sorted(unknown))}; choose from {', '.join(STACKS)}")
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="xcore-instr-") as data_dir:
        # Create and migrate the database once, outside the counted runs.
        env = {**os.environ, **BENCH_ENV, "XCORE_DATA_DIR": data_dir}
        subprocess.run(
            [sys.executable, __file__, "--drive", "xcore-auth", "--requests", "0"],
            env=env,
            check=True,
            capture_output=True,
        )
        for stack in stacks:
            print(f"counting {stack} ...", file=sys.stderr)
            low, high = count(stack, args.requests, data_dir), count(stack, 3 * args.requests, data_dir)
            per_request[stack] = (high - low) / (2 * args.requests)
    print(f"instructions per request (callgrind, {args.requests} and {3 * args.requests} requests)")
    for stack in stacks:
        ratio = f"   bare / this = {per_request['bare'] / per_request[stack]:.3f}" if "bare" in per_request else ""
        print(f"  {stack:<12} {per_request[stack]:>10,.0f}{ratio}")
    if {"xcore", "xcore-auth"} <= per_request.keys():
        auth_ratio = per_request["xcore"] / per_request["xcore-auth"]
        print(f"  authenticated admin GET vs /api/version (xcore / xcore-auth) = {auth_ratio:.3f}")
    if {"xcore", "xcore-plugin"} <= per_request.keys():
        plugin_ratio = per_request["xcore"] / per_request["xcore-plugin"]
        print(f"  plugin route vs /api/version (xcore / xcore-plugin) = {plugin_ratio:.3f}")
    if {"xcore", "xcore-nometrics"} <= per_request.keys():
        metrics_ratio = per_request["xcore-nometrics"] / per_request["xcore"]
        print(f"  metrics on vs off (xcore-nometrics / xcore) = {metrics_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
