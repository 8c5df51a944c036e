"""The OpenAPI documentation: JSON at /openapi.json, Swagger UI at /docs, ReDoc at /redoc.

They work offline: the pages load Swagger UI and ReDoc from xcore's own `/static/vendor/`, which serves the
files vendored in `ui/vendor/` (see its README), never from a CDN. The two pages carry a Content-Security-Policy
that allows only that: xcore's origin, and the page's own inline script by its hash (`web.headers.page_policy`).

Litestar mounts its documentation router under one prefix (`/schema`) with a catch-all 404 page there; at
`/` that catch-all would swallow every unknown path. So the router stays at `/schema`, and the three
top-level pages are plain handlers that render Litestar's live schema with the same render plugins. The
schema is rebuilt with every app, so /docs always shows the routes that are mounted now.
"""

import re
from typing import Any

from litestar import Request, Response, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from xcore import __version__
from xcore.resources import resource_path
from xcore.web.headers import page_policy
from xcore.web.openapi_errors import core_openapi, describe_problems

VENDOR_URL = "/static/vendor"
SWAGGER_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
_FAVICON = f"<link rel='icon' type='image/png' href='{VENDOR_URL}/swagger-ui/favicon-32x32.png'>"


def openapi_config() -> OpenAPIConfig:
    """openapi_config describes the API; Litestar's own router serves it under /schema."""
    return OpenAPIConfig(
        title="xcore",
        version=__version__,
        description="The xcore admin and plugin API. Plugins add their routes under their own prefix.",
        path="/schema",
        render_plugins=[ProblemsJsonRenderPlugin()],
        use_handler_docstrings=True,
        operation_id_creator=operation_id,
        # Swagger UI's "Authorize" button: paste the access_token of POST /api/auth/login. Public routes work
        # without it; the access rules, not this declaration, decide.
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="The access_token returned by POST /api/auth/login.",
                )
            }
        ),
        security=[{"bearer": []}],
    )


class ProblemsJsonRenderPlugin(JsonRenderPlugin):
    """ProblemsJsonRenderPlugin renders Litestar's own /schema/openapi.json with errors described as xcore
    sends them (`describe_problems`), as /openapi.json does."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, describe_problems(openapi_schema))


def operation_id(route_handler: Any, http_method: str, path_components: list[Any]) -> str:
    """operation_id is `<method>_<path words>`, e.g. get_api_admin_users_user_id: unique, and predictable enough
    for deep links into /docs. (Litestar's default uses the function name, which is lost when a handler runs
    in a thread.)"""
    words = [getattr(c, "name", c) for c in path_components]
    return "_".join([http_method.lower(), *(re.sub(r"[^A-Za-z0-9]+", "_", str(w)).strip("_") for w in words if w)])


def _page(path: str, plugin: OpenAPIRenderPlugin) -> HTTPRouteHandler:
    # In a thread: the first call of a worker makes the core's document, which is slow, and every call serializes it.
    @get(path, media_type=plugin.media_type, include_in_schema=False, sync_to_thread=True, name=f"docs:{path}")
    def page(request: Request[Any, Any, Any]) -> Response[bytes]:
        body = plugin.render(request, openapi_document(request))
        if plugin.media_type != "text/html":
            return Response(body, media_type=plugin.media_type)
        # The page's one inline script holds the document, so its hash is taken per answer; Swagger UI and ReDoc
        # set inline styles from their scripts, and ReDoc searches in a worker made from a blob: URL.
        policy = page_policy(body.decode(), inline_styles=True, workers=True)
        return Response(body, media_type=plugin.media_type, headers={"Content-Security-Policy": policy})

    return page


def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """openapi_document is what is mounted now: the core's routes with the current plugins' merged in."""
    apps = request.app.state.get("apps")
    document = apps.openapi if apps is not None else None
    return document if document is not None else core_openapi(request.app)


def docs_handlers() -> list[HTTPRouteHandler]:
    """docs_handlers are /openapi.json, /docs (Swagger UI) and /redoc (ReDoc), all offline."""
    return [
        _page("/openapi.json", JsonRenderPlugin()),
        _page(
            "/docs",
            SwaggerRenderPlugin(
                version=SWAGGER_VERSION,
                js_url=f"{VENDOR_URL}/swagger-ui/swagger-ui-bundle.js",
                css_url=f"{VENDOR_URL}/swagger-ui/swagger-ui.css",
                standalone_preset_js_url=f"{VENDOR_URL}/swagger-ui/swagger-ui-standalone-preset.js",
                favicon=_FAVICON,
            ),
        ),
        _page(
            "/redoc",
            RedocRenderPlugin(
                version=REDOC_VERSION,
                js_url=f"{VENDOR_URL}/redoc/redoc.standalone.js",
                google_fonts=False,
                favicon=_FAVICON,
            ),
        ),
    ]


def vendor_assets_router() -> Router:
    """vendor_assets_router serves ui/vendor/ at /static/vendor."""
    return create_static_files_router(
        path=VENDOR_URL,
        directories=[resource_path("ui") / "vendor"],
        include_in_schema=False,
        name="vendor",
    )
