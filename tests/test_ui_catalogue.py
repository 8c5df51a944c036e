"""The admin UI's catalogue and trust pages (issue 26) against a real xcore and Chromium: a team's catalogue built
here (a signing key, signed bundles of a small plugin, a signed index.json with a notice) and served over HTTP on
127.0.0.1; its key trusted through the Trusted keys page; the plugin found with Browse's search, installed, then
updated with one click after a newer version is published (the Plugins page counting the update on its Browse tab);
the plugin page naming the signer as trusted and the catalogue's notice; a download that does not match the
catalogue's sha256 refused with the server's reason; a key removed after a confirmation. Keyboard reach and the
accessibility sweep run on both new pages, with screenshots at two sizes.

The browser context fails its test on a script error, a Content-Security-Policy violation or a console error other
than the failed loads a step expects (`Console.take`). The server's side is tests/test_catalogue.py.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser import (
    SIZES,
    UiServer,
    keyboard_unreachable,
    login,
    one_h1,
    shot,
    start_ui_server,
    unlabelled_controls,
    watched_context,
)
from conftest import until
from xcore import __version__
from xcore.plugins.catalogue import build
from xcore.plugins.pack import pack_folder
from xcore.plugins.signing import new_key

pytestmark = pytest.mark.e2e

BROWSE = "/admin/plugins/browse-catalogues"
TRUST = "/admin/plugins/trusted-keys"
RUN = """
from xcore.sdk import Ctx, get


@get("/", sync_to_thread=False)
def answer(ctx: Ctx) -> dict[str, object]:
    return {"id": ctx.id, "version": ctx.version}


router = [answer]
"""
NOTICE = "1.0 loses notes on restart; update"


@dataclass
class Shelf:
    """Shelf is the team's catalogue: a folder of signed bundles with its index.json, served on 127.0.0.1."""

    folder: Path
    url: str
    key: Path
    public_line: str
    work: Path

    def release(self, version: str) -> Path:
        """release packs memo `version`, signed with the team's key, into the folder."""
        source = self.work / f"memo-{version}"
        source.mkdir(parents=True)
        manifest = {
            "id": "memo", "version": version, "name": "Memo", "description": "Notes for the team", "author": "Team",
        }  # fmt: skip
        (source / "plugin.json").write_text(json.dumps(manifest))
        (source / "run.py").write_text(RUN)
        return pack_folder(source, self.folder, __version__, sign=self.key)

    def publish(self) -> None:
        """publish writes the signed index of the bundles in the folder, with the catalogue's name and a notice."""
        settings = {
            "name": "Team plugins",
            "notices": [{"id": "memo", "versions": "<1.1", "level": "warning", "message": NOTICE}],
        }
        (self.folder / "catalogue.json").write_text(json.dumps(settings))
        (self.folder / "index.json").write_bytes(build(self.folder, self.key))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shelf]:
    work = tmp_path_factory.mktemp("catalogue")
    folder = work / "shelf"
    folder.mkdir()
    pem, line = new_key("Team")
    key = work / "team.key"
    key.write_bytes(pem)
    (work / "team.pub").write_text(line + "\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    shelf = Shelf(folder, f"http://127.0.0.1:{server.server_address[1]}/", key, line, work)
    shelf.release("1.0.0")
    shelf.publish()
    try:
        yield shelf
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, shelf: Shelf) -> Iterator[UiServer]:
    """ui: a real xcore whose one catalogue is the shelf (its key not trusted yet), with the owner account."""
    env = {"XCORE_MANAGER__PLUGINS__CATALOGUES": json.dumps([shelf.url])}
    server = start_ui_server(tmp_path_factory.mktemp("ui-catalogue") / "data", env=env)
    yield server
    server.api.close()
    assert server.server.stop() == 0, server.server.output


