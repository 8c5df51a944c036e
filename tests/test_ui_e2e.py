"""The admin UI's acceptance run, in one browser against one real `xcore serve`, as a new owner would use it:

setup → two-factor login with a real TOTP code → upload the notes plugin → call its route from the page →
disable it → run a task and see its history row → filter the logs → a `user` account cannot see the admin pages.

Then the accessibility sweep over every main page: exactly one h1, every control labelled, and (on the login and
plugins pages) every interactive element reachable with the Tab key. Screenshots of each main page go to the test
artefacts (browser.shot: build/test-artefacts/screenshots/ unless XCORE_TEST_ARTEFACTS says); the watched browser
context fails the run on any request to a host other than 127.0.0.1, any script error and any Content-Security-Policy
violation.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from browser import (
    OWNER,
    OWNER_PASSWORD,
    SIZES,
    UiServer,
    keyboard_unreachable,
    login,
    nav_link,
    one_h1,
    pack_example,
    shot,
    start_ui_server,
    unlabelled_controls,
    watched_context,
)

pytestmark = pytest.mark.e2e

MAIN_PAGES = {
    "home": ("/admin/home", "Home"),
    "dashboard": ("/admin", "Dashboard"),
    "plugins": ("/admin/plugins", "Plugins"),
    "plugin": ("/admin/plugins/notes", "Notes"),
    "tasks": ("/admin/tasks", "Tasks"),
    "runs": ("/admin/tasks/runs", "Task runs"),
    "users": ("/admin/users", "Users"),
    "roles": ("/admin/roles", "Roles"),
    "access": ("/admin/access", "Access"),
    "logs": ("/admin/logs", "Logs"),
    "audit": ("/admin/audit", "Audit log"),
    "backups": ("/admin/backups", "Backups"),
    "account": ("/admin/account", "My account"),
}
USER_PASSWORD = "Quiet-Lantern-Harbour-8"


def fresh_code(secret: str, after: int) -> tuple[str, int]:
    """fresh_code is the code of a TOTP step later than `after` (the server refuses a step twice) and that step: the
    current one, or else the next, which the server takes as well (it allows one step of clock drift)."""
    totp = pyotp.TOTP(secret)
    step = max(int(time.time() // totp.interval), after + 1)
    return totp.at(step * totp.interval), step


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ui = start_ui_server(tmp_path_factory.mktemp("acceptance") / "data", setup=False)
    yield ui
    ui.api.close()
    assert ui.server.stop() == 0, ui.server.output


def test_a_new_owner_runs_xcore_from_the_browser(
    fresh_server: UiServer, chromium: Any, screenshots: Path, tmp_path: Path
) -> None:
    ui = fresh_server
    notes_zip = pack_example("notes", tmp_path / "zips")
    with watched_context(chromium) as (context, watch):
        page = context.new_page()

        # 1. Setup with the token from the URL xcore printed; the owner is signed in at once.
        assert ui.setup_token
        page.goto(f"{ui.url}/admin/setup?token={ui.setup_token}")
        page.get_by_label("Username").fill(OWNER)
        page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
        page.get_by_label("Repeat the password").fill(OWNER_PASSWORD)
        page.get_by_role("button", name="Create the owner account").click()
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()

        # 2. Two-factor login: enroll on My account with a real code, log out, log in with password + code.
        page.get_by_role("link", name=OWNER, exact=True).click()  # the account menu
        two_factor = page.locator("section", has=page.get_by_role("heading", name="Two-factor login"))
        two_factor.get_by_label("Password").fill(OWNER_PASSWORD)  # turning it on asks for the password
        two_factor.get_by_role("button", name="Turn on two-factor login").click()
        secret = page.locator(".totp-secret, code").filter(has_text=re.compile(r"^[A-Z2-7]{16,}$")).first.inner_text()
        code, used = fresh_code(secret, 0)
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Confirm and turn on").click()
        expect(page.get_by_role("list", name="Recovery codes")).to_be_visible()
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/admin/login")
        page.get_by_label("Username or email").fill(OWNER)
        page.get_by_label("Password", exact=True).fill(OWNER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        code, used = fresh_code(secret, used)
        page.get_by_label("Code from your authenticator app").fill(code)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()

        # 3. Upload the notes plugin; it goes active.
        nav_link(page, "Plugins").click()
        page.get_by_label("Choose a plugin zip").set_input_files(str(notes_zip))
        expect(page.locator(".upload-result")).to_contain_text("notes 1.1.0 is active")
        notes_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="notes", exact=True))
        expect(notes_row.locator(".badge")).to_have_text("active")

        # 4. Call its route from the page (its detail page's Try button): the notes list, empty.
        notes_row.get_by_role("link", name="notes", exact=True).click()
        page.get_by_role("heading", level=1, name="Notes").wait_for()
        page.get_by_role("button", name="Try GET /app/notes").click()
        expect(page.get_by_label("Answer of GET /app/notes")).to_have_text("[]")
        expect(page.locator(".try-answer")).to_contain_text("answered 200")

        # 5. Disable it: the page says disabled, and its route is gone.
        page.get_by_role("button", name=re.compile(r"^Disable")).first.click()
        expect(page.locator(".badge").filter(has_text="disabled").first).to_be_visible()
        assert page.evaluate("() => fetch('/app/notes').then((r) => r.status)") == 404

        # 6. Run a task and see its history row reach succeeded (the server's own consumer runs it).
        nav_link(page, "Tasks").click()
        page.get_by_role("heading", level=1, name="Tasks").wait_for()
        page.get_by_role("button", name="Run now: xcore.prune_sessions").click()
        notice = page.get_by_role("status").filter(has_text="is queued")
        run_id = re.search(r"Run (\d+) of", notice.inner_text()).group(1)  # type: ignore[union-attr]
        notice.get_by_role("link", name=re.compile("History of")).click()
        page.get_by_role("heading", level=1, name="Task runs").wait_for()
        history = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Run {run_id}", exact=True))
        expect(history.locator(".badge")).to_have_text("succeeded", timeout=30_000)

        # 7. Filter the logs: warnings and worse, then the plugins context.
        nav_link(page, "Logs").click()
        page.get_by_role("heading", level=1, name="Logs").wait_for()
        page.get_by_label("Minimum level").select_option("WARNING")
        page.wait_for_url(re.compile(r"level=WARNING"))
        # The address changes before the filtered lines arrive: wait for the INFO lines to go, then check.
        below = page.locator(".log-line .badge").filter(has_text=re.compile(r"^(DEBUG|INFO)$"))
        expect(below).to_have_count(0)
        levels = page.locator(".log-line .badge").all_inner_texts()
        assert all(level in ("WARNING", "ERROR", "CRITICAL") for level in levels), levels
        page.get_by_label("Minimum level").select_option("INFO")
        page.get_by_label("Search").fill("notes")
        page.wait_for_url(re.compile(r"q=notes"))
        expect(page.locator(".log-line").first).to_contain_text("notes")
        for line in page.locator(".log-line").all_inner_texts():
            assert "notes" in line.lower()

        # 8. A `user` account made on the Users page cannot see the admin pages.
        nav_link(page, "Users").click()
        form = page.locator("form").filter(has=page.get_by_role("button", name="Create user"))
        form.get_by_label("Username").fill("plainuser")
        form.get_by_label("Password").fill(USER_PASSWORD)
        form.get_by_role("checkbox", name="user", exact=True).check()
        form.get_by_role("button", name="Create user").click()
        page.get_by_role("link", name="plainuser", exact=True).wait_for()
    # A second, watched context for the user (cookies are per context).
    with watched_context(chromium) as (context, _):
        user_page = context.new_page()
        login(user_page, ui.url, "plainuser", USER_PASSWORD)
        user_page.wait_for_url("**/admin/home")
        assert user_page.locator("nav[aria-label='Main'] li").all_inner_texts() == ["Home"]
        for path, _title in MAIN_PAGES.values():
            if path == "/admin/account":
                continue
            user_page.goto(ui.url + path)
            heading = one_h1(user_page)
            assert heading in ("No access", "My account", "Home"), f"{path} showed {heading!r} to a plain user"
            assert user_page.locator("table").count() == 0, f"{path} showed a table to a plain user"
        status = user_page.evaluate("() => fetch('/api/admin/plugins').then((r) => r.status)")
        assert status == 403
    assert not watch.outside_hosts()


@pytest.fixture(scope="module")
def populated(ui_server: UiServer, tmp_path_factory: pytest.TempPathFactory) -> UiServer:
    """populated: the module's server with the notes plugin installed, one task run and one backup."""
    notes_zip = pack_example("notes", tmp_path_factory.mktemp("zips"))
    with notes_zip.open("rb") as data:
        response = ui_server.api.post("/api/admin/plugins", files={"data": (notes_zip.name, data, "application/zip")})
    assert response.status_code in (200, 201), response.text
    assert ui_server.api.post("/api/admin/tasks/notes.purge_empty/run", json={}).status_code in (200, 201, 202)
    assert ui_server.api.post("/api/admin/backups").status_code == 201
    return ui_server


