"""Shared fixtures: temporary data directories, runtimes, free ports and real `xcore` processes.

What makes the suite fast without changing what it checks: passwords are hashed with argon2's cheapest parameters
(`xcore.auth.hashing.cheap_hashing`; a test that needs the production ones asks for `production_hashing`), a
runtime's core database is a copy of one migrated once per session (`prepare_from_template`; tests/test_migrations.py
runs the real migrations), tests that wait for a lock or a TOTP step to pass move a `clock` instead, and the
`xcore` commands a test runs are forked from a server that has imported what they import (tests/forked_cli.py).

With `XCORE_TEST_DATABASE=postgresql` (`python3 tasks.py test` runs the unit tier so, after the whole suite on
SQLite), every data directory whose settings leave `xcore.data.url` unset gets a PostgreSQL database of its own
instead of its SQLite file, on a real server (tests/postgres.py), and the `xcore` processes the tests start get it
as `DATABASE_URL`. Tests marked `sqlite` check the SQLite file itself and run only on SQLite.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

import forked_cli
from xcore.auth.hashing import cheap_hashing
from xcore.logs.setup import forget_configuration
from xcore.runtime import Runtime, open_runtime

# The browser fixtures (tests/browser.py: chromium, ui_server, page, admin_page), the X display for window tests
# (tests/xwindow.py: display) and the PostgreSQL server (tests/postgres.py: postgres, postgres_url).
pytest_plugins = ["browser", "xwindow", "postgres"]

# "postgresql": the core database of every test's data directory is on PostgreSQL (see above).
BACKEND = os.environ.get("XCORE_TEST_DATABASE", "sqlite")
if BACKEND not in ("sqlite", "postgresql"):
    raise SystemExit(f"XCORE_TEST_DATABASE must be sqlite or postgresql, not {BACKEND!r}")

# Tests never read the developer's own settings or data.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith("XCORE_") and k not in ("DATABASE_URL", "REDIS_URL")
}


# The slow tiers, which `python3 tasks.py test --fast` leaves out (pyproject.toml registers the markers). A test is
# put in one by the fixture it uses, so a new test that starts a browser, say, lands in its tier by itself; the
# release tests (tests/test_frozen.py) and other e2e tests are marked where they are written. XcoreServer, a real
# `xcore serve`, fails a test of the unit tier that starts one.
TIER_OF_FIXTURE = {
    "chromium": "browser",  # tests/browser.py: a real headless Chromium
    "display": "desktop",  # tests/xwindow.py: an Xvfb display for real windows
    "start_server": "e2e",  # a real `xcore serve` process on a free port
    "plugin_page": "browser",  # xcore.testing's page fixture: a real server and a headless Chromium
}


# The slowest tiers first: pytest-xdist hands files out in the order they are collected (tasks.py turns its own
# order, most tests first, off), so a release build or a browser file, few tests but long, that came last would
# leave one process working while the others wait. Files of the unit tier, many and short, come last and even the
# processes out.
FIRST = ("release", "browser", "desktop", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, tier in TIER_OF_FIXTURE.items():
            if fixture in used:
                item.add_marker(tier)
    rank: dict[Path, int] = {}
    for item in items:
        tiers = [FIRST.index(tier) for tier in FIRST if item.get_closest_marker(tier) is not None]
        rank[item.path] = min([rank.get(item.path, len(FIRST)), *tiers])
    items.sort(key=lambda item: rank[item.path])  # stable: a file's tests keep their order and stay together
    if BACKEND == "postgresql":  # what checks the SQLite file itself is not a test of PostgreSQL: left out, said so
        # With CORE_USE, what used no core database on SQLite is left out too (see core_database_used).
        wanted = core_database_tests() if CORE_USE else None
        kept = [
            item
            for item in items
            if item.get_closest_marker("sqlite") is None and (wanted is None or item.nodeid in wanted)
        ]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


_running: list[pytest.Item] = []  # the test being run, for XcoreServer's check of its tier


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)  # from before its fixtures are made (a module fixture too) until after they are gone
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("XCORE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that configure logging (open_runtime does) leave the process's logging as they found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    forget_configuration()


@pytest.fixture(autouse=True, scope="session")
def _cheap_hashing() -> Iterator[None]:
    """Every test hashes passwords with argon2's cheapest parameters, unless it asks for `production_hashing`."""
    with cheap_hashing():
        yield


