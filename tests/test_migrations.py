"""Migrations: applied at startup after a backup, never half-applied, and the db commands around them.

On either backend of the suite (tests/conftest.py: XCORE_TEST_DATABASE): on SQLite a migration runs on a working copy
of the file, which replaces it only when it succeeded; on PostgreSQL it runs in one transaction after a pg_dump
backup. Tests marked `sqlite` check the SQLite file itself.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from conftest import copy_data_dir, core_database_url, create_account, free_port, fresh_python, run_xcore
from xcore.config.schema import BackupConfig
from xcore.db import migrate, revisions
from xcore.db.backup import BACKUP_NAME, backup_revision, backup_source, list_backups, make_backup
from xcore.db.engine import make_engine, mask_url
from xcore.db.models import Base
from xcore.db.pgdump import dump_tables
from xcore.db.serving import ServingLock
from xcore.errors import DatabaseError, MigrationError
from xcore.resources import resource_path
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database

FAILING_REVISION = '''
"""a migration that breaks halfway"""
import sqlalchemy as sa
from alembic import op

revision = "0999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO audit_event (at, action, detail) VALUES ('2026-01-01', 'half', '{{}}')")
    raise RuntimeError("boom in the middle")


def downgrade():
    pass
'''

EXTRA_REVISION = '''
"""adds a table"""
import sqlalchemy as sa
from alembic import op

revision = "0998"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("extra", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("extra")
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_tables(db: Path) -> set[str]:
    """sqlite_tables are the tables of a SQLite file (a backup, say), read with sqlite3."""
    with closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def tables(runtime: Runtime) -> set[str]:
    """tables are the tables of the runtime's core database, on either backend."""
    try:
        return set(inspect(runtime.engine).get_table_names())
    finally:
        runtime.engine.dispose()  # SQLite: a migration replaces the file, so the next read must open it anew


def revision(runtime: Runtime) -> str | None:
    """revision is the revision the runtime's core database is at, read anew."""
    try:
        return migrate.current_revision(runtime.engine)
    finally:
        runtime.engine.dispose()


