"""The admin UI's Plugins pages against a real xcore: upload by file picker and by drag-and-drop with progress, the
server's bundle rules shown inline, enable/disable/reload/delete (with purge) from the page, the detail page (facts,
routes linked to their operation in /docs, a GET route tried with the session, tasks, permissions) and the config
editor (JSON syntax checked here, keys and types by the server), and the requirements with what meets each. Also
keyboard use and accessibility checks."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser import SIZES, UiServer, login, one_h1, pack_example, shot, unlabelled_controls, zip_bytes
from conftest import until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """zips: the example plugins packed by the real CLI, once for the module."""
    out = tmp_path_factory.mktemp("zips")
    return {name: pack_example(name, out) for name in ("notes", "hello")}


def install(ui: UiServer, bundle: Path) -> dict[str, Any]:
    """install uploads a bundle through the API (replacing the same version) and returns the plugin's view."""
    response = ui.api.post("/api/admin/plugins", files={"data": (bundle.name, bundle.read_bytes(), "application/zip")})
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    assert view["state"] == "active", view
    return view


def uninstall(ui: UiServer, plugin_id: str) -> None:
    """uninstall removes a plugin and its data through the API when it is installed."""
    response = ui.api.delete(f"/api/admin/plugins/{plugin_id}", params={"purge": "true"})
    assert response.status_code in (200, 404), response.text


def open_plugins(page: Any, ui: UiServer) -> None:
    page.goto(ui.url + "/admin/plugins")
    page.get_by_role("heading", level=1, name="Plugins").wait_for()


def row(page: Any, plugin_id: str) -> Any:
    return page.locator(f'tr[data-plugin="{plugin_id}"]')


def focus_by_tab(page: Any, selector: str, limit: int = 60) -> None:
    """focus_by_tab presses Tab until the focused element matches `selector`; fails if it never does."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(sel) => !!document.activeElement && document.activeElement.matches(sel)", selector):
            return
    focused = page.evaluate("() => document.activeElement && document.activeElement.outerHTML.slice(0, 120)")
    raise AssertionError(f"Tab never reached {selector}; focus is on {focused}")


def test_upload_with_the_file_picker(
    ui_server: UiServer, admin_page: Any, zips: dict[str, Path], screenshots: Path
) -> None:
    uninstall(ui_server, "notes")
    page = admin_page
    open_plugins(page, ui_server)
    assert one_h1(page) == "Plugins"
    expect(row(page, "notes")).to_have_count(0)

    page.get_by_label("Choose a plugin zip").set_input_files(str(zips["notes"]))
    result = page.locator(".upload-result")
    expect(result).to_contain_text("notes 1.1.0 is active")
    expect(page.get_by_role("progressbar", name="Upload progress")).to_have_js_property("value", 1)
    expect(page.locator(".progress-text")).to_have_text(f"Uploaded {zips['notes'].name}.")
    # The table was refreshed with the new plugin: id linked to its page, name, version, state and its routes.
    notes = row(page, "notes")
    expect(notes.get_by_role("link", name="notes", exact=True)).to_have_attribute("href", "/admin/plugins/notes")
    expect(notes).to_contain_text("Notes")
    expect(notes).to_contain_text("1.1.0")
    expect(notes.locator(".badge")).to_have_text("active")
    notes.get_by_text("6 routes").click()
    expect(notes.get_by_text("GET /app/notes", exact=True)).to_be_visible()
    assert ui_server.api.get("/app/notes").status_code == 200

    # A bundle that passes the rules but fails to load: the answer says so, with the reason, here and in the table.
    manifest = json.dumps({"id": "broken", "version": "1.0.0", "name": "Broken"})
    code = "def on_load(ctx):\n    raise RuntimeError('the database is gone')\n"
    broken = zip_bytes({"plugin.json": manifest, "run.py": code})
    page.get_by_label("Choose a plugin zip").set_input_files(
        {"name": "broken-1.0.0.zip", "mimeType": "application/zip", "buffer": broken}
    )
    expect(result).to_contain_text("broken 1.0.0 failed:")
    expect(result).to_contain_text("the database is gone")
    expect(result).to_have_class("upload-result alert alert-error")
    expect(row(page, "broken").locator(".badge")).to_have_text("failed")
    expect(row(page, "broken").locator(".plugin-error")).to_contain_text("RuntimeError")
    expect(row(page, "broken")).to_contain_text("not mounted")

    assert unlabelled_controls(page) == []
    shot(page, screenshots, "plugins")
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "plugins-large")
    uninstall(ui_server, "broken")


def test_upload_by_drag_and_drop(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    uninstall(ui_server, "hello")
    page = admin_page
    open_plugins(page, ui_server)
    bundle = zips["hello"]
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "application/zip" }));
            return data;
        }""",
        [base64.b64encode(bundle.read_bytes()).decode(), bundle.name],
    )
    zone = page.locator("[data-dropzone]")
    zone.dispatch_event("dragenter", {"dataTransfer": transfer})
    zone.dispatch_event("dragover", {"dataTransfer": transfer})
    expect(zone).to_have_class("dropzone over")  # the zone shows it will take the file
    zone.dispatch_event("drop", {"dataTransfer": transfer})
    expect(zone).to_have_class("dropzone")
    expect(page.locator(".upload-result")).to_contain_text("hello 1.0.0 is active")
    expect(page.get_by_role("progressbar", name="Upload progress")).to_have_js_property("value", 1)
    expect(row(page, "hello").locator(".badge")).to_have_text("active")
    assert ui_server.api.get("/app/hello").json() == {"message": "Hello, world!"}


