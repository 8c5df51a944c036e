"""Plugin pages in the app (issue 25), against a real xcore and Chromium: the home page's launcher and the
navigation, a page's module loaded by the shell and calling its plugin through the SDK (xcore.js), the policy
refusing a page's inline script and eval, a page reaching another plugin's routes only as far as the user's
permissions allow, a page that fails, a swapped plugin offering a reload, and a disabled one giving way to a
message. Keyboard reach and the accessibility sweep run on home and on a plugin page, with screenshots of both (the
test artefacts: home-1024x700.png, home-1920x1080.png, ...). The server's side (plugin.json's `pages`,
GET /api/me/pages) is tests/test_plugin_pages.py.

Every browser context here fails its test on a Content-Security-Policy violation or a console error, except the
ones a test takes as expected (`Guard.take`); the test plugins are built here, as zips.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser import (
    UiServer,
    Watch,
    assert_window_shots,
    login,
    nav_link,
    one_h1,
    shot,
    sweep,
    watched_context,
)

pytestmark = pytest.mark.e2e

USER, USER_PASSWORD = "pia", "Quiet-Lantern-Harbour-8"
ICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#2457c5"/></svg>'

GREET_RUN = """
from xcore.sdk import Ctx, JSONBody, get, post


@get("/hello", sync_to_thread=False)
def hello(ctx: Ctx) -> dict[str, str]:
    return {"says": "hi", "version": ctx.version}


@post("/echo", sync_to_thread=False)
def echo(data: JSONBody[dict[str, str]]) -> dict[str, str]:
    return {"echo": data.get("text", "")}


router = [hello, echo]
"""
# The page imports the SDK by its URL, as a plugin author would; ctx.xcore is the same module.
GREET_PAGE = """import { can, h, user } from "/admin/static/xcore.js";

const BUILD = "__BUILD__";

export async function render({ main, plugin, page, xcore }) {
  main.append(h("h1", {}, page.title));
  const answer = await xcore.api.get(`${plugin.prefix}/hello`);
  const input = h("input", { id: "echo-text", name: "text" });
  const echoed = h("p", { class: "echoed", role: "status" });
  const send = async () => {
    const reply = await xcore.api.post(`${plugin.prefix}/echo`, { text: input.value });
    xcore.clear(echoed).append(xcore.text(`Echo: ${reply.echo}`));
  };
  main.append(
    h("p", { class: "build" }, `Page code ${BUILD}`),
    h("p", { class: "answer" }, `The server says ${answer.says} (${plugin.id} ${answer.version})`),
    h("p", { class: "who" }, `${user().username} may manage: ${can("greet.manage") ? "yes" : "no"}`),
    h("label", { for: "echo-text" }, "Text to echo"), " ", input, " ",
    h("button", { type: "button", onclick: send }, "Send"),
    echoed,
  );
  return () => { window.greetCleanups = (window.greetCleanups || 0) + 1; };
}
"""
SETTINGS_PAGE = """export function render({ main, xcore }) {
  main.append(xcore.h("h1", {}, "Greeter settings"));
}
"""
# What a page must not do: each is refused by the policy (a violation is reported) or by the SDK's h.
INLINE_PAGE = """export const title = "Tricks";

export function render({ main, page, xcore }) {
  window.injected = [];
  main.append(xcore.h("h1", {}, page.title));
  const script = document.createElement("script");
  script.textContent = "window.injected.push('script')";
  main.append(script);
  const press = document.createElement("button");
  press.setAttribute("onclick", "window.injected.push('onclick')");
  press.textContent = "Press";
  main.append(press);
  press.click();
  let evaluated = "ran";
  try { eval("window.injected.push('eval')"); } catch (err) { evaluated = err.name; }
  let built = "built";
  try { xcore.h("button", { onclick: "window.injected.push('h')" }, "x"); } catch (err) { built = err.message; }
  main.append(xcore.h("p", { class: "eval" }, `eval: ${evaluated}`), xcore.h("p", { class: "h" }, `h: ${built}`));
}
"""
BROKEN_PAGE = """export function render({ main, xcore }) {
  main.append(xcore.h("h1", {}, "Half a page"));
  throw new Error("the page broke on purpose");
}
"""
SYNTAX_PAGE = "export function render( {\n"

# Reports each policy violation of a page to the test (`Guard.violations`); Playwright injects it, outside the
# page's policy.
REPORT_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (e) =>
  window.reportViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));"""


