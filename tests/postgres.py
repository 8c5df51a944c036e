"""A real PostgreSQL server on 127.0.0.1 for the tests: a throwaway cluster made with initdb, one per test process.

`python3 tasks.py test` installs PostgreSQL from apt. The cluster lives in a temporary folder, runs without fsync
(nothing in it must outlive the tests) and is stopped and removed when the process ends, a SIGTERM included; the
next test process stops and removes those of processes killed outright (`reap_orphans`). Each test gets a
database of its own, copied from a template (`CREATE DATABASE ... TEMPLATE`): some 300 files, which is why
`tasks.py test` puts the temporary folder, and so the clusters, in RAM when it can (`temporary_folder`).

Tests reach it through the `postgres` fixture, or through `server()` where no fixture can be asked for. With
`XCORE_TEST_DATABASE=postgresql` the `runtime` fixture (conftest.py) puts every test's core database on it.
"""

from __future__ import annotations

import atexit
import functools
import glob
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import free_port

if TYPE_CHECKING:
    import psycopg

ENV_BACKEND = "XCORE_TEST_DATABASE"  # "postgresql": the runtime fixture's core database is on PostgreSQL
BACKEND = os.environ.get(ENV_BACKEND, "sqlite")
SUPERUSER = "postgres"
PREFIX = "xcore-pg-"  # the clusters' folders, in the temporary directory
OWNER = "owner.pid"  # in each: the test process that made it


def binaries() -> Path:
    """binaries is the folder of initdb and pg_ctl: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    assert initdb, "PostgreSQL is missing: `python3 tasks.py test` installs it (apt postgresql)"
    return Path(initdb).parent


class PostgresServer:
    """PostgresServer is one throwaway PostgreSQL cluster, listening on 127.0.0.1 at `port`."""

    def __init__(self) -> None:
        self.bin = binaries()
        reap_orphans(self.bin)
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / OWNER).write_text(str(os.getpid()))
        self.port = free_port()
        self._names = itertools.count(1)
        # PostgreSQL refuses to run as root: as root (CI), the cluster is the postgres user's.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.root / "data"), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o", options, "start")
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a terminated run stops its server too
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        assert result.returncode == 0, f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """execute runs one statement outside a transaction (CREATE DATABASE cannot run in one)."""
        with self._connect(database) as db:
            db.autocommit = True
            db.execute(sql)

    def _connect(self, database: str) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}")

    def create_database(self, template: str | None = None) -> str:
        """create_database makes a new empty database (or a copy of `template`) and returns its URL. A copy is made
        file by file, several times quicker for the suite's small databases than PostgreSQL 15's default through
        the WAL (and what PostgreSQL before 15 always did)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        statement = f'CREATE DATABASE "{name}"'
        if template:
            statement += f' TEMPLATE "{template}"'
            if self.version >= 150000:
                statement += " STRATEGY FILE_COPY"
        self.execute(statement)
        return self.url(name)

    @functools.cached_property
    def version(self) -> int:
        """version is the server's version number, 150004 for 15.4."""
        with self._connect("postgres") as db:
            row = db.execute("SHOW server_version_num").fetchone()
        assert row is not None
        return int(row[0])

    def stop(self) -> None:
        if self.root.exists():
            subprocess.run(
                [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
            )
            shutil.rmtree(self.root, ignore_errors=True)


def reap_orphans(folder: Path) -> None:
    """reap_orphans stops and removes the clusters of test processes that are gone (killed before their exit
    handlers ran), so that servers do not pile up on a developer's machine."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER).read_text())
        except (OSError, ValueError):
            continue  # still being made, or not ours
        try:
            os.kill(owner, 0)
            continue  # its process lives
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, str(folder / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


_server: PostgresServer | None = None


def server() -> PostgresServer:
    """server is this test process's PostgreSQL cluster, started the first time it is asked for."""
    global _server
    if _server is None:
        _server = PostgresServer()
    return _server


@pytest.fixture
def postgres() -> PostgresServer:
    return server()


@pytest.fixture
def postgres_url() -> str:
    """postgres_url is a new empty database on the test PostgreSQL server."""
    return server().create_database()