def test_a_broken_bundle_shows_the_rule_inline(ui_server: UiServer, admin_page: Any) -> None:
    page = admin_page
    open_plugins(page, ui_server)
    picker = page.get_by_label("Choose a plugin zip")
    manifest = json.dumps({"id": "evil", "version": "1.0.0"})
    evil = zip_bytes({"plugin.json": manifest, "run.py": "", "../evil": "x"})
    picker.set_input_files({"name": "evil.zip", "mimeType": "application/zip", "buffer": evil})
    alert = page.get_by_role("alert").filter(has_text="The server refused evil.zip")
    expect(alert).to_contain_text("unsafe-path")
    expect(alert).to_contain_text("'..' is not allowed in a path")
    expect(alert.locator("dd")).to_have_text(["unsafe-path", "../evil"])  # rule and entry, named
    expect(page.locator(".upload-result")).to_be_empty()

    picker.set_input_files({"name": "empty.zip", "mimeType": "application/zip", "buffer": zip_bytes({"run.py": ""})})
    alert = page.get_by_role("alert").filter(has_text="The server refused empty.zip")
    expect(alert).to_contain_text("manifest-missing")
    expect(alert).to_contain_text("no plugin.json")
    expect(row(page, "evil")).to_have_count(0)
    assert ui_server.api.get("/api/admin/plugins/evil").status_code == 404


def test_detail_page_tries_a_route_and_lists_tasks(
    ui_server: UiServer, admin_page: Any, zips: dict[str, Path], screenshots: Path
) -> None:
    install(ui_server, zips["notes"])
    page = admin_page
    open_plugins(page, ui_server)
    row(page, "notes").get_by_role("link", name="notes", exact=True).click()
    page.wait_for_url("**/admin/plugins/notes")
    assert one_h1(page) == "Notes"
    about = page.locator("section", has=page.get_by_role("heading", name="About"))
    for text in ("1.1.0", "notes-1.1.0.zip", "/app/notes", "a zip in the plugins folder"):
        expect(about).to_contain_text(text)
    sha = ui_server.api.get("/api/admin/plugins/notes").json()["sha256"]
    expect(about.locator(".hash")).to_have_text(sha)

    # Try the list route with the session: empty first, then with a note made through the API.
    page.get_by_role("button", name="Try GET /app/notes").click()
    answer = page.get_by_label("Answer of GET /app/notes")
    expect(answer).to_have_text("[]")
    expect(page.locator(".try-answer")).to_contain_text("answered 200")
    created = ui_server.api.post("/app/notes", json={"title": "Buy milk", "body": "two litres"})
    assert created.status_code == 201, created.text
    page.get_by_role("button", name="Try GET /app/notes").click()
    expect(answer).to_contain_text('"title": "Buy milk"')
    # A route with a path parameter cannot be tried without one.
    assert page.get_by_role("button", name="Try GET /app/notes/{note_id:int}").count() == 0

    tasks = page.locator("section", has=page.get_by_role("heading", name="Tasks"))
    expect(tasks).to_contain_text("notes.hourly_purge")
    expect(tasks).to_contain_text("every hour")
    expect(tasks.get_by_role("link", name="Run history of notes.purge_empty")).to_have_attribute(
        "href", "/admin/tasks/runs?name=notes.purge_empty"
    )
    expect(tasks.get_by_role("link", name="Tasks", exact=True)).to_have_attribute("href", "/admin/tasks")
    permissions = page.locator("section", has=page.get_by_role("heading", name="Permissions"))
    expect(permissions).to_contain_text("notes.write")

    assert unlabelled_controls(page) == []
    shot(page, screenshots, "plugin")
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "plugin-large")