@dataclass
class Console:
    """Console records the console errors of a page; a failed load a step expects is taken (`take`)."""

    errors: list[str] = field(default_factory=list)

    def on_message(self, message: Any) -> None:
        url = str(message.location.get("url"))
        # Before login the app asks /api/me (401) and tries a refresh with no session: the login flow.
        expected = "status of 401" in message.text or url.endswith("/api/auth/refresh")
        if message.type == "error" and not expected:
            self.errors.append(f"{message.text} ({url})")

    def take(self, status: int) -> None:
        """take forgets the failed loads answered `status` (a step expected them), and asserts there was one."""
        wanted = f"status of {status}"
        assert any(wanted in e for e in self.errors), self.errors
        self.errors[:] = [e for e in self.errors if wanted not in e]


@pytest.fixture
def owner(chromium: Any, ui: UiServer) -> Iterator[tuple[Any, Console]]:
    """owner: a page logged in as the owner, in a watched context, and its console (unexpected errors fail)."""
    with watched_context(chromium) as (context, _):
        page = context.new_page()
        console = Console()
        page.on("console", console.on_message)
        login(page, ui.url)
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()
        yield page, console
        assert not console.errors, f"console errors: {console.errors}"


def card(page: Any, plugin_id: str) -> Any:
    return page.locator(f'article.plugin-card[data-plugin="{plugin_id}"]')


def sweep(page: Any) -> None:
    """sweep runs the accessibility checks: one h1, every control named, everything clickable reached by Tab."""
    one_h1(page)
    assert unlabelled_controls(page) == []
    assert keyboard_unreachable(page) == []


def shots(page: Any, screenshots: Path, name: str) -> None:
    shot(page, screenshots, name)
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, f"{name}-large")
    page.set_viewport_size(SIZES["desktop"])


