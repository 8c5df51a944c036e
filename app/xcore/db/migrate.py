"""Alembic migrations of the core database, run programmatically, with a backup first on SQLite.

On SQLite a migration never touches the live file until it has succeeded:

1. the WAL is checkpointed, and a backup is written with the online backup API to
   `<data>/backups/xcore-<UTC time>-<revision>.db` (the newest `migration.backup.max_backup_files` are kept);
2. the migrations run on a working copy made from that backup;
3. only when they all succeed does the working copy replace the database file (an atomic rename).

So a failed migration leaves the database exactly as it was, byte for byte, and the error says so. (Copying
the backup back over the file would restore the data but not the bytes: SQLite's backup API writes its own
header counters.) Other databases (PostgreSQL) migrate in place inside one transaction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from xcore import __version__
from xcore.config.schema import BackupConfig
from xcore.db import revisions
from xcore.db.backup import checkpoint, copy_database, is_empty, make_backup
from xcore.db.engine import make_engine, mask_url, sqlite_path
from xcore.db.revisions import current_revision, head_revision
from xcore.db.serving import is_postgres
from xcore.errors import DatabaseError, MigrationError
from xcore.resources import resource_path

__all__ = ["current_revision", "downgrade", "head_revision", "history", "pending_revisions", "upgrade"]

log = logging.getLogger("xcore.db")


@dataclass(frozen=True)
class MigrationResult:
    """MigrationResult tells what an upgrade or downgrade did."""

    before: str | None
    after: str | None
    backup: Path | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(url: str, script_location: Path | None = None) -> Config:
    """alembic_config points Alembic at xcore's migrations and at `url` (kept out of the ini parser)."""
    config = Config()
    config.set_main_option("script_location", str(script_location or resource_path("migrations")))
    config.attributes["url"] = url
    return config


def script_directory(script_location: Path | None = None) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://", script_location))


def pending_revisions(url: str, script_location: Path | None = None) -> list[str]:
    """pending_revisions lists the revisions `upgrade` would apply, oldest first."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    if current is not None and current == revisions.head_revision(script_location):
        return []
    script = script_directory(script_location)
    _check_known(script, current, url)
    return [s.revision for s in reversed(list(script.iterate_revisions("heads", current)))]


def _check_known(script: ScriptDirectory, revision: str | None, url: str) -> None:
    """A database stamped with a revision this xcore does not ship was migrated by a newer xcore."""
    if revision is None:
        return
    try:
        known = script.get_revision(revision) is not None
    except Exception:
        known = False
    if not known:
        raise MigrationError(
            f"the database {mask_url(url)} is at revision {revision!r}, which this xcore {__version__} does not "
            "know: a newer xcore migrated it. Run that version, or restore a backup made before "
            "(`xcore db restore FILE`)"
        )


def upgrade(
    url: str,
    backups: Path,
    backup: BackupConfig,
    target: str = "heads",
    script_location: Path | None = None,
) -> MigrationResult:
    """upgrade applies migrations up to `target`. Raises MigrationError, saying what state the database is in."""
    return _migrate(url, backups, backup, target, "upgrade", script_location)


def downgrade(
    url: str, backups: Path, backup: BackupConfig, target: str, script_location: Path | None = None
) -> MigrationResult:
    """downgrade reverts migrations down to `target` (a revision, or `base`), with the same safety as upgrade."""
    return _migrate(url, backups, backup, target, "downgrade", script_location)


def _migrate(
    url: str,
    backups: Path,
    backup: BackupConfig,
    target: str,
    direction: str,
    script_location: Path | None,
) -> MigrationResult:
    engine = make_engine(url)
    try:
        before = current_revision(engine)
    except Exception as exc:
        raise MigrationError(f"cannot read the database {mask_url(url)}: {exc}") from None
    finally:
        engine.dispose()
    script = script_directory(script_location)
    _check_known(script, before, url)
    try:
        wanted = script.get_revisions(target)
    except Exception as exc:
        raise MigrationError(f"unknown revision {target!r}: {exc}") from None
    wanted_ids = {r.revision for r in wanted if r is not None}
    if (before in wanted_ids) or (not wanted_ids and before is None):
        return MigrationResult(before, before, None)

    db = sqlite_path(url)
    if db is None or is_empty(db):
        # A new SQLite file has nothing to lose; other databases migrate in one transaction, PostgreSQL's after a
        # pg_dump backup (a migration that fails changes nothing; the backup is for one that succeeds wrongly).
        kept: Path | None = None
        if db is None and before is not None and backup.auto_backup_before_migration and is_postgres(url):
            try:
                kept = make_backup(url, backups, before, backup.max_backup_files, kind="migration")
            except DatabaseError as exc:
                raise MigrationError(
                    f"the backup before migrating failed, so the database was not migrated: {exc} (or set "
                    "migration.backup.auto_backup_before_migration to false to migrate without one)"
                ) from None
        try:
            _run_alembic(url, target, direction, script_location, before)
        except MigrationError as exc:
            if db is not None:
                raise
            where = f"; the backup is kept at {kept}" if kept else ""
            # PostgreSQL runs the migrations in one transaction: a failure rolls all of them back.
            raise MigrationError(f"{exc}. The database {mask_url(url)} was left exactly as it was{where}") from None
        after = _read_revision(url)
        log.info("database %s: %s %s -> %s", mask_url(url), direction, before or "base", after or "base")
        return MigrationResult(before, after, kept)

    checkpoint(db)
    kept = None
    if backup.auto_backup_before_migration:
        kept = make_backup(db, backups, before, backup.max_backup_files, kind="migration")
    working = db.with_name(db.name + ".migrating")
    _remove_sqlite_files(working)
    try:
        copy_database(kept or db, working)
        _run_alembic(f"sqlite:///{working}", target, direction, script_location, before)
        after = _read_revision(f"sqlite:///{working}")
        checkpoint(working)
        _remove_sqlite_files(working, keep_main=True)
        os.replace(working, db)
    except Exception as exc:
        _remove_sqlite_files(working)
        reason = str(exc) if isinstance(exc, MigrationError) else f"{type(exc).__name__}: {exc}"
        where = f"; the backup is kept at {kept}" if kept else ""
        raise MigrationError(f"{reason}. The database {db} was left exactly as it was{where}") from None
    log.info("database %s: %s %s -> %s", db.name, direction, before or "base", after or "base")
    return MigrationResult(before, after, kept)


def _run_alembic(url: str, target: str, direction: str, script_location: Path | None, before: str | None) -> None:
    config = alembic_config(url, script_location)
    try:
        if direction == "upgrade":
            command.upgrade(config, target)
        else:
            command.downgrade(config, target)
    except Exception as exc:
        log.exception("database %s from %s to %s failed", direction, before or "base", target)
        raise MigrationError(
            f"database {direction} from {before or 'base'} to {target} failed: {type(exc).__name__}: {exc}"
        ) from None


def _read_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _remove_sqlite_files(path: Path, keep_main: bool = False) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    if not keep_main:
        path.unlink(missing_ok=True)


def history(script_location: Path | None = None) -> list[tuple[str, str | None, str]]:
    """history lists (revision, down_revision, message) from the newest to the oldest."""
    script = script_directory(script_location)
    rows = []
    for rev in script.walk_revisions():
        down = rev.down_revision if isinstance(rev.down_revision, str | None) else ",".join(rev.down_revision)
        rows.append((rev.revision, down, rev.doc or ""))
    return rows
