"""What one app generation serves: the core app, built once per worker, and one app per plugin version, built
when that version is loaded (`web.plugin_apps`).

Building the core app costs far more than a plugin's routes (Litestar copies and inspects every handler), and it
never changes on a reload; a plugin's app changes only with that plugin. So a reload builds one plugin's app, and
the Dispatch, a table of prefixes, is all that is made anew. Plugin prefixes never overlap each other or the
core's (bundle rules), so a request goes to a plugin's app exactly when its path lies under that plugin's prefix.
The OpenAPI document is the core's with each plugin's paths, schemas and tags merged in, once per generation, so
/openapi.json and /docs always show what is mounted now. Each plugin's part is made when its app is built (a
plugin that breaks it fails to load, alone); the core's when the document is first asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.middleware._internal.exceptions.middleware import ExceptionHandlerMiddleware
from litestar.types import Empty
from litestar.utils import normalize_path
from litestar.utils.scope.state import ScopeState

from xcore.web.calls import direct
from xcore.web.guard import AccessGuard
from xcore.web.openapi_errors import core_openapi, describe_problems

ROUTES_KEPT = 1024  # paths whose app is remembered per generation; clients choose paths, so this is a bound


@dataclass(frozen=True)
class Mount:
    """Mount is one plugin version's app at its prefix, with its entry (see `entry`) and its OpenAPI document."""

    prefix: str
    app: Litestar
    entry: Any
    openapi: dict[str, Any]

    @classmethod
    def of(cls, prefix: str, app: Litestar) -> Mount:
        """of makes the mount of `app` at `prefix`; it raises what making `app`'s OpenAPI document raises."""
        return cls.each([prefix], app)[0]

    @classmethod
    def each(cls, prefixes: Sequence[str], app: Litestar) -> list[Mount]:
        """each makes the mounts of one app that serves several prefixes, each with the part of the app's
        OpenAPI document under its prefix (`document_under`)."""
        document = describe_problems(app.openapi_schema.to_schema())
        enter = entry(app)
        return [cls(prefix, app, enter, document_under(document, prefix)) for prefix in prefixes]


class Dispatch:
    """Dispatch is the ASGI app of one generation: each plugin's prefix goes to its app, the rest to `core`.

    It has no lifespan of its own: the core app's spans the worker's life and each plugin app's spans that
    version's, both run apart (`web.plugin_apps`).

    This is on every request's path, so it costs as little as it can: a path seen before finds its app with one
    dict lookup, and the call returns the app's own awaitable rather than awaiting it in a coroutine of its own.
    It enters each app as `Litestar.__call__` would, past that coroutine too, and past Litestar's error layer
    (see `entry`): an exception a request raises reaches the Switch's coroutine, which hands it to `recover`.
    A path not seen before is looked up by its ancestors (`/a/b/c`, `/a/b`, `/a`), so the cost does not grow
    with the number of plugins.
    """

    def __init__(self, core: Litestar, mounts: Sequence[Mount] = ()) -> None:
        self.core = core
        self.mounts = tuple(mounts)
        self._core = (core, entry(core))
        self._prefixes = {m.prefix: (m.app, m.entry) for m in self.mounts}
        self._openapi: dict[str, Any] | None = None
        self._routes: dict[str, tuple[Litestar, Any]] = {}

    @property
    def openapi(self) -> dict[str, Any]:
        """openapi is the merged OpenAPI document of this generation, made at the first call."""
        if self._openapi is None:
            self._openapi = merge_openapi(core_openapi(self.core), [m.openapi for m in self.mounts])
        return self._openapi

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        found = self._routes.get(scope.get("path"))  # a lifespan has no path: None
        if found is None:
            if scope["type"] == "lifespan":
                return _lifespan(receive, send)
            found = self._route(scope["path"])
        app, enter = found
        scope["app"] = scope["litestar_app"] = app
        if "state" not in scope:
            scope["state"] = {}
        awaitable: Awaitable[None] = enter(scope, receive, send)
        return awaitable

    def _route(self, path: str) -> tuple[Litestar, Any]:
        """_route returns the app that serves `path`, with its entry, and remembers them."""
        found = self._core
        if self._prefixes:
            probe = normalize_path(path) if "//" in path else path
            while probe:
                hit = self._prefixes.get(probe)
                if hit is not None:
                    found = hit
                    break
                probe = probe[: probe.rfind("/")]
        if len(self._routes) >= ROUTES_KEPT:
            self._routes.clear()
        self._routes[path] = found
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


def document_under(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    """document_under is the part of an OpenAPI `document` about the paths under `prefix`: those paths, the
    component schemas they refer to (transitively), and the tags their operations use."""
    paths = {
        path: item
        for path, item in document.get("paths", {}).items()
        if path == prefix or path.startswith(prefix + "/")
    }
    schemas = document.get("components", {}).get("schemas", {})
    used: dict[str, Any] = {}
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in used or name not in schemas:
            continue
        used[name] = schemas[name]
        pending |= _refs(schemas[name])
    tags = {
        tag for item in paths.values() for op in item.values() if isinstance(op, dict) for tag in op.get("tags", [])
    }
    part = {key: value for key, value in document.items() if key not in ("paths", "components", "tags")}
    part["paths"] = paths
    part["components"] = {**document.get("components", {}), "schemas": used}
    part["tags"] = [tag for tag in document.get("tags", []) if tag["name"] in tags]
    return part


REF = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    """_refs are the names of the component schemas `node` refers to ($ref), at any depth."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF):
                found.add(ref[len(REF) :])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def merge_openapi(core: dict[str, Any], plugins: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """merge_openapi adds the plugins' paths, component schemas and tags to the core's document.

    The core's component schemas win a name clash, so a plugin can never change how a core route is described;
    of two plugins, the first one's schema of a name wins.
    """
    if not plugins:
        return core
    merged = dict(core)
    paths = dict(core.get("paths", {}))
    components = dict(core.get("components", {}))
    schemas: dict[str, Any] = {}
    tags = {t["name"]: t for t in core.get("tags", [])}
    for plugin in plugins:
        paths.update(plugin.get("paths", {}))
        for name, schema in plugin.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(name, schema)
        for tag in plugin.get("tags", []):
            tags.setdefault(tag["name"], tag)
    merged["paths"] = paths
    schemas.update(components.get("schemas", {}))
    if schemas:
        components["schemas"] = schemas
    merged["components"] = components
    if tags:
        merged["tags"] = list(tags.values())
    return merged


async def _lifespan(receive: Any, send: Any) -> None:
    """_lifespan answers a lifespan with nothing to start: the apps a Dispatch routes to run their own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
