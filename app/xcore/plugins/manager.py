"""The plugin manager of one worker: it decides which version of each plugin serves, and swaps apps to match.

`reconcile()` is the one operation. It scans the plugins folder (and the dev folders), reads the enabled flags and
config overrides from the database, and for each plugin id, in dependency order, picks the highest version that
passes its checks and loads (import, then `on_load`). Then it builds one new app with every chosen plugin and
swaps it in through the Switch. Requests in flight finish on the old app; the replaced versions' `on_unload`
runs after that. A version that fails anywhere on the way is recorded with its reason, and what served before
keeps serving: a plugin never takes down another one or the core.

Every worker runs its own manager over the same folder and database, and a watcher (watchfiles) that calls
`reconcile()` on a change, so all workers converge on the same state. Changes made through the database
(enable, disable, config) touch `<plugins>/.xcore-state`, which every watcher sees.
"""

from __future__ import annotations

import asyncio
import graphlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Litestar
from litestar.routes import HTTPRoute
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from watchfiles import Change, awatch

from xcore.auth.permissions import register_plugin_permissions
from xcore.db.models import PluginState
from xcore.heap import freeze_startup_heap
from xcore.plugins.bundle import BundleError, collect_garbage
from xcore.plugins.errors import PluginConflict
from xcore.plugins.loader import (
    HOOK_TIMEOUT,
    LoadedPlugin,
    PluginLoadError,
    import_plugin,
    read_defaults,
    run_hook,
    unload_modules,
)
from xcore.plugins.manifest import overlaps
from xcore.plugins.settings import merged, override_problems, read_overrides
from xcore.plugins.sources import SETTLE, STILL_WRITTEN, Scan, Scanner, Source
from xcore.plugins.store import STATE_MARKER, cache_dir, plugin_data_dir, plugins_dir
from xcore.runtime import Runtime
from xcore.tasks.host import TaskHost
from xcore.web.dispatch import Dispatch
from xcore.web.switch import AppStartupError, Generation, Switch

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}
RECHECK = 0.1  # seconds before a pending zip is looked at again
CACHE_IDLE = 600.0  # an extracted bundle no worker has touched for this long may be deleted
# Milliseconds between the watcher's looks (watchfiles' `step`): a change is reported this long after the last
# write. Each look wakes the worker and takes the GIL: 20 ms was 50 wake-ups a second in an idle worker.
WATCH_STEP = 50


@dataclass
class PluginView:
    """PluginView is what the admin API shows for one plugin id."""

    id: str
    state: str  # active | disabled | failed | pending
    enabled: bool
    version: str | None  # the version serving, else the newest one seen
    error: str | None = None
    name: str | None = None
    description: str | None = None
    author: str | None = None
    prefix: str | None = None
    source: str | None = None  # "zip" or "dev"
    file: str | None = None
    sha256: str | None = None
    routes: list[str] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    dependencies: dict[str, str] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the merged settings; GET .../config has the parts
    serving: str | None = None  # the version serving now, None when none does
    failed_versions: list[str] = field(default_factory=list)  # each failed version (a broken zip: its file name)
    summary: str | None = None  # "serving 0.5.0, 0.6.0 failed"; None when nothing serves and nothing failed


@dataclass
class _Stored:
    """_Stored is what the database says about the plugins: enabled flags and config overrides."""

    enabled: dict[str, bool]
    overrides: dict[str, dict[str, Any]]
    marker: int


