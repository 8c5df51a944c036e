"""xcore on PostgreSQL, where it differs from SQLite, on a real server (tests/postgres.py): several servers on one
database, migrations at a start of several nodes, backups with pg_dump and restores with pg_restore, and values
PostgreSQL refuses where SQLite takes them.

Everything else behaves the same on both: `python3 tasks.py test` runs the unit tier a second time with
XCORE_TEST_DATABASE=postgresql (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import inspect, select, text

from conftest import CLEAN_ENV, Api, create_account, run_xcore, until
from postgres import PostgresServer
from xcore.config.schema import BackupConfig
from xcore.db import migrate, revisions
from xcore.db.archive import open_archive
from xcore.db.backup import list_backups
from xcore.db.models import User
from xcore.db.serving import ServingLock
from xcore.errors import DatabaseError
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database
from xcore.web.app import build_app


@pytest.fixture
def pg_runtime(data_dir: Path, postgres_url: str) -> Iterator[Runtime]:
    """pg_runtime: a runtime whose core database is a new PostgreSQL database, migrated by the real migrations."""
    runtime = open_runtime(data_dir, environ={"DATABASE_URL": postgres_url})
    prepare_database(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def pg_api(pg_runtime: Runtime) -> Iterator[Api]:
    create_account(pg_runtime, "root", ["superadmin"])
    with TestClient(build_app(pg_runtime)) as client:
        yield Api(client, pg_runtime)


def xcore_on(runtime: Runtime, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """xcore_on runs the `xcore` CLI on the runtime's data directory and database."""
    extra = {"DATABASE_URL": runtime.database_url, **(env or {})}
    return run_xcore(*args, "--data-dir", str(runtime.data.root), env=extra)


def usernames(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return sorted(session.scalars(select(User.username)))


# --- several servers, one database ---------------------------------------------------------------------------


def test_several_servers_serve_one_database_and_a_replacing_command_waits_for_all(pg_runtime: Runtime) -> None:
    url = pg_runtime.database_url
    first, second, command = ServingLock(url, None), ServingLock(url, None), ServingLock(url, None)
    assert first.serve() and second.serve(), "every node serves the same database"
    try:
        with (
            pytest.raises(DatabaseError, match=r"a server is running against .* on every node"),
            command.exclusive("restore the database"),
        ):
            pass
        first.release()
        with pytest.raises(DatabaseError), command.exclusive("restore the database"):
            pass
    finally:
        first.release()
        second.release()
    with command.exclusive("restore the database"):
        assert not ServingLock(url, None).serve(), "no node starts while a restore runs"
    third = ServingLock(url, None)
    assert third.serve()
    third.release()


def test_the_lock_of_a_killed_server_goes_with_it(pg_runtime: Runtime) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from xcore.db.serving import ServingLock; "
         f"assert ServingLock({pg_runtime.database_url!r}, None).serve(); print('held', flush=True); time.sleep(600)"],
        env=CLEAN_ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DatabaseError), ServingLock(pg_runtime.database_url, None).exclusive("upgrade"):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()

    def free() -> bool:
        try:
            with ServingLock(pg_runtime.database_url, None).exclusive("upgrade"):
                return True
        except DatabaseError:
            return False

    until(free, "PostgreSQL to end the killed server's session and its lock", timeout=10)


def test_nodes_that_start_together_migrate_the_database_once(postgres_url: str, tmp_path: Path) -> None:
    """Three nodes (data directories of their own) start at once on an empty database: one migrates it, under the
    migration lock, the others wait for it and find nothing to do. None fails."""
    code = (
        "import sys; from xcore.runtime import open_runtime; from xcore.server import prepare_database; "
        "rt = open_runtime(sys.argv[1], environ={'DATABASE_URL': sys.argv[2]}); prepare_database(rt); print('ready')"
    )
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"node{n}"), postgres_url],
            env=CLEAN_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0, 0], outputs
    migrated = [err for _, err in outputs if "upgrade base -> " in err]
    assert len(migrated) == 1, outputs
    runtime = open_runtime(tmp_path / "node0", environ={"DATABASE_URL": postgres_url}, logs=False)
    assert revisions.current_revision(runtime.engine) == revisions.head_revision()
    runtime.close()


# --- backups and restores --------------------------------------------------------------------------------------