@pytest.fixture
def production_hashing() -> Iterator[None]:
    """production_hashing: this test hashes with the production argon2 parameters (`passwords.HASHER`)."""
    with cheap_hashing(False):
        yield


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory that does not exist yet, as on a first run."""
    return tmp_path / "data"


# --- the core database: a SQLite file, or with XCORE_TEST_DATABASE=postgresql a database on the test server ------

# `python3 tasks.py test` runs the whole suite on SQLite, then the unit tier again on PostgreSQL. A test that never
# uses the core database runs the same code in both passes, so its second run only repeats its first. With
# XCORE_TEST_CORE_USE=<file> (tasks.py sets it for both passes), the SQLite pass writes there the node id of each
# test that used the core database, and the PostgreSQL pass runs only the tests listed. A test uses the core
# database when, while it runs (its fixtures' setup and teardown included), a SQLAlchemy pool hands out a
# connection (any engine's: over-counting only runs a test twice), a Runtime's database URL is read, or an
# `xcore` process is started on a data directory (database_env), which on PostgreSQL gets a database of its own.
CORE_USE = os.environ.get("XCORE_TEST_CORE_USE", "")
_core_users: set[str] = set()  # the tests this process has written to CORE_USE


def core_database_used() -> None:
    """core_database_used notes, on a SQLite pass that records (CORE_USE), that the running test uses the core
    database."""
    if not CORE_USE or BACKEND != "sqlite" or not _running or _running[-1].nodeid in _core_users:
        return
    _core_users.add(_running[-1].nodeid)
    with open(CORE_USE, "a", encoding="utf-8") as record:  # one short write: the processes' lines never interleave
        record.write(_running[-1].nodeid + "\n")


def core_database_tests() -> set[str]:
    """core_database_tests are the node ids the SQLite pass wrote to CORE_USE. An empty or missing file is an
    error: the whole suite cannot have run without the core database."""
    try:
        listed = set(Path(CORE_USE).read_text(encoding="utf-8").splitlines())
    except FileNotFoundError:
        listed = set()
    if not listed:
        raise pytest.UsageError(f"XCORE_TEST_CORE_USE names {CORE_USE}, where no SQLite pass recorded any test")
    return listed


if CORE_USE and BACKEND == "sqlite":
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    event.listen(Pool, "checkout", lambda *_: core_database_used())
    _sqlite_database_url = Runtime.database_url

    def _recorded_database_url(self: Runtime) -> str:
        core_database_used()
        return _sqlite_database_url.__get__(self)

    Runtime.database_url = property(_recorded_database_url)  # type: ignore[method-assign,assignment]


_databases: dict[Path, str] = {}  # PostgreSQL: each data directory's database, for the current test
PG_TEMPLATE = "xcore_template"
_pg_template_ready = False


def core_database_url(data_root: Path) -> str:
    """core_database_url is the PostgreSQL database standing in for `data_root`'s SQLite file in this test: made
    (empty) the first time the data directory is asked for."""
    from postgres import server

    key = data_root.resolve()
    if key not in _databases:
        _databases[key] = server().create_database()
    return _databases[key]


def database_env(args: Sequence[str]) -> dict[str, str]:
    """database_env is the environment that puts an `xcore` process started with `args` on the database its data
    directory (`--data-dir`) has in this test: nothing on SQLite, its DATABASE_URL on PostgreSQL."""
    if "--data-dir" in args:
        core_database_used()
    if BACKEND != "postgresql" or "--data-dir" not in args:
        return {}
    return {"DATABASE_URL": core_database_url(Path(args[list(args).index("--data-dir") + 1]))}


def copy_data_dir(source: Path, target: Path) -> None:
    """copy_data_dir copies a data directory, its core database included (on PostgreSQL, a copy of the database
    with `source`'s as the template: nothing may be connected to it)."""
    shutil.copytree(source, target)
    if BACKEND == "postgresql" and source.resolve() in _databases:
        from postgres import server

        original = _databases[source.resolve()].rsplit("/", 1)[1]
        _databases[target.resolve()] = server().create_database(template=original)


def _database_url(self: Runtime) -> str:
    return self.config.xcore.data.url or core_database_url(self.data.root)


def _database_file(self: Runtime) -> Path | None:
    from xcore.db.engine import sqlite_path

    return sqlite_path(self.database_url)


if BACKEND == "postgresql":  # for the whole run: module fixtures open runtimes before any test's fixtures
    Runtime.database_url = property(_database_url)  # type: ignore[method-assign,assignment]
    Runtime.database_file = property(_database_file)  # type: ignore[method-assign,assignment]


@pytest.fixture(autouse=True)
def _core_database() -> Iterator[None]:
    """On PostgreSQL: the databases made during a test are dropped after it (those of module fixtures stay)."""
    before = set(_databases)
    yield
    if BACKEND == "postgresql":
        from postgres import server

        for key in set(_databases) - before:
            server().execute(f'DROP DATABASE "{_databases.pop(key).rsplit("/", 1)[1]}" WITH (FORCE)')


def _pg_from_template(runtime: Runtime) -> None:
    """On PostgreSQL, the runtime's database becomes a copy of the migrated template, unless it holds tables."""
    global _pg_template_ready
    from postgres import server

    pg = server()
    if not _pg_template_ready:
        from xcore.server import prepare_database

        pg.execute(f'CREATE DATABASE "{PG_TEMPLATE}"')
        folder = Path(tempfile.mkdtemp(prefix="xcore-template-"))
        atexit.register(shutil.rmtree, folder, True)
        rt = open_runtime(folder / "data", environ={"DATABASE_URL": pg.url(PG_TEMPLATE)}, logs=False)
        prepare_database(rt)
        rt.close()
        _pg_template_ready = True
    if runtime.config.xcore.data.url:
        return
    key = runtime.data.root.resolve()
    if key in _databases:
        from sqlalchemy import inspect

        if inspect(runtime.engine).get_table_names():
            return
        runtime.close()
        pg.execute(f'DROP DATABASE "{_databases.pop(key).rsplit("/", 1)[1]}" WITH (FORCE)')
    _databases[key] = pg.create_database(template=PG_TEMPLATE)
    runtime.__dict__.pop("engine", None)
    runtime.__dict__.pop("sessions", None)
    runtime.__dict__.pop("auth", None)


_template: Path | None = None


def migrated_template() -> Path:
    """migrated_template is a core database file migrated to the head revision, with the built-in roles and
    permissions: made once per test process (the first time it is asked for), and copied for each test."""
    global _template
    if _template is None:
        from xcore.server import prepare_database

        folder = Path(tempfile.mkdtemp(prefix="xcore-template-"))
        atexit.register(shutil.rmtree, folder, True)
        rt = open_runtime(folder / "data", environ={}, logs=False)
        prepare_database(rt)
        rt.close()
        assert rt.database_file is not None
        # Everything in the main file, so copying that one file copies the whole database.
        with closing(sqlite3.connect(rt.database_file)) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        wal = rt.database_file.with_name(rt.database_file.name + "-wal")
        assert busy == 0 and (not wal.exists() or wal.stat().st_size == 0), "the template's WAL was not emptied"
        _template = rt.database_file
    return _template


def prepare_from_template(runtime: Runtime) -> None:
    """prepare_from_template is `prepare_database` for tests: a SQLite core database that does not exist yet starts
    as a copy of the migrated template, so only what differs from it (none, usually) is done here."""
    from xcore.server import prepare_database

    if BACKEND == "postgresql":
        _pg_from_template(runtime)
    target = runtime.database_file
    if target is not None and not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(migrated_template(), target)
        target.chmod(0o600)  # as SQLite would have made it under the process's private umask
    prepare_database(runtime)


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    """A migrated Runtime on a fresh data directory, with logging to its own log file."""
    rt = open_runtime(data_dir, environ={})
    prepare_from_template(rt)
    yield rt
    rt.close()


class Clock:
    """Clock is a time source (POSIX seconds) that stands still until the test moves it. `clock.drive(runtime)`
    makes the runtime's lockout throttle and token signer read it; the `clock` fixture makes TOTP read it too."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def pass_until(self, moment: datetime) -> None:
        """pass_until moves the clock just past `moment` (a lock's end, as stored: UTC), and never back."""
        from xcore.db.models import as_utc

        self.now = max(self.now, as_utc(moment).timestamp() + 0.001)

    def drive(self, runtime: Runtime) -> Clock:
        runtime.auth.throttle.clock = self
        runtime.auth.signer.clock = self
        return self


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """clock: a Clock set to the real time, which TOTP reads (`xcore.auth.totp.clock`) during the test."""
    import xcore.auth.totp

    fake = Clock(time.time())
    monkeypatch.setattr(xcore.auth.totp, "clock", fake)
    return fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


T = TypeVar("T")


def until(
    check: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
    context: Callable[[], str] | None = None,
) -> T:
    """until polls `check` until it returns something truthy, and returns that. It fails naming `what`, the last
    value (or the last connection error or failed assertion) and `context()` (a server's output, say); `alive()`
    may raise first, to stop at once when the process being waited on has died."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            last = check()
        except (httpx.TransportError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    extra = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"not within {timeout}s: {what}; last: {last!r}{extra}")


def fresh_python(code: str) -> str:
    """fresh_python runs `code` in a new Python process (what a module imports shows only there) and returns
    its output; fails the test when the code fails."""
    done = subprocess.run([sys.executable, "-c", code], env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def xcore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "xcore", *args]


# `run_xcore` forks its commands from a server that has imported what they import (tests/forked_cli.py), unless
# XCORE_TEST_FORKS=0: then each is a fresh `python -m xcore`, as with `fresh=True`.
FORKS = os.environ.get("XCORE_TEST_FORKS", "1") != "0"
_forks: forked_cli.Server | None = None


def run_xcore(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    fresh: bool = False,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `xcore` CLI to completion in a process of its own, with `input` on its standard input (None:
    nothing) and in `cwd` (None: this process's), and capture its output: a child of the fork server
    (tests/forked_cli.py), or with `fresh` (or an interpreter setting, PYTHON..., in `env`) a new `python -m
    xcore`, for a test of what only a fresh interpreter shows."""
    global _forks
    command = xcore_command(*args)
    environment = {**CLEAN_ENV, **database_env(args), **(env or {})}
    if FORKS and not fresh and not any(name.startswith("PYTHON") for name in env or {}):
        if _forks is None:
            _forks = forked_cli.Server(CLEAN_ENV)
        return _forks.run(list(args), environment, timeout, command, str(cwd or os.getcwd()), input)
    # Its own process group, as a forked command has, so that a timeout ends what it started too (a `serve`'s
    # workers, say): subprocess.run would kill the command alone.
    with subprocess.Popen(
        command, env=environment, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, process_group=0,
    ) as process:  # fmt: skip
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(command, timeout, out, err) from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


class XcoreServer:
    """A real `xcore serve` process on a free port, with its output captured to a file."""

    def __init__(self, data_dir: Path, port: int, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        test = _running[-1] if _running else None
        if test is not None and not any(test.get_closest_marker(tier) for tier in FIRST):
            raise AssertionError(
                f"{test.nodeid} starts a real `xcore serve` but is in the unit tier, which `tasks.py test --fast` "
                "runs: use the start_server fixture, or mark the test e2e (@pytest.mark.e2e)"
            )
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.output_path = data_dir.parent / f"serve-{port}.out"
        self._output = self.output_path.open("w")
        self.process = subprocess.Popen(
            xcore_command("serve", "--port", str(port), "--data-dir", str(data_dir), *extra),
            env={**CLEAN_ENV, **database_env(["--data-dir", str(data_dir)]), **(env or {})},
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so `kill` reaches its workers too
        )

    @property
    def output(self) -> str:
        if not self._output.closed:
            self._output.flush()
        return self.output_path.read_text()

    def wait_ready(self, timeout: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"xcore exited with {self.process.returncode}:\n{self.output}")
            try:
                response = httpx.get(self.url + "/health", timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"xcore did not become healthy in {timeout}s:\n{self.output}")

    def kill(self) -> None:
        """kill ends the server and its workers at once: killed alone, the main process would leave them running."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
            raise AssertionError(f"xcore did not stop within {timeout}s after signal {sig}:\n{self.output}") from None
        self._output.close()
        return code


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """start_server(data_dir=None, *extra_args) starts a real xcore and stops it at the end of the test."""
    started: list[XcoreServer] = []

    def start(data_dir: Path | None = None, *extra: str, env: dict[str, str] | None = None) -> XcoreServer:
        server = XcoreServer(data_dir or tmp_path / "data", free_port(), extra, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()  # the workers of a server whose test failed, too
        server._output.close()  # a test that failed before stop() leaves it open


# Accounts: in-process apps with real SQLite, real argon2 and real tokens.

PASSWORDS = {
    "root": "first-owner-secret-1",
    "ada": "admin-secret-pass-2",
    "bob": "plain-user-secret-3",
    "cyd": "other-user-secret-4",
}


def create_account(runtime: Runtime, username: str, roles: list[str], password: str | None = None) -> int:
    """create_account makes an account as the machine's owner would (no actor checks) and returns its id."""
    from xcore.auth import accounts
    from xcore.auth.service import Client

    if runtime.auth.setup_required():
        assert "superadmin" in roles, "the first account is a superadmin"
        user = accounts.complete_setup(
            runtime.auth, Client(ip="test"), None, username=username, password=password or PASSWORDS[username]
        )
        if roles != ["superadmin"]:
            user = accounts.set_roles(runtime.auth, None, Client(ip="test"), user.id, roles)
        return user.id
    user = accounts.create_user(
        runtime.auth, None, Client(ip="test"), username=username, password=password or PASSWORDS[username], roles=roles
    )
    return user.id


class Api:
    """Api is a TestClient on a full xcore app, with helpers to log in as the standard accounts."""

    def __init__(self, client: Any, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime

    def login(self, username: str, password: str | None = None, **extra: Any) -> dict[str, str]:
        """login returns Bearer headers for the account; fails the test when the login fails."""
        response = self.client.post(
            "/api/auth/login", json={"username": username, "password": password or PASSWORDS[username], **extra}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def api(runtime: Runtime) -> Iterator[Api]:
    """api: a migrated xcore app in process, before setup (no account exists)."""
    from litestar.testing import TestClient

    from xcore.web.app import build_app

    with TestClient(build_app(runtime)) as client:
        yield Api(client, runtime)


@contextmanager
def plugin_host(runtime: Runtime, dev_dirs: Sequence[Path] = (), tasks: bool = False) -> Iterator[Any]:
    """plugin_host is a TestClient on what a worker serves: the Switch, driven by a PluginManager (which watches
    the data dir's plugins folder and `dev_dirs`). `client.manager` is the manager. With `tasks`, the process
    also has a task host with the core tasks and runs the task consumer (`client.manager.tasks`), as a worker."""
    from litestar.testing import TestClient

    from xcore.plugins.manager import PluginManager
    from xcore.tasks.core import register_core_tasks
    from xcore.tasks.host import TaskHost
    from xcore.web.plugin_apps import plugin_switch

    host = TaskHost(runtime) if tasks else None
    manager = PluginManager(runtime, dev_dirs, tasks=host)
    if host is not None:
        register_core_tasks(host, manager.collect_garbage)
    with TestClient(plugin_switch(runtime, manager)) as client:
        client.manager = manager
        yield client


@pytest.fixture
def accounts_api(api: Api) -> Api:
    """accounts_api: the api with root (superadmin), ada (admin), bob and cyd (user) set up."""
    create_account(api.runtime, "root", ["superadmin"])
    create_account(api.runtime, "ada", ["admin"])
    create_account(api.runtime, "bob", ["user"])
    create_account(api.runtime, "cyd", ["user"])
    return api
