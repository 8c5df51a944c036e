"""The admin UI at /admin: static files from `ui/admin/`, served by xcore itself (no CDN, works offline).

The UI is a single page written as plain ES modules, with no build step. Every path under /admin that is not a
file under /admin/static answers the same `index.html`, and the page's own router picks the view, so a
reload or a bookmarked /admin/plugins/notes works. The files are public (the access rule `/admin/*`): they hold
no data, and every piece of data comes from the JSON API, which checks the session as for any other client.

The page is served with a Content-Security-Policy that allows only this origin: no inline script, no outside
host, no framing by another site. In `xcore desktop` only, the policy also allows `eval`: pywebview's
`evaluate_js`, the window's way into the page, wraps every script in `eval()`. That window shows only this
server's own pages, on 127.0.0.1, and the UI's code never evaluates strings.
"""

from functools import cache
from pathlib import Path
from typing import Any

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader, State
from litestar.static_files import create_static_files_router

from xcore.resources import resource_path
from xcore.web.headers import POLICY

UI_URL = "/admin"
STATIC_URL = f"{UI_URL}/static"

# The other security headers, and this policy for the browser, come with every response (`xcore.web.headers`).
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": POLICY}
DESKTOP_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-eval'"),
}


def ui_dir() -> Path:
    return resource_path("ui") / "admin"


@cache
def _index() -> bytes:
    return (ui_dir() / "index.html").read_bytes()


@get([UI_URL, f"{UI_URL}/{{path:path}}"], include_in_schema=False, sync_to_thread=False, name="admin-ui")
def admin_page(state: State) -> Response[bytes]:
    """The UI's page for every view; the page's script routes by the URL."""
    headers = DESKTOP_HEADERS if state.runtime.desktop else PAGE_HEADERS
    return Response(_index(), media_type="text/html", headers=headers)


def ui_handlers() -> list[Any]:
    """ui_handlers: the page, and its scripts and styles under /admin/static (revalidated on every load, so an
    upgraded xcore never runs yesterday's script against today's API)."""
    static: Router = create_static_files_router(
        path=STATIC_URL,
        directories=[ui_dir() / "static"],
        include_in_schema=False,
        name="admin-static",
        cache_control=CacheControlHeader(no_cache=True),
    )
    return [admin_page, static]
