"""What /health reports of the scheduler: whether a consumer runs (here or in another process), how many runs
wait in the queue and in the schedule, and how long the oldest queued run has waited.

An answer costs three queries and /health may be polled often, so it is kept for `HEALTH_TTL` seconds, unless
this process started or stopped leading meanwhile.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from xcore.tasks.journal import now

if TYPE_CHECKING:
    from huey import Huey

    from xcore.tasks.consumer import LeadingConsumer
    from xcore.tasks.journal import Journal

HEALTH_TTL = 1.0  # seconds an answer is reused


class Health:
    """Health reports on the queue `huey`, the runs of `journal`, and where `consumer` runs."""

    def __init__(self, huey: Huey, journal: Journal, consumer: LeadingConsumer) -> None:
        self.huey = huey
        self.journal = journal
        self.consumer = consumer
        self._kept: tuple[float, bool, dict[str, Any]] | None = None  # when, leading then, the answer

    def report(self) -> dict[str, Any]:
        """report is the scheduler's health: status (ok, or stopped when no process runs a consumer), consumer,
        queued, scheduled, and oldest_queued_seconds (None when no run waits)."""
        moment, leading = time.monotonic(), self.consumer.leading
        kept = self._kept
        if kept is not None and moment - kept[0] < HEALTH_TTL and kept[1] == leading:
            return kept[2]
        facts = self._facts()
        self._kept = (moment, leading, facts)
        return facts

    def _facts(self) -> dict[str, Any]:
        consumer = self.consumer.where()
        oldest = self.journal.oldest_queued()
        age = (now() - oldest).total_seconds() if oldest is not None else None
        return {
            "status": "ok" if consumer != "stopped" else "stopped",
            "consumer": consumer,
            "queued": self.huey.pending_count(),
            "scheduled": self.huey.scheduled_count(),
            "oldest_queued_seconds": round(age, 3) if age is not None else None,
        }
