"""The notes plugin's page in the app (/admin/apps/notes/notes), against a real xcore with the packed plugin
installed: a reader (a plain user) sees every note but neither the form nor a Delete button, and the server refuses
their delete; a writer (a role with notes.write) adds notes, sees the server's validation messages by the fields,
and deletes notes, with the focus kept where the work is. Both views get the accessibility sweep (browser.sweep),
with their screenshots at both window sizes in the test artefacts. No script error, console error or policy
violation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from browser import UiServer, Watch, assert_window_shots, login, one_h1, pack_example, sweep

pytestmark = pytest.mark.e2e

PAGE = "/admin/apps/notes/notes"
PASSWORDS = {"reader": "quiet-lantern-pass-5", "writer": "amber-harbour-pass-6"}
# What Chromium logs for every 4xx answer: the page's to handle, not an error of its own.
ANSWERED_4XX = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")


@pytest.fixture(scope="module")
def notes(ui_server: UiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, httpx.Client]]:
    """notes: the notes plugin installed from its zip (packed by the real CLI), a role `note-writers` with
    notes.write made through the admin API, the accounts reader (user) and writer (user, note-writers), and an
    API client logged in as each."""
    bundle = pack_example("notes", tmp_path_factory.mktemp("zips"))
    installed = ui_server.api.post(
        "/api/admin/plugins", files={"data": (bundle.name, bundle.read_bytes(), "application/zip")}
    )
    assert installed.status_code == 201, installed.text
    assert (installed.json()["state"], installed.json()["version"]) == ("active", "1.1.0")
    role = ui_server.api.post("/api/admin/roles", json={"name": "note-writers", "permissions": ["notes.write"]})
    assert role.is_success, role.text
    for username, roles in (("reader", ["user"]), ("writer", ["user", "note-writers"])):
        body = {"username": username, "password": PASSWORDS[username], "roles": roles}
        made = ui_server.api.post("/api/admin/users", json=body)
        assert made.status_code == 201, made.text
    clients = {name: ui_server.login_api(name, password) for name, password in PASSWORDS.items()}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def watched(browser_context: tuple[Any, Watch]) -> Iterator[Any]:
    """watched: the browser context of browser.py (script errors, policy violations and outside hosts fail the
    test), where any other console error fails the test too, but Chromium's line for a 4xx answer."""
    context, _ = browser_context
    errors: list[str] = []
    context.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not ANSWERED_4XX.match(m.text) else None,
    )
    yield context
    assert not errors, f"console errors: {errors}"


def empty(client: httpx.Client) -> None:
    """empty deletes every note (the writer's client), so each test starts from none."""
    for note in client.get("/app/notes/").json():
        assert client.delete(f"/app/notes/{note['id']}").status_code == 204


def open_notes(context: Any, ui: UiServer, username: str) -> Any:
    """open_notes logs `username` in through the login page on the way to the notes page, and waits for it."""
    page = context.new_page()
    login(page, ui.url, username, PASSWORDS[username], path=PAGE)
    page.wait_for_url(f"**{PAGE}")
    page.get_by_role("heading", level=1, name="Notes").wait_for()
    return page


