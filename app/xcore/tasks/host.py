"""The task host of one process: the registry of tasks by stable name, enqueueing, and the embedded consumer.

Every task, core or plugin, goes through one Huey task, `xcore.run(name, args, kwargs, run_id, attempt)`, which
looks the name up in this process's registry when it runs. So:

- names are stable (`<plugin id>.<function>`): a new version of a plugin serves the tasks queued for the old one;
- a task whose plugin is gone is journalled `dropped: plugin <id> not loaded` instead of failing in Huey;
- retries are xcore's: each attempt is journalled on the same run.

Each run is journalled in the `task_runs` table (queued → started → succeeded | failed | dropped, `retrying`
between attempts), because Huey forgets a task when it dequeues it.

Every server process keeps a registry (each loads every plugin), but only one runs the consumer: the holder
of the file lock `<data>/tasks.lock`. The others try to take the lock every few seconds, so when the leader
dies another process takes over. The consumer runs in threads inside the server; Huey's `start()`, which
installs signal handlers, is not used.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from huey import Huey
from huey.consumer import Consumer
from sqlalchemy import func, insert, select

from xcore.auth.errors import Forbidden
from xcore.db.models import Base, TaskRun, TaskState, as_utc
from xcore.errors import RequestError
from xcore.sdk import PluginContext, TaskSpec
from xcore.tasks.leader import leadership
from xcore.tasks.queue import make_queue
from xcore.tasks.schedule import Schedule

if TYPE_CHECKING:
    from xcore.auth.principals import Principal
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
LEADER_RETRY = 2.0  # seconds between a follower's attempts to take the consumer's lock
ARGS_SUMMARY = 500
RUNS = Base.metadata.tables["task_runs"]
INSERT_RUN = insert(RUNS)  # built once; the parameters come with each execution
PAUSED_RECHECK = 5.0  # seconds after which a held run of a paused task looks again
HEALTH_TTL = 1.0  # seconds /health's scheduler facts are reused


class TaskError(RequestError):
    """TaskError is a task that cannot be enqueued: no task of that name is registered."""

    status = 404


class TaskArgumentsError(TaskError):
    """TaskArgumentsError is a run whose arguments the task's function cannot take: it could never succeed."""

    status = 422


@dataclass(frozen=True)
class Entry:
    """Entry is one registered task: its function, its declaration, and the plugin it belongs to (None: core)."""

    name: str
    fn: Callable[..., Any]
    spec: TaskSpec
    context: PluginContext | None = None

    @property
    def plugin_id(self) -> str | None:
        return self.context.id if self.context else None


class EmbeddedConsumer(Consumer):
    """EmbeddedConsumer is Huey's consumer without its signal handlers: the server owns the signals."""

    def start(self) -> None:
        self.scheduler.start()
        for _, worker in self.worker_threads:
            worker.start()


