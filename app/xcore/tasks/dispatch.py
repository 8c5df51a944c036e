"""The dispatch: how runs get onto Huey's queue and off it again.

Every task, core or plugin, goes through one Huey task, `run(name, args, kwargs, run_id, attempt)`, which hands
the attempt to the runner when it comes up; the name is looked up in the registry of the process that runs
it, not of the one that queued it. So the CLI, which registers nothing, can queue a run, and a new version of a
plugin serves the runs queued for the old one.
"""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from xcore.tasks.journal import now

if TYPE_CHECKING:
    from huey import Huey

    from xcore.tasks.journal import Journal
    from xcore.tasks.registry import Registry
    from xcore.tasks.runner import Again

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
# Huey names a task `<module of its function>.<name>`, and each queued message carries that name. Runs were first
# queued from xcore.tasks.host, so the name stays `xcore.tasks.host.run`: runs already queued when xcore is
# upgraded still find their task.
HUEY_MODULE = "xcore.tasks.host"

Attempt = Callable[[str, list[Any], dict[str, Any], int, int], "Again | None"]


class Dispatch:
    """Dispatch queues runs on `huey`, journalled in `journal`; a queued attempt comes up in `attempt`."""

    def __init__(self, huey: Huey, journal: Journal, attempt: Attempt) -> None:
        self.huey = huey
        self.journal = journal
        self._attempt = attempt
        self._task = huey.task(name="run")(self._huey_task())

    def submit(
        self,
        name: str,
        plugin_id: str | None,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> int:
        """submit journals a new run of `name` (a task of `plugin_id`) and queues its first attempt, now or at
        `eta` / after `delay` seconds. Returns the run id. A run that cannot be queued is journalled `failed`,
        and the error raised."""
        args, kwargs = list(args), dict(kwargs or {})
        task_id = uuid.uuid4().hex
        run_id = self.journal.queued(name, plugin_id, args, kwargs, task_id)
        try:
            self.send(task_id, (name, args, kwargs, run_id, 1), delay, eta)
        except Exception as exc:
            self.journal.update(run_id, status="failed", error=f"could not be queued: {exc}", finished_at=now())
            raise
        return run_id

    def send(
        self, task_id: str, payload: tuple[Any, ...], delay: float | None = None, eta: datetime | None = None
    ) -> None:
        """send puts one attempt on Huey's queue as task `task_id`, now or at `eta` / after `delay` seconds."""
        if eta is not None or delay:
            self._task.schedule(payload, eta=eta, delay=None if eta is not None else delay, id=task_id)
        else:
            self.huey.enqueue(self._task.task_class(payload, {}, id=task_id))

    def requeue_interrupted(self, registry: Registry) -> None:
        """requeue_interrupted journals the runs a process that died left `started` as `interrupted`, and queues
        each again as a new run, unless its task says `retry_on_crash=False`. Call it only after taking the
        consumer's lock, before the consumer starts."""
        for run in self.journal.interrupt_started():
            entry = registry.get(run.name)
            log.warning("task %s (run %d) was interrupted by a crash", run.name, run.id, extra=CONTEXT)
            if (entry is not None and not entry.spec.retry_on_crash) or run.payload is None:
                continue
            # Queued again even if its plugin is not loaded (yet): when the run comes up, it runs, or is
            # journalled as dropped with the reason; it is never silently lost.
            args, kwargs = pickle.loads(run.payload)
            again = self.submit(run.name, run.plugin_id, args, kwargs)
            log.info("task %s (run %d) queued again as run %d", run.name, run.id, again, extra=CONTEXT)

    def _huey_task(self) -> Callable[[str, list[Any], dict[str, Any], int, int], None]:
        """_huey_task is the function of the Huey task: the attempt, then the next one if the runner asks for it."""

        def run(name: str, args: list[Any], kwargs: dict[str, Any], run_id: int, attempt: int) -> None:
            again = self._attempt(name, args, kwargs, run_id, attempt)
            if again is not None:
                self.send(again.task_id, again.payload, delay=again.delay)

        run.__module__ = HUEY_MODULE
        return run
