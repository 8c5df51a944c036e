"""The plugin manager of one worker: it decides which version of each plugin serves, loads it, and hands the
chosen versions to whoever serves them.

`reconcile()` is the one operation. It scans the plugins folder (and the dev folders), reads the enabled flags and
config overrides from the database, and for each plugin id, in dependency order, picks the highest version that
passes its checks and loads it (import, then `on_load`). Then it hands what changed to its `Mounts` (the web
layer's per-plugin apps, `xcore.web.plugin_apps`): `prepare` builds and starts the app of each new version,
`serve` swaps in the chosen set. Requests in flight finish on what served before; the replaced versions'
`on_unload` runs after that. A version that fails anywhere on the way is recorded with its reason, and what
served before keeps serving: a plugin never takes down another one or the core.

The manager never imports the web layer: `Mounts` is the whole of what it needs from it.

Every worker runs its own manager over the same folder and database, and a watcher (`plugins.watcher`) that
calls `reconcile()` on a change, so all workers converge on the same state. Changes made through the database
(enable, disable, config) touch `<plugins>/.xcore-state`, which every watcher sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from packaging.utils import canonicalize_name
from sqlalchemy.exc import IntegrityError

from xcore.auth.builtin import manage_permission
from xcore.auth.permissions import register_plugin_permissions
from xcore.metrics import tally
from xcore.metrics.families import PLUGIN_RELOAD_DURATION, PLUGIN_RELOADS
from xcore.plugins import contract, safemode
from xcore.plugins.blocklist import LocalBlocklist
from xcore.plugins.bundle import Bundle, BundleError, collect_garbage
from xcore.plugins.cache import CacheStores
from xcore.plugins.catalogues import Catalogues
from xcore.plugins.choice import differs, load_order, static_problem
from xcore.plugins.contract import HEALTH_EVERY, HOOK_TIMEOUT
from xcore.plugins.errors import PluginConflict
from xcore.plugins.health import FAILING, NOT_CHECKED, NOT_DECLARED, OK, PluginHealth, check
from xcore.plugins.index import IndexUnavailable
from xcore.plugins.kv import KeyValue
from xcore.plugins.libraries import borrowed, importing, keep
from xcore.plugins.loader import (
    LoadedPlugin,
    PluginLoadError,
    PluginNotYet,
    import_plugin,
    read_defaults,
    run_hook,
    unload_modules,
)
from xcore.plugins.lock import WheelError
from xcore.plugins.manifest import Manifest
from xcore.plugins.requirements import Resolved, Unmet, bundle_wheels, collect_downloads, folder_wheels
from xcore.plugins.sandbox import closer, load_sandboxed, sandbox_reason
from xcore.plugins.settings import merged, override_problems
from xcore.plugins.shared import shared_bundles
from xcore.plugins.signing import SignatureError, Signer
from xcore.plugins.sources import SETTLE, STILL_WRITTEN, Scan, Scanner, Source
from xcore.plugins.states import StateStore, Stored
from xcore.plugins.store import (
    cache_dir,
    catalogue_store,
    install_requirements,
    plugin_data_dir,
    plugins_dir,
    policy_here,
    trust_store,
    wheel_store,
)
from xcore.plugins.views import Notes, PluginView, plugin_views, refresh_sandbox
from xcore.plugins.watcher import Watcher
from xcore.plugins.wheels import Libraries
from xcore.runtime import Runtime
from xcore.tasks.host import TaskHost

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}
RECHECK = 0.1  # seconds before a pending zip is looked at again
CACHE_IDLE = 600.0  # an extracted bundle no worker has touched for this long may be deleted

__all__ = ["Mounts", "PluginManager", "PluginView"]

Held = dict[str, tuple[str, str]]  # normalized distribution -> (its version, the in-process plugin importing it)


@dataclass
class Unpacked:
    """Unpacked is one version made ready to import: its folder, settings, data folder and libraries."""

    folder: Path
    defaults: dict[str, Any]
    config: dict[str, Any]
    data_dir: Path
    libraries: Libraries | None
    requirements: list[Resolved]


class Mounts(Protocol):
    """Mounts is what serves the chosen versions' routes (`xcore.web.plugin_apps.PluginApps` in a worker).

    Each loaded version is prepared once: its app is built and started. `serve` then makes exactly `plugins`
    the ones requests reach, and calls `retired` once no request is left on what it replaced.
    """

    async def prepare(self, plugins: Sequence[LoadedPlugin]) -> dict[str, str]:
        """prepare builds and starts the app of each of `plugins`; returns why, by `package`, for those that
        could not be (those are not served and need no cleanup)."""
        ...

    async def serve(self, plugins: Sequence[LoadedPlugin], retired: Callable[[], Awaitable[None]]) -> None:
        """serve makes `plugins` (all prepared) the plugins that requests reach."""
        ...

    def routes(self, plugin: LoadedPlugin) -> list[str]:
        """routes are the "METHOD /path" lines of a served version's routes."""
        ...

    async def close(self) -> None:
        """close stops the apps of every version (the worker is stopping)."""
        ...


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
        self._views: dict[str, PluginView] = {}
        self.reloads = 0  # sets of plugins swapped in since start
        self.states = StateStore(runtime, self.folder)
        self.shared = shared_bundles(runtime)
        self.trust = trust_store(runtime)
        self.catalogues = Catalogues(settings.catalogues, self.trust, catalogue_store(runtime), runtime.version)
        self.blocklist = LocalBlocklist(runtime)  # manager.plugins.blocklist, read again when the settings file changes
        self.catalogues.load_kept()  # no network: a version a kept blocklist names never loads, even for a moment
        self._catalogue_task: asyncio.Task[None] | None = None
        self.safe_mode = safemode.current()  # every plugin off for this run (`xcore serve --safe`, or by itself)
        self._failed: dict[tuple[str, str], str] = {}  # (fingerprint, config stamp) -> why it failed
        self._notes: Notes = {}  # why versions did not load in the last reconcile
        self._mounts: Mounts | None = None
        self._lock = asyncio.Lock()
        self._watcher: Watcher | None = None
        self._scan = Scan([], [])
        self.stores = CacheStores.for_runtime(runtime)  # the plugins' `ctx.cache` (`xcore.plugins.cache`)
        self._checks: set[asyncio.Task[None]] = set()  # health checks under way, and their periodic loop

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def views(self) -> dict[str, PluginView]:
        """views are what the admin API shows of each plugin, as of the last reconcile, with the live state of each
        sandboxed version's worker (which crashes and restarts between reconciles)."""
        for pid, plugin in self.loaded.items():
            view = self._views.get(pid)
            if view is not None and plugin.sandbox is not None:
                refresh_sandbox(view, plugin)
            if view is not None:
                view.health = plugin.last_health or _unchecked(plugin)
        return self._views

    def runs_sandboxed(self, bundle: Bundle) -> bool:
        """runs_sandboxed says whether this bundle would run sandboxed on this host (and not be refused for a
        sandbox it lacks, or by the signing policy)."""
        refusal, must = self.policy(bundle.signer)
        sandboxed, why = sandbox_reason(bundle.manifest, self.runtime.config.manager.plugins, must)
        return sandboxed and not why and not refusal

    def _refusal(self, manifest: Manifest, signer: Signer | None, *, dev: bool = False) -> tuple[str, bool]:
        """_refusal is why a version may not run on this host now (the blocklist, the signing policy, a sandbox it
        lacks; "" when it may), and whether it runs sandboxed. A dev folder is the operator's own: the signing
        policy leaves it be."""
        blocked = self.blocked(manifest)
        if blocked:
            return blocked, False
        refusal, must = (None, None) if dev else self.policy(signer)
        sandboxed, why = sandbox_reason(manifest, self.runtime.config.manager.plugins, must)
        return refusal or why, sandboxed

    def blocked(self, manifest: Manifest) -> str | None:
        """blocked says why a version is on a blocklist (`manager.plugins.blocklist`, or a catalogue's), or None."""
        return self.blocklist.blocked(manifest) or self.catalogues.blocked(manifest.id, manifest.version)

    def policy(self, signer: Signer | None) -> tuple[str | None, str | None]:
        """policy is what `manager.plugins.policy` makes of a bundle with this signer: (why it is refused, why it
        must run sandboxed) (`xcore.plugins.signing.policy_says`). A trust store that cannot be read trusts
        nobody, and says so (`store.policy_here`)."""
        return policy_here(self.runtime, signer, self.trust)

    def _annotate(self, views: dict[str, PluginView]) -> None:
        """_annotate adds to the views what is not the plugins' own: trust in their signers, the catalogues'
        notices, and safe mode."""
        for view in views.values():
            self._trust_view(view)
            view.notices = self.catalogues.notices(view.id, view.serving or view.version)
            if self.safe_mode is not None:
                view.error = self.safe_mode.describe()

    def _trust_view(self, view: PluginView) -> None:
        """_trust_view says in the view whether this host trusts the key that signed the bundle shown."""
        if view.signature is None:
            return
        try:
            keys = self.trust.listed()
        except SignatureError:
            keys = []
        found = next((k for k in keys if k.key_id == view.signature["key_id"]), None)
        view.signature["trusted"], view.signature["trusted_as"] = found is not None, found.name if found else None

    def all_sandboxed(self, plugin_id: str) -> bool:
        """all_sandboxed says whether plugin `plugin_id` is in the folder or serving, and every version of it the
        folder holds and the one serving run sandboxed: then changing it is an admin's right, not a superadmin's
        (`xcore.auth.builtin.manage_permission`)."""
        sources = [s for s in self._scan.sources if s.id == plugin_id]
        serving = self.loaded.get(plugin_id)
        if serving is not None and serving.sandbox is None:
            return False
        if any(s.bundle is None for s in sources):  # a dev folder runs as its manifest says
            return False
        return bool(sources or serving) and all(self.runs_sandboxed(s.bundle) for s in sources if s.bundle)

    async def start(self, mounts: Mounts) -> None:
        """start loads the plugins, serves them through `mounts`, starts the task host and the watcher."""
        self._mounts = mounts
        self._watcher = Watcher(
            self.folder, self.dev_dirs, self.interval, self._look,
            idle=partial(anyio.to_thread.run_sync, self.touch_in_use), idle_every=CACHE_IDLE / 4,
        )  # fmt: skip
        await self.reconcile(initial=True)
        for _ in range(3):  # a zip written just before the start: give it a moment rather than start without it
            if not any(p.error == STILL_WRITTEN for p in self._scan.problems):
                break
            await asyncio.sleep(SETTLE)
            await self.reconcile()
        if self.tasks is not None:  # after the plugins: runs a crash interrupted find their tasks registered
            await anyio.to_thread.run_sync(self.tasks.start)
        await anyio.to_thread.run_sync(safemode.mark_up, self.runtime.data.root)  # this start came up
        self._watcher.start()
        if self.catalogues.sources:
            self._catalogue_task = asyncio.create_task(self.refresh_catalogues())
        self._background(self._check_health_forever())
        await anyio.to_thread.run_sync(self.collect_garbage)

    async def _look(self) -> None:
        """_look is the watcher's reconcile: first, when the settings file changed, its blocklist is read again (a
        version it now blocks is unloaded by the reconcile, one it no longer blocks loads)."""
        if self.blocklist.changed():
            await anyio.to_thread.run_sync(self.blocklist.reread)
        await self.reconcile()

    async def refresh_catalogues(self) -> None:
        """refresh_catalogues fetches the catalogues afresh; a change of their blocklists is applied at once."""
        if await anyio.to_thread.run_sync(self.catalogues.refresh):
            await self.reconcile()
        else:
            async with self._lock:  # their notices show in the views
                self._annotate(self._views)

    async def stop(self) -> None:
        """stop ends the watcher and the task host, stops the plugins' apps and runs every `on_unload`."""
        if self._catalogue_task is not None:
            self._catalogue_task.cancel()
        if self._watcher is not None:
            await self._watcher.stop()
        for running in list(self._checks):
            running.cancel()
        if self.tasks is not None:  # running tasks finish (within the grace period) while their plugins are loaded
            await anyio.to_thread.run_sync(self.tasks.stop)
        async with self._lock:
            if self._mounts is not None:
                await self._mounts.close()
            plugins, self.loaded = list(self.loaded.values()), {}
            await self._retire(reversed(plugins))
            keep([])  # no library of a plugin of this manager stays importable
        await anyio.to_thread.run_sync(self.stores.close)

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """paused holds reconciles off (the watcher's too) while the caller changes the plugins folder or the
        plugin tables: a reconcile under way finishes first, so its record of the states it saw (written last)
        cannot undo the change, as it could undo a purge."""
        async with self._lock:
            yield

    # --- the one operation -----------------------------------------------------------------------------------

    def _sync_shared(self) -> None:
        """_sync_shared syncs the folder with the shared database; on failure this node serves what it has."""
        try:
            if self.shared is not None:
                self.shared.sync()
        except Exception as exc:
            log.warning("could not sync the plugins folder with the shared database: %s; serving what is here", exc)

    async def reconcile(self, *, force: bool = False, reload: Iterable[str] = (), initial: bool = False) -> None:
        """reconcile brings the served plugins in line with the folder and the database.

        `force` re-reads every zip and retries versions that failed before; `reload` names plugins to import
        afresh even if unchanged.
        """
        async with self._lock:
            started, reloads = time.perf_counter(), self.reloads
            if force:
                self.scanner.forget()
                self._failed.clear()
                self.states.forget()
            if self.shared is not None:  # several nodes on PostgreSQL: this node's folder as the database says
                await anyio.to_thread.run_sync(self._sync_shared)
            scan = self._scan = await anyio.to_thread.run_sync(self.scanner.scan)
            stored = await anyio.to_thread.run_sync(self.states.read)
            if self.safe_mode is not None:  # for this run only: the stored flags stay as they are
                off = dict.fromkeys([*stored.enabled, *(s.id for s in scan.sources)], False)
                stored = Stored(off, stored.overrides, stored.marker)
            await self._apply(scan, stored, set(reload), initial)
            routes = self._mounts.routes if self._mounts is not None else _no_routes
            self._views = plugin_views(scan, stored.enabled, self.loaded, self._notes, routes)
            for pid, view in self._views.items():  # what changing it needs follows from the scan and the loaded
                view.manage_permission = manage_permission(self.all_sandboxed(pid))
            self._annotate(self._views)
            if self.safe_mode is None:  # a safe run's states are not the plugins' own
                await anyio.to_thread.run_sync(self._persist_states)
            if scan.pending:
                self._recheck(min(RECHECK, max(scan.settles_in, 0.0) + 0.005))
            if self.reloads != reloads:  # for the metrics: a reconcile that swapped plugins in
                tally.count(PLUGIN_RELOADS, amount=self.reloads - reloads)
                tally.observe(PLUGIN_RELOAD_DURATION, time.perf_counter() - started)

    async def _apply(self, scan: Scan, stored: Stored, reload: set[str], initial: bool) -> None:
        candidates: dict[str, list[Source]] = {}
        for source in scan.sources:
            candidates.setdefault(source.id, []).append(source)
        for versions in candidates.values():
            versions.sort(key=lambda s: (s.dev, s.version), reverse=True)  # a dev folder first, then newest
        unsettled = {p.plugin_id for p in scan.problems}
        order, cycles = load_order(candidates, self.loaded)
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
                problem = static_problem(source.manifest, chosen, candidates, stored.enabled)
                if problem:
                    self._note(pid, source, problem)
                    continue
                signer = source.bundle.signer if source.bundle else None
                refusal, sandboxed = self._refusal(source.manifest, signer, dev=source.dev)
                if refusal:  # before a version serving is kept: a key no longer trusted stops it
                    self._note(pid, source, refusal)
                    continue
                if (
                    current is not None
                    and current.fingerprint == source.fingerprint
                    and current.config_stamp == stamp
                    and (current.sandbox is not None) == sandboxed
                    and pid not in reload
                ):
                    pick = current
                    break
                key = (source.fingerprint, stamp)
                if key in self._failed and pid not in reload:
                    self._note(pid, source, self._failed[key])
                    continue
                held = _held(pid, chosen, self.loaded, candidates, stored.enabled)
                try:
                    pick = await self._load(source, overrides, stamp, sandboxed=sandboxed, held=held)
                except Exception as exc:  # whatever one version raises fails that version, never the manager
                    self._load_failed(source, key, exc)
                    continue
                fresh.append(pick)
                break
            # Nothing newer loads, and the plugin was not removed: what served keeps serving, if it still may.
            if (
                pick is None
                and current is not None
                and (candidates.get(pid) or pid in unsettled)
                and not static_problem(current.manifest, chosen, candidates, stored.enabled)
                and not self._refusal(current.manifest, current.signer, dev=current.dev)[0]
            ):
                pick = current
            if pick is not None:
                chosen[pid] = pick
        if initial or differs(chosen, self.loaded):
            await self._swap(chosen, fresh)
        keep(_in_process_libraries(self.loaded.values()))

    async def _swap(self, chosen: dict[str, LoadedPlugin], fresh: list[LoadedPlugin]) -> None:
        """_swap serves `chosen`: the apps of the `fresh` versions are built and started, each alone, and a new
        version whose app does not build or start is dropped, what served before staying for its id."""
        assert self._mounts is not None
        failures = await self._mounts.prepare(fresh)
        if failures:
            await self._reject(failures, chosen, fresh)
            if not differs(chosen, self.loaded) and self.reloads:
                return
        replaced = [p for pid, p in self.loaded.items() if chosen.get(pid) is not p]
        await self._mounts.serve(list(chosen.values()), retired=partial(self._retire, reversed(replaced)))
        self.loaded = chosen
        self.reloads += 1
        if self.tasks is not None:  # the new versions' functions now serve their names; removed ones are gone
            self.tasks.sync_plugin_tasks(
                (name, fn, plugin.context) for plugin in chosen.values() for name, fn in plugin.tasks.items()
            )
        for plugin in fresh:
            log.info("plugin %s %s is active at %s", plugin.id, plugin.version, plugin.manifest.prefix, extra=CONTEXT)
        if fresh:  # a new version's health is known at once, not HEALTH_EVERY later
            self._background(self.check_health(list(fresh)))

    # --- health ----------------------------------------------------------------------------------------------

    async def check_health(self, plugins: Sequence[LoadedPlugin] | None = None) -> None:
        """check_health runs the health check of every serving version (or of `plugins`) at once, each within
        HEALTH_TIMEOUT, and keeps what it says on the version (`LoadedPlugin.last_health`), which the views
        show. A failing plugin is flagged and logged once, never unloaded."""
        targets = list(self.loaded.values()) if plugins is None else list(plugins)
        async with anyio.create_task_group() as group:
            for plugin in targets:
                group.start_soon(self._check_one, plugin)

    async def _check_one(self, plugin: LoadedPlugin) -> None:
        found = await check(plugin)
        before, plugin.last_health = plugin.last_health, found
        was = before.status if before is not None else None
        if found.status == FAILING and was != FAILING:
            log.warning("plugin %s %s: health failing: %s", plugin.id, plugin.version, found.detail, extra=CONTEXT)
        elif found.status == OK and was == FAILING:
            log.info("plugin %s %s: health ok again", plugin.id, plugin.version, extra=CONTEXT)

    async def _check_health_forever(self) -> None:
        """_check_health_forever checks the serving versions' health every HEALTH_EVERY seconds."""
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            try:
                await self.check_health()
            except Exception as exc:  # a check never raises; the loop must outlive whatever does
                log.error("the plugins' health checks failed: %s", exc, exc_info=exc, extra=CONTEXT)

    def _background(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _reject(
        self, failures: dict[str, str], chosen: dict[str, LoadedPlugin], fresh: list[LoadedPlugin]
    ) -> None:
        """_reject fails the fresh versions named in `failures` (by package): the version served before, if
        any, stays chosen for their ids."""
        culprits = [p for p in fresh if p.package in failures]
        for plugin in culprits:
            reason = failures[plugin.package]
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

    async def _load(
        self, source: Source, overrides: dict[str, Any], stamp: str, *, sandboxed: bool, held: Held
    ) -> LoadedPlugin:
        """_load extracts, configures and imports one version (or, `sandboxed`, starts its worker, which imports
        it), registers its permissions and runs `on_load`. `held` are the packages in-process plugins import
        already (a version in process may not need another version of one of them)."""
        if sandboxed:  # a sandboxed version cannot take the server down: its load is not journalled
            return await self._loaded(await self._load_sandboxed(source, overrides), source, stamp)
        root = self.runtime.data.root
        await anyio.to_thread.run_sync(safemode.loading, root, source.id, source.manifest.version)
        try:
            return await self._loaded(await self._import(source, overrides, held), source, stamp)
        finally:
            await anyio.to_thread.run_sync(safemode.loaded, root)

    async def _loaded(self, plugin: LoadedPlugin, source: Source, stamp: str) -> LoadedPlugin:
        """_loaded registers a version's permissions and runs its `on_load`; it closes the version on a failure."""
        plugin.config_stamp = stamp
        plugin.signer = source.bundle.signer if source.bundle is not None else None
        try:
            if plugin.manifest.permissions:
                await anyio.to_thread.run_sync(self._register_permissions, plugin)
            await run_hook(plugin, contract.on_load)
        except BaseException:
            await _close(plugin)
            raise
        return plugin

    async def _load_sandboxed(self, source: Source, overrides: dict[str, Any]) -> LoadedPlugin:
        """_load_sandboxed extracts one version and starts its sandbox worker."""
        with anyio.fail_after(HOOK_TIMEOUT):
            ready = await anyio.to_thread.run_sync(self._unpack, source, overrides)
        plugin = await load_sandboxed(
            source.manifest,
            ready.folder,
            source=source.path,
            fingerprint=source.fingerprint,
            data_dir=ready.data_dir,
            config=ready.config,
            settings=self.runtime.config.manager.plugins,
            task_host=self.tasks,
            libraries=ready.libraries,
            kv=KeyValue(self.runtime.sessions, source.id),
            cache=self.stores.plugin(source.id),
        )
        plugin.defaults, plugin.libraries, plugin.requirements = ready.defaults, ready.libraries, ready.requirements
        return plugin

    async def _import(self, source: Source, overrides: dict[str, Any], held: Held) -> LoadedPlugin:
        """_import extracts and imports one version in this process."""

        def unpack_and_import() -> LoadedPlugin:
            ready = self._unpack(source, overrides)
            _check_held(ready.requirements, held)
            problem = borrowed(ready.folder, ready.libraries.modules if ready.libraries else ())
            if problem:
                raise PluginNotYet(problem)
            libraries = ready.libraries
            with importing(libraries.folder if libraries else None, libraries.modules if libraries else ()):
                plugin = import_plugin(
                    source.manifest,
                    ready.folder,
                    source=source.path,
                    fingerprint=source.fingerprint,
                    data_dir=ready.data_dir,
                    config=ready.config,
                    dev=source.dev,
                    kv=KeyValue(self.runtime.sessions, source.id),
                    cache=self.stores.plugin(source.id),
                )
            plugin.defaults, plugin.libraries, plugin.requirements = ready.defaults, ready.libraries, ready.requirements
            return plugin

        try:  # one trip to a worker thread: a start loads every plugin this way, one after another
            with anyio.fail_after(HOOK_TIMEOUT):
                plugin = await anyio.to_thread.run_sync(unpack_and_import, abandon_on_cancel=True)
        except TimeoutError:
            raise PluginLoadError(
                f"extracting and importing the plugin did not finish within {HOOK_TIMEOUT:.0f} s"
            ) from None
        return plugin

    def _unpack(self, source: Source, overrides: dict[str, Any]) -> Unpacked:
        """_unpack extracts `source` (in a worker thread), installs the wheels it needs and reads its defaults;
        returns the folder to import, the defaults, the settings it runs with (the overrides that still fit
        merged on them), its data folder (created) and its libraries."""
        folder = source.folder(self.cache)
        libraries, requirements = self._libraries(source)
        defaults = read_defaults(folder)
        problems = override_problems(defaults, overrides)
        for where, problem in problems:  # a newer version may have dropped or retyped a setting
            log.warning("plugin %s: config override %s ignored: %s", source.id, where, problem, extra=CONTEXT)
        valid = {k: v for k, v in overrides.items() if not any(w.split(".", 1)[0] == k for w, _ in problems)}
        data_dir = plugin_data_dir(self.runtime, source.id)
        data_dir.mkdir(0o700, parents=True, exist_ok=True)
        return Unpacked(folder, defaults, merged(defaults, valid), data_dir, libraries, requirements)

    def _libraries(self, source: Source) -> tuple[Libraries | None, list[Resolved]]:
        """_libraries resolves the requirements of `source` and installs the wheels they need into its library
        folder (`store.install_requirements`); raises PluginLoadError saying why a requirement is not met or
        naming the wheel and the rule it breaks, and PluginNotYet when the cause is outside the version (the
        package index out of reach, this host's disk)."""
        try:
            carried = bundle_wheels(source.bundle) if source.bundle is not None else folder_wheels(source.path)
            return install_requirements(self.runtime, source.manifest, source.fingerprint, carried)
        except (Unmet, WheelError) as exc:
            raise PluginLoadError(str(exc)) from None
        except IndexUnavailable as exc:
            raise PluginNotYet(f"requirements: {exc}") from None
        except OSError as exc:  # this host's disk, not the bundle: the same version may load once it is fixed
            raise PluginNotYet(f"requirements: cannot write the wheels ({exc.strerror or exc})") from None

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
                await run_hook(plugin, contract.on_unload)
            except PluginLoadError as exc:
                log.warning("plugin %s %s: %s", plugin.id, plugin.version, exc, extra=CONTEXT)
            await _close(plugin)

    def _load_failed(self, source: Source, key: tuple[str, str], exc: Exception) -> None:
        """_load_failed records why `source` did not load (it is not tried again until it or its settings change,
        or a forced reload), and logs it once. A zip that changed since it was scanned is scanned again instead."""
        reason = str(exc) if isinstance(exc, PluginLoadError | BundleError) else f"loading it raised {exc!r}"
        self._note(source.id, source, reason)
        if isinstance(exc, PluginNotYet):
            log.warning("plugin %s %s cannot load yet: %s", source.id, source.manifest.version, reason, extra=CONTEXT)
            return
        if isinstance(exc, BundleError) and exc.rule == "changed":
            self.scanner.forget(source.path)
            self._recheck(RECHECK)
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

    def _recheck(self, delay: float) -> None:
        """_recheck reconciles again in `delay` seconds: a zip was still being written, or changed under us."""
        if self._watcher is not None:
            self._watcher.recheck(delay)

    def _persist_states(self) -> None:
        """_persist_states records each plugin's state in `plugin_state`, for `xcore plugin list` and restarts."""
        self.states.persist(self._views)

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
        stored = await anyio.to_thread.run_sync(self.states.read)
        overrides = stored.overrides.get(pid, {})
        return defaults, overrides, merged(defaults, overrides)

    # --- the extraction cache --------------------------------------------------------------------------------

    def touch_in_use(self) -> set[Path]:
        """touch_in_use marks the extracted bundles and library folders this worker serves as used now; returns
        them."""
        in_use = {p.folder for p in self.loaded.values() if not p.dev}
        in_use |= {p.libraries.folder for p in self.loaded.values() if p.libraries is not None}
        for folder in in_use:
            os.utime(folder)  # another worker's garbage collection sees that this extraction is still served
        return in_use

    def collect_garbage(self) -> int:
        """collect_garbage deletes extracted bundles no worker has touched for CACHE_IDLE seconds (the core task
        xcore.plugin_cache runs it); returns how many."""
        removed = collect_garbage(self.cache, self.touch_in_use(), idle=CACHE_IDLE)
        installed = {s.fingerprint for s in self._scan.sources if not s.dev}
        removed += collect_downloads(wheel_store(self.runtime), installed)
        if removed:
            log.info("plugin cache: removed %d unused folder(s) and file(s)", len(removed), extra=CONTEXT)
        return len(removed)


def _in_process_libraries(plugins: Iterable[LoadedPlugin]) -> list[tuple[Path, frozenset[str]]]:
    """_in_process_libraries are the library folders of the in-process versions, with their modules."""
    found = []
    for plugin in plugins:
        if plugin.sandbox is None and plugin.libraries is not None:
            found.append((plugin.libraries.folder, plugin.libraries.modules))
    return found


def _held(
    pid: str, chosen: dict[str, LoadedPlugin], loaded: dict[str, LoadedPlugin], candidates: dict[str, list[Source]],
    enabled: dict[str, bool],
) -> Held:  # fmt: skip
    """_held are the packages that the other in-process plugins import from their wheels: those chosen already in
    this reconcile, and those serving that stay (still in the folder, enabled)."""
    staying = [p for other, p in loaded.items() if other in candidates and enabled.get(other, True)]
    held: Held = {}
    for plugin in [*chosen.values(), *staying]:
        if plugin.id == pid or plugin.sandbox is not None:
            continue
        for answer in plugin.requirements:
            if answer.wheel and answer.version:
                held.setdefault(canonicalize_name(answer.name), (answer.version, plugin.id))
    return held


def _check_held(requirements: list[Resolved], held: Held) -> None:
    """_check_held raises PluginNotYet when a wheel this version needs is another version of a package that an
    in-process plugin imports: one process holds one version of a module."""
    clashes = []
    for answer in requirements:
        other = held.get(canonicalize_name(answer.name)) if answer.wheel else None
        if other is not None and other[0] != answer.version:
            clashes.append(
                f"{answer.name} {answer.version} clashes with {answer.name} {other[0]}, which plugin {other[1]!r} "
                "imports in this process"
            )
    if clashes:
        advice = "one process imports one version of a package: run one of them sandboxed, or use the same version"
        raise PluginNotYet(f"requirements: {'; '.join(clashes)} ({advice})")


def _no_routes(plugin: LoadedPlugin) -> list[str]:
    return []


def _unchecked(plugin: LoadedPlugin) -> PluginHealth:
    """_unchecked is the health of a serving version not checked yet: unknown, and whether it has a health()."""
    declared = plugin.health is not None or bool(getattr(plugin.sandbox, "has_health", False))
    return PluginHealth(detail=NOT_CHECKED if declared else NOT_DECLARED)


async def _close(plugin: LoadedPlugin) -> None:
    """_close forgets a version's modules, or stops its sandbox worker."""
    stop = closer(plugin)
    if stop is not None:
        await stop()
    else:
        unload_modules(plugin.package)
