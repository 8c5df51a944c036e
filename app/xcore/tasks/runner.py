"""The runner: one attempt of a queued run, in a consumer thread. It never raises: every outcome is journalled.

- A name that is not registered here is journalled `dropped`, with the reason (`plugin <id> not loaded`), instead
  of failing in Huey.
- A run of a paused task is held, not lost: it is queued again under the same run, to look again later.
- A failed attempt is retried `retries` times (the task's, else `manager.tasks.max_retries`), each attempt
  journalled on the same run; retries are xcore's, not Huey's.
- A `timeout` fails an attempt that runs longer. Failed runs of a periodic task in a row are counted, and
  `manager.tasks.pause_after` of them pause it.

The runner does not queue anything itself: it returns the attempt to queue (`Again`), which the dispatch sends.
Each attempt's outcome and duration are counted for the metrics (`xcore.metrics`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xcore.metrics import tally
from xcore.metrics.families import TASK_DURATION, TASK_RUNS
from xcore.tasks.context import with_context
from xcore.tasks.journal import now

if TYPE_CHECKING:
    from xcore.config.schema import TasksConfig
    from xcore.tasks.journal import Journal
    from xcore.tasks.registry import Entry, Registry
    from xcore.tasks.states import TaskStates

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
PAUSED_RECHECK = 5.0  # seconds after which a held run of a paused task looks again


@dataclass(frozen=True)
class Again:
    """Again is an attempt to queue as Huey's task `task_id` after `delay` seconds: (name, args, kwargs, run id,
    attempt) in `payload`."""

    task_id: str
    payload: tuple[str, list[Any], dict[str, Any], int, int]
    delay: float


class Runner:
    """Runner runs attempts of the tasks in `registry`, journalled in `journal`, counted in `states`."""

    def __init__(self, registry: Registry, journal: Journal, states: TaskStates, settings: TasksConfig) -> None:
        self.registry = registry
        self.journal = journal
        self.states = states
        self.settings = settings

    def attempt(self, name: str, args: list[Any], kwargs: dict[str, Any], run_id: int, attempt: int) -> Again | None:
        """attempt executes attempt number `attempt` of run `run_id`; returns the attempt to queue next, if any."""
        entry = self.registry.get(name)
        if entry is None:
            owner = name.split(".", 1)[0]
            reason = f"plugin {owner} not loaded" if "." in name else f"task {name} not registered"
            self.journal.update(run_id, status="dropped", error=reason, finished_at=now())
            log.warning("task %s (run %d) dropped: %s", name, run_id, reason, extra=CONTEXT)
            tally.count(TASK_RUNS, name, owner if "." in name and owner != "xcore" else "", "dropped")
            return None
        if self.states.is_paused(name):
            return Again(uuid.uuid4().hex, (name, args, kwargs, run_id, attempt), PAUSED_RECHECK)
        started = time.monotonic()
        self.journal.update(run_id, status="started", attempt=attempt, started_at=now(), pid=os.getpid())
        try:
            call(entry, args, kwargs)
        except Exception as exc:
            return self._failed(entry, args, kwargs, run_id, attempt, exc, time.monotonic() - started)
        duration = time.monotonic() - started
        self.journal.update(
            run_id, status="succeeded", error=None, traceback=None, finished_at=now(), duration=duration,
        )  # fmt: skip
        self.states.succeeded(name)
        counted(entry, "succeeded", duration)
        return None

    def _failed(
        self, entry: Entry, args: list[Any], kwargs: dict[str, Any], run_id: int, attempt: int, exc: Exception,
        duration: float,
    ) -> Again | None:  # fmt: skip
        """_failed journals a failed attempt (called while `exc` is handled); returns the retry, if one is due."""
        name = entry.name
        retries = entry.spec.retries if entry.spec.retries is not None else self.settings.max_retries
        error = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc()
        if attempt <= retries:
            delay = entry.spec.retry_delay if entry.spec.retry_delay is not None else self.settings.interval
            task_id = uuid.uuid4().hex
            self.journal.update(run_id, status="retrying", error=error, traceback=trace, task_id=task_id)
            log.warning("task %s (run %d) attempt %d failed: %s", name, run_id, attempt, error, extra=CONTEXT)
            counted(entry, "retrying", duration)
            return Again(task_id, (name, args, kwargs, run_id, attempt + 1), max(delay, 0.001))
        self.journal.update(run_id, status="failed", error=error, traceback=trace, finished_at=now(), duration=duration)
        log.error("task %s (run %d) failed after %d attempt(s): %s", name, run_id, attempt, error, extra=CONTEXT)
        counted(entry, "failed", duration)
        if entry.periodic:
            self.states.failed(name, error, self.settings.pause_after)
        return None


def counted(entry: Entry, outcome: str, duration: float) -> None:
    """counted counts an attempt of `entry` that ended with `outcome`, and its duration, for the metrics."""
    plugin = entry.plugin_id or ""
    tally.count(TASK_RUNS, entry.name, plugin, outcome)
    tally.observe(TASK_DURATION, duration, entry.name, plugin)


def call(entry: Entry, args: list[Any], kwargs: dict[str, Any]) -> None:
    """call runs the task's function, with `ctx` when it declares one; a `timeout` fails it when exceeded."""
    fn = entry.fn
    if entry.context is not None:
        args, kwargs = with_context(fn, args, kwargs, entry.context)

    def run() -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return asyncio.run(_awaited(result))
        return result

    timeout = entry.spec.timeout
    if not timeout:
        run()
        return
    outcome: list[BaseException | None] = []

    def guarded() -> None:
        try:
            run()
            outcome.append(None)
        except BaseException as exc:  # handed to the consumer thread below
            outcome.append(exc)

    worker = threading.Thread(target=guarded, name=f"xcore-task-{entry.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"the task ran longer than its timeout of {timeout:g} s")
    if outcome and outcome[0] is not None:
        raise outcome[0]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
