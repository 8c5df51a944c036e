"""The watcher of one worker: it calls the manager's reconcile when the plugins folder, a dev folder or the state
marker changes (watchfiles), and once more a moment later when a zip was still being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from xcore.plugins.store import STATE_MARKER

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}
# Milliseconds between the watcher's looks (watchfiles' `step`): a change is reported this long after the last
# write. Each look wakes the worker and takes the GIL, so it is not shorter.
WATCH_STEP = 50


class Watcher:
    """Watcher runs `reconcile` on every relevant change under `folder` and `dev_dirs`, and `idle` (the touch of
    the extracted bundles in use) every `idle_every` seconds; `recheck(delay)` asks for one more reconcile."""

    def __init__(
        self,
        folder: Path,
        dev_dirs: list[Path],
        interval: float,
        reconcile: Callable[[], Awaitable[None]],
        idle: Callable[[], Awaitable[object]],
        idle_every: float,
    ) -> None:
        self.folder = folder
        self.dev_dirs = dev_dirs
        self.interval = interval
        self._reconcile = reconcile
        self._idle = idle
        self._idle_every = idle_every
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None

    def start(self) -> None:
        """start begins watching, in a task of the running loop."""
        self._task = asyncio.create_task(self._watch(), name="xcore-plugin-watcher")

    async def stop(self) -> None:
        """stop ends the watching and a pending recheck."""
        self._stop.set()
        for task in (self._task, self._recheck):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def recheck(self, delay: float) -> None:
        """recheck runs one reconcile `delay` seconds from now, unless one is already due."""
        if self._stop.is_set() or (self._recheck is not None and not self._recheck.done()):
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self._recheck = None  # this reconcile may schedule the next look
            try:
                await self._reconcile()
            except Exception:
                log.exception("plugin reload failed", extra=CONTEXT)

        self._recheck = asyncio.create_task(later(), name="xcore-plugin-recheck")

    async def _watch(self) -> None:
        paths = [self.folder, *(d for d in self.dev_dirs if d.is_dir())]
        last_idle = time.monotonic()
        async for _ in awatch(
            *paths,
            watch_filter=self._relevant,
            debounce=400,
            step=WATCH_STEP,
            rust_timeout=int(self.interval * 1000),
            yield_on_timeout=True,
            stop_event=self._stop,
        ):
            try:
                await self._reconcile()
                if time.monotonic() - last_idle > self._idle_every:
                    last_idle = time.monotonic()
                    await self._idle()
            except Exception:
                log.exception("plugin reload failed", extra=CONTEXT)

    def _relevant(self, change: Change, path: str) -> bool:
        p = Path(path)
        if p.parent == self.folder:
            return p.name == STATE_MARKER or (p.suffix.lower() == ".zip" and not p.name.startswith("."))
        parts = p.parts
        return not any(part in ("__pycache__", ".git") for part in parts) and not p.name.endswith((".pyc", "~"))