def bundle(manifest: dict[str, Any], files: dict[str, str]) -> bytes:
    """bundle is a plugin zip: plugin.json from `manifest`, and `files` (name → text)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plugin.json", json.dumps(manifest))
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def greet_bundle(version: str) -> bytes:
    """greet_bundle is the greet plugin: a page for everyone (with an icon) calling its routes, and a page for
    those who hold greet.manage."""
    pages = [
        {"path": "hello", "title": "Greeting", "module": "static/hello.js", "icon": "static/icon.svg"},
        {"path": "settings", "title": "Greeter settings", "module": "static/settings.js", "permission": "greet.manage"},
    ]
    manifest = {"id": "greet", "version": version, "name": "Greeter", "permissions": ["greet.manage"], "pages": pages}
    files = {
        "run.py": GREET_RUN,
        "static/hello.js": GREET_PAGE.replace("__BUILD__", version),
        "static/settings.js": SETTINGS_PAGE,
        "static/icon.svg": ICON,
    }
    return bundle(manifest, files)


# Another plugin, with no page of its own: reading its entries needs ledger.read, adding one ledger.write.
LEDGER_RUN = """
from xcore.sdk import JSONBody, get, post, requires


@get("/entries", guards=[requires("ledger.read")], sync_to_thread=False)
def entries() -> list[str]:
    return ["opening balance"]


@post("/entries", guards=[requires("ledger.write")], sync_to_thread=False)
def add(data: JSONBody[dict[str, str]]) -> dict[str, str]:
    return {"added": data.get("text", "")}


router = [entries, add]
"""


def ledger_bundle() -> bytes:
    manifest = {"id": "ledger", "version": "1.0.0", "name": "Ledger", "permissions": ["ledger.read", "ledger.write"]}
    return bundle(manifest, {"run.py": LEDGER_RUN})


def tricks_bundle() -> bytes:
    pages = [
        {"path": "inline", "title": "Inline tricks", "module": "static/inline.js"},
        {"path": "broken", "title": "Broken", "module": "static/broken.js"},
        {"path": "syntax", "title": "Bad syntax", "module": "static/syntax.js"},
    ]
    files = {
        "run.py": "router = []\n",
        "static/inline.js": INLINE_PAGE,
        "static/broken.js": BROKEN_PAGE,
        "static/syntax.js": SYNTAX_PAGE,
    }
    return bundle({"id": "tricks", "version": "1.0.0", "name": "Tricks", "pages": pages}, files)


def install(ui: UiServer, name: str, data: bytes) -> None:
    response = ui.api.post("/api/admin/plugins", files={"data": (name, data, "application/zip")})
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "active", response.json()


@dataclass
class Guard:
    """Guard is a watched browser context (browser.watched_context) that also records every policy violation and
    every console error of its pages; the test fails on any it has not taken (`take`)."""

    context: Any
    watch: Watch
    violations: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def on_violation(self, report: str) -> None:
        self.violations.append(report)

    def on_console(self, message: Any) -> None:
        # Before login the app asks /api/me (401) and tries a refresh with no session (400), which Chromium logs
        # as failed loads: those are the login flow, not a fault.
        url = str(message.location.get("url"))
        expected = "status of 401" in message.text or url.endswith("/api/auth/refresh")
        if message.type == "error" and not expected:
            self.console.append(f"{message.text} ({url})")

    def take(self) -> tuple[list[str], list[str]]:
        """take returns the violations and console errors so far and forgets them: a test expected them."""
        taken = (list(self.violations), list(self.console))
        self.violations.clear()
        self.console.clear()
        self.watch.errors[:] = [e for e in self.watch.errors if "Content Security Policy" not in e]
        return taken


@contextmanager
def guarded(chromium: Any) -> Iterator[Guard]:
    with watched_context(chromium) as (context, watch):
        guard = Guard(context, watch)
        context.expose_function("reportViolation", guard.on_violation)
        context.add_init_script(REPORT_VIOLATIONS)
        context.on("console", guard.on_console)
        yield guard
        assert not guard.violations, f"policy violations: {guard.violations}"
        assert not guard.console, f"console errors: {guard.console}"


@pytest.fixture(scope="module")
def user_account(ui_server: UiServer) -> str:
    """user_account: a plain `user` account (no admin rights) on the module's server."""
    payload = {"username": USER, "password": USER_PASSWORD, "roles": ["user"]}
    created = ui_server.api.post("/api/admin/users", json=payload)
    assert created.status_code == 201, created.text
    return USER


