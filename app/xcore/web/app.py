"""build_app: the one function that builds xcore's Litestar app. A reload calls it again; nothing is patched."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from xcore.runtime import Runtime
from xcore.web.docs import docs_handlers, openapi_config, vendor_assets_router
from xcore.web.routes import health, version_handler

log = logging.getLogger("xcore.api")


def build_app(runtime: Runtime, route_handlers: list[Any] | None = None) -> Litestar:
    """build_app returns a new app with the core routes plus `route_handlers` (plugin routers, later).

    Logging is configured per process, not per app (`logging_config=None`): Litestar's default would start a
    thread for every app built, and apps are rebuilt on every plugin change.
    """
    return Litestar(
        route_handlers=[
            health,
            version_handler(runtime),
            *docs_handlers(),
            vendor_assets_router(),
            *(route_handlers or []),
        ],
        openapi_config=openapi_config(),
        state=State({"runtime": runtime}),
        logging_config=None,
        exception_handlers={Exception: internal_error},
        debug=False,
    )


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """internal_error logs an unexpected exception with its traceback and answers a plain 500: no trace leaks."""
    if isinstance(exc, HTTPException):
        # Litestar's own client and server errors (400, 404, 405, ...): keep their status and detail.
        return Response(
            {
                "status_code": exc.status_code,
                "detail": exc.detail,
                **({"extra": exc.extra} if exc.extra else {}),
            },
            status_code=exc.status_code,
            headers=exc.headers,
        )
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        {"status_code": 500, "detail": "Internal server error", "request_id": request_id},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )
