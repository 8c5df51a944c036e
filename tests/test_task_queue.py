"""The SQLite task queue's dequeue: it wakes at once for an enqueue in its process, sees one from another process
within POLL seconds, and queries SQLite only when the queue's files changed while it is idle.

Two storages on one file stand for two processes: they share nothing but the file, as two workers do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xcore.tasks.queue import RECHECK, NotifyingSqliteStorage


class Counted(NotifyingSqliteStorage):
    """Counted counts the queries `dequeue` makes."""

    queries = 0

    def _query(self) -> bytes | None:
        self.queries += 1
        return super()._query()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Counted, Counted]]:
    path = str(tmp_path / "tasks.db")
    here, there = Counted("xcore", filename=path), Counted("xcore", filename=path)
    yield here, there
    here.close()
    there.close()


def dequeue_within(storage: NotifyingSqliteStorage, seconds: float) -> tuple[bytes | None, float]:
    """dequeue_within calls dequeue as Huey's worker thread does until it returns data or `seconds` pass."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        data = storage.dequeue()
        if data is not None:
            return data, time.monotonic() - start
    return None, time.monotonic() - start


def test_an_idle_queue_is_not_queried_at_every_poll(pair: tuple[Counted, Counted]) -> None:
    here, _ = pair
    assert dequeue_within(here, 1.0)[0] is None
    # A query to see it empty (two: the first one's connection creates the write-ahead log, a change of the
    # files); then only a stat of each file every POLL until RECHECK is up. Polling queried 10 times a second.
    assert here.queries <= 2
    before = here.queries
    assert dequeue_within(here, RECHECK + 0.5)[0] is None
    assert 1 <= here.queries - before <= 2


def test_a_task_enqueued_in_this_process_is_dequeued_at_once(pair: tuple[Counted, Counted]) -> None:
    here, _ = pair
    assert dequeue_within(here, 0.3)[0] is None  # idle
    here.enqueue(b"local")
    start = time.monotonic()
    assert here.dequeue() == b"local"  # the next call, without waiting for a poll
    assert time.monotonic() - start < 1.0


def test_a_task_enqueued_by_another_process_is_seen_within_a_poll(pair: tuple[Counted, Counted]) -> None:
    here, there = pair
    assert dequeue_within(here, 0.5)[0] is None  # idle, and has seen the files
    for n in range(5):
        there.enqueue(b"remote %d" % n)
        start = time.monotonic()
        # One call: it waits a poll for an enqueue here, sees the files changed, and queries.
        assert here.dequeue() == b"remote %d" % n
        assert time.monotonic() - start < RECHECK  # not the fallback query
    assert dequeue_within(here, 0.3)[0] is None
