"""What is remembered about each task name, in `task_state`: paused or not (and why), its failed runs in a row,
and what the server registered under it.

A pause survives restarts and holds the task in every process; any process may pause or resume, so each
rereads the rows (`refresh`) before it decides. The registration (plugin, schedule) is published for
`xcore tasks list`, which loads no plugin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from xcore.db.models import TaskState

if TYPE_CHECKING:
    from xcore.runtime import Runtime
    from xcore.tasks.registry import Entry

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}


class TaskStates:
    """TaskStates reads and writes the `task_state` rows of the core database of `runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.rows: dict[str, TaskState] = {}  # by name, as last read (see refresh)
        self._counting = threading.Lock()

    def refresh(self) -> None:
        """refresh reads every task's paused flag and failure count (another process may have changed them)."""
        with self.runtime.sessions() as session:
            self.rows = {s.name: s for s in session.scalars(select(TaskState))}

    def is_paused(self, name: str) -> bool:
        state = self.rows.get(name)
        return state is not None and state.paused

    def pause(self, name: str, reason: str) -> None:
        """pause marks `name` paused by a user, with `reason`."""
        self._update(name, paused=True, reason=reason, auto_paused=False)

    def resume(self, name: str) -> None:
        """resume clears the pause of `name` and its count of failed runs."""
        self._update(name, paused=False, reason=None, auto_paused=False, failures=0)

    def resume_auto_paused(self, name: str) -> None:
        """resume_auto_paused resumes `name` if failures paused it (not if a user did): its plugin loaded again."""
        state = self.rows.get(name)
        if state is not None and state.auto_paused:
            self.resume(name)
            log.info("task %s resumed: its plugin loaded again (manager.tasks.auto_restart)", name, extra=CONTEXT)

    def failed(self, name: str, error: str, pause_after: int) -> None:
        """failed counts a failed run of `name`; the `pause_after`th in a row (0: never) pauses the task."""
        with self._counting:  # consumer threads finish runs of one task at once; only this process runs them
            state = self.rows.get(name)
            failures = (state.failures if state else 0) + 1
            if pause_after and failures >= pause_after and not self.is_paused(name):
                reason = f"paused after {failures} failed runs in a row; the last one: {error}"
                self._update(name, failures=failures, paused=True, reason=reason, auto_paused=True)
                log.error("task %s %s", name, reason, extra=CONTEXT)
            else:
                self._update(name, failures=failures)

    def succeeded(self, name: str) -> None:
        """succeeded resets the count of failed runs in a row of `name`."""
        with self._counting:
            state = self.rows.get(name)
            if state is not None and state.failures:
                self._update(name, failures=0)

    def publish(self, entries: Mapping[str, Entry]) -> None:
        """publish records which tasks this server registered (`entries`), with their plugin and schedule, and
        that the others are not registered. Another worker may publish the same rows at the same moment: then
        this one gives up, since the other writes the same."""
        try:
            with self.runtime.sessions.begin() as session:
                rows = {s.name: s for s in session.scalars(select(TaskState))}
                for name, entry in entries.items():
                    row = rows.get(name) or TaskState(name=name, paused=False, auto_paused=False, failures=0)
                    schedule = (entry.spec.cron and f"cron {entry.spec.cron}") or (
                        f"every {entry.spec.every:g}s" if entry.spec.every else None
                    )
                    if (row.plugin_id, row.schedule, row.registered) != (entry.plugin_id, schedule, True):
                        row.plugin_id, row.schedule, row.registered = entry.plugin_id, schedule, True
                        session.add(row)
                for name, row in rows.items():
                    if name not in entries and row.registered:
                        row.registered = False
        except Exception:
            log.debug("task registry not published this time", exc_info=True, extra=CONTEXT)

    def _update(self, name: str, **values: Any) -> None:
        with self.runtime.sessions.begin() as session:
            state = session.get(TaskState, name) or TaskState(name=name, paused=False, auto_paused=False, failures=0)
            for key, value in values.items():
                setattr(state, key, value)
            session.add(state)
        self.refresh()