def test_backup_and_restore_with_the_cli(pg_runtime: Runtime) -> None:
    create_account(pg_runtime, "root", ["superadmin"])
    made = xcore_on(pg_runtime, "db", "backup")
    assert made.returncode == 0, made.stderr
    (backup,) = list_backups(pg_runtime.backups_dir)
    assert f"-{revisions.head_revision()}-manual.xcbackup" in backup.name, "a complete backup (test_archive.py)"
    with backup.open("rb") as source, open_archive(source, backup.name, pg_runtime.backups_dir, None) as staged:
        assert staged.database.name == "database.dump" and staged.database.read_bytes().startswith(b"PGDMP")
    alone = xcore_on(pg_runtime, "db", "backup", "--database-only")
    assert alone.returncode == 0, alone.stderr
    dump_file = Path(alone.stdout.strip().split(": ", 1)[1])
    assert dump_file.suffix == ".dump" and dump_file.read_bytes().startswith(b"PGDMP"), dump_file.name
    dump_file.unlink()
    create_account(pg_runtime, "ada", ["admin"])
    with pg_runtime.sessions() as session:
        versions = {name: version for name, version in session.execute(select(User.username, User.token_version))}
    pg_runtime.engine.dispose()

    done = xcore_on(pg_runtime, "db", "restore", str(backup))
    assert done.returncode == 0, done.stderr
    assert "every session has ended" in done.stdout and "backed up first" in done.stdout
    assert usernames(pg_runtime) == ["root"], "the account made after the backup is gone"
    with pg_runtime.sessions() as session:
        assert session.scalar(select(User.token_version).where(User.username == "root")) > versions["root"]
    safety = [path for path in list_backups(pg_runtime.backups_dir) if "-safety" in path.name]
    assert len(safety) == 1 and safety[0].suffix == ".xcbackup"

    undone = xcore_on(pg_runtime, "db", "restore", str(safety[0]))
    assert undone.returncode == 0, undone.stderr
    assert usernames(pg_runtime) == ["ada", "root"], "the safety backup undoes the restore"


def test_an_older_backup_is_migrated_after_it_goes_in(pg_runtime: Runtime) -> None:
    older = [rev for rev, _down, _doc in migrate.history()][2]
    create_account(pg_runtime, "root", ["superadmin"])
    pg_runtime.engine.dispose()
    for step in (("downgrade", older), ("backup",), ("upgrade",)):
        assert xcore_on(pg_runtime, "db", *step).returncode == 0, step
    (backup,) = [path for path in list_backups(pg_runtime.backups_dir) if "-manual" in path.name]
    done = xcore_on(pg_runtime, "db", "restore", str(backup))
    assert done.returncode == 0, done.stderr
    assert f"migrated {older} -> {revisions.head_revision()}" in done.stdout
    assert revisions.current_revision(pg_runtime.engine) == revisions.head_revision()
    assert usernames(pg_runtime) == ["root"]


def test_a_restore_is_refused_while_a_node_serves(pg_runtime: Runtime) -> None:
    assert xcore_on(pg_runtime, "db", "backup").returncode == 0
    (backup,) = list_backups(pg_runtime.backups_dir)
    node = ServingLock(pg_runtime.database_url, None)
    assert node.serve()
    try:
        refused = xcore_on(pg_runtime, "db", "restore", str(backup))
        upgrade = xcore_on(pg_runtime, "db", "downgrade", "base")
    finally:
        node.release()
    for result in (refused, upgrade):
        assert result.returncode != 0
        assert "a server is running against" in result.stderr and "on every node" in result.stderr, result.stderr
    assert len(list_backups(pg_runtime.backups_dir)) == 1, "nothing was done, no safety backup either"


def test_a_restore_refuses_what_is_not_a_backup_of_an_xcore_postgresql_database_in_one_line(
    pg_runtime: Runtime, postgres: PostgresServer, tmp_path: Path
) -> None:
    from xcore.db.pgdump import dump

    head = revisions.head_revision()
    good = tmp_path / "good.dump"
    dump(pg_runtime.database_url, good)
    with pg_runtime.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer = tmp_path / "newer.dump"
    dump(pg_runtime.database_url, newer)
    with pg_runtime.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    sqlite_backup = tmp_path / "xcore-sqlite.db"  # an intact xcore database, but SQLite's
    migrate.upgrade(f"sqlite:///{sqlite_backup}", tmp_path / "backups", BackupConfig())
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"PK\x03\x04 a zip, not a database" * 50)
    other_app = tmp_path / "other.dump"
    other_url = postgres.create_database()
    postgres.execute("CREATE TABLE invoices (id integer)", other_url.rsplit("/", 1)[1])
    dump(other_url, other_app)
    pg_runtime.engine.dispose()
    cases = {
        sqlite_backup: "is not a PostgreSQL backup",
        truncated: "pg_restore",
        junk: "pg_restore",
        other_app: "is not an xcore database",
        newer: "a newer xcore made it",
    }
    for path, says in cases.items():
        result = xcore_on(pg_runtime, "db", "restore", str(path))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, (path.name, result.stderr)
        assert lines[0].startswith("xcore: error: ") and says in lines[0] and path.name in lines[0], lines[0]
    assert list_backups(pg_runtime.backups_dir) == [], "a refused restore changes nothing and backs up nothing"
    assert revisions.current_revision(pg_runtime.engine) == head
    assert {"users", "roles", "alembic_version"} <= set(inspect(pg_runtime.engine).get_table_names())


