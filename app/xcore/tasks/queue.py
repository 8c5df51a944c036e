"""The task queue: Huey on SQLite in `<data>/tasks.db`, with a dequeue that wakes as soon as a task arrives.

Huey's consumer polls an empty queue with a growing back-off (up to seconds). This storage instead blocks in
`dequeue` on a condition that `enqueue` notifies, so a task enqueued in the same process starts at once. A task
enqueued by another process (another worker, the CLI) is seen within `POLL` seconds.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.storage import SqliteStorage

POLL = 0.1  # seconds an idle consumer thread waits before it looks at the queue again
QUEUE_NAME = "xcore"


class NotifyingSqliteStorage(SqliteStorage):
    """NotifyingSqliteStorage is Huey's SQLite storage whose `dequeue` waits for `enqueue` instead of polling."""

    blocking = True  # tells Huey's worker threads not to sleep between empty dequeues: we wait here

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived = threading.Condition()

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
            self._arrived.notify()

    def dequeue(self) -> bytes | None:
        data: bytes | None = super().dequeue()
        if data is None:
            with self._arrived:
                self._arrived.wait(POLL)
            data = super().dequeue()
        return data


class XcoreHuey(SqliteHuey):
    storage_class = NotifyingSqliteStorage


def make_queue(path: Path) -> XcoreHuey:
    """make_queue opens the task queue in the SQLite file `path` (created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return XcoreHuey(QUEUE_NAME, filename=str(path), results=False, utc=True, timeout=10.0)
