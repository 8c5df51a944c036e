"""Browser test support: headless Chromium (Debian's `chromium`) driven by Playwright against a real `xcore serve`.

Test modules use it with `pytest_plugins`-free imports: `from browser import ...` plus the fixtures below, which
conftest.py registers. Every page a test opens is watched:
- a request to any host but 127.0.0.1 fails the test (the UI must work offline, with no CDN);
- an uncaught script error (`pageerror`) fails the test;
- `shot(page, screenshots, name)` saves a screenshot in the test artefacts, `screenshots/` under XCORE_TEST_ARTEFACTS
  or else build/test-artefacts/ (git-ignored; kept after the run, `python3 tasks.py test` says where), under a
  stable name: a later run replaces an image, never piles up beside it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import CLEAN_ENV, XcoreServer, free_port, xcore_command

OWNER = "owner"
OWNER_PASSWORD = "correct-horse-battery-9"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
SIZES = {"desktop": {"width": 1024, "height": 700}, "large": {"width": 1920, "height": 1080}}


def chromium_path() -> str:
    """chromium_path is Debian's Chromium (tasks.py test installs it), or XCORE_CHROMIUM."""
    path = os.environ.get("XCORE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise AssertionError("Chromium is missing: run `python3 tasks.py test`, which installs Debian's chromium")
    return path


@dataclass
class UiServer:
    """UiServer is a real xcore serve, set up with the owner account, plus an API client logged in as the owner."""

    server: XcoreServer
    api: httpx.Client
    data_dir: Path
    setup_token: str | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def login_api(self, username: str, password: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        response = client.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return client


@dataclass
class Watch:
    """Watch records what the pages of one browser context did: every request URL and every script error."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside_hosts(self) -> list[str]:
        outside = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.hostname != "127.0.0.1":
                outside.append(url)
        return outside


def watch_page(page: Any, watch: Watch) -> None:
    """watch_page records a page's uncaught script errors and its Content-Security-Policy violations."""
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))

    def console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            watch.errors.append(message.text)

    page.on("console", console)