def test_trust_browse_install_and_update_from_a_catalogue(
    ui: UiServer, owner: tuple[Any, Console], shelf: Shelf, screenshots: Path
) -> None:
    page, console = owner
    # The Plugins page leads to both new pages by its tabs.
    page.goto(ui.url + "/admin/plugins")
    tabs = page.get_by_role("navigation", name="Plugin pages")
    expect(tabs.get_by_role("link", name="Installed")).to_have_attribute("aria-current", "page")
    # The default signing policy runs unsigned bundles: both pages warn of it, and say how to change it.
    warning = page.locator(".policy-warning")
    expect(warning).to_contain_text("Unsigned plugins run here.")
    expect(warning).to_contain_text('The signing policy (manager.plugins.policy) is "unsigned"')
    expect(warning).to_contain_text("No key is trusted.")
    expect(warning).to_contain_text("signed-only (only bundles a trusted key signed run)")
    (untrusted,) = ui.api.post("/api/admin/catalogue/refresh").json()["catalogues"]
    assert "a key this host does not trust" in untrusted["error"], untrusted
    tabs.get_by_role("link", name="Trusted keys").click()
    page.wait_for_url(f"**{TRUST}")
    assert one_h1(page) == "Trusted keys"
    expect(page.get_by_role("table", name="Trusted keys")).to_contain_text("No key is trusted")
    expect(page.locator(".policy-warning")).to_contain_text("Unsigned plugins run here.")

    # A line that is not a public key: the server's reason, next to the field.
    key_field = page.get_by_label("Public key")
    key_field.fill("ssh-ed25519 AAAA nobody")
    page.get_by_role("button", name="Trust this key").click()
    error = page.locator(".trust-form .field-error").first
    expect(error).to_contain_text("a public key is one line `xcore-ed25519 <base64 key> <name>`")
    expect(key_field).to_have_attribute("aria-invalid", "true")
    expect(key_field).to_be_focused()
    console.take(422)

    key_field.fill(shelf.public_line)
    page.get_by_role("button", name="Trust this key").click()
    status = page.locator(".action-status")
    expect(status).to_contain_text("Trusted Team (key ")
    expect(key_field).not_to_have_attribute("aria-invalid", "true")
    row = page.locator('tr[data-key="Team"]')
    (trusted,) = ui.api.get("/api/admin/trust").json()
    expect(row.locator("td")).to_have_text(["Team", trusted["key_id"], shelf.public_line, "Remove"])
    page.reload()  # a trusted key stops nothing under this policy: the warning says so
    expect(page.locator(".policy-warning")).to_contain_text("1 key is trusted, but that stops nothing.")
    # The same key again: refused, saying under which name it is trusted.
    key_field.fill(shelf.public_line)
    page.get_by_role("button", name="Trust this key").click()
    expect(page.locator(".trust-form .field-error").first).to_have_text("this key is trusted already, as 'Team'")
    console.take(422)
    key_field.fill("")
    sweep(page)
    shots(page, screenshots, "trusted-keys")

    # Browse: trusting the key read the catalogues again, so the one it signs is in use; a refresh keeps it so.
    page.get_by_role("navigation", name="Plugin pages").get_by_role("link", name="Browse").click()
    page.wait_for_url(f"**{BROWSE}")
    assert one_h1(page) == "Browse plugins"
    catalogue = page.locator(f'tr[data-catalogue="{shelf.url}"]')
    expect(catalogue).not_to_contain_text("a key this host does not trust")
    page.get_by_role("button", name="Refresh catalogues").click()
    expect(page.locator(".action-status")).to_have_text("Fetched the catalogues again: 1 catalogue.")
    expect(catalogue.locator("td")).to_have_text(
        ["Team plugins", shelf.url, f"Team {trusted['key_id']}", "1", re.compile(r"\d"), "ok"]
    )

    # Search: nothing, then the plugin, with what the catalogue says of it and a notice on the versions before 1.1.
    search = page.get_by_label("Search the catalogues")
    search.fill("spreadsheet")
    search.press("Enter")
    expect(page.locator(".plugin-cards")).to_contain_text("No plugin in the catalogues matches “spreadsheet”.")
    assert page.url.endswith("?q=spreadsheet")
    search.fill("notes for")
    page.get_by_role("button", name="Search", exact=True).click()
    memo = card(page, "memo")
    expect(memo.get_by_role("heading", name="Memo")).to_be_visible()
    for text in ("Notes for the team", "Team plugins", "1.0.0 (signed by Team", "not installed"):
        expect(memo).to_contain_text(text)
    expect(page.locator(".result-count")).to_have_text("1 plugin matches “notes for”.")

    memo.get_by_role("button", name="Install memo 1.0.0").click()
    result = page.locator(".install-result")
    expect(result).to_contain_text("Installed Memo (memo) 1.0.0: active")
    expect(result).to_contain_text("memo 1.0.0 is active.")
    assert ui.api.get("/app/memo").json() == {"id": "memo", "version": "1.0.0"}
    expect(memo).to_contain_text("Up to date: 1.0.0 is the newest release that fits this xcore.")
    expect(memo.get_by_role("link", name="memo 1.0.0")).to_be_focused()  # the keyboard stays on the card
    expect(memo.get_by_role("list", name="Notices on memo")).to_have_text(f"Warning from Team plugins: {NOTICE}")
    sweep(page)
    shots(page, screenshots, "browse")

    # The plugin's page: the catalogue's notice near the top, the signer trusted under About.
    result.get_by_role("link", name="Memo (memo)").click()
    page.wait_for_url("**/admin/plugins/memo")
    notices = page.get_by_role("list", name="Notices from the catalogues")
    expect(notices).to_have_text(f"Warning from Team plugins: {NOTICE}")
    about = page.locator("section", has=page.get_by_role("heading", name="About"))
    expect(about.locator(".signature")).to_have_text(f"Signed by Team (key {trusted['key_id']}), trusted here as Team.")

    # A newer version is published; once the catalogues are fetched again, the Plugins page counts the update.
    shelf.release("1.1.0")
    shelf.publish()
    page.goto(ui.url + BROWSE)
    page.get_by_role("button", name="Refresh catalogues").click()
    expect(card(page, "memo").get_by_role("button", name="Update to 1.1.0: memo")).to_be_visible()
    expect(card(page, "memo")).to_contain_text("update available")
    page.get_by_role("navigation", name="Plugin pages").get_by_role("link", name="Installed").click()
    page.wait_for_url("**/admin/plugins")
    expect(page.locator("[data-tab=browse]")).to_have_text("Browse 1 update")
    row = page.locator('tr[data-plugin="memo"]')
    expect(row.get_by_role("link", name="1.1.0 available for memo")).to_have_attribute("href", BROWSE)
    expect(row.locator(".signer")).to_have_text("Team trusted")

    # One click updates it: a hot reload, the new version serving.
    page.locator("[data-tab=browse]").click()
    card(page, "memo").get_by_role("button", name="Update to 1.1.0: memo").click()
    expect(page.locator(".install-result")).to_contain_text("Updated Memo (memo) 1.1.0: active")
    assert until(lambda: ui.api.get("/app/memo").json()["version"] == "1.1.0", "memo 1.1.0 serves")
    expect(card(page, "memo")).to_contain_text("Up to date: 1.1.0")
    expect(card(page, "memo").locator(".notices")).to_have_count(0)  # the notice was on the versions before 1.1
    page.goto(ui.url + "/admin/plugins")
    expect(page.locator('tr[data-plugin="memo"]')).to_contain_text("1.1.0")
    expect(page.locator("[data-tab=browse]")).to_have_text("Browse")

    # A release whose download does not match the catalogue's sha256: refused, with the server's reason.
    tampered = shelf.release("1.2.0")
    shelf.publish()
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    tampered.write_bytes(bytes(data))
    page.goto(ui.url + BROWSE)
    page.get_by_role("button", name="Refresh catalogues").click()
    card(page, "memo").get_by_role("button", name="Update to 1.2.0: memo").click()
    failure = page.get_by_role("alert").filter(has_text="Could not update memo 1.2.0.")
    expect(failure).to_contain_text("memo-1.2.0.zip: its sha256 is")
    expect(failure).to_contain_text("and the catalogue lists")
    expect(failure).not_to_contain_text("Traceback")
    console.take(502)
    assert ui.api.get("/app/memo").json()["version"] == "1.1.0"