@pytest.fixture(scope="module")
def greet(ui_server: UiServer, user_account: str) -> UiServer:
    """greet: the module's server with the greet plugin 1.0.0 installed."""
    install(ui_server, "greet-1.0.0.zip", greet_bundle("1.0.0"))
    return ui_server


def nav_texts(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("nav[aria-label='Main'] li").all_inner_texts()]


def test_home_without_pages_says_how_they_come(ui_server: UiServer, user_account: str, chromium: Any) -> None:
    with guarded(chromium) as guard:
        owner = guard.context.new_page()
        login(owner, ui_server.url, path="/admin/home")
        assert one_h1(owner) == "Home"
        expect(owner.get_by_role("heading", name="No plugin adds a page yet")).to_be_visible()
        expect(owner.locator("main")).to_contain_text("plugin.json")
        expect(owner.get_by_role("link", name="Install a plugin on the Plugins page")).to_have_attribute(
            "href", "/admin/plugins"
        )
        texts = nav_texts(owner)
        assert texts[0] == "Home" and "Dashboard" in texts and "Plugins" in texts  # admin pages stay, for admins
    with guarded(chromium) as guard:
        user = guard.context.new_page()
        login(user, ui_server.url, USER, USER_PASSWORD)
        user.wait_for_url("**/admin/home")  # /admin is for admins: a user lands on home
        expect(user.get_by_role("heading", name="No apps for you yet")).to_be_visible()
        assert nav_texts(user) == ["Home"]


def test_a_user_lands_on_home_and_opens_a_page(greet: UiServer, chromium: Any, screenshots: Path) -> None:
    with guarded(chromium) as guard:
        page = guard.context.new_page()
        login(page, greet.url, USER, USER_PASSWORD)
        page.wait_for_url("**/admin/home")
        launcher = page.get_by_role("list", name="Apps")
        tile = launcher.get_by_role("link", name="Greeting Greeter")
        expect(tile).to_have_attribute("href", "/admin/apps/greet/hello")
        expect(tile.locator("img")).to_have_attribute("src", "/app/greet/static/icon.svg")
        assert tile.locator("img").evaluate("(img) => img.complete && img.naturalWidth > 0")
        expect(launcher.get_by_role("link")).to_have_count(1)  # not the page that needs greet.manage
        assert nav_texts(page) == ["Home", "Greeting"]
        sweep(page, "Home", screenshots, "home")
        assert_window_shots(screenshots, "home")  # home-1024x700.png, home-1920x1080.png in the test artefacts

        tile.click()
        page.wait_for_url("**/admin/apps/greet/hello")
        expect(page.locator(".answer")).to_have_text("The server says hi (greet 1.0.0)")
        expect(page.locator(".who")).to_have_text(f"{USER} may manage: no")
        assert page.title() == "Greeting · xcore"
        expect(nav_link(page, "Greeting")).to_have_attribute("aria-current", "page")
        page.get_by_label("Text to echo").fill("hello there")
        page.get_by_role("button", name="Send").click()  # a POST: the SDK sends the CSRF token
        expect(page.locator(".echoed")).to_have_text("Echo: hello there")
        # What the page's code may reach is what the user may: the SDK carries the user's session, nothing more.
        refused = page.evaluate(
            """() => import("/admin/static/xcore.js").then((x) => Promise.all([
                x.api.get("/api/admin/users").then(() => 200, (e) => e.status),
                x.api.post("/api/admin/plugins/greet/disable", {}).then(() => 200, (e) => e.status),
            ]))"""
        )
        assert refused == [403, 403], refused
        guard.take()  # Chromium logs the two refusals as failed loads: expected
        sweep(page, "Greeting", screenshots, "plugin-page")

        # Leaving the page runs its cleanup; the navigation brings it back.
        nav_link(page, "Home").click()
        page.get_by_role("heading", level=1, name="Home").wait_for()
        assert page.evaluate("() => window.greetCleanups") == 1
        nav_link(page, "Greeting").click()
        expect(page.locator(".answer")).to_contain_text("The server says hi")
        # The page that needs a permission the user lacks is not found for them, not shown.
        page.goto(greet.url + "/admin/apps/greet/settings")
        assert one_h1(page) == "Page not found"