class TaskHost:
    """TaskHost registers tasks, enqueues them, and (in the leader process) runs the consumer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.config.manager.tasks
        self.huey: Huey = make_queue(runtime.data.root / "tasks.db", runtime.config.redis)
        self.registry: dict[str, Entry] = {}
        self._dispatch = self.huey.task(name="run")(self._run)
        self._leader = leadership(runtime, on_lost=self._step_down)
        self._consumer: EmbeddedConsumer | None = None
        self._stop = threading.Event()  # the host stops
        self._leading = threading.Event()  # cleared when this process stops leading: the schedule ends
        self._follower: threading.Thread | None = None
        self._schedule: Schedule | None = None
        self._mutex = threading.Lock()
        self._counting = threading.Lock()
        self._health: tuple[float, dict[str, Any]] | None = None
        self.states: dict[str, TaskState] = {}  # by name; refreshed from the database (see refresh_states)

    # --- registry --------------------------------------------------------------------------------------------

    def register(self, name: str, fn: Callable[..., Any], context: PluginContext | None = None) -> None:
        """register makes `name` run `fn`, and binds `fn.enqueue` to this host."""
        spec: TaskSpec = getattr(fn, "__xcore_task__", None) or TaskSpec()
        self.registry[name] = Entry(name, fn, spec, context)
        if self.settings.auto_restart:
            self._resume_auto_paused(name)

        def enqueue(*args: Any, delay: float | None = None, eta: datetime | None = None, **kwargs: Any) -> int:
            return self.enqueue(name, args, kwargs, delay=delay, eta=eta)

        fn.enqueue = enqueue  # type: ignore[attr-defined]

    def sync_plugin_tasks(self, tasks: Iterable[tuple[str, Callable[..., Any], PluginContext]]) -> None:
        """sync_plugin_tasks makes the plugin tasks exactly `tasks` (name, function, context); core tasks stay."""
        wanted = {name: (fn, context) for name, fn, context in tasks}
        self.refresh_states()
        for name, entry in list(self.registry.items()):
            if entry.context is not None and name not in wanted:
                del self.registry[name]
        for name, (fn, context) in wanted.items():
            current = self.registry.get(name)
            if current is None or current.fn is not fn:
                self.register(name, fn, context)
        self.publish()

    def publish(self) -> None:
        """publish records in `task_state` which tasks this server registered, for `xcore tasks list`."""
        try:
            with self.runtime.sessions.begin() as session:
                rows = {s.name: s for s in session.scalars(select(TaskState))}
                for name, entry in self.registry.items():
                    row = rows.get(name) or TaskState(name=name, paused=False, auto_paused=False, failures=0)
                    schedule = (entry.spec.cron and f"cron {entry.spec.cron}") or (
                        f"every {entry.spec.every:g}s" if entry.spec.every else None
                    )
                    if (row.plugin_id, row.schedule, row.registered) != (entry.plugin_id, schedule, True):
                        row.plugin_id, row.schedule, row.registered = entry.plugin_id, schedule, True
                        session.add(row)
                for name, row in rows.items():
                    if name not in self.registry and row.registered:
                        row.registered = False
        except Exception:  # another worker publishing the same rows at this moment: it writes the same
            log.debug("task registry not published this time", exc_info=True, extra=CONTEXT)

    def authorize(self, name: str, user: Principal) -> Entry:
        """authorize returns the task `name` if `user` may run, pause or resume it: they hold every permission its
        spec `requires` (superadmins hold all). The caller checks `tasks.manage` itself. Raises TaskError for an
        unknown name, Forbidden for a missing permission."""
        entry = self.registry.get(name)
        if entry is None:
            raise TaskError(f"no task named {name!r} is registered")
        missing = [p for p in entry.spec.requires if not user.is_superadmin and p not in user.permissions]
        if missing:
            raise Forbidden(
                f"task {name} acts on what the permission {', '.join(missing)} guards, which your roles do not grant"
            )
        return entry

    # --- enqueueing ------------------------------------------------------------------------------------------

    def enqueue(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> int:
        """enqueue queues a run of task `name` and returns its run id (a row of `task_runs`).

        Arguments the function cannot take (a missing or unknown parameter) raise TaskArgumentsError at once,
        instead of a run that fails on every attempt."""
        entry = self.registry.get(name)
        if entry is None:
            raise TaskError(f"no task named {name!r} is registered")
        args = list(args)
        check_arguments(name, entry.fn, args, dict(kwargs or {}))
        return self.submit(name, entry.plugin_id, args, kwargs, delay=delay, eta=eta)

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
        """submit queues a run of `name` without looking it up here (the CLI has no registry: the consumer checks
        the name when the run comes up). Returns the run id."""
        args, kwargs = list(args), dict(kwargs or {})
        task_id = uuid.uuid4().hex
        run_id = self._journal_queued(name, plugin_id, args, kwargs, task_id)
        try:
            self._send(task_id, (name, args, kwargs, run_id, 1), delay, eta)
        except Exception as exc:
            self._journal(run_id, status="failed", error=f"could not be queued: {exc}", finished_at=_now())
            raise
        return run_id

    def _send(
        self, task_id: str, payload: tuple[Any, ...], delay: float | None = None, eta: datetime | None = None
    ) -> None:
        """_send puts one attempt on Huey's queue, now or at `eta` / after `delay` seconds."""
        if eta is not None or delay:
            self._dispatch.schedule(payload, eta=eta, delay=None if eta is not None else delay, id=task_id)
        else:
            self.huey.enqueue(self._dispatch.task_class(payload, {}, id=task_id))

    def _journal_queued(
        self, name: str, plugin_id: str | None, args: list[Any], kwargs: dict[str, Any], task_id: str
    ) -> int:
        summary = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        row = {
            "task_id": task_id, "name": name, "plugin_id": plugin_id, "args": summary[:ARGS_SUMMARY],
            "payload": pickle.dumps((args, kwargs)), "status": "queued", "attempt": 0, "enqueued_at": _now(),
        }  # fmt: skip
        with self.runtime.engine.begin() as connection:  # a Core insert: the ORM's unit of work costs more here
            inserted = connection.execute(INSERT_RUN, row).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    # --- running (in a consumer thread) ----------------------------------------------------------------------

    def _run(self, name: str, args: list[Any], kwargs: dict[str, Any], run_id: int, attempt: int) -> None:
        """_run executes one attempt of a queued task. It never raises: every outcome is journalled."""
        entry = self.registry.get(name)
        if entry is None:
            owner = name.split(".", 1)[0]
            reason = f"plugin {owner} not loaded" if "." in name else f"task {name} not registered"
            self._journal(run_id, status="dropped", error=reason, finished_at=_now())
            log.warning("task %s (run %d) dropped: %s", name, run_id, reason, extra=CONTEXT)
            return
        if self.is_paused(name):  # held, not lost: it runs once the task is resumed
            self._send(uuid.uuid4().hex, (name, args, kwargs, run_id, attempt), delay=PAUSED_RECHECK)
            return
        started = time.monotonic()
        self._journal(run_id, status="started", attempt=attempt, started_at=_now(), pid=os.getpid())
        try:
            self._call(entry, args, kwargs)
        except Exception as exc:
            retries = entry.spec.retries if entry.spec.retries is not None else self.settings.max_retries
            error = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            if attempt <= retries:
                delay = entry.spec.retry_delay if entry.spec.retry_delay is not None else self.settings.interval
                task_id = uuid.uuid4().hex
                self._journal(run_id, status="retrying", error=error, traceback=trace, task_id=task_id)
                self._send(task_id, (name, args, kwargs, run_id, attempt + 1), delay=max(delay, 0.001))
                log.warning("task %s (run %d) attempt %d failed: %s", name, run_id, attempt, error, extra=CONTEXT)
                return
            self._journal(
                run_id, status="failed", error=error, traceback=trace, finished_at=_now(),
                duration=time.monotonic() - started,
            )  # fmt: skip
            log.error("task %s (run %d) failed after %d attempt(s): %s", name, run_id, attempt, error, extra=CONTEXT)
            if entry.spec.cron or entry.spec.every:
                self._count_failure(name, error)
            return
        self._journal(
            run_id, status="succeeded", error=None, traceback=None, finished_at=_now(),
            duration=time.monotonic() - started,
        )  # fmt: skip
        with self._counting:
            state = self.states.get(name)
            if state is not None and state.failures:
                self._update_state(name, failures=0)

    # --- pausing ---------------------------------------------------------------------------------------------

    def refresh_states(self) -> None:
        """refresh_states reads every task's paused flag and failure count (another process may have changed them)."""
        with self.runtime.sessions() as session:
            self.states = {s.name: s for s in session.scalars(select(TaskState))}

    def is_paused(self, name: str) -> bool:
        state = self.states.get(name)
        return state is not None and state.paused

    def pause(self, name: str, reason: str) -> None:
        """pause stops a periodic task's schedule and holds the task's queued runs until `resume`."""
        self._update_state(name, paused=True, reason=reason, auto_paused=False)

    def resume(self, name: str) -> None:
        self._update_state(name, paused=False, reason=None, auto_paused=False, failures=0)

    def _count_failure(self, name: str, error: str) -> None:
        with self._counting:  # consumer threads finish runs of one task at once; only this process runs them
            state = self.states.get(name)
            failures = (state.failures if state else 0) + 1
            limit = self.settings.pause_after
            if limit and failures >= limit and not self.is_paused(name):
                reason = f"paused after {failures} failed runs in a row; the last one: {error}"
                self._update_state(name, failures=failures, paused=True, reason=reason, auto_paused=True)
                log.error("task %s %s", name, reason, extra=CONTEXT)
            else:
                self._update_state(name, failures=failures)

    def _resume_auto_paused(self, name: str) -> None:
        state = self.states.get(name)
        if state is not None and state.auto_paused:
            self._update_state(name, paused=False, reason=None, auto_paused=False, failures=0)
            log.info("task %s resumed: its plugin loaded again (manager.tasks.auto_restart)", name, extra=CONTEXT)

    def _update_state(self, name: str, **values: Any) -> None:
        with self.runtime.sessions.begin() as session:
            state = session.get(TaskState, name) or TaskState(name=name, paused=False, auto_paused=False, failures=0)
            for key, value in values.items():
                setattr(state, key, value)
            session.add(state)
        self.refresh_states()

    def _call(self, entry: Entry, args: list[Any], kwargs: dict[str, Any]) -> None:
        """_call runs the task's function, with `ctx` when it declares one; a `timeout` fails it when exceeded."""
        fn = entry.fn
        if entry.context is not None:
            args, kwargs = with_context(fn, args, kwargs, entry.context)

        def call() -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                return asyncio.run(_awaited(result))
            return result

        timeout = entry.spec.timeout
        if not timeout:
            call()
            return
        outcome: list[BaseException | None] = []

        def guarded() -> None:
            try:
                call()
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

    def _journal(self, run_id: int, **values: Any) -> None:
        try:
            with self.runtime.engine.begin() as connection:  # Core, like the insert: two of these per run
                connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(**values))
        except Exception:  # the journal must never take a consumer thread down
            log.exception("cannot journal task run %d", run_id, extra=CONTEXT)

    # --- the consumer ----------------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """leading is true in the one process that runs the consumer."""
        return self._consumer is not None

    def start(self) -> None:
        """start runs the consumer if this process gets the lock, else keeps trying in the background."""
        self._stop.clear()
        if not self._try_lead():
            self._follow_later()

    def _try_lead(self) -> bool:
        with self._mutex:
            if self._stop.is_set() or not self._leader.acquire():
                return False
            self._consumer = EmbeddedConsumer(
                self.huey,
                workers=self.settings.workers,
                periodic=False,
                initial_delay=0.1,
                backoff=1.0,
                max_delay=0.1,
                worker_type="thread",
                check_worker_health=False,
                shutdown_timeout=self.settings.shutdown_grace,
            )
            self._recover()
            self._consumer.start()
            self._leading = threading.Event()
            self._schedule = Schedule(self, self._leading)
            self._schedule.start()
            self._health = None
            log.info("task consumer running here (pid %d) with %d thread(s)", os.getpid(), self.settings.workers,
                     extra=CONTEXT)  # fmt: skip
            return True

    def _recover(self) -> None:
        """_recover marks runs left `started` by a process that died `interrupted`, and queues them again
        (unless their task says `retry_on_crash=False`). Only the consumer's lock holder runs tasks, and it has
        just taken the lock, so no run can really be in progress."""
        with self.runtime.sessions.begin() as session:
            stale = list(session.scalars(select(TaskRun).where(TaskRun.status == "started")))
            for run in stale:
                run.status, run.finished_at = "interrupted", _now()
                run.error = f"the process running it (pid {run.pid}) stopped before it finished"
        for run in stale:
            entry = self.registry.get(run.name)
            log.warning("task %s (run %d) was interrupted by a crash", run.name, run.id, extra=CONTEXT)
            if (entry is not None and not entry.spec.retry_on_crash) or run.payload is None:
                continue
            # Queued again even if its plugin is not loaded (yet): when the run comes up, it runs, or is
            # journalled as dropped with the reason; it is never silently lost.
            args, kwargs = pickle.loads(run.payload)
            again = self.submit(run.name, run.plugin_id, args, kwargs)
            log.info("task %s (run %d) queued again as run %d", run.name, run.id, again, extra=CONTEXT)

    def health(self) -> dict[str, Any]:
        """health is what /health reports of the scheduler: whether a consumer runs (here or in another process),
        how many runs wait in the queue and the schedule, and how long the oldest queued run has waited.

        The answer is kept for a second: it costs three queries, and /health may be polled often.
        """
        now = time.monotonic()
        cached = self._health
        if cached is not None and now - cached[0] < HEALTH_TTL:
            return cached[1]
        facts = self._health_facts()
        self._health = (now, facts)
        return facts

    def _health_facts(self) -> dict[str, Any]:
        if self.leading:
            consumer = "running here"
        elif self._leader.held_elsewhere():
            consumer = "running in another process"
        else:
            consumer = "stopped"
        with self.runtime.sessions() as session:
            oldest = session.scalar(select(func.min(TaskRun.enqueued_at)).where(TaskRun.status == "queued"))
        age = (_now() - as_utc(oldest)).total_seconds() if oldest is not None else None
        return {
            "status": "ok" if consumer != "stopped" else "stopped",
            "consumer": consumer,
            "queued": self.huey.pending_count(),
            "scheduled": self.huey.scheduled_count(),
            "oldest_queued_seconds": round(age, 3) if age is not None else None,
        }

    def _follow(self) -> None:
        while not self._stop.wait(LEADER_RETRY):
            if self._try_lead():
                return

    def _follow_later(self) -> None:
        self._follower = threading.Thread(target=self._follow, name="xcore-task-follower", daemon=True)
        self._follower.start()

    def _step_down(self) -> None:
        """_step_down stops the consumer and the schedule after the lock was lost, and follows again."""
        with self._mutex:
            consumer, self._consumer = self._consumer, None
            self._leading.set()
            self._health = None
        if consumer is not None:
            consumer.stop(graceful=False)
        if not self._stop.is_set():
            self._follow_later()

    def stop(self) -> None:
        """stop lets running tasks finish (up to `manager.tasks.shutdown_grace` seconds) and releases the lock."""
        with self._mutex:
            self._stop.set()
            self._leading.set()
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop(graceful=True)
            self._leader.release()
        if self._follower is not None:
            self._follower.join(timeout=LEADER_RETRY + 1)
        if self._schedule is not None:
            self._schedule.join(timeout=2)
        self.huey.storage.close()


def check_arguments(name: str, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """check_arguments raises TaskArgumentsError unless `fn` takes these arguments (its `ctx` is given by xcore)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable without a signature: it says so when it runs
        return
    others = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "ctx"])
    try:
        others.bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskArgumentsError(f"{name}{others}: {exc}", field="kwargs" if kwargs else "args") from None


def with_context(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], context: PluginContext
) -> tuple[list[Any], dict[str, Any]]:
    """with_context passes `context` as the function's `ctx` parameter, if it has one, wherever it stands: the
    caller's arguments (`fn.enqueue(*args)`) go to the other parameters. Raises TypeError when they do not fit."""
    signature = inspect.signature(fn)
    if "ctx" not in signature.parameters:
        return args, kwargs
    others = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "ctx"])
    arguments = {**others.bind(*args, **kwargs).arguments, "ctx": context}
    ordered = {name: arguments[name] for name in signature.parameters if name in arguments}
    bound = inspect.BoundArguments(signature, ordered)
    return list(bound.args), dict(bound.kwargs)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _now() -> datetime:
    return datetime.now(UTC)
