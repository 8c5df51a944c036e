"""The task host of one process: the facade the server, the CLI and the admin API use, composed of small parts.

- xcore.tasks.registry: which function runs each task name (stable names: `<plugin id>.<function>`);
- xcore.tasks.journal: one `task_runs` row per run (queued → started → succeeded | failed | dropped);
- xcore.tasks.states: what is remembered per name in `task_state` (paused, failures, registered);
- xcore.tasks.dispatch and xcore.tasks.runner: a run onto Huey's queue, and one attempt of it when it comes up;
- xcore.tasks.consumer and xcore.tasks.leader: the embedded consumer, in the one process holding the lock;
- xcore.tasks.schedule: the periodic tasks, queued when due by the process that runs the consumer;
- xcore.tasks.health: what /health reports of all this.

The host wires them together and adds what spans several: registering a task binds its `enqueue` and resumes it
if failures paused it, and enqueueing checks the name and the arguments before a run is journalled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from huey import Huey

from xcore.db.models import TaskState
from xcore.sdk import PluginContext, TaskSpec
from xcore.tasks.consumer import LeadingConsumer
from xcore.tasks.dispatch import Dispatch
from xcore.tasks.health import Health
from xcore.tasks.journal import Journal
from xcore.tasks.queue import make_queue
from xcore.tasks.registry import Entry, Registry, TaskArgumentsError, TaskError
from xcore.tasks.runner import Runner
from xcore.tasks.schedule import Schedule
from xcore.tasks.states import TaskStates

if TYPE_CHECKING:
    from xcore.auth.rules import Principal
    from xcore.config.schema import TasksConfig
    from xcore.runtime import Runtime

# The registry's names that callers import from here, with the host.
__all__ = ["Entry", "TaskArgumentsError", "TaskError", "TaskHost"]


class TaskHost:
    """TaskHost registers tasks, enqueues them, and (in the leader process) runs the consumer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.config.manager.tasks
        self.huey: Huey = make_queue(runtime.data.root / "tasks.db", runtime.config.redis)
        self._registry = Registry()
        self._journal = Journal(runtime)
        self._states = TaskStates(runtime)
        self._runner = Runner(self._registry, self._journal, self._states, settings)
        self._dispatch = Dispatch(self.huey, self._journal, self._runner.attempt)
        self._consumer = LeadingConsumer(runtime, self.huey, settings, recover=self._recover, schedule=self._schedule)
        self._health = Health(self.huey, self._journal, self._consumer)

    @property
    def settings(self) -> TasksConfig:
        """settings are `manager.tasks`; set them before `start` to run with others (the benchmarks do)."""
        return self._runner.settings

    @settings.setter
    def settings(self, settings: TasksConfig) -> None:
        self._runner.settings = self._consumer.settings = settings

    # --- the registry ----------------------------------------------------------------------------------------

    @property
    def registry(self) -> Mapping[str, Entry]:
        """registry is every registered task, core and plugin, by name."""
        return self._registry.entries

    def register(self, name: str, fn: Callable[..., Any], context: PluginContext | None = None) -> None:
        """register makes `name` run `fn`, and binds `fn.enqueue` to this host."""
        self._adopt(self._registry.register(name, fn, context))

    def sync_plugin_tasks(self, tasks: Iterable[tuple[str, Callable[..., Any], PluginContext]]) -> None:
        """sync_plugin_tasks makes the plugin tasks exactly `tasks` (name, function, context); core tasks stay."""
        self.refresh_states()
        for entry in self._registry.sync_plugin_tasks(tasks):
            self._adopt(entry)
        self.publish()

    def publish(self) -> None:
        """publish records in `task_state` which tasks this server registered, for `xcore tasks list`."""
        self._states.publish(self._registry.entries)

    def authorize(self, name: str, user: Principal) -> Entry:
        """authorize returns the task `name` if `user` may run, pause or resume it: they hold every permission its
        spec `requires` (superadmins hold all). The caller checks `tasks.manage` itself. Raises TaskError for an
        unknown name, Forbidden for a missing permission."""
        return self._registry.authorize(name, user)

    def _adopt(self, entry: Entry) -> None:
        """_adopt binds the newly registered function's `enqueue` to this host, and resumes the task if failures
        paused it (`manager.tasks.auto_restart`): its plugin loaded again."""
        if self.settings.auto_restart:
            self._states.resume_auto_paused(entry.name)

        def enqueue(*args: Any, delay: float | None = None, eta: datetime | None = None, **kwargs: Any) -> int:
            return self.enqueue(entry.name, args, kwargs, delay=delay, eta=eta)

        entry.fn.enqueue = enqueue  # type: ignore[attr-defined]

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
        instead of a run that fails on every attempt; an unknown name raises TaskError."""
        args = list(args)
        entry = self._registry.runnable(name, args, dict(kwargs or {}))
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
        return self._dispatch.submit(name, plugin_id, args, kwargs, delay=delay, eta=eta)

    # --- pausing ---------------------------------------------------------------------------------------------

    @property
    def states(self) -> dict[str, TaskState]:
        """states are the `task_state` rows by name, as last read (see refresh_states)."""
        return self._states.rows

    def refresh_states(self) -> None:
        """refresh_states reads every task's paused flag and failure count (another process may have changed them)."""
        self._states.refresh()

    def is_paused(self, name: str) -> bool:
        return self._states.is_paused(name)

    def pause(self, name: str, reason: str) -> None:
        """pause stops a periodic task's schedule and holds the task's queued runs until `resume`."""
        self._states.pause(name, reason)

    def resume(self, name: str) -> None:
        self._states.resume(name)

    # --- the consumer ----------------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """leading is true in the one process that runs the consumer."""
        return self._consumer.leading

    def start(self) -> None:
        """start runs the consumer if this process gets the lock, else keeps trying in the background."""
        self._consumer.start()

    def stop(self) -> None:
        """stop lets running tasks finish (up to `manager.tasks.shutdown_grace` seconds), releases the lock and
        closes the queue."""
        self._consumer.stop()
        self.huey.storage.close()

    def health(self) -> dict[str, Any]:
        """health is what /health reports of the scheduler (see xcore.tasks.health)."""
        return self._health.report()

    def _recover(self) -> None:
        """_recover queues again the runs a process that died left started (see Dispatch.requeue_interrupted)."""
        self._dispatch.requeue_interrupted(self._registry)

    def _schedule(self, leading: threading.Event) -> Schedule:
        """_schedule is the periodic schedule of the registered tasks, which runs until `leading` is set."""
        return Schedule(
            periodic=self._periodic, is_paused=self.is_paused, last_queued=self._journal.last_queued,
            enqueue=self.enqueue, stop=leading,
        )  # fmt: skip

    def _periodic(self) -> dict[str, TaskSpec]:
        """_periodic is the periodic tasks' declarations, by name, with their paused flags reread."""
        self.refresh_states()
        return self._registry.periodic()
