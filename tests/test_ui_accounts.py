"""The admin UI's account pages against a real xcore: Users, a user's detail, Roles, Access explain, My account
(password, two-factor login with real TOTP codes) and Backups (back up, download, restore).

The tests share one server (module scope) and run in file order; the backups test restores a backup it makes
itself, so what earlier tests created stays.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from browser import (
    OWNER,
    SIZES,
    UiServer,
    login,
    one_h1,
    shot,
    unlabelled_controls,
    watched_context,
)

pytestmark = pytest.mark.e2e

PASSWORD = "Blue-Kettle-Morning-42"
NEW_PASSWORD = "Quiet-River-Lantern-77"


@contextmanager
def watched_page(chromium: Any) -> Iterator[Any]:
    """watched_page is a page in a second, fresh browser context, watched as the browser_context fixture does."""
    with watched_context(chromium) as (context, _):
        yield context.new_page()


def create_user(ui: UiServer, username: str, roles: list[str] | None = None) -> dict[str, Any]:
    response = ui.api.post(
        "/api/admin/users", json={"username": username, "password": PASSWORD, "roles": roles or ["user"]}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def find_user(ui: UiServer, username: str) -> dict[str, Any] | None:
    items = ui.api.get("/api/admin/users", params={"q": username}).json()["items"]
    return next((u for u in items if u["username"] == username), None)


def check_page(page: Any, screenshots: Path, name: str, h1: str) -> None:
    """check_page: one h1 with the given text, every control labelled, screenshots at both window sizes."""
    assert one_h1(page) == h1
    assert unlabelled_controls(page) == []
    shot(page, screenshots, name)
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, f"{name}-large")
    page.set_viewport_size(SIZES["desktop"])


def hint_of(control: Any) -> str:
    """hint_of is the text of the hint a form control points to with aria-describedby."""
    ids = (control.get_attribute("aria-describedby") or "").split()
    hints = [control.page.locator(f"[id='{i}']") for i in ids if i.endswith("-hint")]
    return " ".join(h.inner_text() for h in hints)


def test_a_user_made_on_the_users_page_sees_only_my_account(
    admin_page: Any, ui_server: UiServer, chromium: Any, screenshots: Path
) -> None:
    page = admin_page
    page.get_by_role("link", name="Users").click()
    check_page(page, screenshots, "users", "Users")
    form = page.locator("section", has=page.get_by_role("heading", name="Create a user"))
    assert form.get_by_label("user", exact=True).is_checked()  # the least role is the default

    # The server's per-field errors show under their fields.
    form.get_by_label("Username").fill("x")
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Create user").click()
    form.get_by_text("a username has 3 to 64 characters").wait_for()
    form.get_by_label("Username").fill("carol")
    form.get_by_label("Email (optional)").fill("carol@example.com")
    form.get_by_role("button", name="Create user").click()
    form.get_by_text("the password must have at least").wait_for()
    # The form shows the server's password policy, and the server's words when a password breaks it.
    policy = ui_server.api.get("/api/auth/policy").json()
    assert f"At least {policy['password']['min_length']} characters" in hint_of(form.get_by_label("Password"))
    assert policy["username"]["rule"] in hint_of(form.get_by_label("Username"))
    form.get_by_label("Password").fill("password1234")
    form.get_by_role("button", name="Create user").click()
    form.get_by_text("in the list of common passwords").wait_for()
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Create user").click()
    page.get_by_role("link", name="carol", exact=True).wait_for()
    carol = find_user(ui_server, "carol")
    assert carol and carol["roles"] == ["user"] and carol["email"] == "carol@example.com"

    with watched_page(chromium) as other:
        login(other, ui_server.url, "carol", PASSWORD)
        # /admin is the dashboard, an admin page: the user lands on Home (the plugin pages they may open), with
        # no admin navigation.
        other.wait_for_url("**/admin/home")
        assert one_h1(other) == "Home"
        nav = other.locator("nav[aria-label='Main'] li")
        assert nav.all_inner_texts() == ["Home"]  # no admin page is offered
        assert other.get_by_role("link", name="Users").count() == 0
        other.goto(ui_server.url + "/admin/account")
        assert one_h1(other) == "My account"
        assert unlabelled_controls(other) == []
        shot(other, screenshots, "account-user")
        for path in ("/admin/users", "/admin/plugins", "/admin/backups"):
            other.goto(ui_server.url + path)
            assert one_h1(other) == "No access"
        for path in ("/api/admin/users", "/api/admin/plugins", "/api/admin/roles"):
            assert other.evaluate("(p) => fetch(p).then((r) => r.status)", path) == 403

        # The user changes their own password: every session ends, they log in with the new one.
        other.get_by_role("link", name="My account").first.click()
        assert "common passwords" in hint_of(other.get_by_label("New password", exact=True))
        other.get_by_label("Current password").fill(PASSWORD)
        other.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        other.get_by_label("Repeat the new password").fill("something-else-123")
        other.get_by_role("button", name="Change password").click()
        other.get_by_text("The two new passwords differ.").wait_for()
        other.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        other.get_by_role("button", name="Change password").click()
        other.wait_for_url("**/admin/login?next=*")
        other.get_by_label("Username or email").fill("carol")
        other.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        other.get_by_role("button", name="Log in").click()
        other.get_by_role("heading", level=1, name="My account").wait_for()
    assert ui_server.login_api("carol", NEW_PASSWORD).get("/api/me").json()["username"] == "carol"


def test_owner_edits_a_user(admin_page: Any, ui_server: UiServer, screenshots: Path) -> None:
    dave = create_user(ui_server, "dave")
    # dave turns on 2FA through the API, so there is something to reset.
    client = ui_server.login_api("dave", PASSWORD)
    secret = client.post("/api/me/totp/setup", json={"password": PASSWORD}).json()["secret"]
    confirm = client.post("/api/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()})
    assert confirm.status_code == 200, confirm.text

    page = admin_page
    page.goto(f"{ui_server.url}/admin/users")
    page.get_by_role("link", name="dave", exact=True).click()
    page.wait_for_url(f"**/admin/users/{dave['id']}")
    check_page(page, screenshots, "user", "dave")

    account = page.locator("section", has=page.get_by_role("heading", name="Account", exact=True))
    account.get_by_label("Email").fill("not-an-address")
    account.get_by_role("button", name="Save").click()
    account.get_by_text("is not an email address").wait_for()
    account.get_by_label("Email").fill("dave@example.com")
    account.get_by_label("Active (can log in)").uncheck()
    account.get_by_role("button", name="Save").click()
    account.get_by_text("Saved.").wait_for()
    got = ui_server.api.get(f"/api/admin/users/{dave['id']}").json()
    assert got["email"] == "dave@example.com" and got["is_active"] is False
    assert client.get("/api/me").status_code == 401  # deactivating ended dave's sessions

    roles = page.locator("section", has=page.get_by_role("heading", name="Roles"))
    roles.get_by_label("admin", exact=True).check()
    roles.get_by_role("button", name="Save roles").click()
    roles.get_by_text("Roles saved: admin, user.").wait_for()
    assert sorted(ui_server.api.get(f"/api/admin/users/{dave['id']}").json()["roles"]) == ["admin", "user"]

    password = page.locator("section", has=page.get_by_role("heading", name="Password"))
    assert "At least 10 characters" in hint_of(password.get_by_label("New password"))
    password.get_by_label("New password").fill(NEW_PASSWORD)
    password.get_by_role("button", name="Set password").click()
    password.get_by_text("The password of dave is changed").wait_for()

    sessions = page.locator("section", has=page.get_by_role("heading", name="Sessions and two-factor login"))
    sessions.get_by_role("button", name="Revoke sessions").click()
    sessions.get_by_text("Every session of dave ended").wait_for()
    sessions.get_by_role("button", name="Reset 2FA").click()
    dialog = page.get_by_role("dialog", name="Reset two-factor login of dave?")
    dialog.get_by_role("button", name="Reset 2FA").click()
    sessions.get_by_text("Two-factor login of dave is off").wait_for()
    assert ui_server.api.get(f"/api/admin/users/{dave['id']}").json()["totp_enabled"] is False
    expect(sessions.get_by_role("button", name="Reset 2FA")).to_be_disabled()

    page.get_by_role("button", name="Delete user").click()
    dialog = page.get_by_role("dialog", name="Delete the user dave?")
    dialog.get_by_role("button", name="Cancel").click()  # cancel keeps the user
    assert ui_server.api.get(f"/api/admin/users/{dave['id']}").status_code == 200
    page.get_by_role("button", name="Delete user").click()
    page.get_by_role("dialog", name="Delete the user dave?").get_by_role("button", name="Delete dave").click()
    page.wait_for_url("**/admin/users")
    page.get_by_role("heading", level=1, name="Users").wait_for()
    page.get_by_role("link", name="carol", exact=True).wait_for()
    assert page.get_by_role("link", name="dave", exact=True).count() == 0
    assert ui_server.api.get(f"/api/admin/users/{dave['id']}").status_code == 404


def test_an_admin_sees_the_escalation_refusals(ui_server: UiServer, chromium: Any, screenshots: Path) -> None:
    create_user(ui_server, "erin", ["admin"])
    frank = create_user(ui_server, "frank")
    owner_id = ui_server.api.get("/api/me").json()["id"]
    with watched_page(chromium) as page:
        login(page, ui_server.url, "erin", PASSWORD)
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()
        page.goto(f"{ui_server.url}/admin/users/{frank['id']}")
        assert one_h1(page) == "frank"
        roles = page.locator("section", has=page.get_by_role("heading", name="Roles"))
        roles.get_by_label("superadmin", exact=True).check()
        roles.get_by_role("button", name="Save roles").click()
        refusal = roles.get_by_role("alert")
        refusal.wait_for()
        assert "you cannot grant the role 'superadmin': it ranks above your own" in refusal.inner_text()
        assert ui_server.api.get(f"/api/admin/users/{frank['id']}").json()["roles"] == ["user"]
        shot(page, screenshots, "user-refusal")

        # The owner ranks above an admin: the refusal names the rule.
        page.goto(f"{ui_server.url}/admin/users/{owner_id}")
        assert one_h1(page) == OWNER
        page.get_by_role("button", name="Revoke sessions").click()
        page.get_by_role("alert").filter(has_text="you can only manage accounts ranked below your own").wait_for()

        # Roles: an admin cannot create roles, and the page says why instead of offering the form.
        page.get_by_role("link", name="Roles").click()
        assert one_h1(page) == "Roles"
        page.get_by_text("Only a superadmin can create roles").wait_for()
        assert page.get_by_role("button", name="Create role").count() == 0
        assert page.get_by_role("button", name="Delete role", exact=False).count() == 0
        assert unlabelled_controls(page) == []
        shot(page, screenshots, "roles-admin")
        # ... but may require 2FA for the user role (ranked below admin).
        page.get_by_role("button", name="Edit role user").click()
        editor = page.locator("section", has=page.get_by_role("heading", name="Edit role user"))
        assert editor.get_by_label("Description").is_disabled()
        editor.get_by_label("Require two-factor login for its members").check()
        editor.get_by_role("button", name="Save role").click()
        page.get_by_text("Saved the role user.").wait_for()
    role = next(r for r in ui_server.api.get("/api/admin/roles").json() if r["name"] == "user")
    assert role["require_totp"] is True
    response = ui_server.api.patch("/api/admin/roles/user", json={"require_totp": False})
    assert response.status_code == 200, response.text


def test_roles_create_edit_delete(admin_page: Any, ui_server: UiServer, screenshots: Path) -> None:
    page = admin_page
    page.get_by_role("link", name="Roles").click()
    check_page(page, screenshots, "roles", "Roles")
    permissions = page.locator("section", has=page.get_by_role("heading", name="Permissions", exact=True))
    backups_row = permissions.get_by_role("row").filter(has_text="backups.manage")
    assert "superadmin" in backups_row.inner_text()

    create = page.locator("section", has=page.get_by_role("heading", name="Create a role"))
    create.get_by_label("Name").fill("Bad Name")
    create.get_by_role("button", name="Create role").click()
    create.get_by_text("a role name has 2 to 64 lowercase letters").wait_for()
    create.get_by_label("Name").fill("reporters")
    create.get_by_label("Description").fill("Reads the logs")
    create.get_by_label("logs.read").check()
    create.get_by_role("button", name="Create role").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("button", name="Edit role reporters"))
    row.wait_for()
    assert "logs.read" in row.inner_text() and "Reads the logs" in row.inner_text()
    role = next(r for r in ui_server.api.get("/api/admin/roles").json() if r["name"] == "reporters")
    assert role["permissions"] == ["logs.read"] and role["builtin"] is False

    page.get_by_role("button", name="Edit role reporters").click()
    page.wait_for_url("**/admin/roles?edit=reporters")
    editor = page.locator("section", has=page.get_by_role("heading", name="Edit role reporters"))
    editor.get_by_label("Description").fill("Reads the logs and the audit log")
    editor.get_by_label("audit.read").check()
    editor.get_by_label("Require two-factor login for its members").check()
    editor.get_by_role("button", name="Save role").click()
    row.filter(has_text="audit.read").wait_for()
    shot(page, screenshots, "roles-edit")
    role = next(r for r in ui_server.api.get("/api/admin/roles").json() if r["name"] == "reporters")
    assert role == {
        "name": "reporters",
        "description": "Reads the logs and the audit log",
        "builtin": False,
        "rank": 10,
        "require_totp": True,
        "permissions": ["audit.read", "logs.read"],
    }

    # Built-in roles keep their permissions: their boxes are disabled.
    page.get_by_role("button", name="Edit role admin").click()
    editor = page.locator("section", has=page.get_by_role("heading", name="Edit role admin"))
    assert editor.get_by_label("plugins.read").is_disabled()
    assert page.get_by_role("button", name="Delete role admin").count() == 0

    page.get_by_role("button", name="Delete role reporters").click()
    dialog = page.get_by_role("dialog", name="Delete the role reporters?")
    assert "audit.read, logs.read" in dialog.inner_text()
    dialog.get_by_role("button", name="Delete reporters").click()
    page.get_by_text("Deleted the role reporters.").wait_for()
    expect(page.get_by_role("button", name="Edit role reporters")).to_have_count(0)
    assert all(r["name"] != "reporters" for r in ui_server.api.get("/api/admin/roles").json())


def test_access_explain(admin_page: Any, ui_server: UiServer, screenshots: Path) -> None:
    create_user(ui_server, "gina")
    page = admin_page
    page.get_by_role("link", name="Access").click()
    assert one_h1(page) == "Access"
    page.get_by_label("Path").fill("/api/admin/users")
    page.get_by_label("Method").select_option("POST")
    page.get_by_label("User (optional)").fill("gina")
    page.get_by_role("button", name="Explain").click()
    result = page.locator(".explain-result")
    result.get_by_text("Denied", exact=True).wait_for()
    assert "gina lacks" in result.inner_text() and "/api/admin/*" in result.inner_text()
    page.wait_for_url("**/admin/access?path=*user=gina")
    check_page(page, screenshots, "access", "Access")

    # The query keeps the question: a reload answers it again. The owner (superadmin) gets in.
    page.get_by_label("User (optional)").fill(OWNER)
    page.get_by_role("button", name="Explain").click()
    result.get_by_text("Allowed", exact=True).wait_for()
    page.reload()
    page.locator(".explain-result").get_by_text("Allowed", exact=True).wait_for()

    page.get_by_label("User (optional)").fill("nobody-here")
    page.get_by_role("button", name="Explain").click()
    page.get_by_text("there is no user 'nobody-here'").wait_for()


def test_two_factor_login_on_my_account(ui_server: UiServer, chromium: Any, screenshots: Path) -> None:
    create_user(ui_server, "hana")
    with watched_page(chromium) as page:
        login(page, ui_server.url, "hana", PASSWORD, path="/admin/account")
        assert one_h1(page) == "My account"
        # Turning it on needs the password: a stolen session cannot lock the owner out with another phone.
        two_factor = page.locator("section", has=page.get_by_role("heading", name="Two-factor login"))
        two_factor.get_by_role("button", name="Turn on two-factor login").click()
        two_factor.get_by_text("Type your password.").wait_for()
        two_factor.get_by_label("Password").fill("not-the-password-1")
        two_factor.get_by_role("button", name="Turn on two-factor login").click()
        two_factor.get_by_text("the password is wrong").wait_for()
        two_factor.get_by_label("Password").fill(PASSWORD)
        two_factor.get_by_role("button", name="Turn on two-factor login").click()
        qr = page.get_by_role("img", name="QR code to add hana at xcore to an authenticator app")
        qr.wait_for()
        assert qr.get_attribute("src").startswith("data:image/svg+xml;base64,")
        assert qr.evaluate("(img) => img.complete && img.naturalWidth > 0")  # the policy lets the data: image in
        secret = page.locator("code.totp-secret").inner_text().strip()
        assert unlabelled_controls(page) == []
        shot(page, screenshots, "account-2fa-setup")

        page.get_by_label("Code from your authenticator app").fill("000000")
        page.get_by_role("button", name="Confirm and turn on").click()
        page.get_by_text("the code is wrong or expired").wait_for()
        used_step = int(time.time() // 30)
        page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).at(used_step * 30))
        page.get_by_role("button", name="Confirm and turn on").click()
        codes_list = page.get_by_role("list", name="Recovery codes")
        codes_list.wait_for()
        codes = [c.strip() for c in codes_list.locator("li").all_inner_texts()]
        assert len(codes) == 10
        page.get_by_text("Save these recovery codes now.").wait_for()
        shot(page, screenshots, "account-2fa-codes")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download as text").click()
        saved = Path(download.value.path()).read_text()
        assert all(code in saved for code in codes)

        page.reload()  # the codes were shown once
        page.get_by_role("button", name="Turn off two-factor login").wait_for()
        assert page.get_by_text(codes[0]).count() == 0

        # Log in again: password, then a fresh code on the second step.
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/admin/login")
        page.get_by_label("Username or email").fill("hana")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("Enter the code from your authenticator app.").wait_for()
        # The server takes each step once: the next step's code, which it accepts within its one step of drift.
        page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).at((used_step + 1) * 30))
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", level=1, name="Home").wait_for()  # a user's app opens on Home

        # And with a recovery code.
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/admin/login")
        page.get_by_label("Username or email").fill("hana")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("button", name="Use a recovery code").click()
        page.get_by_label("Recovery code").fill(codes[0])
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", level=1, name="Home").wait_for()
        page.get_by_role("link", name="hana", exact=True).click()
        page.get_by_role("heading", level=1, name="My account").wait_for()

        # Turning it off needs the password and a code (a recovery code works).
        section = page.locator("section", has=page.get_by_role("heading", name="Two-factor login"))
        section.get_by_label("Password").fill(PASSWORD)
        section.get_by_label("Code from your authenticator app, or a recovery code").fill(codes[0])
        section.get_by_role("button", name="Turn off two-factor login").click()
        section.get_by_text("the code is wrong, expired or already used").wait_for()  # codes work once
        section.get_by_label("Code from your authenticator app, or a recovery code").fill(codes[1])
        section.get_by_role("button", name="Turn off two-factor login").click()
        section.get_by_role("button", name="Turn on two-factor login").wait_for()
    assert ui_server.login_api("hana", PASSWORD).get("/api/me").json()["totp_enabled"] is False


def test_backups_page_restores_a_backup(
    admin_page: Any, ui_server: UiServer, screenshots: Path, tmp_path: Path
) -> None:
    page = admin_page
    page.get_by_role("link", name="Backups").click()
    assert one_h1(page) == "Backups"
    page.get_by_role("button", name="Back up now").click()
    made = page.locator("main").get_by_role("status").filter(has_text="Backed up as ")
    made.wait_for()
    name = made.inner_text().split("Backed up as ", 1)[1].split(" (", 1)[0]
    row = page.get_by_role("row").filter(has_text=name)
    row.wait_for()
    assert "manual" in row.inner_text() and "everything" in row.inner_text()
    check_page(page, screenshots, "backups", "Backups")

    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {name}").click()
    assert download.value.suggested_filename == name
    copy = tmp_path / name
    download.value.save_as(copy)
    with tarfile.open(copy, "r:gz") as archive:  # a complete backup: the database and the rest, with a manifest
        assert {"database.db", "manifest.json"} <= set(archive.getnames())

    create_user(ui_server, "ivan")  # after the backup: the restore takes it away
    page.get_by_role("button", name=f"Restore {name}").click()
    dialog = page.get_by_role("dialog", name=f"Restore {name}?")
    text = dialog.inner_text()
    assert "safety backup of everything as it is now is taken" in text
    assert "All data changes since that backup are lost" in text
    assert "sign in again" in text
    shot(page, screenshots, "backups-restore-dialog")
    dialog.get_by_role("button", name="Restore this backup").click()
    done = page.locator("main").get_by_role("status").filter(has_text=f"Restored {name}.")
    done.wait_for(timeout=60_000)
    assert "no restart is needed" in done.inner_text()
    page.get_by_role("row").filter(has_text="safety").first.wait_for()
    assert find_user(ui_server, "ivan") is None
    assert find_user(ui_server, "hana") is not None  # made before the backup
    shot(page, screenshots, "backups-restored")

    # Encrypted with a new key: its emergency kit is shown once, to download; the backup is then restored from a
    # file uploaded with that key, after a wrong key was refused.
    page.get_by_label("Encryption").select_option("key")
    page.get_by_role("button", name="Back up now").click()
    kit_text = page.get_by_label("Emergency kit")
    kit_text.wait_for()
    with page.expect_download() as kit_download:
        page.get_by_role("link", name="Download the emergency kit").click()
    kit = tmp_path / kit_download.value.suggested_filename
    kit_download.value.save_as(kit)
    sealed = page.locator("main").get_by_role("status").filter(has_text="Backed up as ").inner_text()
    sealed_name = sealed.split("Backed up as ", 1)[1].split(" (", 1)[0]
    assert kit.name == sealed_name.removesuffix(".xcbackup") + "-emergency-kit.txt"
    assert "XCK1-" in kit.read_text() and sealed_name in kit.read_text() and "XCK1-" in kit_text.inner_text()
    shot(page, screenshots, "backups-emergency-kit")
    with page.expect_download() as archive_download:
        page.get_by_role("link", name=f"Download {sealed_name}").click()
    sealed_copy = tmp_path / sealed_name
    archive_download.value.save_as(sealed_copy)
    create_user(ui_server, "jules")

    page.get_by_label("Backup file (.xcbackup)").set_input_files(str(sealed_copy))
    key = page.get_by_label("Backup key")
    key.fill("XCK1-" + "A" * 55)
    page.get_by_role("button", name="Restore from this file").click()
    page.get_by_role("dialog", name=f"Restore {sealed_name}?").get_by_role("button", name="Restore this backup").click()
    page.get_by_role("alert").filter(has_text="mistyped").wait_for()
    key.fill(kit.read_text())
    page.get_by_role("button", name="Restore from this file").click()
    page.get_by_role("dialog", name=f"Restore {sealed_name}?").get_by_role("button", name="Restore this backup").click()
    page.locator("main").get_by_role("status").filter(has_text=f"Restored {sealed_name}.").wait_for(timeout=60_000)
    assert find_user(ui_server, "jules") is None
    assert find_user(ui_server, "ivan") is None and find_user(ui_server, "hana") is not None
    shot(page, screenshots, "backups-restored-from-file")


def test_backups_page_without_restore_support(admin_page: Any, ui_server: UiServer) -> None:
    # A PostgreSQL core database cannot be restored from here: the page shows the server's reason and no
    # restore buttons. The answer is the real one with `restore` changed, as such a server sends it.
    reason = "the core database is not a SQLite file (postgresql://xcore@db/xcore); use pg_dump and pg_restore"

    def unsupported(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["restore"] = {"supported": False, "reason": reason}
        route.fulfill(response=response, json=body)

    page = admin_page
    page.route("**/api/admin/backups", unsupported)
    page.goto(ui_server.url + "/admin/backups")
    page.get_by_text(reason).wait_for()
    page.get_by_role("link", name="Download", exact=False).first.wait_for()
    assert page.get_by_role("button", name="Restore", exact=False).count() == 0
