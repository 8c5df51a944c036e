"""Which process runs the task consumer and the schedule: the one holding the leader lock.

- On one machine (the SQLite queue), the lock is the file `<data>/tasks.lock` (filelock). The operating system
  releases it when the holder dies, however it dies.
- With the Redis queue (several machines), it is a Redis lock with a lease (redis-py's `Lock`, `SET NX PX`),
  renewed every third of the lease by the holder; if the holder dies, the lease runs out and another process
  takes over. A holder that cannot renew in time learns it has lost the lock and stops its consumer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.tasks")
REDIS_KEY = "xcore:tasks:leader"
LEASE = 10.0  # seconds a Redis lease lasts without renewal: a successor takes over within about 12 s


class Leadership(Protocol):
    def acquire(self) -> bool:
        """acquire takes the lock if it is free; returns whether this process holds it now."""

    def release(self) -> None:
        """release gives the lock up (no error if it was lost)."""

    def held_elsewhere(self) -> bool:
        """held_elsewhere is true when another process holds the lock (false when nobody does)."""


class FileLeadership:
    def __init__(self, path: str) -> None:
        # The process holds the lock, not a thread: it is taken in one thread (the start, or the follower) and
        # given up in another (the stop). filelock's default, a hold per thread, ignored such a release.
        self._lock = FileLock(path, thread_local=False)

    def acquire(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    def held_elsewhere(self) -> bool:
        if self._lock.is_locked:
            return False
        probe = FileLock(self._lock.lock_file)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False


class RedisLeadership:
    def __init__(self, client: Any, on_lost: Callable[[], None]) -> None:
        self._client = client
        self._lock = client.lock(REDIS_KEY, timeout=LEASE, thread_local=False)
        self._on_lost = on_lost
        self._held = threading.Event()
        self._released = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._held.set()
        self._released.clear()
        self._renewer = threading.Thread(target=self._renew, name="xcore-task-lease", daemon=True)
        self._renewer.start()
        return True

    def _renew(self) -> None:
        from redis.exceptions import LockError, RedisError

        while not self._released.wait(LEASE / 3):
            try:
                self._lock.reacquire()
            except (LockError, RedisError) as exc:
                log.error("lost the task consumer's lease on Redis (%s); stopping the consumer here", exc,
                          extra={"context": "tasks"})  # fmt: skip
                self._held.clear()
                self._on_lost()
                return

    def release(self) -> None:
        from redis.exceptions import LockError, RedisError

        self._released.set()
        if self._held.is_set():
            self._held.clear()
            with contextlib.suppress(LockError, RedisError):  # the lease ran out meanwhile: nothing to give back
                self._lock.release()

    def held_elsewhere(self) -> bool:
        return not self._held.is_set() and bool(self._client.exists(REDIS_KEY))


def leadership(runtime: Runtime, on_lost: Callable[[], None]) -> Leadership:
    """leadership is the lock that fits the queue: a file next to tasks.db, or a Redis lease."""
    redis = runtime.config.redis
    if redis.active:
        from redis import Redis

        from xcore.tasks.queue import redis_params

        params = redis_params(redis)
        client = Redis.from_url(params["url"]) if "url" in params else Redis(**params)
        return RedisLeadership(client, on_lost)
    return FileLeadership(str(runtime.data.root / "tasks.lock"))
