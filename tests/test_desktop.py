"""`xcore desktop`: the window under Xvfb, the one-time desktop sign-in, and one instance per data directory.

The end-to-end tests run the real `xcore desktop` (Qt WebEngine through pywebview) on an Xvfb display that the
tests start. The desktop process reports what its window shows through its test hook (XCORE_DESKTOP_PROBE: the
page's title, read through pywebview's evaluate_js, and its URL, after each load and then a few times a second); the
tests find the window with xdotool, take a screenshot of the screen with xwd, and close the window as a window
manager does when the user clicks its close button: a WM_DELETE_WINDOW message (there is no window manager under
Xvfb to send it, so the test sends it through libX11).

`python3 tasks.py test` installs what these need: the `desktop` extra, and apt's xvfb, xdotool, x11-apps and the
libraries Qt links against.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from conftest import CLEAN_ENV, PASSWORDS, Api, create_account, xcore_command
from conftest import until as wait_for
from xcore.auth.desktop import TOKENS_DIR, DesktopTokens, is_loopback
from xcore.desktop import ENV_PROBE, INSTANCE_FILE, gui_problem
from xcore.runtime import Runtime
from xcore.web.app import build_app
from xwindow import WINDOW_ENV, close_window, find_window, screenshot, visible_windows, x11

DEADLINE = 60.0  # seconds: the first start of Qt WebEngine on a loaded machine is slow


def until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return wait_for(check, what, timeout, interval=0.1)


# --- the desktop process ---------------------------------------------------------------------------------------


class Desktop:
    """Desktop is a real `xcore desktop` process on `display`, its output captured to a file."""

    def __init__(self, data: Path, display: str, name: str = "desktop", extra: tuple[str, ...] = ()) -> None:
        self.data = data
        self.display = display
        self.probe = data.parent / f"{name}.probe.json"
        self.output_path = data.parent / f"{name}.out"
        self._output = self.output_path.open("w")
        self.process = subprocess.Popen(
            xcore_command("desktop", "--data-dir", str(data), *extra),
            # PYTHONFAULTHANDLER: a process that hangs is sent SIGABRT, which prints every thread's stack.
            env={**WINDOW_ENV, "DISPLAY": display, ENV_PROBE: str(self.probe), "PYTHONFAULTHANDLER": "1"},
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        if not self._output.closed:
            self._output.flush()
        return self.output_path.read_text()

    def alive(self) -> bool:
        assert self.process.poll() is None, f"xcore desktop exited with {self.process.returncode}:\n{self.output}"
        return True

    def page(self, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """page waits for a loaded page that passes `check`: {"title", "url"} as the process reported it."""

        def seen() -> dict[str, Any] | None:
            self.alive()
            try:
                state: dict[str, Any] = json.loads(self.probe.read_text())
            except (OSError, ValueError):
                return None
            return state if check(state) else None

        return until(seen, what)  # type: ignore[no-any-return]

    def instance(self) -> dict[str, Any]:
        return json.loads((self.data / INSTANCE_FILE).read_text())  # type: ignore[no-any-return]

    def close(self) -> int:
        """close closes the window as its close button does and returns the exit code."""
        window, _, _ = find_window(self.display)
        close_window(self.display, window)
        try:
            return self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # the stacks of its threads, into the output
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            raise AssertionError(f"xcore desktop did not exit after its window closed:\n{self.output}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._output.close()


@pytest.fixture
def launch(display: str) -> Iterator[Callable[..., Desktop]]:
    """launch(data, name) starts `xcore desktop`; whatever still runs at the end of the test is killed."""
    started: list[Desktop] = []

    def start(data: Path, name: str = "desktop", extra: tuple[str, ...] = ()) -> Desktop:
        started.append(Desktop(data, display, name, extra))
        return started[-1]

    yield start
    for desktop in started:
        desktop.kill()


def log_lines(data: Path) -> list[dict[str, Any]]:
    path = data / "logs" / "xcore.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


WATCHED_PLUGIN = """\
import time

from xcore.sdk import Ctx, get, task


def _event(ctx, what):
    with open(ctx.data_dir / "events.log", "a") as log:
        log.write(what + "\\n")


def on_load(ctx):
    _event(ctx, "load")


def on_unload(ctx):
    _event(ctx, "unload")


@task(retries=0)
def slow(ctx):
    _event(ctx, "task-start")
    time.sleep(2)
    _event(ctx, "task-done")


@get("/slow", sync_to_thread=True)
def start_slow(ctx: Ctx) -> dict:
    return {"run": slow.enqueue()}