def rows(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    """rows are the rows `sql` reads from the runtime's core database, sorted."""
    try:
        with runtime.engine.connect() as conn:
            return sorted(tuple(row) for row in conn.execute(text(sql)))
    finally:
        runtime.engine.dispose()


def execute(runtime: Runtime, sql: str) -> None:
    """execute runs one statement on the runtime's core database and commits it."""
    try:
        with runtime.engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        runtime.engine.dispose()


def contents(runtime: Runtime) -> dict[str, tuple[list[str], list[str]]]:
    """contents is every table of the runtime's core database: its columns, and its rows (as text, sorted). Where
    the SQLite file is compared byte for byte, a PostgreSQL database is compared by this."""
    inspector = inspect(runtime.engine)
    try:
        with runtime.engine.connect() as conn:
            return {
                name: (
                    [column["name"] for column in inspector.get_columns(name)],
                    sorted(repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{name}"'))),
                )
                for name in inspector.get_table_names()
            }
    finally:
        runtime.engine.dispose()


def shown(runtime: Runtime) -> str:
    """shown is how the db commands name the runtime's core database: its file, or its URL without the password."""
    return str(runtime.database_file) if runtime.database_file is not None else mask_url(runtime.database_url)


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    """runtime: a Runtime whose new database was migrated here, by the real migrations (not a copy of the migrated
    template, as conftest's `runtime` is)."""
    rt = open_runtime(data_dir, environ={})
    prepare_database(rt)
    yield rt
    rt.close()


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """A copy of the shipped migrations, to which a test can add revisions."""
    target = tmp_path / "migrations"
    shutil.copytree(resource_path("migrations"), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def add_revision(scripts: Path, template: str, name: str) -> None:
    head = migrate.head_revision(scripts)
    (scripts / "versions" / f"{name}.py").write_text(template.format(head=head))


def test_fresh_database_is_migrated_to_head(runtime: Runtime) -> None:
    assert {"plugin_state", "setting_override", "audit_event", "alembic_version"} <= tables(runtime)
    assert revision(runtime) == migrate.head_revision()
    assert list_backups(runtime.backups_dir) == [], "an empty new database needs no backup"
    if runtime.database_file is None:  # the PRAGMAs are SQLite's
        return
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


@pytest.mark.sqlite  # the template file tests copy; PostgreSQL's template database is made by the same first start
def test_the_tests_template_database_is_what_a_first_start_makes(runtime: Runtime, tmp_path: Path) -> None:
    """Most tests start from a copy of a database migrated once per test process (conftest's
    `prepare_from_template`): it must be the database a real first start makes."""
    from conftest import prepare_from_template

    copy = open_runtime(tmp_path / "copy", environ={}, logs=False)
    prepare_from_template(copy)
    assert revisions.current_revision(copy.engine) == migrate.head_revision()
    copy.close()
    assert copy.database_file is not None and runtime.database_file is not None
    assert copy.database_file.stat().st_mode & 0o777 == 0o600

    def file_contents(db: Path) -> tuple[list[Any], dict[str, int]]:
        with closing(sqlite3.connect(db)) as conn:
            schema = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
            counts = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in sqlite_tables(db)}
            return schema, counts

    assert file_contents(copy.database_file) == file_contents(runtime.database_file)


def test_models_and_migrations_agree(runtime: Runtime) -> None:
    with runtime.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models.py and migrations/versions disagree: {diff}"


def test_pending_migration_takes_a_named_backup_first(runtime: Runtime, scripts: Path) -> None:
    add_revision(scripts, EXTRA_REVISION, "0998_extra")
    db = runtime.database_file
    runtime.engine.dispose()
    result = migrate.upgrade(runtime.database_url, runtime.backups_dir, BackupConfig(), script_location=scripts)
    head = migrate.head_revision()
    assert (result.before, result.after) == (head, "0998")
    assert result.backup is not None
    assert list_backups(runtime.backups_dir) == [result.backup]
    match = BACKUP_NAME.match(result.backup.name)
    assert match and match.group(2) == head and match.group(3) == "migration", result.backup.name
    assert backup_revision(result.backup) == head
    if db is None:  # PostgreSQL: a pg_dump archive, taken before the migration changed the database in place
        assert result.backup.suffix == ".dump"
        in_backup = dump_tables(result.backup)
        assert "audit_event" in in_backup
        assert "extra" not in in_backup, "the backup holds the database as it was before"
    else:
        assert result.backup.suffix == ".db"
        assert "extra" not in sqlite_tables(result.backup), "the backup holds the database as it was before"
        assert not list(db.parent.glob("*.migrating*"))
        assert not list(runtime.backups_dir.glob("*-wal")), "a backup is a single self-contained file"
    assert "extra" in tables(runtime)
    assert revision(runtime) == "0998"


def test_failed_migration_leaves_the_database_byte_for_byte(runtime: Runtime, scripts: Path) -> None:
    add_revision(scripts, FAILING_REVISION, "0999_fails")
    db = runtime.database_file
    execute(runtime, "INSERT INTO audit_event (at, action, detail) VALUES ('2026-01-01', 'before', '{}')")
    before = sha256(db) if db is not None else contents(runtime)  # PostgreSQL: the same tables and rows
    with pytest.raises(MigrationError) as caught:
        migrate.upgrade(runtime.database_url, runtime.backups_dir, BackupConfig(), script_location=scripts)
    message = str(caught.value)
    assert "boom in the middle" in message
    assert "left exactly as it was" in message
    assert "backup is kept at" in message
    if db is None:
        assert contents(runtime) == before
    else:
        assert sha256(db) == before
        assert not list(db.parent.glob("*.migrating*"))
    assert "half_done" not in tables(runtime)
    assert rows(runtime, "SELECT action FROM audit_event WHERE action = 'half'") == []
    kept = list_backups(runtime.backups_dir)
    assert len(kept) == 1
    assert str(kept[0]) in message
    assert backup_revision(kept[0]) == migrate.head_revision()


def test_only_the_newest_backups_are_kept(runtime: Runtime) -> None:
    source = backup_source(runtime.database_url, runtime.database_file)
    assert source is not None
    made = [make_backup(source, runtime.backups_dir, f"r{i}", keep=3) for i in range(5)]
    kept = list_backups(runtime.backups_dir)
    assert kept == made[-3:]
    assert all(p.stat().st_size > 0 for p in kept)
    assert [backup_revision(p) for p in kept] == [migrate.head_revision()] * 3


def test_downgrade_and_upgrade_again(runtime: Runtime) -> None:
    runtime.engine.dispose()
    down = migrate.downgrade(runtime.database_url, runtime.backups_dir, BackupConfig(), "base")
    assert (down.before, down.after) == (migrate.head_revision(), None)
    assert down.backup is not None
    assert backup_revision(down.backup) == migrate.head_revision()
    assert "plugin_state" not in tables(runtime)
    assert revision(runtime) is None
    up = migrate.upgrade(runtime.database_url, runtime.backups_dir, BackupConfig())
    assert up.after == migrate.head_revision()
    assert {"plugin_state", "users", "roles"} <= tables(runtime)
    assert revision(runtime) == migrate.head_revision()


def test_stepping_down_and_up_through_every_revision_loses_no_row_of_another_table(runtime: Runtime) -> None:
    """A batch operation rebuilds its table; with foreign keys on, dropping the old copy cascaded to the rows
    pointing at it (rebuilding `roles` emptied `user_roles`, so an account lost its roles)."""
    create_account(runtime, "root", ["superadmin"])
    runtime.engine.dispose()
    assigned = (
        "SELECT u.username, r.name FROM user_roles ur"
        " JOIN users u ON u.id = ur.user_id JOIN roles r ON r.id = ur.role_id"
    )
    before = rows(runtime, assigned)
    assert ("root", "superadmin") in before
    since_accounts = [rev for rev, _down, _doc in migrate.history() if rev >= "0002"]  # newest first
    for target in since_accounts[1:]:  # down one revision at a time, to the one that made the accounts
        migrate.downgrade(runtime.database_url, runtime.backups_dir, BackupConfig(), target)
        assert revision(runtime) == target
        assert rows(runtime, assigned) == before, f"down to {target}"
    migrate.upgrade(runtime.database_url, runtime.backups_dir, BackupConfig())
    assert revision(runtime) == migrate.head_revision()
    assert rows(runtime, assigned) == before


def test_unknown_revision_is_a_clear_error(runtime: Runtime) -> None:
    with pytest.raises(MigrationError, match="unknown revision 'nope'"):
        migrate.downgrade(runtime.database_url, runtime.backups_dir, BackupConfig(), "nope")
    assert list_backups(runtime.backups_dir) == [], "nothing was migrated, so nothing was backed up"


def test_a_held_server_lock_refuses_replacing_commands(runtime: Runtime) -> None:
    def lock() -> ServingLock:
        return ServingLock(runtime.database_url, runtime.database_file)

    server = lock()
    assert server.serve()
    try:
        with pytest.raises(DatabaseError, match="a server is running against") as refused, lock().exclusive("restore"):
            pass
        assert f"cannot restore: a server is running against {shown(runtime)}" in str(refused.value)
        other = lock()
        if runtime.database_file is None:  # PostgreSQL: several nodes serve one database together
            assert other.serve(), "a second node could not serve beside the first"
            other.release()
        else:  # SQLite: one server per file
            assert not other.serve(), "a second server took the lock of the first"
    finally:
        server.release()
    with lock().exclusive("restore"):
        assert not lock().serve(), "a server started while a command held the database alone"
    with lock().exclusive("restore"):  # released at the end of the command: taken again
        pass


def test_startup_migration_failure_is_reported_and_harmless(runtime: Runtime, scripts: Path, monkeypatch) -> None:
    from xcore.server import prepare_database

    add_revision(scripts, FAILING_REVISION, "0999_fails")
    monkeypatch.setattr(migrate, "resource_path", lambda name: scripts if name == "migrations" else resource_path(name))
    monkeypatch.setattr(revisions, "_shipped_here", lambda: revisions.shipped(scripts))
    db = runtime.database_file
    runtime.engine.dispose()
    before = sha256(db) if db is not None else contents(runtime)  # PostgreSQL: the same tables and rows
    with pytest.raises(MigrationError, match="left exactly as it was"):
        prepare_database(runtime)
    if db is None:
        assert contents(runtime) == before
    else:
        assert sha256(db) == before


def test_auto_upgrade_off_refuses_to_start_on_an_old_database(data_dir: Path) -> None:
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database

    rt = open_runtime(data_dir, environ={"XCORE_MIGRATION__AUTO_UPGRADE": "false"}, logs=False)
    try:
        with pytest.raises(DatabaseError, match="run `xcore db upgrade`"):
            prepare_database(rt)
        assert revision(rt) is None, "nothing was migrated"
    finally:
        rt.close()


def test_db_commands_end_to_end(data_dir: Path) -> None:
    d = ("--data-dir", str(data_dir))
    up = run_xcore("db", "upgrade", *d)
    assert up.returncode == 0, up.stderr
    head = migrate.head_revision()
    assert f"upgraded the database: base -> {head}" in up.stdout
    assert "nothing to do" in run_xcore("db", "upgrade", *d).stdout
    current = run_xcore("db", "current", *d)
    assert current.stdout.startswith(f"{head} (up to date)")
    history = run_xcore("db", "history", *d)
    assert "0001  (from base)  core tables" in history.stdout
    assert "0002  (from 0001)  accounts" in history.stdout
    newest = history.stdout.splitlines()[0]
    assert newest.startswith(f"{head}  (from ") and newest.endswith("<- current"), newest

    rt = open_runtime(data_dir, environ={}, logs=False)  # the database the commands use, on either backend
    execute(rt, "INSERT INTO audit_event (at, action, detail) VALUES ('2026-01-01', 'kept', '{}')")
    backup = run_xcore("db", "backup", *d)
    assert backup.returncode == 0, backup.stderr
    backup_file = Path(backup.stdout.strip().split(": ", 1)[1])
    assert backup_file.is_file() and BACKUP_NAME.match(backup_file.name)
    assert backup_file.suffix == ".xcbackup"  # a complete backup (tests/test_archive.py)
    assert backup_revision(backup_file) == head
    alone = run_xcore("db", "backup", "--database-only", *d)
    assert alone.returncode == 0, alone.stderr
    alone_file = Path(alone.stdout.strip().split(": ", 1)[1])
    assert alone_file.suffix == (".dump" if rt.database_file is None else ".db")  # PostgreSQL: pg_dump's archive
    assert backup_revision(alone_file) == head

    for restored in (backup_file, alone_file):
        execute(rt, "DELETE FROM audit_event")
        restore = run_xcore("db", "restore", str(restored), *d)
        assert restore.returncode == 0, restore.stderr
        assert "was backed up first" in restore.stdout
        assert f"restored {shown(rt)} from {restored}" in restore.stdout
        assert rows(rt, "SELECT action FROM audit_event") == [("kept",)]

    down = run_xcore("db", "downgrade", "base", *d)
    assert down.returncode == 0 and "base" in down.stdout, down.stderr
    assert revision(rt) is None
    rt.close()


def test_restoring_the_oldest_backup_keeps_it_when_the_safety_backup_prunes(data_dir: Path) -> None:
    # With max_backup_files backups already there, the safety backup a restore takes first prunes the oldest
    # one: it must not be the backup being restored (it was, and the restore then failed with its file gone).
    d = ("--data-dir", str(data_dir))
    env = {"XCORE_MIGRATION__BACKUP__MAX_BACKUP_FILES": "1"}
    assert run_xcore("db", "upgrade", *d, env=env).returncode == 0
    backup = run_xcore("db", "backup", *d, env=env)
    assert backup.returncode == 0, backup.stderr
    backup_file = Path(backup.stdout.strip().split(": ", 1)[1])

    restore = run_xcore("db", "restore", str(backup_file), *d, env=env)
    assert restore.returncode == 0, restore.stderr
    assert backup_file.is_file(), "the restored backup was deleted"
    rt = open_runtime(data_dir, environ={}, logs=False)
    assert f"restored {shown(rt)} from {backup_file}" in restore.stdout
    if rt.database_file is not None:
        assert rt.database_file == data_dir / "xcore.db"


def _zip(path: Path, good: Path) -> None:
    path.write_bytes(b"PK\x03\x04 a zip, not a database" * 50)


def _foreign_sqlite(path: Path, good: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")


def _foreign_alembic(path: Path, good: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE alembic_version (version_num TEXT); INSERT INTO alembic_version VALUES ('0002')"
        )


def _newer(path: Path, good: Path) -> None:
    shutil.copyfile(good, path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")


def _truncated(path: Path, good: Path) -> None:
    path.write_bytes(good.read_bytes()[:4096])


def _empty(path: Path, good: Path) -> None:
    path.write_bytes(b"")


# Files that are not an intact xcore database: (make(path, good backup), what the one-line refusal says). Also
# used by test_backup_api for the restore API.
NOT_XCORE_DATABASES = [
    pytest.param(_zip, "is not a SQLite database", id="zip"),
    pytest.param(_foreign_sqlite, "is not an xcore database", id="another-apps-sqlite"),
    pytest.param(_foreign_alembic, "is not an xcore database", id="another-apps-alembic"),
    pytest.param(_newer, "a newer xcore made it", id="newer-xcore"),
    pytest.param(_truncated, "backup file", id="truncated"),
    pytest.param(_empty, "is not a SQLite database", id="empty"),
]


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """upgraded: a data directory that `xcore db upgrade` made, and the path in it of a good backup of its
    database, which `xcore db backup --database-only` made. A test works on a copy (`copy_data_dir`)."""
    data_dir = tmp_path_factory.mktemp("upgraded") / "data"
    d = ("--data-dir", str(data_dir))
    assert run_xcore("db", "upgrade", *d).returncode == 0
    backup = run_xcore("db", "backup", "--database-only", *d)
    assert backup.returncode == 0, backup.stderr
    return data_dir, Path(backup.stdout.strip().split(": ", 1)[1]).relative_to(data_dir)


@pytest.mark.sqlite  # the refusals of bad SQLite backups; PostgreSQL's of bad dumps are tested below
@pytest.mark.parametrize(("make", "says"), NOT_XCORE_DATABASES)
def test_restore_refuses_a_file_that_is_not_an_xcore_database_in_one_line(
    upgraded: tuple[Path, Path], data_dir: Path, tmp_path: Path, make: Any, says: str
) -> None:
    d = ("--data-dir", str(data_dir))
    copy_data_dir(upgraded[0], data_dir)
    good = data_dir / upgraded[1]
    db = data_dir / "xcore.db"
    before = sha256(db)
    candidate = tmp_path / "candidate.db"
    make(candidate, good)

    result = run_xcore("db", "restore", str(candidate), *d)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xcore: error: ") and says in lines[0], result.stderr
    assert "candidate.db" in lines[0]
    assert sha256(db) == before, "the database was not touched"
    assert run_xcore("db", "current", *d).stdout.startswith(f"{migrate.head_revision()} (up to date)")


@pytest.mark.sqlite  # the SQLite restore path: a .db file that is not a SQLite database
def test_restore_rejects_a_file_that_is_not_a_database(data_dir: Path, tmp_path: Path) -> None:
    run_xcore("db", "upgrade", "--data-dir", str(data_dir))
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    result = run_xcore("db", "restore", str(junk), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert result.stderr.strip() == f"xcore: error: backup file {junk}: is not a SQLite database"
    missing = run_xcore("db", "restore", str(tmp_path / "none.db"), "--data-dir", str(data_dir))
    assert "does not exist" in missing.stderr


def test_restore_refuses_while_a_server_runs(start_server, tmp_path: Path) -> None:
    server = start_server()
    server.wait_ready()
    backup = run_xcore("db", "backup", "--data-dir", str(server.data_dir))
    assert backup.returncode == 0, backup.stderr
    backup_file = backup.stdout.strip().split(": ", 1)[1]
    result = run_xcore("db", "restore", backup_file, "--data-dir", str(server.data_dir))
    assert result.returncode == 1
    assert "cannot restore the database: a server is running against" in result.stderr
    assert server.stop() == 0


def test_database_from_a_newer_xcore_is_refused_clearly(data_dir: Path) -> None:
    assert run_xcore("db", "upgrade", "--data-dir", str(data_dir)).returncode == 0
    rt = open_runtime(data_dir, environ={}, logs=False)
    execute(rt, "UPDATE alembic_version SET version_num = '9999_future'")
    for command in (["db", "upgrade"], ["serve", "--port", str(free_port())]):
        result = run_xcore(*command, "--data-dir", str(data_dir))
        assert result.returncode == 1, result
        assert "is at revision '9999_future', which this xcore" in result.stderr
        assert "a newer xcore migrated it" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_revisions_read_without_alembic_match_alembics(runtime: Runtime, scripts: Path) -> None:
    add_revision(scripts, EXTRA_REVISION, "0099_extra")
    for location in (None, scripts):
        script = migrate.script_directory(location)
        graph = {r.revision: tuple(r._normalized_down_revisions) for r in script.walk_revisions()}
        assert revisions.shipped(location) == graph
        assert revisions.head_revision(location) == script.get_current_head()
    with runtime.engine.connect() as connection:
        assert (
            revisions.current_revision(runtime.engine) == MigrationContext.configure(connection).get_current_revision()
        )
    empty = make_engine(f"sqlite:///{runtime.data.root / 'empty.db'}")
    assert revisions.current_revision(empty) is None
    empty.dispose()
    if runtime.database_file is None:  # and an empty PostgreSQL database
        empty = make_engine(core_database_url(runtime.data.root.parent / "empty"))
        assert revisions.current_revision(empty) is None
        empty.dispose()


# Two unusual but valid scripts: the assignments below a function, and a docstring with a line that starts like
# a function, which cuts the top of the file in the middle of a string. Both are read as Alembic reads them.
LATE_ASSIGNMENTS = """
from alembic import op


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    pass


revision = "0997"
down_revision = "{head}"
"""
DOCSTRING_WITH_DEF = '''"""changes nothing, but says
def upgrade(): in its docstring
"""
revision = "0998"
down_revision = "0997"


def upgrade():
    pass


def downgrade():
    pass
'''


def test_the_revisions_are_read_from_scripts_of_any_layout(scripts: Path) -> None:
    add_revision(scripts, LATE_ASSIGNMENTS, "0997_late")
    add_revision(scripts, DOCSTRING_WITH_DEF, "0998_docstring")
    script = migrate.script_directory(scripts)
    graph = {r.revision: tuple(r._normalized_down_revisions) for r in script.walk_revisions()}
    assert {"0997", "0998"} <= graph.keys()
    assert revisions.shipped(scripts) == graph
    assert revisions.head_revision(scripts) == script.get_current_head() == "0998"


@pytest.mark.sqlite  # the start that reads the SQLite file with sqlite3; any other database needs SQLAlchemy
def test_a_start_with_nothing_to_migrate_imports_neither_alembic_nor_sqlalchemy(runtime: Runtime) -> None:
    """Alembic costs about a third of a second at every start, SQLAlchemy a quarter: the server process imports
    them only when there is work for them; otherwise it reads a few rows with sqlite3 (`xcore.db.peek`)."""
    probe = (
        "import sys; from xcore.runtime import open_runtime; from xcore.server import announce_setup, "
        f"prepare_database; rt = open_runtime({str(runtime.data.root)!r}); prepare_database(rt); "
        "token = announce_setup(rt, 'http://127.0.0.1:1'); "
        "print(bool(token), sorted(m for m in sys.modules if m.startswith(('alembic', 'sqlalchemy'))))"
    )
    output = fresh_python(probe)
    assert "First run: no account exists yet" in output
    assert output.strip().endswith("True []"), output
