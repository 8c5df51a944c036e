"""The task queue: Huey on SQLite in `<data>/tasks.db`, with a dequeue that wakes as soon as a task arrives; or
Huey on Redis when the `redis` settings (or REDIS_URL) switch it on, for several machines.

Huey's consumer polls an empty queue with a growing back-off (up to seconds). The SQLite storage here instead
blocks in `dequeue` on a condition that `enqueue` notifies, so a task enqueued in the same process starts at
once; one enqueued by another process (another worker, the CLI) is seen within `POLL` seconds. Huey's Redis
storage blocks in BRPOP, so it wakes at once from any process.

An idle consumer does not query SQLite every `POLL` seconds: it looks at the queue file and its write-ahead log
(size and modification time, one `stat` each) and queries only when they changed since the queue was last seen
empty, or `RECHECK` seconds later at the latest. Those queries were a large share of an idle worker's CPU time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from xcore.config.schema import RedisConfig
from xcore.tasks.lazy_redis import redis_storage_ready

POLL = 0.1  # seconds an idle consumer thread waits before it looks at the queue again
RECHECK = 2.0  # seconds after which an idle consumer queries the queue even if its files look unchanged
QUEUE_NAME = "xcore"


class NotifyingSqliteStorage(SqliteStorage):  # type: ignore[misc, unused-ignore]  # Huey has no type hints
    """NotifyingSqliteStorage is Huey's SQLite storage whose `dequeue` waits for `enqueue` instead of polling."""

    blocking = True  # tells Huey's worker threads not to sleep between empty dequeues: we wait here

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived = threading.Condition()
        self._pending = 0  # enqueues in this process not yet looked for by a dequeue
        self._files = [Path(self.filename), Path(self.filename + "-wal")]
        self._empty_at: tuple[tuple[int, int], ...] | None = None  # the files when the queue was last seen empty
        self._empty_since = 0.0

    def _create_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection = super()._create_connection()
        # WAL with synchronous=NORMAL, as for xcore.db: a commit is durable against a crash of the process, and
        # a power cut can lose only the last moment's queue entries, never corrupt the file. Huey offers only
        # FULL (an fsync per enqueue) or OFF.
        connection.execute("pragma synchronous=1")
        return connection

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        super().enqueue(data, priority)
        with self._arrived:
            self._pending += 1
            self._arrived.notify()

    def dequeue(self) -> bytes | None:
        if self._empty_at is not None:  # idle: wait for an enqueue here, or for the files to change
            with self._arrived:
                if not self._pending:
                    self._arrived.wait(POLL)
                arrived, self._pending = self._pending > 0, 0
            if not arrived and self._files_state() == self._empty_at and time.monotonic() < self._empty_since + RECHECK:
                return None
        state = self._files_state()  # taken before the query: a change after it is seen next time
        data = self._query()
        if data is None:
            self._empty_at, self._empty_since = state, time.monotonic()
        else:
            self._empty_at = None
        return data

    def _query(self) -> bytes | None:
        """_query is Huey's dequeue: the next task's data, taken off the queue, or None."""
        data: bytes | None = super().dequeue()
        return data

    def _files_state(self) -> tuple[tuple[int, int], ...]:
        """_files_state is the size and modification time of the queue file and its write-ahead log."""
        found = []
        for path in self._files:
            try:
                info = path.stat()
            except OSError:
                found.append((-1, -1))
            else:
                found.append((info.st_size, info.st_mtime_ns))
        return tuple(found)


class XcoreHuey(SqliteHuey):  # type: ignore[misc, unused-ignore]  # Huey has no type hints
    storage_class = NotifyingSqliteStorage


def make_queue(path: Path, redis: RedisConfig | None = None) -> Huey:
    """make_queue opens the task queue: in the SQLite file `path` (created when missing), or on Redis when
    `redis` is active."""
    if redis is not None and redis.active:
        redis_storage_ready()
        return RedisHuey(QUEUE_NAME, results=False, utc=True, blocking=True, read_timeout=1, **redis_params(redis))
    path.parent.mkdir(parents=True, exist_ok=True)
    return XcoreHuey(QUEUE_NAME, filename=str(path), results=False, utc=True, timeout=10.0)


def redis_params(redis: RedisConfig) -> dict[str, Any]:
    """redis_params are the connection settings: the URL when set, else host, port, db and password."""
    if redis.url:
        return {"url": redis.url}
    return {"host": redis.host, "port": redis.port, "db": redis.db, "password": redis.password}