def test_a_page_reaches_another_plugin_only_as_far_as_the_users_permissions(greet: UiServer, chromium: Any) -> None:
    # A user who holds ledger.read but not ledger.write, on greet's page: what its code sends through the SDK to
    # the ledger plugin's routes is judged by the server, request by request, on the user's permissions.
    install(greet, "ledger-1.0.0.zip", ledger_bundle())
    role = greet.api.post("/api/admin/roles", json={"name": "ledger-readers", "permissions": ["ledger.read"]})
    assert role.is_success, role.text
    body = {"username": "lou", "password": USER_PASSWORD, "roles": ["user", "ledger-readers"]}
    assert greet.api.post("/api/admin/users", json=body).status_code == 201
    try:
        with guarded(chromium) as guard:
            page = guard.context.new_page()
            login(page, greet.url, "lou", USER_PASSWORD, path="/admin/apps/greet/hello")
            expect(page.locator(".answer")).to_have_text("The server says hi (greet 1.0.0)")
            assert page.evaluate("() => window.location.pathname") == "/admin/apps/greet/hello"
            answers = page.evaluate(
                """() => import("/admin/static/xcore.js").then(async ({ api }) => {
                    const status = (call) => call.then(() => 200, (e) => e.status);
                    return {
                        read: await api.get("/app/ledger/entries"),
                        readStatus: await status(api.get("/app/ledger/entries")),
                        write: await status(api.post("/app/ledger/entries", { text: "from greet" })),
                        detail: await api.post("/app/ledger/entries", {}).catch((e) => e.message),
                    };
                })"""
            )
            assert answers["read"] == ["opening balance"], answers
            assert (answers["readStatus"], answers["write"]) == (200, 403), answers
            assert "ledger.write" in answers["detail"], answers
            guard.take()  # Chromium logs the refusals as failed loads: expected
        # The same user's own API client gets the same answers: the page adds no right and loses none.
        lou = greet.login_api("lou", USER_PASSWORD)
        assert lou.get("/app/ledger/entries").status_code == 200
        assert lou.post("/app/ledger/entries", json={"text": "direct"}).status_code == 403
        lou.close()
    finally:
        assert greet.api.delete("/api/admin/plugins/ledger", params={"purge": "true"}).status_code == 200


def test_a_page_cannot_run_inline_script_and_a_failing_page_stays_in_its_area(greet: UiServer, chromium: Any) -> None:
    install(greet, "tricks-1.0.0.zip", tricks_bundle())
    try:
        with guarded(chromium) as guard:
            page = guard.context.new_page()
            login(page, greet.url, path="/admin/apps/tricks/inline")
            assert one_h1(page) == "Tricks"  # the module's `title` wins over the manifest's
            expect(page.locator(".eval")).to_have_text("eval: EvalError")
            expect(page.locator(".h")).to_contain_text("onclick must be a function")
            page.wait_for_function("() => document.querySelectorAll('main button').length === 1")
            assert page.evaluate("() => window.injected") == []  # neither the script, the attribute nor eval ran
            for _ in range(100):  # Playwright delivers the reports while the test waits on the page
                if len(guard.violations) >= 3:
                    break
                page.wait_for_timeout(50)
            violations, console = guard.take()
            assert any(v.startswith("script-src-elem inline") for v in violations), violations
            assert any(v.startswith("script-src-attr inline") for v in violations), violations
            assert any(v.startswith("script-src eval") for v in violations), violations
            assert all("Content Security Policy" in line for line in console), console

            # A render that throws: its error in the page area, one h1, and the app goes on.
            page.goto(greet.url + "/admin/apps/tricks/broken")
            alert = page.get_by_role("alert")
            expect(alert).to_contain_text("This page failed: the page broke on purpose")
            expect(alert).to_contain_text("The fault is in the plugin Tricks 1.0.0")
            assert one_h1(page) == "Broken"
            # A module that does not parse: the same, with the browser's words.
            nav_link(page, "Bad syntax").click()
            expect(page.get_by_role("alert")).to_contain_text("This page could not be loaded: ")
            nav_link(page, "Home").click()
            page.get_by_role("heading", level=1, name="Home").wait_for()
            _, console = guard.take()
            assert [line for line in console if "broke on purpose" in line], console  # logged for the author
    finally:
        assert greet.api.delete("/api/admin/plugins/tricks", params={"purge": "true"}).status_code == 200


