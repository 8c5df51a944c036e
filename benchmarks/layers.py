"""The request path in process, layer by layer: what each of xcore's layers adds to bare Litestar, in µs.

`instructions.py` counts the same path noise-free but takes about 20 minutes under valgrind; this times it in a
minute, well enough to say which layer a change should look at. It drives ASGI apps directly on one event loop (no
server, no socket), a hello-world GET each:

- `bare`: the bare Litestar app of benchmarks/apps/litestar_hello.py, called as Granian calls it;
- `plugin-app`: a plugin's app (the bench plugin's route, public by an access rule), called the same way:
  `Litestar.__call__`, its error layer, the access guard, the router;
- `entered`: the same app entered as the Dispatch enters it (`web.dispatch.entry`: the guard, then the router);
- `dispatch`: the generation's Dispatch, which finds the plugin's app by the path's prefix and enters it;
- `logged`: bare Litestar behind the Switch's request coroutine alone (`web.requestlog.logged`): the request id,
  the security headers, the metrics count and the request line;
- `logged-nolog`, `logged-nometrics`: the same with request lines off (the `xcore.api` logger at WARNING) or
  with the count off (`server.metrics` false), so the coroutine's own work is `logged` minus both parts;
- `xcore`: the worker's whole path to the plugin route: the Switch, `logged`, the Dispatch, the plugin's app;
- `version`, `admin`: the worker's whole path to the core app's public `/api/version` and to `/api/admin/system`
  with an admin's Bearer token (the access guard checks it); `version` ÷ `admin` is http.py's authenticated
  admin GET ratio, in process.

Each stack serves `--requests` requests per slice, and the slices are interleaved over `--rounds` rounds, so the
machine's drifts hit every stack alike. The table gives, per stack, the least time per request of any slice (the
slice least disturbed by the machine's neighbours), its difference to `bare` and bare ÷ this. Request lines are
written as in production (xcore's own log setup: to the console, here sent to /dev/null, and to the log file);
the send of each response goes nowhere, so Granian's share of a served request is left out and the ratios are
lower than served ones. What a layer costs when served is in benchmarks/README.md.

    python benchmarks/layers.py [--requests 3000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Python put this folder first on sys.path, where benchmarks/http.py would shadow the standard `http`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]

from benchmarks.instructions import BENCH_ENV, bench_token, install_bench_plugin  # noqa: E402  (path set above)

STACKS = (
    "bare", "plugin-app", "entered", "dispatch", "logged", "logged-nolog", "logged-nometrics", "xcore", "version",
    "admin",
)  # fmt: skip
PLUGIN_PATH = "/app/bench"
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]

Stack = tuple[Callable[..., Any], str, Callable[[], contextlib.AbstractContextManager[None]]]


def scope_of(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The scope Granian gives a GET of `path` (a fresh one per request: the apps write into it)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
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
        "state": {},
    }


@contextlib.contextmanager
def as_is() -> Iterator[None]:
    yield


@contextlib.contextmanager
def request_lines_off() -> Iterator[None]:
    """Request lines off, as `xcore.logs.level` WARNING would have them; the fast path re-reads the level."""
    from xcore.logs import access

    logger = logging.getLogger("xcore.api")
    level = logger.level
    logger.setLevel(logging.WARNING)
    access.attach()
    try:
        yield
    finally:
        logger.setLevel(level)
        access.attach()


@contextlib.contextmanager
def counting_off() -> Iterator[None]:
    from xcore.web.requestlog import count_requests

    count_requests(False)
    try:
        yield
    finally:
        count_requests(True)


async def measure(requests: int, rounds: int, only: list[str]) -> dict[str, float]:
    """The least µs per request of each stack over `rounds` interleaved slices of `requests` requests."""
    from benchmarks.apps.litestar_hello import app as bare

    from xcore.logs import access
    from xcore.plugins.manager import PluginManager
    from xcore.plugins.store import plugins_dir, settled
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database
    from xcore.web.calls import direct
    from xcore.web.plugin_apps import PluginApps
    from xcore.web.requestlog import logged
    from xcore.web.switch import Generation

    runtime = open_runtime()
    prepare_database(runtime)
    install_bench_plugin(plugins_dir(runtime), settled)
    manager = PluginManager(runtime)
    apps = PluginApps(runtime, manager)
    switch = apps.switch()
    await apps.start(switch)
    dispatch = switch.app
    plugin_app, enter = dispatch._prefixes[PLUGIN_PATH]  # the bench plugin's app and how the Dispatch enters it
    behind = Generation(bare, 0)
    authorized = [*HEADERS, (b"authorization", f"Bearer {bench_token(runtime)}".encode())]

    def entered(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope["app"] = scope["litestar_app"] = plugin_app  # as the Dispatch sets them
        return enter(scope, receive, send)

    def log_only(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return logged(behind, scope, receive, send)

    stacks: dict[str, Stack] = {
        "bare": (bare, "/", as_is),
        "plugin-app": (plugin_app, PLUGIN_PATH, as_is),
        "entered": (entered, PLUGIN_PATH, as_is),
        "dispatch": (direct(dispatch), PLUGIN_PATH, as_is),
        "logged": (log_only, "/", as_is),
        "logged-nolog": (log_only, "/", request_lines_off),
        "logged-nometrics": (log_only, "/", counting_off),
        "xcore": (direct(switch), PLUGIN_PATH, as_is),
        "version": (direct(switch), "/api/version", as_is),
        "admin": (direct(switch), "/api/admin/system", as_is),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    best = dict.fromkeys(only, float("inf"))
    for n in range(rounds + 1):  # the first round warms up and is not counted
        for name in only:
            app, path, setting = stacks[name]
            headers = authorized if name == "admin" else HEADERS
            with setting():
                start = time.perf_counter()
                for _ in range(requests):
                    await app(scope_of(path, headers), receive, send)
                elapsed = (time.perf_counter() - start) / requests * 1e6
            access.flush()
            if n:
                best[name] = min(best[name], elapsed)
    await switch.close()
    await manager.stop()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per slice (default 3000)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved slices per stack (default 15)")
    parser.add_argument("--stacks", help=f"comma-separated, of {', '.join(STACKS)} (default: all)")
    args = parser.parse_args()
    only = args.stacks.split(",") if args.stacks else list(STACKS)
    unknown = set(only) - set(STACKS)
    if unknown:
        sys.exit(f"unknown stack(s): {', '.join(sorted(unknown))}; choose from {', '.join(STACKS)}")
    if "bare" not in only:
        only.insert(0, "bare")
    with tempfile.TemporaryDirectory(prefix="xcore-layers-") as data_dir:
        os.environ.update(BENCH_ENV)
        os.environ["XCORE_DATA_DIR"] = data_dir
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the console's request lines
            best = asyncio.run(measure(args.requests, args.rounds, only))
    print(f"µs per request in process (least of {args.rounds} slices of {args.requests} requests)")
    print(f"  {'stack':<18} {'µs':>7} {'+ bare':>7}  bare / this")
    for name in only:
        print(f"  {name:<18} {best[name]:7.2f} {best[name] - best['bare']:+7.2f}  {best['bare'] / best[name]:.3f}")
    if {"version", "admin"} <= best.keys():
        print(f"  authenticated admin GET vs /api/version (version / admin) = {best['version'] / best['admin']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
