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
  so the request goes to the plugins' app.

Each stack runs twice under callgrind, with N and 3N requests after a warm-up, so start-up costs cancel out:
instructions per request = (count(3N) - count(N)) / 2N. The server's own work (Granian) is the same for every
stack and is left out, so the ratios here are a little lower than the throughput ratios of http.py.

    python benchmarks/instructions.py [--requests 2000]

Needs valgrind (`python3 tasks.py bench` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Python put this folder first on sys.path, where benchmarks/http.py would shadow the standard `http`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
STACKS = ("bare", "app", "xcore", "xcore-auth", "xcore-plugin")
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
    from xcore.web.switch import Switch

    runtime = open_runtime()
    prepare_database(runtime)
    install_bench_plugin(plugins_dir(runtime), settled)
    app = build_app(runtime)
    manager = PluginManager(runtime)
    switch = Switch(startup=manager.start)
    await manager.start(switch)
    targets = {
        "bare": (bare, "/"),
        "app": (app, "/api/version"),
        "xcore": (switch, "/api/version"),
        "xcore-auth": (switch, "/api/admin/system"),
        "xcore-plugin": (switch, "/app/bench"),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="N: runs of N and 3N requests (default 2000)")
    parser.add_argument("--drive", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        sys.path[:0] = [str(ROOT), str(ROOT / "app")]
        asyncio.run(_drive(args.drive, args.requests))
        return 0
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind, or python3 tasks.py bench)")
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
        for stack in STACKS:
            print(f"counting {stack} ...", file=sys.stderr)
            low, high = count(stack, args.requests, data_dir), count(stack, 3 * args.requests, data_dir)
            per_request[stack] = (high - low) / (2 * args.requests)
    print(f"instructions per request (callgrind, {args.requests} and {3 * args.requests} requests)")
    for stack in STACKS:
        ratio = per_request["bare"] / per_request[stack]
        print(f"  {stack:<10} {per_request[stack]:>10,.0f}   bare / this = {ratio:.3f}")
    auth_ratio = per_request["xcore"] / per_request["xcore-auth"]
    print(f"  authenticated admin GET vs /api/version (xcore / xcore-auth) = {auth_ratio:.3f}")
    plugin_ratio = per_request["xcore"] / per_request["xcore-plugin"]
    print(f"  plugin route vs /api/version (xcore / xcore-plugin) = {plugin_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
