"""The periodic schedule: a thread, in the process that runs the consumer, that queues periodic tasks when due.

Huey's own periodic tasks have one-minute resolution and are checked once a minute from the consumer's start,
so xcore keeps its own clock:

- `every=N` runs every N seconds, counted from the last time the task was queued (from the journal, so a
  restart neither skips nor doubles a run);
- `cron="m h dom mon dow"` runs at each matching minute, in the machine's local time (Huey's `crontab` checks
  the fields).

A paused task is not queued. The thread sleeps until the next due time (at most a second), so a run starts
within milliseconds of its time. Only the lock holder runs it, so with several workers a task fires once.

The schedule knows the task host only through the four functions it is given (which tasks are periodic, which
are paused, when each was last queued, and how to queue one), so it imports nothing of the host.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from huey import crontab

from xcore.sdk import TaskSpec

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
MAX_SLEEP = 1.0


def cron_check(expression: str) -> Callable[[datetime], bool]:
    """cron_check returns Huey's test for a 5-field crontab; raises ValueError naming what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expression!r}: a crontab has 5 fields: minute hour day month weekday")
    minute, hour, day, month, weekday = fields
    try:
        check: Callable[[datetime], bool] = crontab(minute, hour, day, month, weekday, strict=True)
    except ValueError as exc:
        raise ValueError(f"cron {expression!r}: {exc}") from None
    return check


def next_cron(check: Callable[[datetime], bool], after: float) -> float:
    """next_cron is the start of the first minute after `after` (a timestamp) that `check` accepts."""
    moment = datetime.fromtimestamp(after).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):  # a year of minutes: every valid crontab matches within it
        if check(moment):
            return moment.timestamp()
        moment += timedelta(minutes=1)
    return float("inf")


class Schedule(threading.Thread):
    """Schedule queues periodic tasks when they are due, until `stop` is set.

    `periodic` returns the periodic tasks' declarations by name, with the paused flags reread; `is_paused` says
    whether a task is paused; `last_queued` is when a task was last queued (None: never); `enqueue` queues a run.
    """

    def __init__(
        self,
        *,
        periodic: Callable[[], Mapping[str, TaskSpec]],
        is_paused: Callable[[str], bool],
        last_queued: Callable[[str], datetime | None],
        enqueue: Callable[[str], object],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="xcore-task-schedule", daemon=True)
        self.periodic = periodic
        self.is_paused = is_paused
        self.last_queued = last_queued
        self.enqueue = enqueue
        self.stop = stop
        self.due: dict[str, float] = {}
        self._specs: dict[str, TaskSpec] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                wait = self.tick(time.time())
            except Exception:
                log.exception("the task schedule failed; trying again in a second", extra=CONTEXT)
                wait = MAX_SLEEP
            self.stop.wait(wait)

    def tick(self, now: float) -> float:
        """tick queues what is due at `now`; returns the seconds until the next due time (at most MAX_SLEEP)."""
        periodic = self.periodic()
        for name in set(self.due) - set(periodic):
            del self.due[name]
        for name, spec in periodic.items():
            if self._specs.get(name) != spec:  # new, or a new version changed its schedule
                self._specs[name] = spec
                self.due[name] = self._first_due(name, spec, now)
        soonest = now + MAX_SLEEP
        for name, spec in periodic.items():
            due = self.due[name]
            if due <= now:
                if not self.is_paused(name):
                    try:
                        self.enqueue(name)
                    except Exception:
                        log.exception("cannot queue periodic task %s", name, extra=CONTEXT)
                due = self.due[name] = self._after(spec, due, now)
            soonest = min(soonest, due)
        return max(0.0, min(soonest - time.time(), MAX_SLEEP))

    def _first_due(self, name: str, spec: TaskSpec, now: float) -> float:
        if spec.cron:
            return next_cron(cron_check(spec.cron), now)
        assert spec.every is not None
        last = self.last_queued(name)
        if last is None:
            return now
        return max(now, last.timestamp() + spec.every)

    @staticmethod
    def _after(spec: TaskSpec, due: float, now: float) -> float:
        if spec.cron:
            return next_cron(cron_check(spec.cron), max(due, now))
        assert spec.every is not None
        following = due + spec.every
        return following if following > now else now + spec.every  # behind (a long pause): skip, do not burst
