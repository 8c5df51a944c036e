"""/api/me/pages: the plugin pages the logged-in user may open, for the app's home page and navigation.

A page is listed when its plugin serves in the server's process and the user holds the page's permission (a
page without one is for every logged-in user). A sandboxed plugin's pages are not: a page's module runs in the
app, with the rights of whoever opens it, which is everything its sandbox denies it; they are named under
`unavailable` as "sandboxed". The pages of a plugin that does not serve now (disabled, failed, being installed) are
named under `unavailable` with the plugin's state, so that an open page can say "this plugin is disabled"
rather than "not found". Opening a page decides nothing on the server: every request it makes is judged by the
access rules and the handlers, as any other.
"""

from typing import Any

from litestar import Request, get
from msgspec import Struct

from xcore.plugins.manager import PluginManager
from xcore.web.context import actor

TAGS = ["me"]


class PageOut(Struct):
    """PageOut is one page the user may open."""

    plugin: str
    plugin_name: str
    prefix: str  # the URL prefix of the plugin's routes, which its page calls
    version: str
    stamp: str  # changes with every swap of the plugin: an open page offers a reload when it does
    path: str
    title: str
    href: str
    module: str
    icon: str | None
    permission: str | None


class MyPagesOut(Struct):
    """MyPagesOut is the pages the user may open, in the order of the plugins' names and the pages', and the
    state of each plugin with pages for the user that does not serve now."""

    pages: list[PageOut]
    unavailable: dict[str, str]


@get("/api/me/pages", tags=TAGS, summary="The plugin pages I may open")
async def my_pages(request: Request[Any, Any, Any]) -> MyPagesOut:
    """The pages of the plugins that serve whose permission you hold, each with the address the app shows it at
    (`href`), its module and icon, and a `stamp` that changes when the plugin is swapped; `unavailable` names
    the plugins with pages for you that do not serve now, with their state (disabled, failed, pending)."""
    principal = actor(request)
    manager: PluginManager | None = request.app.state.plugins
    pages: list[PageOut] = []
    unavailable: dict[str, str] = {}
    for view in manager.views.values() if manager is not None else []:
        mine = [p for p in view.pages if not p["permission"] or principal.holds(str(p["permission"]))]
        if not mine:
            continue
        if view.state != "active" or view.stamp is None or view.version is None:
            unavailable[view.id] = view.state
            continue
        if view.sandbox is not None:  # its module would run in the app, with the user's rights, which it lacks
            unavailable[view.id] = "sandboxed"
            continue
        for page in mine:
            pages.append(
                PageOut(
                    view.id,
                    view.name or view.id,
                    view.prefix or f"/app/{view.id}",
                    view.version,
                    view.stamp,
                    str(page["path"]),
                    str(page["title"]),
                    str(page["href"]),
                    str(page["module"]),
                    page["icon"],
                    page["permission"],
                )
            )
    pages.sort(key=lambda p: (p.plugin_name.lower(), p.plugin, p.title.lower()))
    return MyPagesOut(pages, unavailable)


def page_handlers() -> list[Any]:
    return [my_pages]
