"""The registry of one process: which function runs each task name, with its declaration and its plugin.

Names are stable (`<plugin id>.<function>` for a plugin's task, `xcore.<function>` for the core's), so a new
version of a plugin registers its functions under the names the old one used and serves the runs queued for it.
As in Huey, `register` has its `unregister`, which is what a plugin reload needs. The registry holds names and
functions only: what runs them and what is remembered about them are in the other modules of this package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xcore.auth.errors import Forbidden
from xcore.errors import RequestError
from xcore.sdk import PluginContext, TaskSpec

if TYPE_CHECKING:
    from xcore.auth.rules import Principal


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

    @property
    def periodic(self) -> bool:
        """periodic is true for a task that runs on a schedule (`cron` or `every`)."""
        return bool(self.spec.cron or self.spec.every)


class Registry:
    """Registry maps each task name to its Entry."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    @property
    def entries(self) -> Mapping[str, Entry]:
        """entries are the registered tasks by name: a live view, changed through register and unregister."""
        return self._entries

    def register(self, name: str, fn: Callable[..., Any], context: PluginContext | None = None) -> Entry:
        """register makes `name` run `fn`, declared by what `task` or `periodic` recorded on it (a plain function:
        the defaults), for the plugin of `context` (None: the core). Returns the new entry."""
        spec: TaskSpec = getattr(fn, "__xcore_task__", None) or TaskSpec()
        entry = self._entries[name] = Entry(name, fn, spec, context)
        return entry

    def unregister(self, name: str) -> bool:
        """unregister takes `name` out of the registry; returns whether it was registered."""
        return self._entries.pop(name, None) is not None

    def sync_plugin_tasks(self, tasks: Iterable[tuple[str, Callable[..., Any], PluginContext]]) -> list[Entry]:
        """sync_plugin_tasks makes the plugin tasks exactly `tasks` (name, function, context); core tasks stay.
        Returns the entries it registered: the new names, and the names whose function changed."""
        wanted = {name: (fn, context) for name, fn, context in tasks}
        for name, entry in list(self._entries.items()):
            if entry.context is not None and name not in wanted:
                self.unregister(name)
        changed = []
        for name, (fn, context) in wanted.items():
            current = self._entries.get(name)
            if current is None or current.fn is not fn:
                changed.append(self.register(name, fn, context))
        return changed

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def find(self, name: str) -> Entry:
        """find returns the entry of `name`; raises TaskError when no task of that name is registered."""
        entry = self._entries.get(name)
        if entry is None:
            raise TaskError(f"no task named {name!r} is registered")
        return entry

    def runnable(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Entry:
        """runnable returns the entry of `name` if its function takes these arguments; raises TaskError for an
        unknown name, TaskArgumentsError for arguments that would fail every attempt."""
        entry = self.find(name)
        check_arguments(name, entry.fn, args, kwargs)
        return entry

    def periodic(self) -> dict[str, TaskSpec]:
        """periodic is the declaration of every task that runs on a schedule, by name (a snapshot)."""
        return {name: entry.spec for name, entry in list(self._entries.items()) if entry.periodic}

    def authorize(self, name: str, user: Principal) -> Entry:
        """authorize returns the task `name` if `user` may run, pause or resume it: they hold every permission its
        spec `requires` (superadmins hold all). The caller checks `tasks.manage` itself. Raises TaskError for an
        unknown name, Forbidden for a missing permission."""
        entry = self.find(name)
        missing = [p for p in entry.spec.requires if not user.holds(p)]
        if missing:
            raise Forbidden(
                f"task {name} acts on what the permission {', '.join(missing)} guards, which your roles do not grant"
            )
        return entry


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