def test_a_swapped_plugin_offers_a_reload(greet: UiServer, chromium: Any, screenshots: Path) -> None:
    with guarded(chromium) as guard:
        page = guard.context.new_page()
        modules: list[str] = []
        page.on("request", lambda r: modules.append(r.url) if "/app/greet/static/hello.js" in r.url else None)
        login(page, greet.url, path="/admin/home")
        # The owner holds every permission: both pages, and the admin pages after them.
        expect(page.get_by_role("list", name="Apps").get_by_role("link")).to_have_count(2)
        texts = nav_texts(page)
        assert texts[:3] == ["Home", "Greeter settings", "Greeting"] and "Dashboard" in texts[3:], texts
        nav_link(page, "Greeting").click()
        expect(page.locator(".build")).to_have_text("Page code 1.0.0")
        expect(page.locator(".who")).to_have_text("owner may manage: yes")

        plugins = greet.data_dir / "plugins"
        (plugins / "greet.part").write_bytes(greet_bundle("2.0.0"))
        os.replace(plugins / "greet.part", plugins / "greet-2.0.0.zip")  # as a finished copy lands

        notice = page.get_by_role("status").filter(has_text="This plugin was updated")
        expect(notice).to_contain_text("now Greeter 2.0.0", timeout=30_000)
        expect(page.locator(".build")).to_have_text("Page code 1.0.0")  # nothing changes until the user asks
        shot(page, screenshots, "plugin-page-updated")
        notice.get_by_role("button", name="Reload page").click()
        expect(page.locator(".build")).to_have_text("Page code 2.0.0")
        expect(page.locator(".answer")).to_have_text("The server says hi (greet 2.0.0)")
        expect(notice).to_have_count(0)
        assert page.evaluate("() => window.greetCleanups") == 1  # the old version's page was cleaned up
        stamps = [re.search(r"\?v=([^&]+)", url) for url in modules]
        assert all(stamps) and len({s.group(1) for s in stamps if s}) == 2, modules  # one module URL a version


def test_a_disabled_plugin_gives_way_to_a_message(greet: UiServer, chromium: Any) -> None:
    with guarded(chromium) as guard:
        page = guard.context.new_page()
        login(page, greet.url, USER, USER_PASSWORD, path="/admin/apps/greet/hello")
        expect(page.locator(".answer")).to_contain_text("The server says hi")
        try:
            assert greet.api.post("/api/admin/plugins/greet/disable").status_code == 200
            page.get_by_role("heading", level=1, name="This plugin is disabled").wait_for(timeout=15_000)
            expect(nav_link(page, "Greeting")).to_have_count(0)
            assert nav_texts(page) == ["Home"]
            page.reload()
            assert one_h1(page) == "This plugin is disabled"  # opened directly: the same message
            page.goto(greet.url + "/admin/home")
            expect(page.locator(".unavailable-note")).to_have_text("Not available now: greet (disabled).")
            page.goto(greet.url + "/admin/apps/nobody/hello")
            assert one_h1(page) == "Page not found"
            page.goto(greet.url + "/admin/apps/greet/hello")
            page.get_by_role("heading", level=1, name="This plugin is disabled").wait_for()
        finally:
            assert greet.api.post("/api/admin/plugins/greet/enable").status_code == 200
        # Enabled again: the page comes back by itself, and so does its entry.
        expect(page.locator(".answer")).to_contain_text("The server says hi", timeout=15_000)
        expect(nav_link(page, "Greeting")).to_have_count(1)


def test_a_sandboxed_plugins_page_is_not_run_and_the_app_says_why(ui_server: UiServer, user_account: str,
                                                                  chromium: Any) -> None:  # fmt: skip
    pages = [{"path": "inside", "title": "Inside", "module": "static/inside.js"}]
    # Were it run, this module would act with the rights of whoever opens the page.
    taken = 'await fetch("/api/admin/users", {method: "POST"}); export function render(ctx) {}\n'
    files = {"run.py": "router = []\n", "static/inside.js": taken}
    install(
        ui_server,
        "boxed-1.0.0.zip",
        bundle({"id": "boxed", "version": "1.0.0", "sandbox": True, "pages": pages}, files),
    )
    with guarded(chromium) as guard:
        page = guard.context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        login(page, ui_server.url, USER, USER_PASSWORD, path="/admin/apps/boxed/inside")
        page.get_by_role("heading", level=1, name="This plugin's pages are not shown").wait_for()
        expect(page.locator("main")).to_contain_text("runs sandboxed")
        assert not any("inside.js" in url for url in requested), "the module was never fetched"
        assert "Inside" not in nav_texts(page)
