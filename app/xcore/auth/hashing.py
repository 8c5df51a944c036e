"""The password-hashing pool: argon2 runs on a few dedicated threads, with a bounded queue in front of them.

argon2id is slow and memory-hard on purpose (see `passwords.py`: 46 MiB, one pass, one lane, on one
core). Run on the threads that serve every other synchronous route, a flood of wrong passwords from many
addresses (each one under the address lockout) took all of them and all the memory it could. Here every request
that hashes or verifies a password takes a place first: with `workers` places hashing and `queue` waiting, the next
request is refused at once with `Busy` (503 and Retry-After) before it touches the database. So hashing uses at most
`workers` times the hasher's memory cost, and holds at most `workers + queue` request threads. Those matter:
Litestar runs synchronous routes (`/health` too) on the event loop's default executor, which has only the CPUs + 4
threads (at most 32), so places beyond that would let logins take every thread again; the pool never takes more
than half of them, whatever the settings say.

The hashing threads lower their own CPU priority (Linux: nice + `NICE`, which argon2's lane threads inherit, as
they are started by the hashing thread), so that while the cores are busy hashing, the routes that do not hash
keep their latency. argon2 (in `passwords.py`) is imported at the first job, not when a process starts.

Tests hash with argon2's cheapest parameters instead (`cheap_hashing`, entered by the project's tests and by
`xcore.testing`): a hash then costs next to nothing, in time and in memory. No setting, environment variable or
argument of the app leads there. A hash made that way still verifies with the production hasher, as argon2 writes
its parameters into each hash; it only "needs rehash", so the next login would upgrade it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from xcore.auth.errors import Busy
from xcore.config.schema import HashingConfig

if TYPE_CHECKING:
    from argon2 import PasswordHasher

T = TypeVar("T")

log = logging.getLogger("xcore.auth")

NICE = 10  # added to the hashing threads' nice value: they yield the CPU to every other thread of the server

# The hasher every pool uses instead of `passwords.HASHER` while set; only `cheap_hashing` sets it, to `_cheap`.
_test_hasher: PasswordHasher | None = None
_cheap: list[PasswordHasher] = []  # made once, at the first `cheap_hashing`


@contextlib.contextmanager
def cheap_hashing(cheap: bool = True) -> Iterator[None]:
    """cheap_hashing makes every HashPool hash and verify with argon2's cheapest parameters (8 KiB, one pass, one
    lane) until the block ends; `cheap_hashing(False)` brings back the production ones (`passwords.HASHER`) for
    the block. For tests only: a test that checks or measures the production cost runs under the latter."""
    global _test_hasher
    if cheap and not _cheap:
        from argon2 import PasswordHasher

        _cheap.append(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    before, _test_hasher = _test_hasher, (_cheap[0] if cheap else None)
    try:
        yield
    finally:
        _test_hasher = before


class HashPool:
    """HashPool runs password hashing and verification on `config.workers` dedicated threads.

    `reserve()` takes a place (hashing or waiting) for the calling request, or raises `Busy` at once when all
    `workers + queue` places are taken; `verify` and `hash` take one on their own unless the calling thread holds
    one already, so a request that verifies and then rehashes counts once. The threads start with the first job.
    """

    def __init__(self, config: HashingConfig, request_threads: int | None = None) -> None:
        # Half the request threads at most, whatever the settings say: the other half serves every other route.
        threads = request_threads or default_request_threads()
        most = max(1, threads // 2)
        self.places = min(config.workers + config.queue, most)
        self.workers = min(config.workers, self.places)
        if self.places < config.workers + config.queue:  # the defaults too, on a machine with one CPU: not a warning
            log.info(
                "secure.hashing: workers %d + queue %d would take more than half of the %d request threads; "
                "using %d workers and %d places in all",
                config.workers,
                config.queue,
                threads,
                self.workers,
                self.places,
            )
        self._lock = threading.Lock()
        self._taken = 0
        self._held = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._seconds = 0.3  # recent time of one job, for Retry-After; a first guess until one is measured

    @property
    def hasher(self) -> PasswordHasher:
        """hasher is argon2 with the production parameters (`passwords.HASHER`), or the cheap one of `cheap_hashing`."""
        from xcore.auth.passwords import HASHER

        return _test_hasher or HASHER

    @property
    def memory_bound(self) -> int:
        """memory_bound is the most memory hashing can use at once, in bytes: `workers` times argon2's memory cost."""
        return self.workers * self.hasher.memory_cost * 1024

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        """reserve holds a place in the pool for the calling thread until the block ends, or raises Busy."""
        depth = getattr(self._held, "depth", 0)
        if depth == 0:
            with self._lock:
                if self._taken >= self.places:
                    seconds = max(1, math.ceil(self._seconds * self.places / self.workers))
                    raise Busy(
                        f"the server is busy checking other passwords; try again in {seconds} seconds",
                        retry_after=seconds,
                    )
                self._taken += 1
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth
            if depth == 0:
                with self._lock:
                    self._taken -= 1

    def verify(self, stored_hash: str | None, password: str) -> tuple[bool, bool]:
        """verify is `passwords.verify_password` run in the pool: (matches, needs_rehash). Raises Busy."""
        from xcore.auth.passwords import verify_password

        return self._run(verify_password, stored_hash, password, self.hasher)

    def hash(self, password: str) -> str:
        """hash is `passwords.hash_password` run in the pool. Raises Busy."""
        from xcore.auth.passwords import hash_password

        return self._run(hash_password, password, self.hasher)

    def close(self) -> None:
        """close lets the threads end once their jobs are done; a later job starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def _run(self, job: Callable[..., T], *args: object) -> T:
        with self.reserve():
            future = self._pool().submit(_timed, job, *args)
            result, seconds = future.result()
        self._seconds = 0.7 * self._seconds + 0.3 * seconds
        return result

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.workers, thread_name_prefix="xcore-hash", initializer=_lower_priority
                )
            return self._executor


def default_request_threads() -> int:
    """default_request_threads is the size of asyncio's default executor, on which Litestar runs synchronous routes."""
    return min(32, (os.cpu_count() or 1) + 4)


def _timed(job: Callable[..., T], *args: object) -> tuple[T, float]:
    start = time.perf_counter()
    return job(*args), time.perf_counter() - start


def _lower_priority() -> None:
    """_lower_priority renices the calling thread only (on Linux a thread id names one thread here)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICE))
