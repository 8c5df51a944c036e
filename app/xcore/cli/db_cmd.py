"""`xcore db upgrade | downgrade REV | current | history | backup | restore FILE`."""

from __future__ import annotations

from pathlib import Path

import click

from xcore.cli.options import data_dir_option
from xcore.cli.output import echo
from xcore.errors import DatabaseError
from xcore.runtime import Runtime, open_runtime

# Alembic and SQLAlchemy load when a db command runs, not for every `xcore` invocation.


def _database(runtime: Runtime, action: str) -> Path | str:
    """_database is the SQLite file of the core database, or the URL of a PostgreSQL one; DatabaseError else."""
    from xcore.db.backup import backup_source
    from xcore.db.engine import mask_url

    source = backup_source(runtime.database_url, runtime.database_file)
    if source is not None:
        return source
    raise DatabaseError(
        f"{action} works on SQLite and PostgreSQL; {mask_url(runtime.database_url)} is another database "
        "(use its own tools)"
    )


@click.group()
def db() -> None:
    """Migrate, inspect, back up and restore the core database."""


def _migrate_command(runtime: Runtime, direction: str, target: str) -> None:
    from xcore.db import migrate
    from xcore.db.serving import ServingLock

    run = migrate.upgrade if direction == "upgrade" else migrate.downgrade
    with ServingLock(runtime.database_url, runtime.database_file).exclusive(f"{direction} the database"):
        result = run(runtime.database_url, runtime.backups_dir, runtime.config.migration.backup, target)
    if not result.changed:
        echo(f"nothing to do: the database is at {result.before or 'base'}")
        return
    echo(f"{direction}d the database: {result.before or 'base'} -> {result.after or 'base'}")
    if result.backup:
        echo(f"backup taken first: {result.backup}")


@db.command()
@click.argument("revision", default="heads")
@data_dir_option
def upgrade(revision: str, data_dir: str | None) -> None:
    """Apply migrations up to REVISION (default: the newest). SQLite is backed up first."""
    _migrate_command(open_runtime(data_dir), "upgrade", revision)


@db.command()
@click.argument("revision")
@data_dir_option
def downgrade(revision: str, data_dir: str | None) -> None:
    """Revert migrations down to REVISION (`base` reverts all). SQLite is backed up first."""
    _migrate_command(open_runtime(data_dir), "downgrade", revision)


@db.command()
@data_dir_option
def current(data_dir: str | None) -> None:
    """Print the database's revision and whether it is the newest."""
    from xcore.db import migrate
    from xcore.db.engine import mask_url

    runtime = open_runtime(data_dir, logs=False)
    revision = migrate.current_revision(runtime.engine)
    head = migrate.head_revision()
    state = "up to date" if revision == head else f"behind {head}: run `xcore db upgrade`"
    echo(f"{revision or 'base'} ({state})  {mask_url(runtime.database_url)}")


@db.command()
@data_dir_option
def history(data_dir: str | None) -> None:
    """List the migrations, newest first, marking the database's revision."""
    from xcore.db import migrate

    runtime = open_runtime(data_dir, logs=False)
    revision = migrate.current_revision(runtime.engine)
    for rev, down, message in migrate.history():
        mark = "  <- current" if rev == revision else ""
        echo(f"{rev}  (from {down or 'base'})  {message.splitlines()[0] if message else ''}{mark}")


@db.command()
@data_dir_option
def backup(data_dir: str | None) -> None:
    """Back up the database now, safely while servers run: SQLite with its online backup API, PostgreSQL with
    pg_dump (from the PostgreSQL client)."""
    from xcore.db import migrate
    from xcore.db.backup import make_backup

    runtime = open_runtime(data_dir)
    source = _database(runtime, "backup")
    if isinstance(source, Path) and not source.exists():
        raise DatabaseError(f"there is no database yet at {source}")
    revision = migrate.current_revision(runtime.engine)
    keep = runtime.config.migration.backup.max_backup_files
    path = make_backup(source, runtime.backups_dir, revision, keep, kind="manual")
    echo(f"backup written: {path}")


@db.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
def restore(file: Path, data_dir: str | None) -> None:
    """Replace the database with the backup FILE. Refused while a server runs (on PostgreSQL: any node); the
    current data is backed up first.

    FILE must be an xcore database (a file `xcore db backup` wrote: .db for SQLite, .dump for PostgreSQL); an
    older one is migrated. On SQLite, revocations, lockouts and audit events recorded since it was made are kept;
    on PostgreSQL every session ends instead (see `xcore.db.restore`)."""
    from xcore.auth.permissions import sync_builtin
    from xcore.db.engine import mask_url
    from xcore.db.restore import restore_live, restore_postgres
    from xcore.db.serving import ServingLock

    runtime = open_runtime(data_dir)
    target = _database(runtime, "restore")
    if not file.is_file():
        raise DatabaseError(f"backup file {file}: does not exist")
    keep = runtime.config.migration.backup.max_backup_files
    with ServingLock(runtime.database_url, runtime.database_file).exclusive("restore the database"):
        if isinstance(target, Path):
            # No account in FILE is allowed here: the next start then asks for the owner account again.
            done = restore_live(target, file, runtime.backups_dir, keep, prepare=sync_builtin, require_accounts=False)
        else:
            done = restore_postgres(target, file, runtime.backups_dir, keep, prepare=sync_builtin)
    if done.safety is not None:
        echo(f"the current database was backed up first: {done.safety}")
    if done.migrated_to:
        echo(f"{file.name} was made by an older xcore: migrated {done.revision} -> {done.migrated_to}")
    shown = target if isinstance(target, Path) else mask_url(target)
    echo(f"restored {shown} from {file}" + ("" if isinstance(target, Path) else "; every session has ended"))