def csrf_headers(page: Any) -> dict[str, str]:
    """csrf_headers are the headers the page's own code sends on an unsafe request: the session's CSRF token."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "xcore_csrf")
    return {"X-CSRF-Token": token, "Accept": "application/json"}


def test_a_reader_sees_every_note_but_no_form_nor_delete_and_the_server_refuses_their_delete(
    ui_server: UiServer, notes: dict[str, httpx.Client], watched: Any, screenshots: Path
) -> None:
    writer = notes["writer"]
    empty(writer)
    made = writer.post("/app/notes/", json={"title": "Written by writer", "body": "first line\nsecond line"})
    assert made.status_code == 201, made.text
    note = made.json()

    page = open_notes(watched, ui_server, "reader")
    assert one_h1(page) == "Notes"
    item = page.locator("li.note")
    expect(item).to_have_count(1)
    expect(item.get_by_role("heading", level=3)).to_have_text("Written by writer")
    expect(item).to_contain_text("first line")
    expect(item).to_contain_text("second line")
    expect(item.locator("time")).to_have_attribute("datetime", note["created_at"])
    expect(page.get_by_text("1 note.")).to_be_visible()

    # Nothing to write with: no form, no Delete button, and a sentence (not a colour) saying why.
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    expect(page.get_by_role("button", name="Add note")).to_have_count(0)
    expect(page.get_by_label("Title")).to_have_count(0)
    expect(page.get_by_text("Adding and deleting notes needs the permission notes.write")).to_be_visible()
    sweep(page, "Notes", screenshots, "notes-reader")
    assert_window_shots(screenshots, "notes-reader")  # notes-reader-1024x700.png, notes-reader-1920x1080.png

    # The server judges the request, not the page: the reader's own session (cookie and CSRF token) is refused.
    refused = page.request.delete(f"{ui_server.url}/app/notes/{note['id']}", headers=csrf_headers(page))
    assert refused.status == 403, refused.text()
    assert "notes.write" in refused.json()["detail"]
    added = page.request.post(f"{ui_server.url}/app/notes/", headers=csrf_headers(page), data={"title": "mine"})
    assert added.status == 403, added.text()
    assert [n["id"] for n in writer.get("/app/notes/").json()] == [note["id"]]


def test_a_writer_adds_and_deletes_notes_through_the_page(
    ui_server: UiServer, notes: dict[str, httpx.Client], watched: Any, screenshots: Path
) -> None:
    empty(notes["writer"])
    page = open_notes(watched, ui_server, "writer")
    assert one_h1(page) == "Notes"
    expect(page.get_by_text("No notes yet: add the first one above.")).to_be_visible()
    title, body = page.get_by_label("Title"), page.get_by_label("Body")
    add = page.get_by_role("button", name="Add note")

    # The server's validation message shows by its field, which gets the focus and is marked invalid.
    title.fill("   ")
    add.click()
    error = page.locator("#notes-title-error")
    expect(error).to_have_text("Title: must not be blank")
    expect(title).to_have_attribute("aria-invalid", "true")
    expect(title).to_have_attribute("aria-describedby", "notes-title-error")
    expect(title).to_be_focused()

    # Added: the notice says so, the form is empty and ready for the next note, the list shows it.
    title.fill("Groceries")
    body.fill("milk\neggs")
    add.click()
    expect(page.locator("#toasts")).to_contain_text("Added the note “Groceries”.")
    expect(page.locator("li.note h3")).to_have_text(["Groceries"])
    expect(error).to_be_hidden()
    expect(title).not_to_have_attribute("aria-invalid", "true")
    expect(title).to_have_value("")
    expect(body).to_have_value("")
    expect(title).to_be_focused()
    title.fill("Call Ada")
    body.fill("about the backup")
    title.press("Enter")  # submits the form, as the button does
    expect(page.locator("li.note h3")).to_have_text(["Groceries", "Call Ada"])
    assert [n["title"] for n in notes["writer"].get("/app/notes/").json()] == ["Groceries", "Call Ada"]
    expect(page.get_by_text("2 notes.")).to_be_visible()
    sweep(page, "Notes", screenshots, "notes-writer")
    assert_window_shots(screenshots, "notes-writer")  # notes-writer-1024x700.png, notes-writer-1920x1080.png

    # Deleted: the focus goes to the note that took its place, then, with none left, to the list's heading.
    page.get_by_role("button", name="Delete note “Groceries”").click()
    expect(page.locator("#toasts")).to_contain_text("Deleted the note “Groceries”.")
    expect(page.locator("li.note h3")).to_have_text(["Call Ada"])
    expect(page.get_by_role("button", name="Delete note “Call Ada”")).to_be_focused()
    page.keyboard.press("Enter")  # the focused Delete button
    expect(page.get_by_text("No notes yet: add the first one above.")).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="All notes")).to_be_focused()
    assert notes["writer"].get("/app/notes/").json() == []


def test_a_note_shows_as_typed_never_as_markup(
    ui_server: UiServer, notes: dict[str, httpx.Client], watched: Any
) -> None:
    empty(notes["writer"])
    markup = '<img src=x onerror="document.title=1"><b>bold</b>'
    assert notes["writer"].post("/app/notes/", json={"title": markup, "body": markup}).status_code == 201
    page = open_notes(watched, ui_server, "writer")
    item = page.locator("li.note")
    expect(item.get_by_role("heading", level=3)).to_have_text(markup)
    expect(item.locator("img, b")).to_have_count(0)
    expect(page.get_by_role("button", name=f"Delete note “{markup}”")).to_be_visible()
