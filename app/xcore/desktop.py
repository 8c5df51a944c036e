"""`xcore desktop`: the server and a window on it, in one process, for one person at this machine.

- The server is the one `xcore serve` runs (the Switch, its plugin manager and task host: `build_switch`), on
  Granian's embedded server in a background thread with its own event loop, bound to 127.0.0.1 on a free port.
  pywebview owns the main thread, as its GUI toolkits require. `server.trusted_proxies` does not apply: no
  reverse proxy sits in front of a loopback server on a port chosen at each start, so every request's address is
  its peer's.
- The window (pywebview; Qt WebEngine on Linux, the system web view elsewhere) opens `/admin/home#desktop=<token>`,
  a one-time token the page trades for a session of the desktop owner (`xcore.auth.desktop`). Before the first
  account exists it opens the setup page with the setup token instead. The fragment never reaches the server.
- Closing the window stops the server as SIGTERM stops `xcore serve`: the lifespan shutdown drains the task
  consumer and unloads the plugins; the exit code is 0.
- One instance per data directory: the running one holds `<data>/desktop.lock` and describes itself in
  `<data>/desktop.json` (port, pid and a focus key; mode 0600). A second `xcore desktop` finds it there, sends
  `POST /.xcore-desktop/focus` with the key from 127.0.0.1, which brings the window to the front, and exits 0;
  it never starts a second server on the same database.

Test hook: with `XCORE_DESKTOP_PROBE=<file>` set, each time a page has loaded, and then every PROBE_INTERVAL
seconds while the window is open, the process writes `{"title": <document.title, read through pywebview's
evaluate_js>, "url": <the page's URL>}` to that file, so the file follows what a page does after it loaded (the
desktop sign-in, which changes the address and the title). Unset, it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from xcore.auth.desktop import DesktopTokens, is_loopback
from xcore.build import self_command
from xcore.errors import ServerError, XcoreError
from xcore.runtime import Runtime, open_runtime
from xcore.terminal import printable

log = logging.getLogger("xcore.system")

WINDOW_TITLE = "xcore"
WINDOW_SIZE = (1200, 800)
LOCK_FILE = "desktop.lock"
INSTANCE_FILE = "desktop.json"
FOCUS_PATH = "/.xcore-desktop/focus"
KEY_HEADER = b"x-xcore-desktop-key"
ENV_PROBE = "XCORE_DESKTOP_PROBE"
PROBE_INTERVAL = 0.25  # seconds between two writes of the test hook's file
START_TIMEOUT = 120.0  # the first start migrates the database and loads every plugin
STOP_TIMEOUT = 90.0  # the task consumer's grace period and the plugins' on_unload
FIND_TIMEOUT = 30.0  # how long a second launch waits for a first one that is still starting
ROOT_CHROMIUM_FLAGS = "--no-sandbox --disable-gpu"  # Chromium refuses to run as root with its sandbox


class DesktopUnavailable(XcoreError):
    """DesktopUnavailable means no window can open here: no display, or the desktop extra is not installed."""

    exit_code = 2


def gui_problem(environ: dict[str, str] | None = None) -> str | None:
    """gui_problem says why no window can open in this environment, or None when one can."""
    env = os.environ if environ is None else environ
    unix_desktop = sys.platform not in ("win32", "darwin")
    if unix_desktop and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    needed = ["webview", "PyQt6"] if sys.platform.startswith("linux") else ["webview"]
    if any(importlib.util.find_spec(name) is None for name in needed):
        return "the desktop extra is not installed (pip install 'xcore[desktop]')"
    return None


def run_desktop(data_dir: str | None, *, safe: bool = False) -> int:
    """run_desktop opens the desktop window on a server of its own, or brings the running instance's window to
    the front. Returns the exit code; raises DesktopUnavailable (exit 2) when no window can open here. With
    `safe`, or after repeated failed starts, every plugin is off for this run (`xcore.plugins.safemode`)."""
    problem = gui_problem()
    if problem is not None:
        raise DesktopUnavailable(
            f"cannot open the desktop window: {problem}; run `xcore serve` and open its /admin page in a browser"
        )
    runtime = open_runtime(data_dir)
    runtime.desktop = True
    instance = Instance(runtime.data.root)
    deadline = time.monotonic() + FIND_TIMEOUT
    while not instance.claim():
        running = instance.focus()
        if running is not None:
            print(f"xcore desktop is already running (pid {running}); its window was brought to the front", flush=True)
            return 0
        if time.monotonic() > deadline:
            raise ServerError(
                f"another xcore desktop holds {instance.lock.lock_file} but does not answer; close its window, "
                "or end that process"
            )
        time.sleep(0.2)
    from xcore.plugins import safemode
    from xcore.server import announce_safe_mode, prepare_database, serving_database

    try:
        with serving_database(runtime):
            prepare_database(runtime)
            mode = safemode.begin_start(runtime.data.root, forced=safe)
            if mode is not None:
                os.environ.update(safemode.environment(mode))  # read by this process's plugin manager
                announce_safe_mode(mode)
            session = DesktopSession(runtime, instance)
            code = session.run()
    finally:
        instance.release()
    if session.restart is not None and code == 0:  # the xcore menu's Restart: this process becomes the new one
        argv = [*self_command(), "desktop", "--data-dir", str(runtime.data.root), *session.restart]
        os.execv(argv[0], argv)
    leave_stuck_threads(code)
    return code


def leave_stuck_threads(code: int, grace: float = 5.0) -> None:
    """leave_stuck_threads ends the process with `code` at once when a thread is still running `grace` seconds
    after everything stopped: Python would wait for it forever at exit.

    pywebview runs its JS bridge's setup in threads that are not daemons; a window closed while one of them waits
    for a script's result leaves it waiting for good (its Qt backend never answers a destroyed window)."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [
        t.name for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    if stuck:
        log.info("leaving %d thread(s) of the closed window behind: %s", len(stuck), ", ".join(stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Instance:
    """Instance is the single-instance record of one data directory: the lock and the file describing the
    instance that holds it."""

    def __init__(self, data_root: Path) -> None:
        self.lock = FileLock(str(data_root / LOCK_FILE))
        self.path = data_root / INSTANCE_FILE
        self.published = False

    def claim(self) -> bool:
        """claim takes the lock: true when this process is now the instance."""
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def publish(self, port: int, key: str) -> None:
        """publish writes `desktop.json` (mode 0600, atomically) for later launches to find this instance."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".desktop-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"port": port, "pid": os.getpid(), "key": key}, handle)
            if sys.platform != "win32":
                os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.published = True

    def focus(self) -> int | None:
        """focus asks the running instance to bring its window to the front; returns its pid when it did."""
        try:
            described = json.loads(self.path.read_text())
            port, pid, key = int(described["port"]), int(described["pid"]), str(described["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not written yet: the instance is still starting
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{FOCUS_PATH}", method="POST", headers={KEY_HEADER.decode(): key}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return pid if response.status == 204 else None
        except (OSError, urllib.error.URLError):
            return None

    def release(self) -> None:
        if self.published:
            self.path.unlink(missing_ok=True)
        self.lock.release()


class DesktopSession:
    """DesktopSession is one run of the desktop: the embedded server, then the window until it closes."""

    def __init__(self, runtime: Runtime, instance: Instance) -> None:
        self.runtime = runtime
        self.instance = instance
        self.window: Any = None
        self.closing = False
        self.restart: list[str] | None = None  # the arguments to start again with, once the window closed

    def run(self) -> int:
        from xcore.server import announce_setup
        from xcore.web.asgi import build_switch

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        key = secrets.token_urlsafe(32)
        app = DesktopApp(build_switch(self.runtime, []), key, self.bring_to_front)
        server = EmbeddedServer(self.runtime, app, port, on_exit=self.server_exited)
        server.start()
        try:
            if not app.wait_ready(server, START_TIMEOUT):
                raise ServerError(f"the server could not start: {app.failure or server.error}; see the log")
            self.instance.publish(port, key)
            print(
                printable(
                    f"xcore {self.runtime.version} desktop window on {url}/admin  (data: {self.runtime.data.root})"
                ),
                flush=True,
            )
            setup_token = announce_setup(self.runtime, url)
            if setup_token is not None:
                page = f"{url}/admin/setup?token={setup_token}"
            else:
                page = f"{url}/admin/home#desktop={DesktopTokens(self.runtime.data.root).issue()}"
            log.info("xcore %s desktop window on %s", self.runtime.version, url)
            self.show_window(page)
            log.info("the desktop window was closed; stopping")
        finally:
            self.closing = True
            stopped = server.stop(STOP_TIMEOUT)
        if not stopped:
            log.error("the server did not stop within %.0f s", STOP_TIMEOUT)
            return 1
        if server.error is not None:
            log.error("the server stopped with an error: %s", server.error)
            return 1
        log.info("xcore stopped cleanly")
        return 0

    def show_window(self, page: str) -> None:
        """show_window opens the window on `page` and returns once it is closed (in the main thread)."""
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", ROOT_CHROMIUM_FLAGS)
        import webview
        from webview.menu import Menu, MenuAction

        menu = [
            Menu(
                "xcore",
                [
                    MenuAction("Restart in safe mode", lambda: self.restart_with(["--safe"])),
                    MenuAction("Restart", lambda: self.restart_with([])),
                ],
            )
        ]
        window = webview.create_window(WINDOW_TITLE, page, width=WINDOW_SIZE[0], height=WINDOW_SIZE[1], menu=menu)
        if window is None:  # only when an `initialized` handler cancels it; xcore registers none
            raise ServerError("the desktop window could not be created")
        probe = os.environ.get(ENV_PROBE)
        if probe:
            watch_probe(window, Path(probe))
        self.window = window
        for sig in (signal.SIGINT, signal.SIGTERM):  # as Ctrl+C and SIGTERM stop `xcore serve`: a clean stop
            signal.signal(sig, lambda *_: self.close_window())
        webview.start(gui="qt" if sys.platform.startswith("linux") else None, private_mode=True)

    def restart_with(self, args: list[str]) -> None:
        """restart_with closes the window (the server stops cleanly), then starts the desktop again with `args`
        (["--safe"]: safe mode, every plugin off for that run); the window's xcore menu offers both."""
        log.info("restarting the desktop window%s", " in safe mode" if "--safe" in args else "")
        self.restart = args
        self.close_window()

    def bring_to_front(self) -> None:
        """bring_to_front restores the window (from minimized) and raises it; a second launch asks for this."""
        if self.window is not None:
            self.window.restore()

    def close_window(self) -> None:
        if self.window is not None:
            threading.Thread(target=self.window.destroy, daemon=True).start()

    def server_exited(self) -> None:
        if not self.closing:
            log.error("the server stopped on its own; closing the window")
            self.close_window()


def watch_probe(window: Any, path: Path) -> None:
    """watch_probe writes the test hook's file (write_probe) each time a page has loaded and, from the first load
    until the window closes, every PROBE_INTERVAL seconds, in a daemon thread (a script that never answers once
    the window is gone cannot hold the process)."""
    closing = threading.Event()
    window.events.closing += closing.set

    def follow() -> None:
        while not closing.wait(PROBE_INTERVAL):
            try:
                write_probe(window, path)
            except Exception:  # the window went away between the check and the script: the next turn ends
                log.debug("the desktop probe could not read the page", exc_info=True)

    follower = threading.Thread(target=follow, name="desktop-probe", daemon=True)
    starting = threading.Lock()

    def loaded() -> None:
        write_probe(window, path)
        with starting:
            if not follower.is_alive() and not closing.is_set():
                follower.start()

    window.events.loaded += loaded


def write_probe(window: Any, path: Path) -> None:
    """write_probe records the page's title (read with pywebview's evaluate_js) and URL for the desktop test."""
    state = {"title": window.evaluate_js("document.title"), "url": window.get_current_url()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DesktopApp:
    """DesktopApp is the ASGI app of the desktop server: the Switch, plus the focus request of later launches.

    It also watches the lifespan, so that the main thread knows when the app has started (or failed to).
    """

    def __init__(self, switch: Callable[..., Any], key: str, focus: Callable[[], None]) -> None:
        self.switch = switch
        self.key = key.encode()
        self.focus = focus
        self.ready = threading.Event()
        self.failure: str | None = None

    def wait_ready(self, server: EmbeddedServer, timeout: float) -> bool:
        """wait_ready waits for the app's startup: true once it completed, false when it failed or timed out."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if not server.alive or time.monotonic() > deadline:
                return False
        return self.failure is None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.switch(scope, receive, self._watch(send))
        elif scope["type"] == "http" and scope["path"] == FOCUS_PATH:
            await self._focus(scope, send)
        else:
            await self.switch(scope, receive, send)

    def _watch(self, send: Any) -> Callable[[dict[str, Any]], Any]:
        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.failure = message.get("message") or "startup failed"
            if message["type"] in ("lifespan.startup.complete", "lifespan.startup.failed"):
                self.ready.set()
            await send(message)

        return watched

    async def _focus(self, scope: dict[str, Any], send: Any) -> None:
        client = scope.get("client") or (None, None)
        given = dict(scope.get("headers") or []).get(KEY_HEADER, b"")
        allowed = scope["method"] == "POST" and is_loopback(client[0]) and hmac.compare_digest(given, self.key)
        if allowed:
            log.info("another `xcore desktop` asked for the window; bringing it to the front")
            threading.Thread(target=self.focus, name="xcore-desktop-focus", daemon=True).start()
        status = 204 if allowed else 404
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _not_experimental(record: logging.LogRecord) -> bool:
    """Granian warns at every embedded start that the embedded server is experimental: not news to the admin."""
    return not record.getMessage().startswith("Embedded server is experimental")


class EmbeddedServer:
    """EmbeddedServer runs Granian's embedded server (one worker, no signal handlers) in a background thread,
    in an event loop of its own."""

    def __init__(self, runtime: Runtime, app: Any, port: int, on_exit: Callable[[], None]) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        from xcore.logs.setup import configure_logging, forget_configuration

        self.server = Server(
            app,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            log_dictconfig=runtime.logging_config(),
            log_level=runtime.config.xcore.logs.level.lower(),  # type: ignore[arg-type]
            log_access=False,
        )
        # Granian has just applied the logging config; apply it as ours, as a worker of `xcore serve` does.
        forget_configuration()
        configure_logging(runtime.logging_config())
        logging.getLogger("_granian").addFilter(_not_experimental)
        self.loop = asyncio.new_event_loop()
        self.on_exit = on_exit
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xcore-server", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """stop asks the server to shut down (the app's lifespan shutdown runs) and waits; false on a timeout."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self.loop.call_soon_threadsafe(self.server.stop)
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
            if self.server.interrupt_children:
                self.error = ServerError("the server's worker exited unexpectedly; see the lines above in the log")
        except BaseException as exc:
            self.error = exc
            log.exception("the embedded server failed")
        finally:
            self.loop.close()
            self.on_exit()
