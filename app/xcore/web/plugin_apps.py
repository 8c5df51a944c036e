"""PluginApps: what serves the plugins in one worker. One Litestar app per loaded plugin version, beside the core
app built once per worker, and the Dispatch between them, swapped in through the Switch.

The plugin manager (`xcore.plugins.manager`) decides which versions serve and hands them over through its
`Mounts` protocol, which this class implements:

1. `prepare` builds each new version's app (its Router at its prefix, the access guard, the error handling),
   makes its OpenAPI document and starts its lifespan. A version whose app does not build, whose document
   cannot be made, or whose lifespan does not start fails alone, with the reason; nothing else is touched.
   Several new versions at once (the start of a worker, a forced reload) share one app, which Litestar builds
   in far less time than one app each; if that app fails, each version is built alone, so the failure is
   still put on the version that caused it. A shared app shuts down once none of its versions serves.
2. `serve` swaps in a new Dispatch over the chosen versions' apps, a table of prefixes that costs next to
   nothing to make. Requests in flight finish on the old one; then the apps no longer served shut down and the
   manager's `retired` callback runs their `on_unload`.

So a reload builds only the changed plugin's app, whatever the number of plugins installed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio.to_thread
from litestar import Litestar
from litestar.routes import HTTPRoute

from xcore.db import notify
from xcore.heap import freeze_startup_heap
from xcore.plugins.loader import LoadedPlugin
from xcore.plugins.manager import PluginManager
from xcore.plugins.manifest import overlaps
from xcore.plugins.store import touch_state_marker
from xcore.runtime import Runtime
from xcore.web import metrics
from xcore.web.app import build_app, build_plugin_app
from xcore.web.dispatch import Dispatch, Mount, document_under
from xcore.web.headers import isolate
from xcore.web.switch import AppStartupError, Generation, Switch

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}


@dataclass
class Life:
    """Life is the lifespan of one plugin app and the versions it serves (several when built together)."""

    generation: Generation
    users: set[str]  # the package names of the versions it serves


@dataclass
class PluginApp:
    """PluginApp is what serves one loaded plugin version: its mount, its app's lifespan and its routes."""

    mount: Mount
    life: Life
    routes: list[str]


