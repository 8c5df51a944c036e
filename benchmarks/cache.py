"""`ctx.cache` (`xcore.plugins.cache`): a plugin cache's get, set and aget on each store (memory, file, Redis),
side by side with a plain dict's get and with making the cached value again.

One `CacheStores` per backend in this process: `memory`, `file` (in a temporary folder) and `redis` (a real
redis-server started on a free port of 127.0.0.1 for the run, as tests/test_tasks_redis.py starts it). Each
cache holds one small JSON value (a dict of 20 numbers and two strings, about 130 bytes encoded) under one key.
A round times, in turns, `--ops` calls of each operation on each store, and the two yardsticks:

- `dict get`: `plain.get(key)` on a Python dict, the floor of any lookup;
- `recompute`: building the value and `json.dumps` of it, what a cache saves when the value is this cheap to
  make.

The table gives each operation's microseconds per call (the median over `--rounds` of each round's mean) and
its ratio to both yardsticks. Every sync call hops to the cache's own event-loop thread and waits for it
(`CacheStores.call`), so even a memory-store get costs tens of microseconds, not the dict's tenth of one; an
`aget` hops too, and the caller's loop waits on the result. No target is enforced.

    .venv/bin/python benchmarks/cache.py [--rounds 5] [--ops 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Python put this folder first on sys.path, where benchmarks/http.py would shadow the standard `http`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from xcore.config.schema import RedisConfig  # noqa: E402
from xcore.plugins.cache import CacheStores, PluginCache  # noqa: E402

BACKENDS = ["memory", "file", "redis"]
KEY = "report"


def make_value() -> dict[str, Any]:
    """make_value is the small JSON value the caches hold, made afresh."""
    return {"user": 42, "name": "bench", "totals": [i * i for i in range(20)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """redis_server runs a redis-server on a free port of 127.0.0.1 while the block runs; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is missing: apt-get install redis-server")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def per_call(action: Callable[[], object], ops: int) -> float:
    """per_call is the mean seconds of `ops` calls of `action`."""
    started = time.perf_counter()
    for _ in range(ops):
        action()
    return (time.perf_counter() - started) / ops


def per_acall(cache: PluginCache, ops: int) -> float:
    """per_acall is the mean seconds of `ops` awaited `cache.aget` calls, on a loop of this thread."""

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(ops):
            await cache.aget(KEY)
        return (time.perf_counter() - started) / ops

    return asyncio.run(run())


def operations(name: str, cache: PluginCache, value: dict[str, Any], ops: int) -> dict[str, Callable[[], float]]:
    """operations is the timed get, set and aget of one store's cache, by name."""
    return {
        f"{name} get": lambda: per_call(lambda: cache.get(KEY), ops),
        f"{name} set": lambda: per_call(lambda: cache.set(KEY, value, ttl=600), ops),
        f"{name} aget": lambda: per_acall(cache, ops),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000, help="calls of each operation per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcore-bench-cache-") as tmp, redis_server(Path(tmp)) as url:
        stores = {name: CacheStores(name, folder=Path(tmp) / "store", redis=RedisConfig(url=url)) for name in BACKENDS}
        caches = {name: found.plugin("bench") for name, found in stores.items()}
        value = make_value()
        plain = {KEY: value}
        for cache in caches.values():
            cache.set(KEY, value)
            if cache.get(KEY) != value:
                raise SystemExit(f"the {cache.backend} cache did not keep the value")
        actions: dict[str, Callable[[], float]] = {
            "dict get": lambda: per_call(lambda: plain.get(KEY), args.ops),
            "recompute": lambda: per_call(lambda: json.dumps(make_value()), args.ops),
        }
        for name, cache in caches.items():
            actions.update(operations(name, cache, value, args.ops))
        for action in actions.values():  # warm-up: the loops' threads, the connections, the files
            action()
        times: dict[str, list[float]] = {name: [] for name in actions}
        for round_ in range(args.rounds):
            names = list(actions) if round_ % 2 == 0 else list(actions)[::-1]
            for name in names:
                times[name].append(actions[name]())
        for found in stores.values():
            found.close()
    p50 = {name: statistics.median(values) * 1e6 for name, values in times.items()}
    print(f"one ~{len(json.dumps(value))}-byte JSON value; {args.rounds} rounds of {args.ops} calls each")
    print(f"{'operation':<14}{'p50':>12}{'÷ dict get':>13}{'÷ recompute':>14}")
    for name, micro in p50.items():
        print(f"{name:<14}{micro:>9.2f} µs{micro / p50['dict get']:>12.0f}x{micro / p50['recompute']:>13.2f}x")


if __name__ == "__main__":
    main()