def start_ui_server(
    data_dir: Path, *, setup: bool = True, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> UiServer:
    """start_ui_server starts `xcore serve` (with `env` added to its environment) and, with `setup`, creates the
    owner through the API."""
    server = XcoreServer(data_dir, free_port(), extra, env=env)
    server.wait_ready(timeout=60)
    token_file = data_dir / "setup-token"
    token = token_file.read_text().strip() if token_file.exists() else None
    api = httpx.Client(base_url=server.url, timeout=30)
    ui = UiServer(server, api, data_dir, token)
    if setup:
        assert token, "a fresh data dir has a setup token"
        response = api.post("/api/setup", json={"token": token, "username": OWNER, "password": OWNER_PASSWORD})
        assert response.status_code == 201, response.text
        login = api.post("/api/auth/login", json={"username": OWNER, "password": OWNER_PASSWORD})
        assert login.status_code == 200, login.text
        api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return ui


def zip_bytes(entries: dict[str, str]) -> bytes:
    """zip_bytes is a zip archive (in memory) holding `entries`: name → text."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def pack_example(name: str, out: Path) -> Path:
    """pack_example packs plugins/<name> with the real CLI and returns the zip."""
    root = Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        xcore_command("plugin", "pack", str(root / "plugins" / name), "--out", str(out)),
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return next(out.glob(f"{name}-*.zip"))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """chromium: one headless Chromium for the test module.

    Not one for the session: while Playwright's sync API is open, its event loop counts as running in the main
    thread, so every async test after the first browser test would fail ("Runner.run() cannot be called from a
    running event loop"). Per module, the loop is gone before the next module's tests run, in any order."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def artefacts_dir() -> Path:
    """artefacts_dir is where the tests leave what a person looks at after a run: XCORE_TEST_ARTEFACTS, or else
    build/test-artefacts in the repository (tasks.py prints the same folder at the end of `test`)."""
    chosen = os.environ.get("XCORE_TEST_ARTEFACTS")
    return Path(chosen) if chosen else Path(__file__).resolve().parent.parent / "build" / "test-artefacts"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """screenshots: the folder where `shot` saves page images, <artefacts_dir>/screenshots, kept after the run."""
    folder = artefacts_dir() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """ui_server: a real xcore for the test module, with the owner account created (OWNER, OWNER_PASSWORD)."""
    ui = start_ui_server(tmp_path_factory.mktemp("ui") / "data")
    yield ui
    ui.api.close()
    code = ui.server.stop()
    assert code == 0, ui.server.output


@contextmanager
def watched_context(chromium: Any) -> Iterator[tuple[Any, Watch]]:
    """watched_context: a fresh browser context (no cookies) at the desktop window's size; on leaving, it fails
    the test if a page had a script error or a CSP violation, or sent a request to a host other than 127.0.0.1."""
    context = chromium.new_context(viewport=SIZES["desktop"], locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(15_000)
    watch = Watch()
    context.on("request", lambda request: watch.requests.append(request.url))
    context.on("page", lambda page: watch_page(page, watch))
    try:
        yield context, watch
    finally:
        context.close()
    assert not watch.errors, f"script errors in the page: {watch.errors}"
    assert not watch.outside_hosts(), f"requests to hosts other than 127.0.0.1: {watch.outside_hosts()}"
    assert watch.requests, "the test made no request at all"


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[tuple[Any, Watch]]:
    """browser_context: a watched context for one test (see watched_context)."""
    with watched_context(chromium) as (context, watch):
        yield context, watch


@pytest.fixture
def page(browser_context: tuple[Any, Watch]) -> Any:
    """page: a new page in a watched context, not logged in."""
    context, _ = browser_context
    return context.new_page()


def login(page: Any, url: str, username: str = OWNER, password: str = OWNER_PASSWORD, path: str = "/admin") -> None:
    """login signs in through the login page and waits for the page at `path` to show."""
    page.goto(url + path)
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("nav[aria-label='Main'], main h1:not(:text('Log in to xcore'))")
    page.wait_for_function("() => !location.pathname.startsWith('/admin/login')")


@pytest.fixture
def admin_page(page: Any, ui_server: UiServer) -> Any:
    """admin_page: a page logged in as the owner (superadmin), showing the dashboard."""
    login(page, ui_server.url)
    page.get_by_role("heading", level=1, name="Dashboard").wait_for()
    return page


def nav_link(page: Any, name: str) -> Any:
    """nav_link is the main navigation's link with exactly this text."""
    return page.locator("nav[aria-label='Main']").get_by_role("link", name=name, exact=True)


def png_size(path: Path) -> tuple[int, int]:
    """png_size is a PNG file's width and height in pixels, read from its header (the IHDR chunk comes first)."""
    with path.open("rb") as image:
        head = image.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG image"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def shot(page: Any, screenshots: Path, name: str, size: str | None = None) -> Path:
    """shot saves a screenshot as <screenshots>/<name>.png and returns its path: the whole page, or, given a `size`
    of SIZES, the window at that size, saved as <name>-<width>x<height>.png and checked to be exactly that many
    pixels, and the window then goes back to the size it had. The file is removed first, so the check never passes
    on an image of an earlier run."""
    stem = re.sub(r"[^a-z0-9_-]+", "-", name.lower())
    window = page.viewport_size
    if size is not None:
        page.set_viewport_size(SIZES[size])
        stem = f"{stem}-{SIZES[size]['width']}x{SIZES[size]['height']}"
    path = screenshots / f"{stem}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=str(path), full_page=size is None)
    assert path.stat().st_size > 1000
    width, height = png_size(path)
    if size is not None:
        page.set_viewport_size(window)
        assert (width, height) == (SIZES[size]["width"], SIZES[size]["height"]), f"{path} is {width}x{height}"
    return path


def assert_window_shots(screenshots: Path, name: str) -> None:
    """assert_window_shots asserts the artefacts hold <name>-<width>x<height>.png for each of SIZES, each exactly
    that many pixels (what `sweep` and `shot` with a size leave)."""
    for size in SIZES.values():
        path = screenshots / f"{name}-{size['width']}x{size['height']}.png"
        assert path.is_file(), f"no screenshot {path}"
        assert png_size(path) == (size["width"], size["height"]), f"{path} is {png_size(path)}"


def sweep(page: Any, heading: str, screenshots: Path, name: str) -> None:
    """sweep is the accessibility sweep of the UI tests on the page shown: one h1 saying `heading`, every control
    labelled, every clickable element reached with Tab, nothing wider than the window at either size; with a
    screenshot at each size (shot's <name>-<width>x<height>.png). It leaves the window at the desktop size."""
    assert one_h1(page) == heading
    assert unlabelled_controls(page) == [], f"{page.url} has unlabelled controls"
    assert keyboard_unreachable(page) == [], f"{page.url} has elements only a mouse reaches"
    page.evaluate("() => document.activeElement?.blur()")  # the screenshots show the page, not where Tab stopped
    for size in ("desktop", "large"):
        page.set_viewport_size(SIZES[size])
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{page.url} is {overflow}px wider than a {size} window"
        shot(page, screenshots, name, size)
    page.set_viewport_size(SIZES["desktop"])


def one_h1(page: Any) -> str:
    """one_h1 asserts the page has exactly one h1 and returns its text."""
    headings = page.locator("h1")
    headings.first.wait_for()
    page.wait_for_load_state("networkidle")
    assert headings.count() == 1, f"{page.url} has {headings.count()} h1 elements"
    return str(headings.first.inner_text())


def unlabelled_controls(page: Any) -> list[str]:
    """unlabelled_controls lists the visible form controls that have no accessible name."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
            .filter((el) => {
              if (el.labels && el.labels.length) return false;
              if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
              if (el.tagName === 'BUTTON' && el.textContent.trim()) return false;
              if (el.title) return false;
              return true;
            })
            .map((el) => el.outerHTML.slice(0, 120))"""
    )
    return found


def as_json(text: str) -> Any:
    return json.loads(text)


# Every element that takes a click, as the element the keyboard would focus for it: itself, or the link or control
# it sits in (an icon inside a link is reached with the link).
CLICKABLE_TARGETS = """() => {
  const focusable = 'a[href], button, input, select, textarea, summary, [tabindex]';
  const clickable = [...document.querySelectorAll(
    focusable + ', [onclick], [role=button], [role=link]')]
    .concat([...document.querySelectorAll('body *')].filter((el) => getComputedStyle(el).cursor === 'pointer'));
  const visible = (el) => el.offsetParent !== null && !el.disabled && el.type !== 'hidden'
    && !el.closest('[hidden], [inert]') && el.getAttribute('tabindex') !== '-1';
  const targets = clickable.filter(visible).map((el) => el.closest(focusable) || el).filter(visible);
  return [...new Set(targets)].map((el) => {
    if (!el.dataset.kbId) el.dataset.kbId = String(Math.random()).slice(2);
    return el.dataset.kbId;
  });
}"""


def keyboard_unreachable(page: Any) -> list[str]:
    """keyboard_unreachable presses Tab through the page and lists (as HTML excerpts) the clickable elements it
    never reached: those only a mouse could use. An element inside a link or a control counts as that one."""
    wanted = set(page.evaluate(CLICKABLE_TARGETS))
    assert wanted, "the page has nothing to click"
    page.locator("body").focus()
    reached: set[str] = set()
    for _ in range(len(wanted) * 3 + 20):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement?.closest('[data-kb-id]')?.dataset.kbId ?? null")
        if focused:
            reached.add(focused)
        if wanted <= reached:
            break
    describe = "(id) => document.querySelector(`[data-kb-id='${id}']`)?.outerHTML.slice(0, 100) ?? id"
    return [page.evaluate(describe, missing) for missing in wanted - reached]