router = [start_slow]
"""


def drop_plugin(data: Path, plugin_id: str, code: str) -> None:
    plugins = data / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(plugins / f"{plugin_id}-1.0.0.zip", "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0", "name": plugin_id.title()}))
        archive.writestr("run.py", code)


# --- 1. end to end ---------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_first_run_opens_setup_and_a_second_launch_focuses_the_first_instead_of_serving(
    launch: Callable[..., Desktop], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = launch(data)
    page = first.page(lambda p: "/admin/setup" in str(p.get("url")), "the setup page")
    token = (data / "setup-token").read_text().strip()
    port = first.instance()["port"]
    assert page["url"].startswith(f"http://127.0.0.1:{port}/admin/setup"), page  # the page drops the token
    assert f"http://127.0.0.1:{port}/admin/setup?token={token}" in first.output
    # Read through evaluate_js, when the page had loaded: the document's title, or the view's once it rendered.
    assert page["title"] in ("xcore", "Set up xcore · xcore"), page
    running = first.instance()
    assert running["pid"] == first.process.pid
    assert (data / INSTANCE_FILE).stat().st_mode & 0o777 == 0o600

    started = time.monotonic()
    second = subprocess.run(
        xcore_command("desktop", "--data-dir", str(data)),
        env={**WINDOW_ENV, "DISPLAY": first.display},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 15
    assert f"already running (pid {first.process.pid})" in second.stdout
    assert "granian" not in second.stdout + second.stderr  # it started no server of its own
    assert first.instance() == running
    assert sum("Starting granian" in line["message"] for line in log_lines(data)) == 1
    first.alive()
    httpx.get(f"http://127.0.0.1:{running['port']}/health", timeout=5).raise_for_status()

    assert first.close() == 0, first.output
    assert not (data / INSTANCE_FILE).exists()


@pytest.mark.e2e
def test_the_window_signs_the_owner_in_shows_the_page_and_closing_it_stops_the_server_cleanly(
    launch: Callable[..., Desktop], runtime: Runtime, data_dir: Path, tmp_path: Path
) -> None:
    create_account(runtime, "root", ["superadmin"])
    create_account(runtime, "zed", ["superadmin"], password=PASSWORDS["ada"])
    runtime.close()
    drop_plugin(data_dir, "watched", WATCHED_PLUGIN)
    started = time.monotonic()
    desktop = launch(data_dir)

    # A window of about 1200x800 opens on /admin/home, and the page has signed the owner in with its token.
    window, width, height = find_window(desktop.display)
    assert (width, height) == (1200, 800)
    page = desktop.page(lambda p: "/admin" in str(p.get("url")), "the admin page")
    print(f"window and page after {time.monotonic() - started:.1f}s: {page}")
    port = desktop.instance()["port"]
    assert page["url"].startswith(f"http://127.0.0.1:{port}/admin"), page
    assert page["title"] in ("xcore", "Home · xcore"), page
    signed_in = until(
        lambda: [e for e in log_lines(data_dir) if e.get("action") == "login.desktop"],
        "the page to sign in with the desktop token",
    )
    assert [(e["actor"], e["ip"]) for e in signed_in] == [("root", "127.0.0.1")]
    assert list((data_dir / TOKENS_DIR).iterdir()) == []  # used up
    # Signed in, the window ends on the home page: the token gone from the address, the page's title shown.
    home = desktop.page(
        lambda p: p.get("url") == f"http://127.0.0.1:{port}/admin/home" and p.get("title") == "Home · xcore",
        "the home page, signed in",
    )
    assert home == {"url": f"http://127.0.0.1:{port}/admin/home", "title": "Home · xcore"}, home

    shot = tmp_path / "desktop.png"
    colours = until(lambda: len(screenshot(desktop.display, shot)) >= 8, "a painted screen") and screenshot(
        desktop.display, shot
    )
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(colours) >= 8, "the screenshot is blank"

    # Another process of the same OS user can issue a token too: the test signs in with one, then starts a task.
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        session = http.post("/api/auth/desktop", json={"token": DesktopTokens(data_dir).issue()})
        assert session.status_code == 200, session.text
        assert session.json()["username"] == "root"
        assert http.get("/api/me").json()["username"] == "root"
        assert http.get("/app/watched/slow").status_code == 200
    events = data_dir / "plugin-data" / "watched" / "events.log"
    until(lambda: "task-start" in events.read_text(), "the task to start")

    # Closing the window while the task runs: the task finishes, then the plugin unloads, and the exit code is 0.
    assert window == find_window(desktop.display)[0]
    assert desktop.close() == 0, desktop.output
    assert events.read_text().split() == ["load", "task-start", "task-done", "unload"]
    messages = [e["message"] for e in log_lines(data_dir)]
    assert "xcore stopped cleanly" in messages
    assert not any(e["level"] in ("ERROR", "CRITICAL") for e in log_lines(data_dir)), desktop.output
    assert not (data_dir / INSTANCE_FILE).exists()


def test_the_desktop_in_safe_mode_opens_with_every_plugin_off(
    launch: Callable[..., Desktop], runtime: Runtime, data_dir: Path
) -> None:
    create_account(runtime, "root", ["superadmin"])
    runtime.close()
    drop_plugin(data_dir, "watched", WATCHED_PLUGIN)
    desktop = launch(data_dir, extra=("--safe",))
    desktop.page(lambda p: "/admin" in str(p.get("url")), "the admin page")
    port = desktop.instance()["port"]
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    assert health["safe_mode"]["reason"] == "asked for with --safe" and health["plugins"]["active"] == 0
    assert "SAFE MODE: every plugin is off for this run" in desktop.output
    assert desktop.close() == 0, desktop.output


def test_the_window_menu_restarts_the_desktop_in_safe_mode(
    launch: Callable[..., Desktop], runtime: Runtime, data_dir: Path
) -> None:
    create_account(runtime, "root", ["superadmin"])
    runtime.close()
    drop_plugin(data_dir, "watched", WATCHED_PLUGIN)
    desktop = launch(data_dir)
    desktop.page(lambda p: "/admin" in str(p.get("url")), "the admin page")
    first = desktop.instance()
    assert httpx.get(f"http://127.0.0.1:{first['port']}/health", timeout=10).json()["plugins"]["active"] == 1
    window, _, _ = find_window(desktop.display)
    # The menu bar's "xcore" menu, then, once its popup shows, its first entry, "Restart in safe mode", as a user
    # clicks them.
    shown = visible_windows(desktop.display)
    x11(desktop.display, "xdotool", "mousemove", "--window", str(window), "20", "10", "click", "1")
    until(lambda: visible_windows(desktop.display) - shown, "the xcore menu's popup")
    x11(desktop.display, "xdotool", "mousemove", "--window", str(window), "60", "40", "click", "1")

    def restarted() -> dict[str, Any] | None:
        desktop.alive()  # the same process, replaced by the new one (exec)
        try:
            now = desktop.instance()
        except (OSError, ValueError):
            return None
        return now if now["port"] != first["port"] else None

    second = until(restarted, "the desktop to restart")
    health = until(
        lambda: httpx.get(f"http://127.0.0.1:{second['port']}/health", timeout=10).json(), "the restarted server"
    )
    assert health["safe_mode"]["reason"] == "asked for with --safe" and health["plugins"]["active"] == 0
    assert desktop.process.pid == second["pid"], "the restart replaced the process, the same pid"
    assert desktop.close() == 0, desktop.output


# --- 2. no display, no extra -----------------------------------------------------------------------------------


def test_without_a_display_it_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in CLEAN_ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        xcore_command("desktop", "--data-dir", str(tmp_path / "data")),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "no display" in lines[0] and "`xcore serve`" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_without_the_desktop_extra_it_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "webview" else real(name, *a))
    problem = gui_problem({"DISPLAY": ":0"})
    assert problem is not None and "xcore[desktop]" in problem


# --- 3. POST /api/auth/desktop ---------------------------------------------------------------------------------


def from_address(app: Any, host: str) -> Callable[..., Any]:
    """from_address is `app` as reached from `host` (Litestar's TestClient always says "testclient")."""

    async def reached(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "client": (host, 50000)}
        await app(scope, receive, send)

    return reached


@pytest.fixture
def owned(api: Api) -> Api:
    """owned is the app with its owner, root, set up (one account: each costs an argon2 hash)."""
    create_account(api.runtime, "root", ["superadmin"])
    return api


@pytest.fixture
def local(owned: Api) -> Iterator[TestClient]:
    """local is the owned app as reached from 127.0.0.1."""
    with TestClient(from_address(build_app(owned.runtime), "127.0.0.1")) as client:
        yield client


def test_a_desktop_token_signs_the_owner_in_with_cookies_once(local: TestClient, owned: Api) -> None:
    tokens = DesktopTokens(owned.runtime.data.root)
    token = tokens.issue()
    stored = list(tokens.directory.iterdir())
    assert len(stored) == 1 and token not in stored[0].name and stored[0].stat().st_mode & 0o777 == 0o600

    response = local.post("/api/auth/desktop", json={"token": token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "root" and body["token_type"] == "cookie" and body["csrf_token"]
    assert "access_token" not in body
    assert {"xcore_access", "xcore_refresh", "xcore_csrf"} <= set(local.cookies.keys())
    assert response.headers["cache-control"] == "no-store"
    me = local.get("/api/me")
    assert me.status_code == 200 and me.json()["username"] == "root"
    # The session is a real one: the CSRF token works for an unsafe request, and logout ends it.
    assert local.post("/api/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]}).status_code == 204

    local.cookies.clear()
    again = local.post("/api/auth/desktop", json={"token": token})
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    assert list(tokens.directory.iterdir()) == []


@pytest.mark.parametrize(
    ("token", "status"),
    [("wrong-token-" + "x" * 30, 401), ("", 400), ("x" * 201, 400)],
    ids=["wrong", "empty", "too long"],
)
def test_a_wrong_token_is_refused(local: TestClient, token: str, status: int) -> None:
    response = local.post("/api/auth/desktop", json={"token": token})
    assert response.status_code == status, response.text
    assert "xcore_access" not in local.cookies


def test_an_expired_token_is_refused(local: TestClient, owned: Api) -> None:
    token = DesktopTokens(owned.runtime.data.root).issue(ttl=-1)
    assert local.post("/api/auth/desktop", json={"token": token}).status_code == 401


def test_only_a_loopback_client_not_behind_a_proxy_may_use_a_token(owned: Api, local: TestClient) -> None:
    tokens = DesktopTokens(owned.runtime.data.root)
    token = tokens.issue()
    # Litestar's TestClient reaches the app from "testclient": not this machine.
    remote = owned.client.post("/api/auth/desktop", json={"token": token})
    assert remote.status_code == 403 and "only from this machine" in remote.json()["detail"]
    with TestClient(from_address(build_app(owned.runtime), "192.168.1.20")) as lan:
        assert lan.post("/api/auth/desktop", json={"token": token}).status_code == 403
    proxied = local.post("/api/auth/desktop", json={"token": token}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403 and "proxy" in proxied.json()["detail"]
    # None of those used the token up.
    with TestClient(from_address(build_app(owned.runtime), "::1")) as ipv6:
        assert ipv6.post("/api/auth/desktop", json={"token": token}).status_code == 200


def test_the_owner_is_the_oldest_active_superadmin(owned: Api, local: TestClient) -> None:
    from sqlalchemy import select

    from xcore.db.models import User

    runtime = owned.runtime
    create_account(runtime, "zed", ["superadmin"], password=PASSWORDS["ada"])  # younger than root
    tokens = DesktopTokens(runtime.data.root)
    assert local.post("/api/auth/desktop", json={"token": tokens.issue()}).json()["username"] == "root"
    with runtime.auth.transaction() as session:
        session.scalars(select(User).where(User.username == "root")).one().is_active = False
    runtime.auth.accounts_changed()
    assert local.post("/api/auth/desktop", json={"token": tokens.issue()}).json()["username"] == "zed"


def test_before_setup_the_token_is_refused_with_a_pointer_to_setup(api: Api) -> None:
    with TestClient(from_address(build_app(api.runtime), "127.0.0.1")) as client:
        token = DesktopTokens(api.runtime.data.root).issue()
        response = client.post("/api/auth/desktop", json={"token": token})
    assert response.status_code == 409 and "setup" in response.json()["detail"]


@pytest.mark.parametrize(
    ("ip", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.0.0.1", False),
     ("testclient", False), (None, False), ("::ffff:10.0.0.1", False)],
)  # fmt: skip
def test_is_loopback(ip: str | None, loopback: bool) -> None:
    assert is_loopback(ip) is loopback


def test_a_thread_the_closed_window_left_waiting_does_not_keep_the_process_alive() -> None:
    """pywebview's JS bridge threads are not daemons; one waiting on a window closed under it waits for good, and
    Python would wait for it at exit. The desktop gives such threads a grace period, then exits with its code."""
    code = (
        "import threading, xcore.desktop as d\n"
        "threading.Thread(target=threading.Event().wait, name='generate_js_object').start()\n"
        "d.leave_stuck_threads(3, grace=0.2)\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "not reached" not in done.stdout, done.stderr
    # Threads that end within the grace period are waited for, and the process goes on as usual.
    code = (
        "import threading, time, xcore.desktop as d\n"
        "threading.Thread(target=time.sleep, args=(0.1,)).start()\n"
        "d.leave_stuck_threads(3, grace=5)\n"
        "print('went on')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "went on\n", done.stderr
