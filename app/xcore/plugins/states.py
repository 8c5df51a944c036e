"""What the database holds about the plugins: the admin's choices (enabled flags, config overrides) read by every
worker, and the states each reconcile ends with (`plugin_state`), for `xcore plugin list` and restarts.

A change through the database touches `<plugins>/.xcore-state` (`STATE_MARKER`), so every worker's watcher
wakes up; `StateStore.read` reads the tables again only when that marker changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from xcore.db.models import PluginState
from xcore.plugins.settings import read_overrides
from xcore.plugins.store import STATE_MARKER
from xcore.plugins.views import PluginView
from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}


@dataclass
class Stored:
    """Stored is what the database says about the plugins: enabled flags and config overrides."""

    enabled: dict[str, bool]
    overrides: dict[str, dict[str, Any]]
    marker: int


class StateStore:
    """StateStore reads the admin's choices and records the plugins' states for one worker."""

    def __init__(self, runtime: Runtime, folder: Path) -> None:
        self.runtime = runtime
        self.folder = folder
        self._stored: Stored | None = None
        self._persisted: dict[str, tuple[Any, ...]] = {}

    def forget(self) -> None:
        """forget makes the next `read` go to the database even if the marker did not change."""
        self._stored = None

    def read(self) -> Stored:
        """read returns the enabled flags and overrides, from the database when the state marker changed."""
        try:
            marker = (self.folder / STATE_MARKER).stat().st_mtime_ns
        except FileNotFoundError:
            marker = 0
        if self._stored is not None and self._stored.marker == marker:
            return self._stored
        with self.runtime.sessions() as session:
            enabled = {row.plugin_id: row.enabled for row in session.scalars(select(PluginState))}
            overrides = read_overrides(session)
        self._stored = Stored(enabled, overrides, marker)
        return self._stored

    def persist(self, views: Mapping[str, PluginView]) -> None:
        """persist records each plugin's state in `plugin_state`, writing only the rows that changed."""
        changed = {
            pid: row
            for pid, view in views.items()
            if self._persisted.get(pid) != (row := (view.version, view.state, view.error, view.sha256, view.versions))
        }
        if not changed:
            return
        try:
            with self.runtime.auth.transaction() as session:
                rows = session.scalars(select(PluginState).where(PluginState.plugin_id.in_(list(changed))))
                existing = {row.plugin_id: row for row in rows}
                for pid, (version, state, error, sha, versions) in changed.items():
                    record = existing.get(pid) or PluginState(plugin_id=pid, enabled=True)
                    record.version, record.state, record.error, record.bundle_sha256 = version, state, error, sha
                    record.versions = versions
                    session.add(record)
        except Exception:  # another worker writing the same rows: it records the same states
            log.debug("plugin states not recorded this time", exc_info=True, extra=CONTEXT)
            return
        self._persisted.update(changed)
