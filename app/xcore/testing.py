"""xcore.testing: a pytest plugin for plugin authors. Installed with xcore; pytest finds it on its own.

Two fixtures: `plugin_client` for a plugin's routes (in process, fast) and `plugin_page` for its pages (a real
server and a real browser).

The `plugin_client` fixture loads one plugin, from its folder or its zip, into a real xcore app on a temporary
data directory, exactly as a server would (checks, import, `on_load`, permissions, access rules), and returns
a test client logged in as a user of your choice::

    def test_hello(plugin_client):
        client = plugin_client(Path(__file__).parent.parent)
        assert client.get("/app/hello/").status_code == 200

`plugin_client(source, config=None, roles=("superadmin",), permissions=(), login=True, sandbox=False)`:

- `config` sets admin overrides of the plugin's settings (checked against its defaults, as the admin API does);
- `roles` and `permissions` make the user the client acts as; `login=False` gives an anonymous client;
- `sandbox=True` runs the plugin in a sandbox worker whatever its plugin.json says (the host's
  `manager.plugins.sandbox = "require"`), as a host that requires it would; a plugin whose plugin.json says
  `"sandbox": true` runs sandboxed either way;
- `client.plugin` is what the admin API shows about the plugin (state, version, routes, tasks, config), and
  `client.runtime` the host's Runtime;
- the plugin's tasks run for real: `fn.enqueue(...)` queues them on a consumer in the test process, and each
  run is journalled in the host's `task_runs` table;
- passwords are hashed with argon2's cheapest parameters while the fixture is in use, not the production ones
  (`xcore.auth.hashing.cheap_hashing`), so a login costs next to nothing.

Setting up fails the test with the plugin's own error when it does not load.

The `plugin_page` fixture opens one of the plugin's pages (plugin.json's `pages`) in headless Chromium, in the
app at `/admin/apps/<id>/<path>`, logged in as a new account, and returns the Playwright `Page`::

    from playwright.sync_api import expect

    def test_the_page_greets(plugin_page):
        page = plugin_page(Path(__file__).parent.parent)
        expect(page.get_by_role("heading", level=1)).to_have_text("Hello")

`plugin_page(source, path=None, roles=("user",), permissions=()) -> Page` (see `PluginPages`):

- the first call starts `xcore serve` on 127.0.0.1 and a free port, with a temporary data directory, serving
  `source`: a plugin folder as a dev plugin (`--plugins-dev`, as you run it live), or a zip installed in the data
  directory; it sets the server up with an owner account and waits until the plugin is active;
- each call creates an account with `roles` (a plain `user` by default) and, when `permissions` are given, a
  role granting them, logs it in in a fresh browser context (its own cookies) and opens the page `path` (the
  first of plugin.json's pages by default), so calling it again with other roles opens the page as another user
  of the same server, beside the first;
- `plugin_page.server` is that server: its `url`, its `data_dir`, `api` (an httpx client logged in as the owner,
  a superadmin, to set up data or settings through the API) and `output` (what it logged);
- `plugin_page.request(page, method, path, json=None)` sends a request with the session of `page`'s user (its
  cookie and CSRF token) and returns Playwright's APIResponse: to check that the server refuses what the page
  does not offer that user;
- the test fails when a page has an uncaught script error, logs an error to the console (Content-Security-Policy
  violations are such errors), gets a 5xx answer or asks a host other than the server. An answer of 4xx is not an
  error: it is the page's to handle (a validation message, a missing permission);
- Playwright is not installed with xcore: the fixture fails (never skips) saying how to install it,
  `pip install playwright`, then a Chromium, Debian's (`apt install chromium`, used when on the PATH) or
  Playwright's own (`playwright install chromium`).

The server hashes passwords as in production, so each login costs a fraction of a second. One browser and one
server per test: the fixture starts nothing until it is called.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient

if TYPE_CHECKING:
    from playwright.sync_api import (
        APIResponse,
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Playwright,
        Request,
        Response,
        ViewportSize,
    )

    from xcore.plugins.manifest import Manifest

PASSWORD_LENGTH = 24


@pytest.fixture
def plugin_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., TestClient[Any]]]:
    """plugin_client(source, config=None, roles=("superadmin",), permissions=(), login=True, sandbox=False) ->
    TestClient."""
    from xcore.auth.hashing import cheap_hashing

    with ExitStack() as stack:
        stack.enter_context(cheap_hashing())

        def make(
            source: str | Path,
            *,
            config: Mapping[str, Any] | None = None,
            roles: Iterable[str] = ("superadmin",),
            permissions: Iterable[str] = (),
            login: bool = True,
            sandbox: bool = False,
        ) -> TestClient[Any]:
            data = tmp_path_factory.mktemp("xcore-data")
            return _start(stack, data, Path(source), config, roles, permissions, login, sandbox)

        yield make


def _start(
    stack: ExitStack,
    data: Path,
    source: Path,
    config: Mapping[str, Any] | None,
    roles: Iterable[str],
    permissions: Iterable[str],
    login: bool,
    sandbox: bool = False,
) -> TestClient[Any]:
    from xcore.plugins.bundle import inspect_bundle
    from xcore.plugins.manager import PluginManager
    from xcore.plugins.settings import override_problems, replace_overrides
    from xcore.plugins.sources import Problem, read_dev_folder
    from xcore.plugins.store import install_bundle
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database
    from xcore.tasks.host import TaskHost
    from xcore.web.plugin_apps import plugin_switch

    environ = {"XCORE_MANAGER__PLUGINS__SANDBOX": "require"} if sandbox else {}
    runtime = open_runtime(data, environ=environ, logs=False)
    stack.callback(runtime.close)
    prepare_database(runtime)
    if source.is_dir():
        found = read_dev_folder(source.resolve(), runtime.config.manager.plugins.entry_point)
        if isinstance(found, Problem):
            raise pytest.fail.Exception(f"{source}: {found.error}", pytrace=False)
        plugin_id, dev = found.manifest.id, [source]
    else:
        entry = runtime.config.manager.plugins.entry_point
        plugin_id, dev = inspect_bundle(source, runtime.version, default_entry=entry).manifest.id, []
        install_bundle(runtime, source)
    if config:
        with runtime.auth.transaction() as session:
            replace_overrides(session, plugin_id, config, "test")
    manager = PluginManager(runtime, dev, tasks=TaskHost(runtime))
    client: TestClient[Any] = stack.enter_context(TestClient(plugin_switch(runtime, manager)))
    view = manager.views.get(plugin_id)
    if view is None or view.state != "active":
        raise pytest.fail.Exception(f"plugin {plugin_id} did not load: {view.error if view else 'not found'}", False)
    if config:
        problems = override_problems(manager.loaded[plugin_id].defaults, config)
        if problems:
            raise pytest.fail.Exception(f"config: {'; '.join(f'{k}: {v}' for k, v in problems)}", pytrace=False)
    client.plugin = view  # type: ignore[attr-defined]
    client.runtime = runtime  # type: ignore[attr-defined]
    token = _login(client, runtime, list(roles), list(permissions))
    if login:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def _login(client: TestClient[Any], runtime: Any, roles: list[str], permissions: list[str]) -> str:
    """_login creates the host's owner (so the host is set up), then, unless the user is the owner, the user with
    `roles`, and logs in as that user."""
    from xcore.auth import accounts
    from xcore.auth.login import find_user
    from xcore.auth.principals import principal_of
    from xcore.auth.roles import create_role
    from xcore.auth.service import Client

    here = Client(ip="127.0.0.1")
    password = secrets.token_urlsafe(PASSWORD_LENGTH)
    owner = accounts.complete_setup(runtime.auth, here, None, username="owner", password=password)
    username = "owner"
    if roles != ["superadmin"] or permissions:
        with runtime.sessions() as session:
            found = find_user(session, owner.username)
            assert found is not None
            root = principal_of(found)
        if permissions:
            create_role(runtime.auth, root, here, name="plugin-test", permissions=permissions)
            roles = [*roles, "plugin-test"]
        username = "tester"
        accounts.create_user(runtime.auth, root, here, username=username, password=password, roles=roles)
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    if response.status_code != 200:
        raise pytest.fail.Exception(f"plugin_client: login failed: {response.text}", pytrace=False)
    token: str = response.json()["access_token"]
    return token


# --- plugin_page: a plugin's pages in a real browser ----------------------------------------------------------

GET_CHROMIUM = "Debian's (`apt install chromium`) or Playwright's own (`python -m playwright install chromium`)"
PLAYWRIGHT_MISSING = (
    "plugin_page needs Playwright, which xcore does not install: run `pip install playwright` with the Python that "
    f"runs your tests, then get a Chromium: {GET_CHROMIUM}"
)
"""PLAYWRIGHT_MISSING is how `plugin_page` fails when Playwright is not installed."""

OWNER = "owner"
PAGE_TIMEOUT_MS = 15_000  # what a Playwright call or `expect` waits at most, in milliseconds
SERVER_TIMEOUT = 60.0  # seconds for the server to answer /health, and then for the plugin to be active
VIEWPORT: ViewportSize = {"width": 1024, "height": 700}
# Root (a container, CI) may run Chromium only without its sandbox; the rest keeps it from calling home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]  # fmt: skip
# What Chromium logs to the console for every 4xx answer: the page's to handle (a 403, a validation message).
_ANSWERED_4XX = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")


@dataclass
class PageServer:
    """PageServer is the `xcore serve` that `plugin_page` started for one plugin."""

    url: str
    """url is the server's address, http://127.0.0.1:<port>."""
    data_dir: Path
    """data_dir is its temporary data directory."""
    manifest: Manifest
    """manifest is the plugin's plugin.json, checked."""
    api: httpx.Client
    """api is an httpx client on `url`, logged in as the owner (a superadmin): set up data through the API."""
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        """output is what the server has logged so far (its stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        """stop ends the server (SIGTERM, then SIGKILL for the process group after `timeout` seconds)."""
        self.api.close()
        if self.process.poll() is None:
            self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        if os.name == "posix":  # its workers too, should one outlive it
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class PluginPages:
    """PluginPages is the `plugin_page` fixture: call it to open a plugin's page as a new user (see the module's
    documentation). It records what went wrong in its pages (`problems`) and fails the test with them."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._servers: dict[Path, PageServer] = {}
        self._last: PageServer | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._contexts: list[BrowserContext] = []
        self._users = 0
        self._reported = 0
        self.problems: list[str] = []
        """problems are the script errors, console errors, 5xx answers and outside requests of the pages."""

    @property
    def server(self) -> PageServer:
        """server is the server of the last call."""
        if self._last is None:
            raise pytest.fail.Exception("plugin_page.server: call plugin_page(source) first", pytrace=False)
        return self._last

    def __call__(
        self,
        source: str | Path,
        path: str | None = None,
        *,
        roles: Iterable[str] = ("user",),
        permissions: Iterable[str] = (),
    ) -> Page:
        """__call__ opens the page `path` of the plugin at `source` (its first page by default) as a new account
        with `roles` and `permissions`, in a browser context of its own, and returns it once loaded."""
        browser = self._chromium()  # first: without Playwright, fail before starting a server
        server = self._serve(Path(source))
        self._last = server
        address = f"/admin/apps/{server.manifest.id}/{_page_path(server.manifest, path)}"
        username, password = self._account(server, list(roles), list(permissions))
        context = browser.new_context(base_url=server.url, viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
        self._contexts.append(context)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        self._watch(context, server.url)
        # The login of the app's login page (cookie: true): the context's cookies then hold the session.
        answer = context.request.post(
            "/api/auth/login", data={"username": username, "password": password, "cookie": True}
        )
        if not answer.ok:
            raise pytest.fail.Exception(f"plugin_page: logging in as {username} failed: {answer.text()}", False)
        page = context.new_page()
        page.goto(address)
        page.wait_for_load_state("networkidle")
        return page

    def request(self, page: Page, method: str, path: str, json: Any = None) -> APIResponse:
        """request sends `method path` (a JSON body when `json` is not None) with the session of `page`'s user, its
        cookie and CSRF token, as the page's own code would, and returns Playwright's answer: to check that the
        server refuses what the page does not offer."""
        from xcore.web.guard import CSRF_COOKIE

        context = page.context
        csrf = next((c.get("value", "") for c in context.cookies() if c.get("name") == CSRF_COOKIE), "")
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        return context.request.fetch(path, method=method, headers=headers, data=json)

    def check(self) -> None:
        """check fails the test with the problems the pages had since the last check."""
        for context in self._contexts:
            for page in context.pages:
                with suppress(Exception):  # a round trip delivers the events the browser sent before it
                    page.evaluate("0")
        new, self._reported = self.problems[self._reported :], len(self.problems)
        if new:
            lines = "\n".join(f"- {problem}" for problem in new)
            raise pytest.fail.Exception(f"plugin_page: the page had problems:\n{lines}", pytrace=False)

    def close(self) -> None:
        """close ends the browser and the servers."""
        try:
            for context in self._contexts:
                with suppress(Exception):
                    context.close()
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()
        finally:
            for server in self._servers.values():
                server.stop()

    def _chromium(self) -> Browser:
        if self._browser is None:
            playwright = _playwright_api().sync_playwright().start()
            self._browser = _launch(playwright)  # which stops Playwright when no Chromium starts
            self._playwright = playwright
        return self._browser

    def _watch(self, context: BrowserContext, url: str) -> None:
        host = urlsplit(url).hostname
        problems = self.problems

        def console(message: ConsoleMessage) -> None:
            if message.type == "error" and not _ANSWERED_4XX.match(message.text):
                problems.append(f"console error: {message.text} (at {message.location.get('url')})")

        def response(answer: Response) -> None:
            if answer.status >= 500:
                problems.append(f"the server answered {answer.status} to {answer.request.method} {answer.url}")

        def request(asked: Request) -> None:
            parts = urlsplit(asked.url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != host:
                problems.append(f"a request to another host: {asked.method} {asked.url}")

        def page(opened: Page) -> None:
            opened.on("pageerror", lambda error: problems.append(f"uncaught script error: {error}"))
            opened.on("console", console)

        context.on("page", page)
        context.on("response", response)
        context.on("request", request)

    def _serve(self, source: Path) -> PageServer:
        source = source.resolve()
        if source not in self._servers:
            self._servers[source] = _start_server(source, _manifest_of(source), self._tmp.mktemp("xcore-page"))
        return self._servers[source]

    def _account(self, server: PageServer, roles: list[str], permissions: list[str]) -> tuple[str, str]:
        """_account creates a user with `roles`, plus a role of its own granting `permissions` when there are any."""
        self._users += 1
        username, password = f"user{self._users}", secrets.token_urlsafe(PASSWORD_LENGTH)
        if permissions:
            role = f"page-test-{self._users}"
            made = server.api.post("/api/admin/roles", json={"name": role, "permissions": permissions})
            if not made.is_success:
                raise pytest.fail.Exception(f"plugin_page: no role with {permissions}: {_detail(made)}", False)
            roles = [*roles, role]
        made = server.api.post("/api/admin/users", json={"username": username, "password": password, "roles": roles})
        if not made.is_success:
            raise pytest.fail.Exception(f"plugin_page: no user with the roles {roles}: {_detail(made)}", False)
        return username, password


@pytest.fixture
def plugin_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginPages]:
    """plugin_page(source, path=None, roles=("user",), permissions=()) -> playwright Page, at the plugin's page
    in the app, logged in; `plugin_page.server` is the server. Fails the test on a script, console or CSP error."""
    _playwright_api()  # before the test's body, which may import Playwright itself
    pages = PluginPages(tmp_path_factory)
    try:
        yield pages
        pages.check()  # what happened after the test's last step
    finally:
        pages.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A test that opened plugin pages fails, as a failure of its own, when a page had a problem."""
    result = yield
    pages = getattr(item, "funcargs", {}).get("plugin_page")
    if isinstance(pages, PluginPages):
        pages.check()
    return result


def _playwright_api() -> ModuleType:
    """_playwright_api is Playwright's sync API; fails the test saying how to install it when it is missing."""
    try:
        import playwright.sync_api
    except ImportError as exc:
        raise pytest.fail.Exception(f"{PLAYWRIGHT_MISSING} ({exc})", pytrace=False) from None
    return playwright.sync_api


def _launch(playwright: Playwright) -> Browser:
    """_launch starts headless Chromium: the system's (Debian's `chromium`) when on the PATH, else Playwright's own."""
    from playwright.sync_api import Error

    system = shutil.which("chromium") or shutil.which("chromium-browser")
    failures = []
    for path in [system, None] if system else [None]:
        try:
            return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        except Error as exc:
            which = path or "Playwright's own"
            failures.append(f"{which}: {str(exc).strip().splitlines()[0]}")
    playwright.stop()
    raise pytest.fail.Exception(
        f"plugin_page needs a Chromium, {GET_CHROMIUM}; none started: {'; '.join(failures)}", pytrace=False
    )


def _manifest_of(source: Path) -> Manifest:
    from xcore import __version__
    from xcore.plugins.bundle import BundleError, inspect_bundle
    from xcore.plugins.pack import folder_manifest

    try:
        return folder_manifest(source) if source.is_dir() else inspect_bundle(source, __version__).manifest
    except BundleError as exc:
        raise pytest.fail.Exception(f"plugin_page: {exc}", pytrace=False) from None


def _page_path(manifest: Manifest, path: str | None) -> str:
    paths = [page.path for page in manifest.pages]
    if not paths:
        raise pytest.fail.Exception(
            f"plugin_page: plugin {manifest.id} has no pages; add one to plugin.json's `pages` "
            "(xcore's plugins/README.md, Pages)",
            pytrace=False,
        )
    if path is not None and path not in paths:
        raise pytest.fail.Exception(f"plugin_page: plugin {manifest.id} has no page {path!r}; it has {paths}", False)
    return path or paths[0]


def _start_server(source: Path, manifest: Manifest, folder: Path) -> PageServer:
    """_start_server runs `xcore serve` on a free port with `folder/data` as its data directory, serving `source`
    (a dev folder, or a zip in the plugins folder), sets it up with the owner, and waits for the plugin."""
    data = folder / "data"
    extra = ["--plugins-dev", str(source)]
    if not source.is_dir():
        (data / "plugins").mkdir(parents=True)
        shutil.copyfile(source, data / "plugins" / source.name)
        extra = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    log = folder / "serve.log"
    # The server reads no setting of the author's environment: only its own temporary data directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCORE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    command = [sys.executable, "-m", "xcore", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--data-dir", str(data), *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, which stop() ends with its workers
        )
    server = PageServer(url, data, manifest, httpx.Client(base_url=url, timeout=30), process, log)
    try:
        _set_up(server)
    except BaseException:
        server.stop()
        raise
    return server


