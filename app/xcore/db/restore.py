"""Restoring a backup into the live SQLite database of a running server, without a restart.

The backup never goes in as it is:

1. it is checked (an intact SQLite file, at a schema revision this xcore knows, with at least one account);
2. a working copy is made, migrated to this xcore's head when it is older, and given the current built-in roles
   and permissions, so the live database is never at an old schema, not even for a moment;
3. each account's token version is raised to at least its live value (and past it when the id now names
   another account), so a session revoked after the backup was made stays revoked. An account the restore
   removes needs nothing: the next account given its id starts at a random token version
   (`models.first_token_version`), so the removed account's tokens do not work for it;
4. the live database is backed up (kind `safety`);
5. the working copy is copied into the live file with SQLite's online backup API, in one write transaction. Every
   other connection, in this process and in the other workers, reads the restored data from its next
   transaction on: SQLite bumps the schema cookie, so none of them keeps a stale schema either.

Caches outside the database (principals, plugin states) are the caller's to refresh. One restore runs at a time
per database, across processes. Not for PostgreSQL: its backups are pg_dump's business.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from xcore import __version__
from xcore.config.schema import BackupConfig
from xcore.db import revisions
from xcore.db.backup import backup_revision, check_sqlite_file, copy_database, make_backup
from xcore.errors import DatabaseError, MigrationError

log = logging.getLogger("xcore.db")


class RestoreRefused(DatabaseError):
    """RestoreRefused is a backup this xcore will not restore (damaged, too new, failing to migrate, not xcore's,
    no account), or a restore already running. Nothing was changed."""


@dataclass(frozen=True)
class Restored:
    """Restored tells what restore_live did."""

    backup: Path
    safety: Path  # the backup of the database as it was just before
    revision: str  # the backup's schema revision
    migrated_to: str | None  # the head it was migrated to, when it was older


def restore_live(db: Path, backup: Path, backups: Path, keep: int) -> Restored:
    """restore_live replaces the content of the live SQLite database `db` with `backup`, safely while it is in use.

    Raises RestoreRefused (nothing changed) or DatabaseError (the copy failed; the database is as it was, and
    the safety backup is kept).
    """
    lock = FileLock(str(db) + ".restore.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RestoreRefused(f"another restore of {db.name} is running; try again when it has finished") from None
    working = db.with_name(db.name + ".restoring")
    try:
        try:
            check_sqlite_file(backup)
        except DatabaseError as exc:
            raise RestoreRefused(str(exc)) from None
        revision = _check_revision(backup)
        _remove(working)
        copy_database(backup, working)
        head = revisions.head_revision()
        migrated = None
        if revision != head:
            no_backup = BackupConfig(auto_backup_before_migration=False)  # the working copy is one already
            try:
                from xcore.db import migrate  # Alembic: imported when there is something to migrate

                upgraded = migrate.upgrade(f"sqlite:///{working}", backups, no_backup)
            except MigrationError as exc:
                raise RestoreRefused(f"{backup.name} could not be migrated to this xcore's schema: {exc}") from None
            migrated = upgraded.after
        _prepare(working, db, backup.name)
        safety = make_backup(db, backups, backup_revision(db), keep, kind="safety", spare=backup)
        try:
            _copy_in(working, db)
        except sqlite3.Error as exc:
            raise DatabaseError(
                f"restoring {backup.name} into {db} failed: {exc}. The database was left as it was; "
                f"its backup from just before is {safety.name}"
            ) from None
    finally:
        _remove(working)
        lock.release()
    log.info(
        "restored %s from %s%s; the database as it was is in %s",
        db.name, backup.name, f" (migrated {revision} -> {migrated})" if migrated else "", safety.name,
    )  # fmt: skip
    return Restored(backup, safety, revision, migrated)


def _check_revision(backup: Path) -> str:
    revision = backup_revision(backup)
    if revision is None:
        raise RestoreRefused(f"{backup.name} holds no xcore database (it has no schema revision)")
    if revision not in revisions.shipped():
        raise RestoreRefused(
            f"{backup.name} is at schema revision {revision!r}, which this xcore {__version__} does not know "
            f"(its newest is {revisions.head_revision()!r}): a newer xcore made it. Restore it with that version, "
            "or choose an older backup"
        )
    return revision


def _prepare(working: Path, live: Path, name: str) -> None:
    """Brings the working copy's built-in roles up to date and carries the live token versions over."""
    from xcore.auth.permissions import sync_builtin  # the accounts' rules; the database layer only applies them

    engine = create_engine(f"sqlite:///{working}", poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            sync_builtin(session)
    finally:
        engine.dispose()
    source = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
    try:
        live_users = {
            row[0]: (row[1], row[2]) for row in source.execute("SELECT id, username, token_version FROM users")
        }
    finally:
        source.close()
    conn = sqlite3.connect(working)
    try:
        restored = conn.execute("SELECT id, username, token_version FROM users").fetchall()
        if not restored:
            raise RestoreRefused(f"{name} holds no account: restoring it would lock everyone out")
        for user_id, username, version in restored:
            if user_id not in live_users:
                continue
            live_name, live_version = live_users[user_id]
            # A token names its user by id: one issued to another account with this id must not work for this one.
            wanted = max(version, live_version) + (0 if live_name == username else 1)
            if wanted != version:
                conn.execute("UPDATE users SET token_version = ? WHERE id = ?", (wanted, user_id))
        conn.commit()
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, readable through a read-only handle
    finally:
        conn.close()


def _copy_in(working: Path, db: Path) -> None:
    """Copies the working copy into the live database in one step: one write transaction on `db`."""
    source = sqlite3.connect(f"file:{working}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(db, timeout=30)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
