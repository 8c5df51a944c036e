"""What one app generation serves: the core app, which is built once per worker, and the plugins' app, which is
rebuilt on every plugin change.

Building the core app costs far more than a handful of plugin routes (Litestar copies and inspects every
handler), and it never changes on a reload, so a reload builds only the plugins' app. Plugin prefixes never
overlap the core's (a bundle rule), so a request goes to the plugins' app exactly when its path lies under a
plugin prefix. The OpenAPI document is the core's with the plugins' paths, schemas and tags merged in, once per
generation, so /openapi.json and /docs always show what is mounted now. The plugins' part is built with the
generation (a plugin that breaks it fails to load, alone); the core's, about a tenth of a second of every
worker's start, when the document is first asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from litestar import Litestar
from litestar.middleware._internal.exceptions.middleware import ExceptionHandlerMiddleware
from litestar.types import Empty
from litestar.utils import normalize_path
from litestar.utils.scope.state import ScopeState

from xcore.web.calls import direct
from xcore.web.guard import AccessGuard
from xcore.web.openapi_errors import describe_problems

ROUTES_KEPT = 1024  # paths whose app is remembered per generation; clients choose paths, so this is a bound


class Dispatch:
    """Dispatch is the ASGI app of one generation: plugin prefixes go to `plugins`, everything else to `core`.

    Its lifespan is the plugins' app's: the core app's lifespan spans the worker's life and is run apart.

    This is on every request's path, so it costs as little as it can: a path seen before finds its app with one
    dict lookup, and the call returns the app's own awaitable rather than awaiting it in a coroutine of its own.
    It enters each app as `Litestar.__call__` would, past that coroutine too, and past Litestar's error layer
    (see `entry`): an exception a request raises reaches the Switch's coroutine, which hands it to `recover`.
    """

    def __init__(self, core: Litestar, plugins: Litestar | None, prefixes: list[str]) -> None:
        self.core = core
        self.plugins = plugins
        self.prefixes = tuple(prefixes)
        self._plugins_openapi = describe_problems(plugins.openapi_schema.to_schema()) if plugins else None
        self._openapi: dict[str, Any] | None = None
        self._entries = {core: entry(core)}
        if plugins is not None:
            self._entries[plugins] = entry(plugins)
        self._routes: dict[str, tuple[Litestar, Any]] = {}

    @property
    def openapi(self) -> dict[str, Any]:
        """openapi is the merged OpenAPI document of this generation, made at the first call."""
        if self._openapi is None:
            self._openapi = merge_openapi(core_openapi(self.core), self._plugins_openapi)
        return self._openapi

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        found = self._routes.get(scope.get("path"))  # a lifespan has no path: None
        if found is None:
            if scope["type"] == "lifespan":
                return self.plugins(scope, receive, send) if self.plugins else _lifespan(receive, send)
            found = self._route(scope["path"])
        app, enter = found
        scope["app"] = scope["litestar_app"] = app
        if "state" not in scope:
            scope["state"] = {}
        return enter(scope, receive, send)

    def _route(self, path: str) -> tuple[Litestar, Any]:
        """_route returns the app that serves `path`, with its entry, and remembers them."""
        app: Litestar = self.core
        if self.plugins is not None and self.prefixes:
            normal = normalize_path(path) if "//" in path else path
            for prefix in self.prefixes:
                if normal.startswith(prefix) and (len(normal) == len(prefix) or normal[len(prefix)] == "/"):
                    app = self.plugins
                    break
        if len(self._routes) >= ROUTES_KEPT:
            self._routes.clear()
        found = self._routes[path] = (app, self._entries[app])
        return found

    async def recover(self, scope: Any, receive: Any, send: Any, exc: Exception, started: bool) -> None:
        """recover answers a request that raised `exc` as Litestar's error layer would have: with the problem
        document of the route's (or the app's) exception handlers, or, when the response had `started`, by
        raising Litestar's "exception caught after response started".

        An exception raised before routing (an unexpected failure in the access guard, such as a database that
        cannot be read) is answered by the app's own handlers, as Litestar answers a path no route serves: a
        logged error and a problem document with the request id, not the server's bare 500.
        """
        app = scope.get("litestar_app")
        if app is None:
            raise exc
        state = ScopeState.from_scope(scope)
        if state.exception_handlers is Empty:
            state.exception_handlers = app.exception_handlers
        state.response_started = started

        async def fail(scope: Any, receive: Any, send: Any) -> None:
            raise exc

        await ExceptionHandlerMiddleware(fail, debug=None)(scope, receive, send)


def entry(app: Litestar) -> Any:
    """entry is what serves a request on `app` once the Dispatch has set the scope's `app`, `litestar_app` and
    `state`, as `Litestar.__call__` sets them.

    For the apps `xcore.web.app` builds (the access guard in front of Litestar's error layer and router) it is
    a guard in front of the router alone. That skips two coroutines a request would otherwise pass, and the two
    a response's messages would: `Litestar.__call__` and the error layer, about 10,000 instructions of a plugin
    route's 210,000. The error layer's work is done by `recover` when an exception gets past the route's own
    handling, which the Switch's request coroutine catches.

    An app with `before_send` hooks is entered through `Litestar.__call__` (which wraps `send` for them), and
    another app through its ASGI handler: their errors never leave them. tests/test_request_path.py checks
    that each way sets up the same scope as `Litestar.__call__`, and that errors come out the same.
    """
    handler = app.asgi_handler
    if app.before_send:
        return direct(app)
    if (
        isinstance(handler, AccessGuard)
        and isinstance(handler.inner, ExceptionHandlerMiddleware)
        and handler.inner.app is app.asgi_router
    ):
        return direct(AccessGuard(app.asgi_router, handler.auth))
    return direct(handler)


def core_openapi(core: Litestar) -> dict[str, Any]:
    """core_openapi is the core app's OpenAPI document as a dict, computed once per core app, with its errors
    described as the problem documents they are (`describe_problems`)."""
    cached: dict[str, Any] | None = getattr(core.state, "openapi_document", None)
    if cached is None:
        cached = describe_problems(core.openapi_schema.to_schema())
        core.state.openapi_document = cached
    return cached


def merge_openapi(core: dict[str, Any], plugins: dict[str, Any] | None) -> dict[str, Any]:
    """merge_openapi adds the plugins' paths, component schemas and tags to the core's document.

    The core's component schemas win a name clash, so a plugin can never change how a core route is described.
    """
    if not plugins:
        return core
    merged = dict(core)
    merged["paths"] = {**core.get("paths", {}), **plugins.get("paths", {})}
    components = dict(core.get("components", {}))
    schemas = {**plugins.get("components", {}).get("schemas", {}), **components.get("schemas", {})}
    if schemas:
        components["schemas"] = schemas
    merged["components"] = components
    tags = {t["name"]: t for t in core.get("tags", [])}
    for tag in plugins.get("tags", []):
        tags.setdefault(tag["name"], tag)
    if tags:
        merged["tags"] = list(tags.values())
    return merged


async def _lifespan(receive: Any, send: Any) -> None:
    """_lifespan answers a lifespan with nothing to start: no plugin is mounted."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