def _set_up(server: PageServer) -> None:
    """_set_up waits for the server to answer, creates the owner, logs `server.api` in as the owner and waits
    until the plugin is active; it fails the test with the server's output or the plugin's error otherwise."""
    _wait(server, "answer /health", lambda: server.api.get("/health").status_code == 200)
    token = (server.data_dir / "setup-token").read_text().strip()
    password = secrets.token_urlsafe(PASSWORD_LENGTH)
    made = server.api.post("/api/setup", json={"token": token, "username": OWNER, "password": password})
    if not made.is_success:
        raise pytest.fail.Exception(f"plugin_page: the server's setup failed: {_detail(made)}", pytrace=False)
    login = server.api.post("/api/auth/login", json={"username": OWNER, "password": password})
    if not login.is_success:
        raise pytest.fail.Exception(f"plugin_page: the owner's login failed: {_detail(login)}", pytrace=False)
    server.api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    plugin = server.manifest.id

    def active() -> bool:
        view = server.api.get(f"/api/admin/plugins/{plugin}")
        state = view.json().get("state") if view.status_code == 200 else None
        if state == "failed":
            raise pytest.fail.Exception(f"plugin {plugin} did not load: {view.json().get('error')}", pytrace=False)
        return state == "active"

    _wait(server, f"load the plugin {plugin}", active)


def _wait(server: PageServer, what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise pytest.fail.Exception(
                f"plugin_page: xcore serve exited with {server.process.returncode}:\n{server.output[-4000:]}", False
            )
        with suppress(httpx.TransportError):
            if check():
                return
        time.sleep(0.1)
    raise pytest.fail.Exception(
        f"plugin_page: the server did not {what} within {SERVER_TIMEOUT:.0f}s:\n{server.output[-4000:]}", False
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail") or response.text)
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"
