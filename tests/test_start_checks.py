"""What `xcore serve`'s process reads before it starts the workers: with sqlite3 when nothing needs doing,
through SQLAlchemy (migrations, the built-in roles' sync) as soon as anything does.

Reading with sqlite3 is for a SQLite file only (tests marked `sqlite`); on PostgreSQL every start takes the full
path, which the other tests check there too."""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from conftest import CLEAN_ENV, database_env, fresh_python
from xcore.auth.builtin import BUILTIN_ROLES, PERMISSIONS, RANKS
from xcore.auth.permissions import register_plugin_permissions
from xcore.db import peek
from xcore.db.models import Role, User
from xcore.runtime import Runtime
from xcore.server import WORKER_TARGET, accounts_exist, announce_setup, prepare_database, up_to_date


def execute(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


def tamper(runtime: Runtime, statement: str) -> None:
    """tamper changes the core database past the application's code (SQLite or PostgreSQL; on SQLite the engine's
    connections enforce foreign keys, so deletes cascade as the schema says)."""
    with runtime.engine.begin() as connection:
        connection.execute(text(statement))


def permissions_in_db(runtime: Runtime) -> dict[str, str]:
    with runtime.engine.connect() as connection:
        return {
            name: description
            for name, description in connection.execute(text("SELECT name, description FROM permissions"))
        }


def builtin_roles_in_orm(runtime: Runtime) -> dict[str, tuple[bool, int, str, frozenset[str]]]:
    with runtime.auth.transaction() as session:
        roles = session.scalars(select(Role).where(Role.name.in_(list(BUILTIN_ROLES)))).all()
        return {r.name: (r.builtin, r.rank, r.description, frozenset(p.name for p in r.permissions)) for r in roles}


@pytest.mark.sqlite  # peek reads a SQLite file with sqlite3; PostgreSQL is never read so
def test_a_migrated_database_is_up_to_date_and_reads_as_the_orm_wrote_it(runtime: Runtime) -> None:
    db = runtime.database_file
    assert db is not None
    assert up_to_date(runtime)
    permissions, roles = peek.permissions_and_roles(db)
    assert permissions == PERMISSIONS
    assert {name: roles[name] for name in BUILTIN_ROLES} == builtin_roles_in_orm(runtime)
    assert roles["superadmin"] == (True, RANKS["superadmin"], BUILTIN_ROLES["superadmin"][0], frozenset(PERMISSIONS))


@pytest.mark.sqlite  # up_to_date is the sqlite3 read of a SQLite file; always False on PostgreSQL
def test_custom_roles_and_plugin_permissions_leave_it_up_to_date(runtime: Runtime) -> None:
    with runtime.auth.transaction() as session:
        register_plugin_permissions(session, "notes", ["notes.write"])
        session.add(Role(name="editors", description="custom", builtin=False, rank=10))
    assert up_to_date(runtime)


TAMPERINGS = {
    "a built-in role's description": "UPDATE roles SET description = 'changed' WHERE name = 'admin'",
    "a grant taken from a built-in role": (
        "DELETE FROM role_permissions WHERE role_id = (SELECT id FROM roles WHERE name = 'admin')"
        " AND permission_id = (SELECT id FROM permissions WHERE name = 'plugins.read')"
    ),
    "a grant added to a built-in role": (
        "INSERT INTO role_permissions (role_id, permission_id) SELECT r.id, p.id FROM roles r, permissions p"
        " WHERE r.name = 'admin' AND p.name = 'roles.manage'"
    ),
    # A database from before plugins.manage became a superadmin power: admins held it.
    "plugins.manage still granted to admin": (
        "INSERT INTO role_permissions (role_id, permission_id) SELECT r.id, p.id FROM roles r, permissions p"
        " WHERE r.name = 'admin' AND p.name = 'plugins.manage'"
    ),
    "a permission's description": "UPDATE permissions SET description = '' WHERE name = 'logs.read'",
    "a deleted permission": "DELETE FROM permissions WHERE name = 'audit.read'",
    "a built-in role's rank": "UPDATE roles SET rank = 1 WHERE name = 'user'",
    "a built-in role no longer marked built-in": "UPDATE roles SET builtin = false WHERE name = 'user'",
    "a deleted built-in role": "DELETE FROM roles WHERE name = 'superadmin'",
}


@pytest.mark.parametrize("change", list(TAMPERINGS), ids=list(TAMPERINGS))
def test_a_changed_built_in_role_or_permission_is_noticed_and_restored_at_start(runtime: Runtime, change: str) -> None:
    db = runtime.database_file  # None on PostgreSQL: never read with sqlite3, every start takes the full path
    expected = builtin_roles_in_orm(runtime)
    assert permissions_in_db(runtime) == PERMISSIONS
    tamper(runtime, TAMPERINGS[change])
    assert (builtin_roles_in_orm(runtime), permissions_in_db(runtime)) != (expected, PERMISSIONS)
    assert not up_to_date(runtime)
    prepare_database(runtime)
    assert up_to_date(runtime) is (db is not None)
    assert builtin_roles_in_orm(runtime) == expected
    assert permissions_in_db(runtime) == PERMISSIONS
    if db is not None:
        assert peek.permissions_and_roles(db)[0] == PERMISSIONS


@pytest.mark.sqlite  # the revision as peek reads it from a SQLite file with sqlite3
def test_a_database_at_another_revision_is_not_up_to_date(runtime: Runtime) -> None:
    db = runtime.database_file
    assert db is not None
    execute(db, "UPDATE alembic_version SET version_num = '0001'")
    assert peek.revision(db) == "0001"
    assert not up_to_date(runtime)
    execute(db, "DROP TABLE alembic_version")
    assert peek.revision(db) is None
    assert not up_to_date(runtime)


@pytest.mark.sqlite  # a missing or damaged SQLite file
def test_a_missing_or_damaged_database_file_takes_the_full_path(data_dir: Path) -> None:
    from xcore.runtime import open_runtime

    runtime = open_runtime(data_dir, environ={}, logs=False)
    db = runtime.database_file
    assert db is not None and not db.exists()
    assert not up_to_date(runtime)
    assert not db.exists(), "reading must not create the file"
    db.write_bytes(b"this is not a database" * 100)
    assert not up_to_date(runtime)
    with pytest.raises(sqlite3.DatabaseError):
        peek.revision(db)


def test_the_setup_token_follows_whether_an_account_exists(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = runtime.data.root / "setup-token"
    assert not accounts_exist(runtime)
    token = announce_setup(runtime, "http://127.0.0.1:8000")
    assert token and token_file.read_text().strip() == token
    assert f"/admin/setup?token={token}" in capsys.readouterr().out
    with runtime.auth.transaction() as session:
        session.add(User(username="owner", password_hash="not-a-real-hash"))
    assert accounts_exist(runtime)
    assert announce_setup(runtime, "http://127.0.0.1:8000") is None
    assert not token_file.exists()


def test_the_first_run_hint_is_a_command_that_works_without_xcore_on_the_path(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python3 tasks.py run` serves from .venv, which is not on the user's PATH: the hint names this xcore and
    this data directory by their paths, so it works as printed from any folder and shell."""
    announce_setup(runtime, "http://127.0.0.1:8000")
    printed = capsys.readouterr().out
    command = printed.split("or run `", 1)[1].split("`", 1)[0]
    assert shlex.split(command)[0] == sys.executable and f"--data-dir {runtime.data.root}" in command
    bare = {**CLEAN_ENV, **database_env(shlex.split(command)), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["/bin/sh", "-c", command.replace(" NAME ", " owner ") + " --password-stdin"],
        input="Tq7-vL2!pR9z-kW4\n",
        cwd="/",
        env=bare,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert accounts_exist(runtime)


def test_a_sqlite_url_in_the_settings_is_read_the_same_way(data_dir: Path, tmp_path: Path) -> None:
    from xcore.runtime import open_runtime

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__DATA__URL": url}, logs=False)
    assert runtime.database_file == tmp_path / "elsewhere.db"
    assert not up_to_date(runtime)
    prepare_database(runtime)
    assert up_to_date(runtime)
    runtime.close()


def test_another_database_always_takes_the_full_path(data_dir: Path) -> None:
    from xcore.runtime import open_runtime

    url = "postgresql://xcore@127.0.0.1:1/xcore"
    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__DATA__URL": url}, logs=False)
    assert runtime.database_file is None
    assert not up_to_date(runtime), "only a SQLite file is read with sqlite3"


@pytest.mark.parametrize(("workers", "preloaded"), [(1, False), (2, True), (4, True)])
def test_the_web_stack_is_imported_before_the_fork_only_for_several_workers(workers: int, preloaded: bool) -> None:
    probe = (
        f"import sys; from xcore.server import preload_for_workers; preload_for_workers({workers}); "
        f"print({WORKER_TARGET.partition(':')[0]!r} in sys.modules, 'litestar' in sys.modules, "
        "'sqlalchemy.orm' in sys.modules)"
    )
    assert fresh_python(probe).split() == [str(preloaded)] * 3


@pytest.mark.sqlite  # the working copies beside the SQLite file, and a backup of that file
def test_a_start_deletes_what_interrupted_restores_migrations_and_backups_left(runtime: Runtime) -> None:
    from xcore.db.backup import make_backup
    from xcore.server import serving_database

    db = runtime.database_file
    assert db is not None
    kept = make_backup(db, runtime.backups_dir, "0005", 10, kind="manual")
    left = [
        db.with_name(f"xcore.db{suffix}")
        for suffix in (".restoring", ".restoring-journal", ".restoring.migrating", ".migrating", ".migrating-wal")
    ]
    left.append(runtime.backups_dir / ".xcore-backup-k2j4h1.partial")
    for path in left:
        path.write_bytes(b"half written")
    runtime.engine.dispose()
    before = db.read_bytes()

    with serving_database(runtime):
        assert [p.name for p in left if p.exists()] == []
    assert db.read_bytes() == before and kept.is_file(), "the database and the finished backups stay"
    assert any("left by an interrupted restore or migration" in line for line in runtime_log(runtime))


def runtime_log(runtime: Runtime) -> list[str]:
    log_file = runtime.log_file
    return log_file.read_text().splitlines() if log_file is not None and log_file.exists() else []