def test_without_pg_dump_the_error_says_what_to_install_and_the_command_to_run(
    pg_runtime: Runtime, tmp_path: Path
) -> None:
    url = pg_runtime.database_url.replace("postgres@", "postgres:s3cret-pass@")  # trust auth: any password works
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    result = run_xcore(
        "db", "backup", "--data-dir", str(pg_runtime.data.root), env={"DATABASE_URL": url, "PATH": str(empty_path)}
    )
    assert result.returncode != 0
    assert "pg_dump is not installed here" in result.stderr and "postgresql-client" in result.stderr
    assert "pg_dump --format=custom" in result.stderr, result.stderr
    assert "s3cret-pass" not in result.stderr + result.stdout, "the password is never shown"


def test_a_migration_is_refused_when_its_backup_cannot_be_made(pg_runtime: Runtime, tmp_path: Path) -> None:
    older = [rev for rev, _down, _doc in migrate.history()][1]
    pg_runtime.engine.dispose()
    assert xcore_on(pg_runtime, "db", "downgrade", older).returncode == 0
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    result = xcore_on(pg_runtime, "db", "upgrade", env={"PATH": str(empty_path)})
    assert result.returncode != 0
    assert "the database was not migrated" in result.stderr and "auto_backup_before_migration" in result.stderr
    assert revisions.current_revision(pg_runtime.engine) == older


def test_the_backups_api_on_postgresql(pg_api: Api) -> None:
    root = pg_api.login("root")
    made = pg_api.client.post("/api/admin/backups", headers=root)
    assert made.status_code == 201, made.text
    name = made.json()["name"]
    assert name.endswith("-manual.xcbackup") and made.json()["kind"] == "manual" and made.json()["complete"]
    listing = pg_api.client.get("/api/admin/backups", headers=root).json()
    assert [item["name"] for item in listing["items"]] == [name]
    assert listing["restore"]["supported"] is False
    assert "xcore db restore" in listing["restore"]["reason"] and "every node" in listing["restore"]["reason"]
    download = pg_api.client.get(f"/api/admin/backups/{name}", headers=root)
    assert download.status_code == 200 and download.content.startswith(b"\x1f\x8b")
    assert download.headers["content-type"] == "application/octet-stream"
    refused = pg_api.client.post(f"/api/admin/backups/{name}/restore", headers=root)
    assert refused.status_code == 409 and "xcore db restore" in refused.json()["detail"]


# --- values PostgreSQL refuses where SQLite takes them ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/api/admin/users?q=%00", "NUL character"),
        ("/api/admin/audit?action=a%00b", "NUL character"),
        ("/api/admin/tasks/runs?name=x%00", "NUL character"),
        (f"/api/admin/users/{2**31}", "user_id"),
        (f"/api/admin/tasks/runs/{2**31}", "run_id"),
    ],
)
def test_a_value_postgresql_cannot_store_is_a_400_that_says_so(pg_api: Api, path: str, says: str) -> None:
    response = pg_api.client.get(path, headers=pg_api.login("root"))
    assert response.status_code == 400, response.text
    assert says in response.text


def test_a_text_longer_than_its_column_is_a_400_not_a_500(pg_api: Api) -> None:
    """SQLite stores a text of any length in a VARCHAR(n) column; PostgreSQL refuses it. Whatever input a bound
    did not catch before the database is the client's mistake there, not the server's."""
    with pg_api.runtime.engine.begin() as conn:
        width = conn.execute(
            text("SELECT character_maximum_length FROM information_schema.columns "
                 "WHERE table_name = 'audit_event' AND column_name = 'action'")
        ).scalar()  # fmt: skip
    assert isinstance(width, int)
    from xcore.web.problems import client_mistake

    try:
        with pg_api.runtime.engine.begin() as conn:
            insert = text("INSERT INTO audit_event (at, action, detail) VALUES (now(), :a, '{}')")
            conn.execute(insert, {"a": "x" * (width + 1)})
    except Exception as exc:  # the exception the error handler gets
        mistake = client_mistake(exc)
    else:
        raise AssertionError("PostgreSQL stored a text longer than its column")
    assert mistake is not None and mistake.status == 400 and "longer than the database takes" in mistake.detail


def test_health_names_the_database(pg_api: Api) -> None:
    body: dict[str, Any] = pg_api.client.get("/health").json()
    assert body["status"] == "ok" and body["database"]["backend"] == "postgresql", body["database"]