class PluginApps:
    """PluginApps serves the core app and the plugins `manager` chooses, through the Switch it starts with."""

    def __init__(self, runtime: Runtime, manager: PluginManager) -> None:
        self.runtime = runtime
        self.manager = manager
        self.core: Litestar | None = None
        self._core_life: Generation | None = None
        self._switch: Switch | None = None
        self._apps: dict[str, PluginApp] = {}  # by the version's package name: prepared, serving or retiring
        self._lives = 0
        self._listener: notify.Listener | None = None

    @property
    def openapi(self) -> dict[str, Any] | None:
        """openapi is the OpenAPI document of what is served now (None before the first Dispatch)."""
        app = self._switch.app if self._switch else None
        return app.openapi if isinstance(app, Dispatch) else None

    def switch(self) -> Switch:
        """switch is a new Switch whose startup and shutdown start and stop these apps and the manager."""
        return Switch(startup=self.start, shutdown=self.stop)

    async def start(self, switch: Switch) -> None:
        """start builds and starts the core app, then starts the manager, which serves the plugins through us.

        The Switch's startup hook. The core app lives as long as the worker.
        """
        self._switch = switch
        metrics.start(self.runtime)
        self.core = await anyio.to_thread.run_sync(lambda: build_app(self.runtime, manager=self.manager, apps=self))
        freeze_startup_heap()
        self._core_life = Generation(self.core, 0)
        await self._core_life.start()
        await self.manager.start(self)
        self._listener = await anyio.to_thread.run_sync(self._listen)

    def _listen(self) -> notify.Listener | None:
        """On a shared PostgreSQL database: the other nodes' changes raise this node's signals (`xcore.db.notify`):
        accounts drop their cached principals, plugin states reconcile."""
        runtime = self.runtime
        handlers: dict[str, Callable[[], None]] = {
            notify.ACCOUNTS: runtime.auth.epoch.bump,
            notify.PLUGINS: partial(touch_state_marker, runtime),
        }
        return notify.listen(runtime.database_url, handlers)

    async def stop(self) -> None:
        """stop stops the manager (which closes the plugin apps and unloads the plugins), then the core app."""
        if self._listener is not None:
            await anyio.to_thread.run_sync(self._listener.stop)
        await self.manager.stop()
        if self._core_life is not None:
            await self._core_life.stop()
        await anyio.to_thread.run_sync(metrics.stop)

    async def prepare(self, plugins: Sequence[LoadedPlugin]) -> dict[str, str]:
        """prepare builds, describes and starts the app of `plugins`; returns why, by package name, for the
        versions whose app could not be. Several versions share one app unless that app fails."""
        if len(plugins) > 1:
            try:
                mounts = await anyio.to_thread.run_sync(self._mounts, list(plugins))
                await self._start(plugins, mounts)
                return {}
            except Exception:  # AppStartupError included
                log.info("the %d new plugin versions are built apart, to find the one that fails", len(plugins))
        failures: dict[str, str] = {}
        for plugin in plugins:
            try:
                mounts = await anyio.to_thread.run_sync(self._mounts, [plugin])
            except Exception as exc:
                failures[plugin.package] = f"its routes cannot be mounted: {' '.join(str(exc).split())}"
                continue
            try:
                await self._start([plugin], mounts)
            except AppStartupError as exc:
                failures[plugin.package] = f"the app did not start: {exc}"
        return failures

    def _mounts(self, plugins: list[LoadedPlugin]) -> list[Mount]:
        """_mounts builds one app for `plugins` and describes it; raises what either raises."""
        app = build_plugin_app(self.runtime, [p.mount for p in plugins], self.manager)
        mounts = Mount.each([p.manifest.prefix for p in plugins], app)
        # A sandboxed version's routes are its worker's; here they are one forwarding mount, so its document is
        # the one the worker made of them; and its answers are isolated from the app's origin (`isolate`).
        return [
            replace(mount, openapi=document_under(p.sandbox.openapi, mount.prefix), entry=isolate(mount.entry))
            if p.sandbox
            else mount
            for p, mount in zip(plugins, mounts, strict=True)
        ]

    async def _start(self, plugins: Sequence[LoadedPlugin], mounts: list[Mount]) -> None:
        """_start runs the lifespan startup of the app of `mounts`; raises AppStartupError when it fails."""
        self._lives += 1
        life = Life(Generation(mounts[0].app, self._lives), {p.package for p in plugins})
        await life.generation.start()
        for plugin, mount in zip(plugins, mounts, strict=True):
            routes = _documented_routes(mount) if plugin.sandbox else _routes(mount)
            self._apps[plugin.package] = PluginApp(mount, life, routes)

    async def serve(self, plugins: Sequence[LoadedPlugin], retired: Callable[[], Awaitable[None]]) -> None:
        """serve swaps in a Dispatch over the apps of `plugins`, all prepared. Once the old Dispatch has served
        its last request, the apps no longer served shut down and `retired` runs."""
        assert self._switch is not None and self.core is not None
        keep = {p.package for p in plugins}
        ended: list[Life] = []
        for key in [key for key in self._apps if key not in keep]:
            life = self._apps.pop(key).life
            life.users.discard(key)
            if not life.users:
                ended.append(life)
        dispatch = Dispatch(self.core, [self._apps[p.package].mount for p in plugins])
        metrics.serve_plugins(plugins)

        async def after() -> None:
            for life in ended:
                await life.generation.stop()
            await retired()

        await self._switch.swap_in(dispatch, retired=after)

    def routes(self, plugin: LoadedPlugin) -> list[str]:
        """routes are the "METHOD /path" lines of a prepared version's routes ([] for another)."""
        app = self._apps.get(plugin.package)
        return list(app.routes) if app is not None else []

    async def close(self) -> None:
        """close shuts down every plugin app (the worker is stopping; the Switch has stopped serving)."""
        lives = {id(app.life): app.life for app in self._apps.values()}
        self._apps = {}
        for life in lives.values():
            await life.generation.stop()


def _routes(mount: Mount) -> list[str]:
    """_routes are the "METHOD /path" lines of the HTTP routes under the mount's prefix, HEAD and OPTIONS left
    out (the app's OpenAPI routes, which requests never reach, are not among them)."""
    found: list[str] = []
    for route in mount.app.routes:
        if isinstance(route, HTTPRoute) and overlaps(route.path, mount.prefix):
            found += [f"{m} {route.path}" for m in sorted(route.methods) if m not in ("HEAD", "OPTIONS")]
    return found


def _documented_routes(mount: Mount) -> list[str]:
    """_documented_routes are the "METHOD /path" lines of a mount's OpenAPI document (a sandboxed version's, whose
    routes live in its worker)."""
    methods = ("get", "put", "post", "delete", "patch")
    paths = mount.openapi.get("paths", {})
    return [f"{m.upper()} {path}" for path, item in sorted(paths.items()) for m in methods if m in item]


def plugin_switch(runtime: Runtime, manager: PluginManager) -> Switch:
    """plugin_switch is what one worker serves: the Switch, with the core app and `manager`'s plugins."""
    return PluginApps(runtime, manager).switch()