@pytest.mark.parametrize("size", ["desktop", "large"])
def test_every_main_page_has_one_h1_and_labelled_controls(
    populated: UiServer, admin_page: Any, screenshots: Path, size: str
) -> None:
    page = admin_page
    page.set_viewport_size(SIZES[size])
    for name, (path, heading) in MAIN_PAGES.items():
        page.goto(populated.url + path)
        page.get_by_role("heading", level=1, name=heading).wait_for()
        assert one_h1(page) == heading
        assert unlabelled_controls(page) == [], f"{path} has unlabelled controls"
        # Nothing overflows the window sideways: the page fits the desktop window and a large screen.
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a {size} window"
        shot(page, screenshots, f"{name}-{size}")


def tab_reaches_everything(page: Any) -> None:
    """tab_reaches_everything presses Tab through the page and fails naming any clickable element it never
    reached (an element only a mouse could use); an icon inside a link is reached with the link."""
    missing = keyboard_unreachable(page)
    assert not missing, f"only reachable with a mouse: {missing}"


def test_login_page_works_with_the_keyboard_alone(ui_server: UiServer, page: Any) -> None:
    page.goto(ui_server.url + "/admin/login")
    page.get_by_role("heading", level=1, name="Log in to xcore").wait_for()
    tab_reaches_everything(page)
    # And a whole login with the keyboard: type, Tab, type, Enter.
    page.get_by_label("Username or email").focus()
    page.keyboard.type(OWNER)
    page.keyboard.press("Tab")
    page.keyboard.type(OWNER_PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", level=1, name="Dashboard").wait_for()
    # The focus is visible: a focused link gets an outline.
    nav_link(page, "Plugins").focus()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


def test_plugins_page_works_with_the_keyboard_alone(populated: UiServer, admin_page: Any) -> None:
    page = admin_page
    page.goto(populated.url + "/admin/plugins")
    page.get_by_role("heading", level=1, name="Plugins").wait_for()
    expect(page.get_by_role("link", name="notes", exact=True)).to_be_visible()
    tab_reaches_everything(page)
    # Keyboard navigation between pages: focus the Tasks link, press Enter, the Tasks page shows.
    nav_link(page, "Tasks").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", level=1, name="Tasks").wait_for()