def test_docs_links_open_the_operation_in_swagger(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    install(ui_server, zips["notes"])
    operation = ui_server.api.get("/openapi.json").json()["paths"]["/app/notes"]["get"]
    assert (operation["tags"], operation["operationId"]) == (["notes"], "get_app_notes")
    page = admin_page
    page.goto(ui_server.url + "/admin/plugins/notes")
    expect(page.get_by_role("link", name="all notes routes in /docs")).to_have_attribute("href", "/docs#/notes")
    docs = page.get_by_role("link", name="GET /app/notes in /docs")
    expect(docs).to_have_attribute("href", "/docs#/notes/get_app_notes")
    expect(page.get_by_role("link", name="GET /app/notes/{note_id:int} in /docs")).to_have_attribute(
        "href", "/docs#/notes/get_app_notes_note_id"
    )
    docs.click()
    page.wait_for_url("**/docs#/notes/get_app_notes")
    # Swagger UI follows the deep link: that operation's block is expanded, showing its description.
    block = page.locator("#operations-notes-get_app_notes")
    expect(block).to_have_class(re.compile(r"\bis-open\b"))
    expect(block).to_contain_text("list_notes returns every note")


def test_config_editor(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    install(ui_server, zips["hello"])
    assert ui_server.api.put("/api/admin/plugins/hello/config", json={"overrides": {}}).status_code == 200
    page = admin_page
    page.goto(ui_server.url + "/admin/plugins/hello")
    assert one_h1(page) == "Hello"
    editor = page.get_by_label("Overrides (JSON)")
    expect(editor).to_have_value("{}")
    expect(page.get_by_label("Default settings")).to_contain_text('"greeting": "Hello"')
    save = page.get_by_role("button", name="Save overrides")
    error = page.locator(".config-editor .field-error")
    puts: list[str] = []
    page.on("request", lambda request: puts.append(request.url) if request.method == "PUT" else None)

    # A JSON mistake is caught here, with its position, and nothing is sent.
    editor.fill('{"greeting": "Hi",}')
    save.click()
    expect(error).to_have_text(
        "Not valid JSON at line 1, column 19: a comma before “}”: remove it (JSON allows no trailing comma)."
    )
    expect(editor).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("() => document.activeElement.name") == "overrides"
    assert puts == []
    editor.fill('["greeting"]')
    save.click()
    expect(error).to_contain_text("must be a JSON object")
    assert puts == []

    # The server's refusals (unknown key, wrong type) are listed under the editor, each naming its key.
    editor.fill('{"colour": "blue", "greeting": 3}')
    save.click()
    expect(error).to_contain_text("colour: unknown setting; this plugin's settings are: greeting")
    expect(error).to_contain_text("greeting: must be a string")
    assert len(puts) == 1
    assert ui_server.api.get("/api/admin/plugins/hello/config").json()["overrides"] == {}

    # A valid override is saved, shown as effective, and the plugin answers with it.
    editor.fill('{"greeting": "Bonjour"}')
    save.click()
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    expect(error).to_be_hidden()
    expect(page.get_by_label("Effective settings")).to_contain_text('"greeting": "Bonjour"')
    assert ui_server.api.get("/app/hello").json() == {"message": "Bonjour, world!"}
    page.get_by_role("button", name="Try GET /app/hello").click()
    expect(page.get_by_label("Answer of GET /app/hello")).to_contain_text("Bonjour, world!")

    # Restore defaults asks first (it drops the overrides), then puts {}.
    page.get_by_role("button", name="Restore defaults").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Restore the default settings of Hello (hello)?")
    expect(dialog).to_contain_text("greeting")
    dialog.get_by_role("button", name="Restore defaults").click()
    expect(page.get_by_role("status").filter(has_text="Restored the defaults")).to_be_visible()
    expect(page.get_by_label("Effective settings")).to_contain_text('"greeting": "Hello"')
    expect(editor).to_have_value("{}")
    assert ui_server.api.get("/app/hello").json() == {"message": "Hello, world!"}
    assert unlabelled_controls(page) == []


def test_disable_enable_and_reload(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    install(ui_server, zips["notes"])
    page = admin_page
    open_plugins(page, ui_server)
    notes = row(page, "notes")
    notes.get_by_role("button", name="Disable notes").click()
    expect(notes.locator(".badge")).to_have_text("disabled")
    expect(page.locator(".action-status")).to_have_text("notes 1.1.0 is disabled: its routes and tasks are off.")
    expect(notes).to_contain_text("not mounted")
    assert ui_server.api.get("/app/notes").status_code == 404
    # The keyboard stays on the row: the Disable button became Enable, and it has the focus.
    expect(notes.get_by_role("button", name="Enable notes")).to_be_focused()

    notes.get_by_role("button", name="Enable notes").click()
    expect(notes.locator(".badge")).to_have_text("active")
    assert ui_server.api.get("/app/notes").status_code == 200

    notes.get_by_role("button", name="Reload notes").click()
    expect(page.locator(".action-status")).to_have_text("notes 1.1.0 is active.")

    # The same actions on the detail page.
    page.goto(ui_server.url + "/admin/plugins/notes")
    page.get_by_role("button", name="Disable notes").click()
    expect(page.locator(".page-head .badge")).to_have_text("disabled")
    expect(page.get_by_role("status").filter(has_text="is disabled")).to_be_visible()
    expect(page.locator("section", has=page.get_by_role("heading", name="Routes"))).to_contain_text(
        "No routes are mounted: the plugin is disabled."
    )
    assert ui_server.api.get("/app/notes").status_code == 404
    page.get_by_role("button", name="Enable notes").click()
    expect(page.locator(".page-head .badge")).to_have_text("active")
    page.get_by_role("button", name="Try GET /app/notes").wait_for()
    assert ui_server.api.get("/app/notes").status_code == 200
    audit = ui_server.api.get("/api/admin/audit", params={"action": "plugin.*", "per_page": 500})
    assert audit.status_code == 200, audit.text
    actions = {item["action"] for item in audit.json()["items"] if item.get("target") == "notes"}
    assert {"plugin.disable", "plugin.enable", "plugin.reload"} <= actions


def test_delete_with_purge_through_the_dialog(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    install(ui_server, zips["notes"])
    assert ui_server.api.post("/app/notes", json={"title": "kept?"}).status_code == 201
    data = ui_server.data_dir / "plugin-data" / "notes"
    assert data.is_dir()
    page = admin_page
    open_plugins(page, ui_server)

    # Cancelling keeps everything.
    row(page, "notes").get_by_role("button", name="Delete notes").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete the plugin Notes (notes)?")
    expect(dialog).to_contain_text("Its data is kept")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(row(page, "notes")).to_have_count(1)

    row(page, "notes").get_by_role("button", name="Delete notes").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Also delete the plugin's data").check()
    expect(dialog).to_contain_text("The plugin Notes (notes) will be deleted and its data purged")
    expect(dialog).to_contain_text("plugin-data/notes")
    expect(dialog).not_to_contain_text("is kept")
    dialog.get_by_role("button", name="Delete notes").click()
    expect(row(page, "notes")).to_have_count(0)
    expect(page.locator(".action-status")).to_contain_text("Deleted notes (notes-1.1.0.zip); its data was purged.")
    assert ui_server.api.get("/api/admin/plugins/notes").status_code == 404
    assert ui_server.api.get("/app/notes").status_code == 404
    assert not data.exists()


def test_server_errors_show_inline(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    install(ui_server, zips["hello"])
    page = admin_page
    open_plugins(page, ui_server)
    uninstall(ui_server, "hello")  # gone behind the page's back: the next action is refused
    row(page, "hello").get_by_role("button", name="Reload hello").click()
    expect(page.get_by_role("alert").filter(has_text="Reload hello: plugin 'hello' is not installed")).to_be_visible()
    expect(row(page, "hello")).to_have_count(0)  # and the table caught up

    page.goto(ui_server.url + "/admin/plugins/hello")
    assert one_h1(page) == "Plugin not found"
    expect(page.get_by_role("alert")).to_have_text("plugin 'hello' is not installed")


def test_keyboard_use_of_the_plugins_page(ui_server: UiServer, admin_page: Any, zips: dict[str, Path]) -> None:
    uninstall(ui_server, "notes")
    install(ui_server, zips["hello"])
    page = admin_page
    open_plugins(page, ui_server)
    page.locator("main").focus()

    # Tab reaches Rescan; Enter presses it.
    focus_by_tab(page, ".page-head button")
    page.keyboard.press("Enter")
    expect(page.locator(".action-status")).to_contain_text("Rescanned the plugins folder")
    expect(page.locator(".page-head button")).to_be_enabled()  # the rescan has finished: the page is still

    # Tab reaches the file input; Space opens the file chooser, and the chosen zip is installed.
    # The chooser is expected before tabbing: Playwright asks the browser to intercept file choosers without
    # waiting for the answer, so a Space pressed right after `expect_file_chooser` can open an uncaught chooser
    # (16 of 100 such presses in a bare page did). The Tab presses give the request time to land.
    with page.expect_file_chooser() as chooser:
        focus_by_tab(page, "input[type=file]")
        expect(page.locator("input[type=file]")).to_be_focused()
        page.keyboard.press("Space")
    chooser.value.set_files(str(zips["notes"]))
    expect(page.locator(".upload-result")).to_contain_text("notes 1.1.0 is active")

    # Tab reaches a row's action buttons; Space and Enter press them.
    focus_by_tab(page, 'button[aria-label="Reload notes"]')
    page.keyboard.press("Space")
    expect(page.locator(".action-status")).to_have_text("notes 1.1.0 is active.")
    focus_by_tab(page, 'button[aria-label="Delete notes"]')
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(row(page, "notes")).to_have_count(1)


VIEWER_PASSWORD = "Blue-Kettle-Morning-42"


BOXY = {
    "plugin.json": json.dumps({"id": "boxy", "version": "1.0.0", "sandbox": True}),
    "run.py": 'from xcore.sdk import get\n\n\n@get("/")\nasync def hi() -> dict[str, str]:\n'
    '    return {"hi": "from the box"}\n\n\nrouter = [hi]\n',
}


def test_an_admin_changes_only_sandboxed_plugins_and_sees_the_others_read_only(
    ui_server: UiServer, page: Any, zips: dict[str, Path], screenshots: Path
) -> None:
    """A plugin in the server's process is a superadmin's to change (it runs with the server's rights); a sandboxed
    one an admin's too (plugins.manage_sandboxed). The page takes that from the user's permissions (/api/me) and
    the plugin's `sandbox`, so an admin gets no control that the server would refuse: the upload zone, told that
    a bundle must run sandboxed, and the actions of the sandboxed plugin only; no rescan."""
    install(ui_server, zips["hello"])
    response = ui_server.api.post(
        "/api/admin/plugins", files={"data": ("boxy-1.0.0.zip", zip_bytes(BOXY), "application/zip")}
    )
    assert response.status_code == 201 and response.json()["sandbox"]["state"] == "running", response.text
    try:
        made = ui_server.api.post(
            "/api/admin/users", json={"username": "viewer", "password": VIEWER_PASSWORD, "roles": ["admin"]}
        )
        assert made.status_code == 201, made.text
        login(page, ui_server.url, "viewer", VIEWER_PASSWORD)
        page.get_by_role("heading", level=1, name="Dashboard").wait_for()
        open_plugins(page, ui_server)
        row(page, "boxy").wait_for()
        expect(page.locator(".read-only-note")).to_contain_text("only a superadmin holds")
        expect(page.locator(".sandboxed-only")).to_contain_text("A bundle that would run inside the server is refused")
        assert page.get_by_role("button", name="Rescan").count() == 0
        assert page.get_by_role("heading", name="Install a plugin").count() == 1
        assert page.locator(".server-rights").count() == 0
        assert row(page, "hello").get_by_role("button").count() == 0
        expect(row(page, "boxy").get_by_role("button", name="Reload boxy")).to_be_visible()
        shot(page, screenshots, "plugins-admin-sandboxed-only")
        page.goto(ui_server.url + "/admin/plugins/hello")
        page.get_by_role("heading", level=1, name="Hello").wait_for()
        expect(page.locator(".read-only-note")).to_be_visible()
        expect(page.get_by_label("Overrides", exact=True)).to_be_visible()
        for name in ("Disable hello", "Reload hello", "Delete hello", "Save overrides", "Restore defaults"):
            assert page.get_by_role("button", name=name).count() == 0, name
        assert page.locator("textarea").count() == 0
        page.goto(ui_server.url + "/admin/plugins/boxy")
        expect(page.get_by_role("button", name="Reload boxy")).to_be_visible()
        page.get_by_role("button", name="Reload boxy").click()
        expect(page.locator(".action-status, [role=status]").first).to_be_visible()
    finally:
        uninstall(ui_server, "boxy")


def test_the_upload_section_says_a_plugin_runs_with_the_servers_rights(admin_page: Any, ui_server: UiServer) -> None:
    open_plugins(admin_page, ui_server)
    warning = admin_page.locator(".server-rights")
    expect(warning).to_contain_text("runs inside the server with the server's rights")
    expect(warning).to_contain_text("Install only plugins you trust")


def test_a_failed_upgrade_is_said_in_the_list_and_on_the_dashboard(
    admin_page: Any, ui_server: UiServer, zips: dict[str, Path]
) -> None:
    serving = install(ui_server, zips["hello"])["version"]
    broken = zip_bytes(
        {"plugin.json": json.dumps({"id": "hello", "version": "9.0.0"}), "run.py": "raise RuntimeError('boom')\n"}
    )
    response = ui_server.api.post("/api/admin/plugins", files={"data": ("hello-9.0.0.zip", broken, "application/zip")})
    assert response.status_code == 201, response.text
    said = f"serving {serving}, 9.0.0 failed"
    assert response.json()["summary"] == said
    try:
        open_plugins(admin_page, ui_server)
        expect(row(admin_page, "hello").locator(".version-summary")).to_have_text(f"({said})")
        admin_page.goto(ui_server.url + "/admin")
        expect(admin_page.locator(".failed-versions")).to_contain_text(f"hello: {said}")
    finally:
        uninstall(ui_server, "hello")
        install(ui_server, zips["hello"])


TEST_WHEELS = Path(__file__).resolve().parent.parent / ".venv" / "test-wheels"
HUMANIZE = "humanize-4.9.0-py3-none-any.whl"


def upload(ui: UiServer, file: str, data: bytes) -> dict[str, Any]:
    """upload posts a bundle's bytes through the API and returns the plugin's view, whatever its state."""
    response = ui.api.post("/api/admin/plugins", files={"data": (file, data, "application/zip")})
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    return view


def bundle_with_wheels(manifest: dict[str, Any], wheels: list[Path]) -> bytes:
    """bundle_with_wheels is a bundle carrying `wheels` in wheels/, with the wheels/lock.json that lists them."""
    listed: list[dict[str, Any]] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("plugin.json", json.dumps(manifest))
        archive.writestr("run.py", "")
        for wheel in wheels:
            data = wheel.read_bytes()
            archive.writestr(f"wheels/{wheel.name}", data)
            listed.append({"file": wheel.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        archive.writestr("wheels/lock.json", json.dumps({"lock": 1, "wheels": listed}))
    return buffer.getvalue()


def requirement_row(page: Any, name: str) -> Any:
    return page.locator(f'section tr[data-requirement="{name}"]')


def test_detail_page_lists_the_requirements_and_what_meets_them(
    ui_server: UiServer, admin_page: Any, screenshots: Path
) -> None:
    manifest = {"id": "needy", "version": "1.0.0", "name": "Needy", "requirements": ["PyYAML>=5", "msgspec"]}
    view = upload(ui_server, "needy-1.0.0.zip", zip_bytes({"plugin.json": json.dumps(manifest), "run.py": ""}))
    assert view["state"] == "active", view
    try:
        page = admin_page
        page.goto(ui_server.url + "/admin/plugins/needy")
        assert one_h1(page) == "Needy"
        requirements = page.locator("section", has=page.get_by_role("heading", name="Requirements"))
        table = requirements.get_by_role("table", name="Requirements of needy")
        headers = ["Requirement", "Installed", "From", "Wheel", "Needed by"]
        expect(table.get_by_role("columnheader")).to_have_text(headers)
        # Both are met by the packages xcore runs with: their versions here, no wheel, asked for by plugin.json.
        expect(requirement_row(page, "PyYAML").locator("td")).to_have_text(
            ["PyYAML>=5", version("PyYAML"), "xcore", "—", "plugin.json"]
        )
        expect(requirement_row(page, "msgspec").locator("td")).to_have_text(
            ["msgspec", version("msgspec"), "xcore", "—", "plugin.json"]
        )
        expect(requirements).not_to_contain_text("not met")
        assert unlabelled_controls(page) == []
        shot(page, screenshots, "plugin-requirements")
    finally:
        uninstall(ui_server, "needy")


def test_detail_page_names_the_wheel_a_requirement_comes_from(ui_server: UiServer, admin_page: Any) -> None:
    assert (TEST_WHEELS / HUMANIZE).is_file(), f"{TEST_WHEELS} lacks the test wheels: run `python3 tasks.py test`"
    manifest = {"id": "wheely", "version": "1.0.0", "requirements": ["humanize"]}
    view = upload(ui_server, "wheely-1.0.0.zip", bundle_with_wheels(manifest, [TEST_WHEELS / HUMANIZE]))
    assert view["state"] == "active", view
    try:
        page = admin_page
        page.goto(ui_server.url + "/admin/plugins/wheely")
        expect(requirement_row(page, "humanize").locator("td")).to_have_text(
            ["humanize", "4.9.0", "bundle", HUMANIZE, "plugin.json"]
        )
    finally:
        uninstall(ui_server, "wheely")


def test_detail_page_says_a_requirement_is_not_met(ui_server: UiServer, admin_page: Any) -> None:
    # An upload with an unmet requirement is refused; a zip put in the plugins folder by hand is read and fails.
    manifest = {"id": "wanting", "version": "1.0.0", "requirements": ["xcore-no-such-package>=1"]}
    bundle = zip_bytes({"plugin.json": json.dumps(manifest), "run.py": ""})
    (ui_server.data_dir / "plugins" / "wanting-1.0.0.zip").write_bytes(bundle)
    assert ui_server.api.post("/api/admin/plugins/reload").status_code == 200
    # The new zip is pending until it has settled (not written to any more), then read.
    until(lambda: ui_server.api.get("/api/admin/plugins/wanting").json()["state"] == "failed", "wanting fails")
    try:
        page = admin_page
        page.goto(ui_server.url + "/admin/plugins/wanting")
        unmet = requirement_row(page, "xcore-no-such-package")
        expect(unmet.locator("td")).to_have_text(["xcore-no-such-package>=1", "not met", "—", "—", "plugin.json"])
        requirements = page.locator("section", has=page.get_by_role("heading", name="Requirements"))
        expect(requirements).to_contain_text("the error under About says why")
        about = page.locator("section", has=page.get_by_role("heading", name="About"))
        expect(about.locator("dl .plugin-error")).to_contain_text("xcore-no-such-package")
    finally:
        uninstall(ui_server, "wanting")


def test_detail_page_of_a_plugin_without_requirements(
    ui_server: UiServer, admin_page: Any, zips: dict[str, Path]
) -> None:
    install(ui_server, zips["hello"])
    page = admin_page
    page.goto(ui_server.url + "/admin/plugins/hello")
    requirements = page.locator("section", has=page.get_by_role("heading", name="Requirements"))
    expect(requirements).to_contain_text("This plugin requires no packages.")
    expect(requirements.get_by_role("table")).to_have_count(0)