class PluginManager:
    """PluginManager loads, reloads and unloads the plugins of one worker process."""

    def __init__(self, runtime: Runtime, dev_dirs: Iterable[Path] = (), tasks: TaskHost | None = None) -> None:
        self.runtime = runtime
        self.tasks = tasks  # None: plugin tasks are listed but not registered (an app without a scheduler)
        self.folder = plugins_dir(runtime)
        self.cache = cache_dir(runtime)
        self.dev_dirs = [Path(d).resolve() for d in dev_dirs]
        settings = runtime.config.manager.plugins
        self.scanner = Scanner(self.folder, self.dev_dirs, runtime.version, settings.interval, settings.entry_point)
        self.interval = settings.interval
        self.loaded: dict[str, LoadedPlugin] = {}  # in load order
        self.views: dict[str, PluginView] = {}
        self.reloads = 0  # apps swapped in since start
        self._failed: dict[tuple[str, str], str] = {}  # (fingerprint, config stamp) -> why it failed
        self._routes: dict[str, list[str]] = {}
        # Why versions did not load in the last reconcile: plugin id -> [(fingerprint or "", version, reason)].
        self._notes: dict[str, list[tuple[str, str, str]]] = {}
        self._stored: _Stored | None = None
        self._persisted: dict[str, tuple[Any, ...]] = {}
        self._switch: Switch | None = None
        self._lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._scan = Scan([], [])
        self._core: Litestar | None = None
        self._core_life: Generation | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def openapi(self) -> dict[str, Any] | None:
        """openapi is the OpenAPI document of what is mounted now (None before the first app)."""
        app = self._switch.app if self._switch else None
        return app.openapi if isinstance(app, Dispatch) else None

    async def start(self, switch: Switch) -> None:
        """start builds the core app, loads the plugins, swaps the first app in, and starts watching.

        The Switch's startup hook. The core app is built once and lives as long as the worker; each plugin
        change builds only the plugins' app (see `web.dispatch`).
        """
        from xcore.web.app import build_app

        self._switch = switch
        self._core = await anyio.to_thread.run_sync(lambda: build_app(self.runtime, manager=self))
        freeze_startup_heap()
        self._core_life = Generation(self._core, 0)
        await self._core_life.start()
        await self.reconcile(initial=True)
        for _ in range(3):  # a zip written just before the start: give it a moment rather than start without it
            if not any(p.error == STILL_WRITTEN for p in self._scan.problems):
                break
            await asyncio.sleep(SETTLE)
            await self.reconcile()
        if self.tasks is not None:  # after the plugins: runs a crash interrupted find their tasks registered
            await anyio.to_thread.run_sync(self.tasks.start)
        self._stop = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(), name="xcore-plugin-watcher")
        await anyio.to_thread.run_sync(self.collect_garbage)

    async def stop(self) -> None:
        """stop ends the watcher and runs every loaded plugin's `on_unload`. The Switch's shutdown hook."""
        if self._stop is not None:
            self._stop.set()
        for task in (self._watcher, self._recheck):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.tasks is not None:  # running tasks finish (within the grace period) while their plugins are loaded
            await anyio.to_thread.run_sync(self.tasks.stop)
        async with self._lock:
            plugins, self.loaded = list(self.loaded.values()), {}
            await self._retire(reversed(plugins))
        if self._core_life is not None:
            await self._core_life.stop()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """paused holds reconciles off (the watcher's too) while the caller changes the plugins folder or the
        plugin tables: a reconcile under way finishes first, so its record of the states it saw (written last)
        cannot undo the change, as it could undo a purge."""
        async with self._lock:
            yield

    # --- the one operation -----------------------------------------------------------------------------------

    async def reconcile(self, *, force: bool = False, reload: Iterable[str] = (), initial: bool = False) -> None:
        """reconcile brings the served plugins in line with the folder and the database.

        `force` re-reads every zip and retries versions that failed before; `reload` names plugins to import
        afresh even if unchanged.
        """
        async with self._lock:
            if force:
                self.scanner.forget()
                self._failed.clear()
                self._stored = None
            scan = self._scan = await anyio.to_thread.run_sync(self.scanner.scan)
            stored = await anyio.to_thread.run_sync(self._read_stored)
            await self._apply(scan, stored, set(reload), initial)
            self._update_views(scan, stored)
            await anyio.to_thread.run_sync(self._persist_states)
            if scan.pending:
                self._schedule_recheck(min(RECHECK, max(scan.settles_in, 0.0) + 0.005))

    async def _apply(self, scan: Scan, stored: _Stored, reload: set[str], initial: bool) -> None:
        candidates: dict[str, list[Source]] = {}
        for source in scan.sources:
            candidates.setdefault(source.id, []).append(source)
        for versions in candidates.values():
            versions.sort(key=lambda s: (s.dev, s.version), reverse=True)  # a dev folder first, then newest
        unsettled = {p.plugin_id for p in scan.problems}
        order, cycles = _load_order(candidates, self.loaded)
        self._notes = {}
        chosen: dict[str, LoadedPlugin] = {}
        fresh: list[LoadedPlugin] = []
        for pid in order:
            current = self.loaded.get(pid)
            if not stored.enabled.get(pid, True):
                continue
            if pid in cycles:
                self._note(pid, None, cycles[pid])
                continue
            overrides = stored.overrides.get(pid, {})
            stamp = json.dumps(overrides, sort_keys=True)
            pick: LoadedPlugin | None = None
            for source in candidates.get(pid, []):
                problem = _static_problem(source.manifest, chosen, candidates, stored)
                if problem:
                    self._note(pid, source, problem)
                    continue
                if (
                    current is not None
                    and current.fingerprint == source.fingerprint
                    and current.config_stamp == stamp
                    and pid not in reload
                ):
                    pick = current
                    break
                key = (source.fingerprint, stamp)
                if key in self._failed and pid not in reload:
                    self._note(pid, source, self._failed[key])
                    continue
                try:
                    pick = await self._load(source, overrides, stamp)
                except Exception as exc:  # whatever one version raises fails that version, never the manager
                    self._load_failed(source, key, exc)
                    continue
                fresh.append(pick)
                break
            # Nothing newer loads, and the plugin was not removed: what served keeps serving.
            if (
                pick is None
                and current is not None
                and (candidates.get(pid) or pid in unsettled)
                and not _static_problem(current.manifest, chosen, candidates, stored)
            ):
                pick = current
            if pick is not None:
                chosen[pid] = pick
        if initial or _differs(chosen, self.loaded):
            await self._swap(chosen, fresh)

    async def _swap(self, chosen: dict[str, LoadedPlugin], fresh: list[LoadedPlugin]) -> None:
        """_swap builds the app of `chosen` and swaps it in. A new version that breaks the build, or the new app's
        start, is dropped and the rest tried again; what served before stays for its id."""
        assert self._switch is not None
        while True:
            try:
                app = await anyio.to_thread.run_sync(self._build, list(chosen.values()))
            except Exception as exc:
                culprits = [p for p in fresh if not await anyio.to_thread.run_sync(self._builds_alone, p)] or fresh
                if not culprits:
                    raise  # the core alone does not build: a bug, not a plugin's fault
                await self._reject(
                    culprits, chosen, fresh, f"its routes cannot be mounted: {' '.join(str(exc).split())}"
                )
                continue
            replaced = [p for pid, p in self.loaded.items() if chosen.get(pid) is not p]
            try:
                await self._switch.swap_in(app, retired=partial(self._retire, reversed(replaced)))
                break
            except AppStartupError as exc:
                if not fresh:
                    raise  # what served before does not start again: not a new version's fault
                await self._reject(list(fresh), chosen, fresh, f"the app did not start: {exc}")
        self.loaded = chosen
        self.reloads += 1
        if self.tasks is not None:  # the new versions' functions now serve their names; removed ones are gone
            self.tasks.sync_plugin_tasks(
                (name, fn, plugin.context) for plugin in chosen.values() for name, fn in plugin.tasks.items()
            )
        for plugin in fresh:
            if plugin in chosen.values():
                log.info(
                    "plugin %s %s is active at %s", plugin.id, plugin.version, plugin.manifest.prefix, extra=CONTEXT
                )

    async def _reject(
        self, culprits: list[LoadedPlugin], chosen: dict[str, LoadedPlugin], fresh: list[LoadedPlugin], reason: str
    ) -> None:
        for plugin in culprits:
            self._failed[(plugin.fingerprint, plugin.config_stamp)] = reason
            self._note(plugin.id, plugin, reason)
            log.error("plugin %s %s failed: %s", plugin.id, plugin.version, reason, extra=CONTEXT)
            fresh.remove(plugin)
            previous = self.loaded.get(plugin.id)
            if previous is not None:
                chosen[plugin.id] = previous
            else:
                chosen.pop(plugin.id, None)
        await self._retire(culprits)

    def _build(self, plugins: list[LoadedPlugin]) -> Dispatch:
        """_build makes the generation's app: the core app beside a new app of `plugins`' routes, and the
        merged OpenAPI document (built now: a plugin that breaks /openapi.json fails here, alone)."""
        from xcore.web.app import build_plugin_app

        assert self._core is not None
        app = build_plugin_app(self.runtime, [p.mount for p in plugins], self) if plugins else None
        dispatch = Dispatch(self._core, app, [p.manifest.prefix for p in plugins])
        self._routes = _routes_by_plugin(app, plugins) if app else {}
        return dispatch

    def _builds_alone(self, plugin: LoadedPlugin) -> bool:
        try:
            Litestar(route_handlers=[plugin.mount], logging_config=None).openapi_schema  # noqa: B018
        except Exception:
            return False
        return True

    async def _load(self, source: Source, overrides: dict[str, Any], stamp: str) -> LoadedPlugin:
        """_load extracts, configures and imports one version, registers its permissions and runs `on_load`."""
        folder = await anyio.to_thread.run_sync(source.folder, self.cache)
        defaults = await anyio.to_thread.run_sync(read_defaults, folder)
        problems = override_problems(defaults, overrides)
        for where, problem in problems:  # a newer version may have dropped or retyped a setting
            log.warning("plugin %s: config override %s ignored: %s", source.id, where, problem, extra=CONTEXT)
        valid = {k: v for k, v in overrides.items() if not any(w.split(".", 1)[0] == k for w, _ in problems)}
        data_dir = plugin_data_dir(self.runtime, source.id)
        try:
            with anyio.fail_after(HOOK_TIMEOUT):
                plugin = await anyio.to_thread.run_sync(
                    lambda: import_plugin(
                        source.manifest,
                        folder,
                        source=source.path,
                        fingerprint=source.fingerprint,
                        data_dir=data_dir,
                        config=merged(defaults, valid),
                        dev=source.dev,
                    ),
                    abandon_on_cancel=True,
                )
        except TimeoutError:
            raise PluginLoadError(f"importing the plugin did not finish within {HOOK_TIMEOUT:.0f} s") from None
        plugin.defaults, plugin.config_stamp = defaults, stamp
        try:
            await anyio.to_thread.run_sync(data_dir.mkdir, 0o700, True, True)
            await anyio.to_thread.run_sync(self._register_permissions, plugin)
            await run_hook(plugin, "on_load")
        except BaseException:
            unload_modules(plugin.package)
            raise
        return plugin

    def _register_permissions(self, plugin: LoadedPlugin) -> None:
        if not plugin.manifest.permissions:
            return
        for attempt in range(3):  # two workers loading the same plugin may insert the same name at once
            try:
                with self.runtime.auth.transaction() as session:
                    register_plugin_permissions(session, plugin.id, plugin.manifest.permissions)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    async def _retire(self, plugins: Iterable[LoadedPlugin]) -> None:
        """_retire runs `on_unload` of versions no longer served and forgets their modules."""
        for plugin in plugins:
            try:
                await run_hook(plugin, "on_unload")
            except PluginLoadError as exc:
                log.warning("plugin %s %s: %s", plugin.id, plugin.version, exc, extra=CONTEXT)
            unload_modules(plugin.package)

    def _load_failed(self, source: Source, key: tuple[str, str], exc: Exception) -> None:
        """_load_failed records why `source` did not load (it is not tried again until it or its settings change,
        or a forced reload), and logs it once. A zip that changed since it was scanned is scanned again instead."""
        reason = str(exc) if isinstance(exc, PluginLoadError | BundleError) else f"loading it raised {exc!r}"
        self._note(source.id, source, reason)
        if isinstance(exc, BundleError) and exc.rule == "changed":
            self.scanner.forget(source.path)
            self._schedule_recheck(RECHECK)
            log.info("plugin %s %s: %s", source.id, source.manifest.version, reason, extra=CONTEXT)
            return
        self._failed[key] = reason
        unexpected = None if isinstance(exc, PluginLoadError | BundleError) else exc
        log.error(
            "plugin %s %s failed to load: %s", source.id, source.manifest.version, reason, exc_info=unexpected,
            extra=CONTEXT,
        )  # fmt: skip

    def _note(self, pid: str, version: Source | LoadedPlugin | None, reason: str) -> None:
        if version is None:
            self._notes.setdefault(pid, []).append(("", "", reason))
        else:
            self._notes.setdefault(pid, []).append((version.fingerprint, version.manifest.version, reason))

    async def settings_of(self, pid: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """settings_of is (the bundle's defaults, the admin's overrides, the merged settings) of plugin `pid`."""
        loaded = self.loaded.get(pid)
        if loaded is not None:
            defaults = loaded.defaults
        else:
            sources = sorted((s for s in self._scan.sources if s.id == pid), key=lambda s: (s.dev, s.version))
            defaults = {}
            if sources:
                try:
                    folder = await anyio.to_thread.run_sync(sources[-1].folder, self.cache)
                    defaults = await anyio.to_thread.run_sync(read_defaults, folder)
                except (PluginLoadError, BundleError) as exc:
                    raise PluginConflict(f"plugin {pid!r}: {exc}") from None
        stored = await anyio.to_thread.run_sync(self._read_stored)
        overrides = stored.overrides.get(pid, {})
        return defaults, overrides, merged(defaults, overrides)

    # --- state -----------------------------------------------------------------------------------------------

    def _read_stored(self) -> _Stored:
        try:
            marker = (self.folder / STATE_MARKER).stat().st_mtime_ns
        except FileNotFoundError:
            marker = 0
        if self._stored is not None and self._stored.marker == marker:
            return self._stored
        with self.runtime.sessions() as session:
            enabled = {row.plugin_id: row.enabled for row in session.scalars(select(PluginState))}
            overrides = read_overrides(session)
        self._stored = _Stored(enabled, overrides, marker)
        return self._stored

    def _update_views(self, scan: Scan, stored: _Stored) -> None:
        ids = {s.id for s in scan.sources} | {p.plugin_id for p in scan.problems} | set(self.loaded)
        ids |= {pid for pid, on in stored.enabled.items() if not on}
        views = {}
        for pid in sorted(ids):
            views[pid] = self._view(pid, scan, stored)
        self.views = views

    def _view(self, pid: str, scan: Scan, stored: _Stored) -> PluginView:
        serving = self.loaded.get(pid)
        sources = sorted((s for s in scan.sources if s.id == pid), key=lambda s: (s.dev, s.version), reverse=True)
        problems = [p for p in scan.problems if p.plugin_id == pid]
        notes = [
            f"{version} failed: {reason}" if version else reason for _, version, reason in self._notes.get(pid, [])
        ]
        failures = {fingerprint: reason for fingerprint, _, reason in self._notes.get(pid, []) if fingerprint}
        enabled = stored.enabled.get(pid, True)
        versions: list[dict[str, Any]] = []
        for source in sources:
            failed = failures.get(source.fingerprint)
            if serving is not None and source.fingerprint == serving.fingerprint:
                state = "active"
            elif failed:
                state = "failed"
            elif not enabled:
                state = "disabled"
            elif serving is not None and source.version < Version(serving.version):
                state = "superseded"
            else:
                state = "failed" if pid in self._notes else "pending"
            versions.append(
                {
                    "version": source.manifest.version,
                    "file": source.path.name,
                    "sha256": source.fingerprint,
                    "dev": source.dev,
                    "state": state,
                    "error": failed,
                }
            )
        versions += [
            {"version": None, "file": p.path.name, "sha256": None, "dev": False, "state": p.state, "error": p.error}
            for p in problems
        ]
        shown = serving.manifest if serving else (sources[0].manifest if sources else None)
        if not enabled:
            state, error = "disabled", None
        elif serving is not None:
            state = "active"
            error = f"{'; '.join(notes)}; serving {serving.version}" if notes else None
            pending = [p for p in problems if p.state == "pending"]
            if pending and not notes:
                error = f"{pending[0].path.name} is pending: {pending[0].error}; serving {serving.version}"
        elif notes or any(p.state == "failed" for p in problems):
            state = "failed"
            error = "; ".join(notes + [p.error for p in problems if p.state == "failed"])
        else:
            state, error = ("pending", problems[0].error) if problems else ("failed", "no bundle")
        view = PluginView(id=pid, state=state, enabled=enabled, version=shown.version if shown else None, error=error)
        view.versions = versions
        view.serving = serving.version if serving is not None else None
        view.failed_versions = [v["version"] or v["file"] for v in versions if v["state"] == "failed"]
        view.summary = version_summary(view.serving, view.failed_versions)
        if shown is not None:
            view.name, view.description, view.author = shown.name, shown.description, shown.author
            view.prefix, view.permissions = shown.prefix, list(shown.permissions)
            view.dependencies = dict(shown.dependencies)
        origin = serving or (sources[0] if sources else None)
        if origin is not None:
            view.source = "dev" if origin.dev else "zip"
            path = origin.source if isinstance(origin, LoadedPlugin) else origin.path
            view.file, view.sha256 = path.name, (None if origin.dev else origin.fingerprint)
        if serving is not None:
            view.routes = self._routes.get(pid, [])
            view.tasks = [_task_view(name, spec) for name, spec in serving.task_specs().items()]
            view.config = dict(serving.context.config)
        return view

    def _persist_states(self) -> None:
        """_persist_states records each plugin's state in `plugin_state`, for `xcore plugin list` and restarts."""
        changed = {
            pid: row
            for pid, view in self.views.items()
            if self._persisted.get(pid) != (row := (view.version, view.state, view.error, view.sha256, view.versions))
        }
        if not changed:
            return
        try:
            with self.runtime.auth.transaction() as session:
                for pid, (version, state, error, sha, versions) in changed.items():
                    record = session.get(PluginState, pid) or PluginState(plugin_id=pid, enabled=True)
                    record.version, record.state, record.error, record.bundle_sha256 = version, state, error, sha
                    record.versions = versions
                    session.add(record)
        except Exception:  # another worker writing the same rows: it records the same states
            log.debug("plugin states not recorded this time", exc_info=True, extra=CONTEXT)
            return
        self._persisted.update(changed)

    def touch_in_use(self) -> set[Path]:
        """touch_in_use marks the extracted bundles this worker serves as used now; returns them."""
        in_use = {p.folder for p in self.loaded.values() if not p.dev}
        for folder in in_use:
            os.utime(folder)  # another worker's garbage collection sees that this extraction is still served
        return in_use

    def collect_garbage(self) -> int:
        """collect_garbage deletes extracted bundles no worker has touched for CACHE_IDLE seconds (the core task
        xcore.plugin_cache runs it); returns how many."""
        removed = collect_garbage(self.cache, self.touch_in_use(), idle=CACHE_IDLE)
        if removed:
            log.info("plugin cache: removed %d unused folder(s)", len(removed), extra=CONTEXT)
        return len(removed)

    # --- watching --------------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        assert self._stop is not None
        paths = [self.folder, *(d for d in self.dev_dirs if d.is_dir())]
        last_touch = time.monotonic()
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
                await self.reconcile()
                if time.monotonic() - last_touch > CACHE_IDLE / 4:
                    last_touch = time.monotonic()
                    await anyio.to_thread.run_sync(self.touch_in_use)
            except Exception:
                log.exception("plugin reload failed", extra=CONTEXT)

    def _relevant(self, change: Change, path: str) -> bool:
        p = Path(path)
        if p.parent == self.folder:
            return p.name == STATE_MARKER or (p.suffix.lower() == ".zip" and not p.name.startswith("."))
        parts = p.parts
        return not any(part in ("__pycache__", ".git") for part in parts) and not p.name.endswith((".pyc", "~"))

    def _schedule_recheck(self, delay: float) -> None:
        if self._recheck is not None and not self._recheck.done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self._recheck = None  # this reconcile may schedule the next look
            try:
                await self.reconcile()
            except Exception:
                log.exception("plugin reload failed", extra=CONTEXT)

        self._recheck = asyncio.create_task(later(), name="xcore-plugin-recheck")


def version_summary(serving: str | None, failed: list[str]) -> str | None:
    """version_summary says in words which version serves and which failed: "serving 0.5.0, 0.6.0 failed"."""
    parts = ([f"serving {serving}"] if serving else []) + [f"{version} failed" for version in failed]
    return ", ".join(parts) or None


def _load_order(
    candidates: dict[str, list[Source]], loaded: dict[str, LoadedPlugin]
) -> tuple[list[str], dict[str, str]]:
    """_load_order sorts plugin ids so dependencies come first; plugins on a cycle get its description."""
    graph: dict[str, set[str]] = {}
    for pid in sorted(set(candidates) | set(loaded)):
        manifest = candidates[pid][0].manifest if candidates.get(pid) else loaded[pid].manifest
        graph[pid] = set(manifest.dependencies)
    cycles: dict[str, str] = {}
    while True:
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
            break
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            text = "dependency cycle " + " -> ".join(cycle)
            for pid in cycle[:-1]:
                cycles[pid] = text
                graph[pid] = set()
    order: list[str] = []
    while sorter.is_active():
        # Of the plugins ready to load, those serving now go first: they keep their prefix against a newcomer.
        ready = sorted(sorter.get_ready(), key=lambda pid: (pid not in loaded, pid))
        order += ready
        sorter.done(*ready)
    return [pid for pid in order if pid in candidates or pid in loaded], cycles


def _static_problem(
    manifest: Any, chosen: dict[str, LoadedPlugin], candidates: dict[str, list[Source]], stored: _Stored
) -> str | None:
    """_static_problem is why a version cannot load next to the plugins chosen so far: a prefix or a dependency,
    or a sandbox this host cannot give."""
    if manifest.sandbox:
        return "it asks for a sandbox (a separate worker process), which this xcore does not provide yet"
    for other in chosen.values():
        if overlaps(manifest.prefix, other.manifest.prefix):
            return f"its api_prefix {manifest.prefix} overlaps {other.manifest.prefix} of plugin {other.id}"
    for dep, spec in manifest.dependencies.items():
        have = chosen.get(dep)
        if have is None:
            if dep not in candidates:
                return f"it needs plugin {dep}, which is not installed"
            if not stored.enabled.get(dep, True):
                return f"it needs plugin {dep}, which is disabled"
            return f"it needs plugin {dep}, which failed to load"
        if Version(have.version) not in SpecifierSet(spec, prereleases=True):
            return f"it needs plugin {dep} {spec}, and {dep} {have.version} is the one loaded"
    return None


def _differs(chosen: dict[str, LoadedPlugin], loaded: dict[str, LoadedPlugin]) -> bool:
    return list(chosen) != list(loaded) or any(loaded[k] is not v for k, v in chosen.items())


def _routes_by_plugin(app: Litestar, plugins: list[LoadedPlugin]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {p.id: [] for p in plugins}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for plugin in plugins:
            if overlaps(route.path, plugin.manifest.prefix):
                methods = sorted(m for m in route.methods if m not in ("HEAD", "OPTIONS"))
                found[plugin.id] += [f"{m} {route.path}" for m in methods]
    return found


def _task_view(name: str, spec: Any) -> dict[str, Any]:
    kind = "periodic" if spec.cron or spec.every else "task"
    return {"name": name, "kind": kind, "cron": spec.cron, "every": spec.every}