def test_removing_a_trusted_key_asks_first(ui: UiServer, owner: tuple[Any, Console], shelf: Shelf) -> None:
    if not ui.api.get("/api/admin/trust").json():
        assert ui.api.post("/api/admin/trust", json={"public_key": shelf.public_line}).status_code == 201
    page, _ = owner
    page.goto(ui.url + TRUST)
    remove = page.get_by_role("button", name="Remove Team")
    remove.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Stop trusting Team?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(remove).to_be_focused()
    assert len(ui.api.get("/api/admin/trust").json()) == 1

    remove.click()
    page.get_by_role("dialog").get_by_role("button", name="Remove Team").click()
    expect(page.locator(".action-status")).to_contain_text("Team (key ")
    expect(page.locator(".action-status")).to_contain_text("is no longer trusted.")
    expect(page.get_by_role("table", name="Trusted keys")).to_contain_text("No key is trusted")
    assert ui.api.get("/api/admin/trust").json() == []
    expect(page.get_by_label("Public key")).to_be_focused()  # the row is gone: the keyboard goes to the form
    audit = ui.api.get("/api/admin/audit", params={"action": "trust.*"}).json()["items"]
    assert {a["action"] for a in audit} >= {"trust.add", "trust.remove"}

    # A plugin it signed now shows its signer as not trusted (the default policy still runs it).
    if ui.api.get("/api/admin/plugins/memo").status_code == 200:
        page.goto(ui.url + "/admin/plugins/memo")
        expect(page.locator(".signature")).to_contain_text("not trusted here.")
        expect(page.locator(".signature").get_by_role("link", name="Trusted keys")).to_have_attribute("href", TRUST)
