"""The run journal: one row of `task_runs` per run, because Huey forgets a task when it dequeues it.

A run goes queued → started → succeeded | failed | dropped, `retrying` between attempts, all on the same row;
a run that a process which died left `started` becomes `interrupted`. The pickled arguments stay on the row, so
an interrupted run can be queued again.
"""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from xcore.db.models import Base, TaskRun, as_utc

if TYPE_CHECKING:
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
ARGS_SUMMARY = 500
RUNS = Base.metadata.tables["task_runs"]
INSERT_RUN = insert(RUNS)  # built once; the parameters come with each execution


class Journal:
    """Journal writes and reads the `task_runs` rows of the core database of `runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def queued(self, name: str, plugin_id: str | None, args: list[Any], kwargs: dict[str, Any], task_id: str) -> int:
        """queued records a new run of `name`, queued as Huey's task `task_id`; returns the run's id."""
        summary = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        row = {
            "task_id": task_id, "name": name, "plugin_id": plugin_id, "args": summary[:ARGS_SUMMARY],
            "payload": pickle.dumps((args, kwargs)), "status": "queued", "attempt": 0, "enqueued_at": now(),
        }  # fmt: skip
        with self.runtime.engine.begin() as connection:  # a Core insert: the ORM's unit of work costs more here
            inserted = connection.execute(INSERT_RUN, row).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    def update(self, run_id: int, **values: Any) -> None:
        """update sets these columns of run `run_id`. It never raises: it runs in consumer threads, which an
        unwritable journal must not take down (the error is logged)."""
        try:
            with self.runtime.engine.begin() as connection:  # Core, like the insert: two of these per run
                connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(**values))
        except Exception:
            log.exception("cannot journal task run %d", run_id, extra=CONTEXT)

    def interrupt_started(self) -> list[TaskRun]:
        """interrupt_started marks every run left `started` as `interrupted`, with the pid that ran it, and returns
        them. Only the holder of the consumer's lock may call it, just after taking the lock: then no run can
        really be in progress."""
        with self.runtime.sessions.begin() as session:
            stale = list(session.scalars(select(TaskRun).where(TaskRun.status == "started")))
            for run in stale:
                run.status, run.finished_at = "interrupted", now()
                run.error = f"the process running it (pid {run.pid}) stopped before it finished"
        return stale

    def last_queued(self, name: str) -> datetime | None:
        """last_queued is when the newest run of `name` was queued (None: never)."""
        with self.runtime.sessions() as session:
            last = session.scalar(select(func.max(TaskRun.enqueued_at)).where(TaskRun.name == name))
        return as_utc(last) if last is not None else None

    def oldest_queued(self) -> datetime | None:
        """oldest_queued is when the run waiting longest in the queue was queued (None: none waits)."""
        with self.runtime.sessions() as session:
            oldest = session.scalar(select(func.min(TaskRun.enqueued_at)).where(TaskRun.status == "queued"))
        return as_utc(oldest) if oldest is not None else None


def now() -> datetime:
    return datetime.now(UTC)
