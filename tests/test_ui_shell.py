"""The admin UI's shell against a real xcore: served offline with a strict CSP, the first-run setup flow, login,
the router (deep links, 404 page, remembered page after login) and logout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser import OWNER, OWNER_PASSWORD, login, nav_link, one_h1, shot, start_ui_server

pytestmark = pytest.mark.e2e


def test_ui_is_served_with_a_strict_policy(ui_server: Any) -> None:
    for path in ("/admin", "/admin/plugins/notes", "/admin/anything/else"):
        response = httpx.get(ui_server.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe" not in csp  # only xcore desktop's own window allows eval (pywebview's evaluate_js)
        assert "http" not in response.text.replace("http-equiv", "")  # nothing from an outside host
    script = httpx.get(ui_server.url + "/admin/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(ui_server.url + "/admin/static/nope.js").status_code == 404
    assert httpx.get(ui_server.url + "/admin/static/%2e%2e/%2e%2e/config.json").status_code in (400, 404)


def test_first_run_setup_then_dashboard(tmp_path: Path, page: Any, screenshots: Path) -> None:
    # A policy other than the default: the page must show the server's rules, not a copy of its own.
    ui = start_ui_server(tmp_path / "data", setup=False, env={"XCORE_SECURE__PASSWORD__MIN_LENGTH": "15"})
    try:
        assert ui.setup_token
        page.goto(f"{ui.url}/admin/setup?token={ui.setup_token}")
        assert one_h1(page) == "Set up xcore"
        page.wait_for_function("() => !location.search.includes('token')")  # the token leaves the address bar
        shot(page, screenshots, "setup")
        # The token came with the link (as from the desktop window): no token field, only the owner account.
        assert not page.get_by_label("Setup token").is_visible()
        assert "token" not in page.locator("main").inner_text().lower()
        page.get_by_text("Create the owner account.").wait_for()
        hint = page.locator(
            "#" + page.get_by_label("Password", exact=True).get_attribute("aria-describedby").split()[0]
        )
        assert "At least 15 characters" in hint.inner_text() and "common passwords" in hint.inner_text()
        assert page.get_by_label("Password", exact=True).get_attribute("minlength") == "15"
        page.get_by_label("Username").fill(OWNER)
        # A password the server refuses: its words show under the field, and nothing is created.
        for weak, says in (("qwertyuiopasdfgh", "keyboard pattern"), ("short-pass-12", "at least 15 characters")):
            page.get_by_label("Password", exact=True).fill(weak)
            page.get_by_label("Repeat the password").fill(weak)
            page.get_by_role("button", name="Create the owner account").click()
            page.locator(".field-error").filter(has_text=says).wait_for()
            assert not page.get_by_label("Setup token").is_visible()
        page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
        page.get_by_label("Repeat the password").fill("something-else-entirely")
        page.get_by_role("button", name="Create the owner account").click()
        page.get_by_text("The two passwords differ.").wait_for()
        page.get_by_label("Repeat the password").fill(OWNER_PASSWORD)
        page.get_by_role("button", name="Create the owner account").click()
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()
        page.get_by_text(str(ui.data_dir)).first.wait_for()  # the data directory is shown, once the system info came
        # The token is spent: setup is done, and the page says so.
        page.goto(f"{ui.url}/admin/setup?token={ui.setup_token}")
        page.get_by_text("Setup is done").wait_for()
    finally:
        assert ui.server.stop() == 0


def test_a_wrong_setup_token_is_shown_inline(tmp_path: Path, page: Any) -> None:
    ui = start_ui_server(tmp_path / "data", setup=False)
    try:
        page.goto(f"{ui.url}/admin")  # no account yet: the app goes to the setup page
        page.get_by_role("heading", level=1, name="Set up xcore").wait_for()
        # No token in the link: the field is there to paste it by hand.
        page.get_by_label("Setup token").wait_for()  # visible
        page.get_by_label("Setup token").fill("not-the-token")
        page.get_by_label("Username").fill(OWNER)
        page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
        page.get_by_label("Repeat the password").fill(OWNER_PASSWORD)
        page.get_by_role("button", name="Create the owner account").click()
        alert = page.get_by_role("alert").filter(has_text="setup token")
        alert.wait_for()
        assert "wrong or was already used" in alert.inner_text()
    finally:
        assert ui.server.stop() == 0


def test_the_navigation_follows_the_servers_access_rules(tmp_path: Path, page: Any) -> None:
    """The app offers the pages whose API the server's rules open to the user, as GET /api/me/access says, with no
    copy of the rules: here the audit log is made superadmin-only by configuration, and an admin loses it."""
    rules = '{"/api/admin/audit*": {"roles": ["superadmin"]}}'
    ui = start_ui_server(tmp_path / "data", env={"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": rules})
    try:
        created = ui.api.post(
            "/api/admin/users", json={"username": "anne", "password": "Slow-Copper-Orchard-5", "roles": ["admin"]}
        )
        assert created.status_code == 201, created.text
        login(page, ui.url, "anne", "Slow-Copper-Orchard-5")
        nav = page.locator("nav[aria-label='Main'] li").all_inner_texts()
        assert "Users" in nav and "Plugins" in nav
        assert "Audit log" not in nav and "Backups" not in nav
        for path in ("/admin/audit", "/admin/backups"):
            page.goto(ui.url + path)
            assert one_h1(page) == "No access"
            assert "role superadmin" in page.locator("main").inner_text()
        page.goto(ui.url + "/admin/users")
        assert one_h1(page) == "Users"
    finally:
        assert ui.server.stop() == 0


def test_login_errors_inline_and_remembers_the_page(ui_server: Any, page: Any, screenshots: Path) -> None:
    page.goto(ui_server.url + "/admin/tasks/runs?status=failed")
    page.wait_for_url("**/admin/login?next=*")
    shot(page, screenshots, "login")
    page.get_by_label("Username or email").fill(OWNER)
    page.get_by_label("Password", exact=True).fill("wrong-password-here")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").filter(has_text="wrong").wait_for()
    page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/tasks/runs?status=failed")


def test_unknown_page_and_logout(ui_server: Any, page: Any) -> None:
    login(page, ui_server.url)
    page.goto(ui_server.url + "/admin/no/such/page")
    assert one_h1(page) == "Page not found"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/admin/login")
    # The session is over on the server too: the cookies are gone, the API answers 401.
    assert page.evaluate("() => fetch('/api/me').then((r) => r.status)") == 401
    page.goto(ui_server.url + "/admin/plugins")
    page.wait_for_url("**/admin/login?next=%2Fadmin%2Fplugins")


def test_an_expired_session_returns_to_login_with_the_page(ui_server: Any, page: Any) -> None:
    login(page, ui_server.url)
    page.goto(ui_server.url + "/admin/audit")
    page.get_by_role("heading", level=1, name="Audit log").wait_for()
    page.context.clear_cookies()  # as if both tokens had expired
    nav_link(page, "Users").click()
    page.wait_for_url("**/admin/login?next=%2Fadmin%2Fusers")
    page.get_by_label("Username or email").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/users")


def test_silent_refresh_keeps_the_session(ui_server: Any, page: Any) -> None:
    login(page, ui_server.url)
    # Drop only the access cookie: the next API call answers 401, the UI refreshes with the refresh cookie.
    cookies = [c for c in page.context.cookies() if c["name"] != "xcore_access"]
    page.context.clear_cookies()
    page.context.add_cookies(cookies)
    nav_link(page, "Plugins").click()
    page.get_by_role("heading", level=1, name="Plugins").wait_for()
    # The page's list request answered 401, the UI refreshed (a new access cookie) and repeated it.
    deadline = time.monotonic() + 15
    while not any(c["name"] == "xcore_access" for c in page.context.cookies()):
        assert time.monotonic() < deadline, "the UI did not refresh the session"
        page.wait_for_timeout(50)
    page.get_by_text("No plugin is installed").wait_for()  # the repeated list request answered
    assert "/admin/login" not in page.url


def test_safe_mode_is_announced_on_every_page(tmp_path: Path, page: Any, screenshots: Path) -> None:
    ui = start_ui_server(tmp_path / "data", extra=("--safe",))
    try:
        login(page, ui.url)
        banner = page.locator("[data-safe-mode]")
        banner.wait_for()
        assert "every plugin is off for this run (asked for with --safe)" in banner.inner_text()
        assert banner.get_attribute("role") == "alert"
        banner.get_by_role("link", name="Remove or fix it under Plugins").click()
        assert one_h1(page) == "Plugins"
        assert page.locator("[data-safe-mode]").count() == 1, "the banner stays on every page"
        shot(page, screenshots, "safe-mode")
    finally:
        ui.server.kill()
