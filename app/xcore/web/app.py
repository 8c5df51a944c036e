"""build_app: the one function that builds xcore's Litestar app. A reload calls it again; nothing is patched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.stores.registry import StoreRegistry

from xcore.runtime import Runtime
from xcore.web.admin_routes import admin_handlers
from xcore.web.auth_routes import auth_handlers
from xcore.web.backup_routes import backup_handlers
from xcore.web.catalogue_routes import catalogue_handlers
from xcore.web.core_routes import health, version_handler
from xcore.web.docs_routes import docs_handlers, openapi_config, vendor_assets_router
from xcore.web.guard import AccessGuard
from xcore.web.log_routes import log_handlers
from xcore.web.me_routes import me_handlers
from xcore.web.metrics_routes import metrics_handlers
from xcore.web.page_routes import page_handlers
from xcore.web.plugin_routes import plugin_handlers
from xcore.web.problems import handle_exception
from xcore.web.task_routes import task_handlers
from xcore.web.trust_routes import trust_handlers
from xcore.web.ui_routes import ui_handlers
from xcore.web.user_routes import user_handlers

if TYPE_CHECKING:
    from xcore.plugins.manager import PluginManager


class Described(Protocol):
    """Described is what /openapi.json asks for the document of what is served now (`web.plugin_apps`)."""

    @property
    def openapi(self) -> dict[str, Any] | None: ...


class _OneAppRouter(Router):
    """A Router made for one app alone. Litestar deep-copies every Router it registers, so that one Router object
    can go into several apps; build_app makes the core Router afresh for each app (its handlers are Litestar's own
    copies, made as the Router registered them), so the copy would only cost a large part of the build's time.
    Plugin Routers are reused from build to build and keep Litestar's copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _OneAppRouter:
        return self


def build_app(
    runtime: Runtime,
    route_handlers: list[Any] | None = None,
    manager: PluginManager | None = None,
    apps: Described | None = None,
) -> Litestar:
    """build_app returns a new app with the core routes plus `route_handlers` (the plugins' routers).

    `manager` is the worker's plugin manager, which the plugin admin routes use; without one (an app built
    for a test) they answer 503. `apps` are the worker's plugin apps, whose routes /openapi.json describes.

    Every route passes the access guard (ACCESS_RULES), which also puts every JSON body under the limits of
    `web.bodylimits`.
    Errors are RFC 9457 problem documents.
    The core handlers go in through one Router: Litestar 2.25 registers handlers given straight to the app
    again for each further handler on the same path, wrapping a sync handler in a thread once more each time,
    so the third sync handler on one path would return an un-awaited coroutine.
    Logging is configured per process, not per app (`logging_config=None`): Litestar's default would start a
    thread for every app built, and apps are rebuilt on every plugin change.
    """
    core = _OneAppRouter(
        path="/",
        route_handlers=[
            health,
            version_handler(runtime),
            *docs_handlers(),
            vendor_assets_router(),
            *auth_handlers(),
            *me_handlers(),
            *page_handlers(),
            *user_handlers(),
            *admin_handlers(runtime),
            *plugin_handlers(),
            *trust_handlers(),
            *catalogue_handlers(),
            *task_handlers(),
            *log_handlers(),
            *backup_handlers(),
            *metrics_handlers(),
            *ui_handlers(),
        ],
    )
    return _litestar(
        runtime, [core, *(route_handlers or [])], State({"runtime": runtime, "plugins": manager, "apps": apps})
    )


def build_plugin_app(runtime: Runtime, mounts: list[Router], manager: PluginManager | None) -> Litestar:
    """build_plugin_app returns the app of plugin versions' routes (usually one version's), each Router mounted
    at its prefix.

    The worker serves it beside the core app (see `web.dispatch`), so a change of a plugin rebuilds only its
    small app; it has the same access guard, error handling and OpenAPI settings as the core's. What Litestar keeps
    in a store (a route's response cache, `cache=`) goes to the stores of `ctx.cache` (`manager.plugins.cache`).
    """
    state = State({"runtime": runtime, "plugins": manager, "apps": None})
    return _litestar(runtime, list(mounts), state, manager.stores.registry() if manager is not None else None)


def _litestar(
    runtime: Runtime, route_handlers: list[Any], state: State, stores: StoreRegistry | None = None
) -> Litestar:
    app = Litestar(
        route_handlers=route_handlers,
        stores=stores,
        openapi_config=openapi_config(),
        state=state,
        logging_config=None,
        exception_handlers={Exception: handle_exception},
        debug=False,
    )
    # The guard goes in front of the router: see AccessGuard. `asgi_handler` is what Litestar calls for every
    # request (its own OpenTelemetry plugin wraps it the same way); the access tests fail if that changes.
    app.asgi_handler = AccessGuard(app.asgi_handler, runtime.auth)
    return app
