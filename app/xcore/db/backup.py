"""Backups of the SQLite core database, made and restored with SQLite's online backup API.

Also the lock that tells "a server is using this database": `xcore serve` holds it for its whole life, and
commands that replace the file (`db restore`, `db upgrade`, `db downgrade`) refuse to run while it is held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from xcore.errors import DatabaseError

log = logging.getLogger("xcore.db")

# Why a backup was made: by an admin (CLI or API), on schedule, before a migration, or before a restore.
KINDS = ("manual", "scheduled", "migration", "safety")
BACKUP_NAME = re.compile(r"^xcore-(\d{8}T\d{6}Z)-([A-Za-z0-9_.]+?)(?:-(" + "|".join(KINDS) + r"))?(?:-(\d+))?\.db$")
SQLITE_MAGIC = b"SQLite format 3\x00"


def backup_name(revision: str | None, when: datetime | None = None, kind: str | None = None) -> str:
    """backup_name is `xcore-<UTC time>-<revision>[-<kind>].db`; the revision is `base` for an unmigrated
    database. Names without a kind come from xcore versions that did not record it."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"xcore-{stamp}-{revision or 'base'}{f'-{kind}' if kind else ''}.db"


def backup_kind(name: str) -> str:
    """backup_kind is the kind in a backup's name: manual, scheduled, migration, safety, or unknown."""
    match = BACKUP_NAME.match(name)
    return (match.group(3) if match else None) or "unknown"


def backup_time(name: str) -> datetime | None:
    """backup_time is the UTC time in a backup's name (when it was made), or None for another name."""
    match = BACKUP_NAME.match(name)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if match else None


def copy_database(source: Path, target: Path) -> None:
    """copy_database copies a live SQLite database page by page with the online backup API."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            # A backup is one self-contained file: no -wal/-shm beside it, whatever mode the source used.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def is_empty(db: Path) -> bool:
    """is_empty tells whether a SQLite file is missing or holds no tables at all."""
    if not db.exists() or db.stat().st_size == 0:
        return True
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        conn.close()


def make_backup(
    db: Path, directory: Path, revision: str | None, keep: int, kind: str | None = None, spare: Path | None = None
) -> Path:
    """make_backup writes a backup of `db` into `directory` and keeps only the newest `keep` backups, and `spare`.

    `kind` (one of KINDS) goes into the name, so a listing can say why each backup exists. `spare` is the backup
    a restore is about to read (the safety backup comes first): pruning it would lose the very data being
    restored when it is the oldest."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = backup_name(revision, kind=kind)
    target = directory / name
    n = 2
    while target.exists():  # two backups within one second
        target = directory / name.replace(".db", f"-{n}.db")
        n += 1
    try:
        copy_database(db, target)
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise DatabaseError(f"backup of {db} to {target} failed: {exc}") from None
    if os.name != "nt":
        os.chmod(target, 0o600)
    log.info("backed up %s to %s", db.name, target)
    prune_backups(directory, keep, spare)
    return target


def list_backups(directory: Path) -> list[Path]:
    """list_backups returns xcore's backups in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if BACKUP_NAME.match(p.name)]
    return sorted(found, key=lambda p: (BACKUP_NAME.match(p.name).group(1), p.stat().st_mtime_ns))  # type: ignore[union-attr]


def find_backup(directory: Path, name: str) -> Path | None:
    """find_backup is the backup called `name` in `directory`, or None: for a name that is not a backup's
    (a path, `..`, another file) as for a backup that does not exist."""
    if not BACKUP_NAME.fullmatch(name):
        return None
    path = directory / name
    try:
        if not path.is_file() or path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path


def backup_revision(path: Path) -> str | None:
    """backup_revision reads the Alembic revision of a SQLite file (None when it has none). Raises DatabaseError."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None
    except sqlite3.Error as exc:
        raise DatabaseError(f"backup file {path}: cannot be read: {exc}") from None
    finally:
        conn.close()


def prune_backups(directory: Path, keep: int, spare: Path | None = None) -> list[Path]:
    """prune_backups deletes all but the newest `keep` backups, never `spare`, and returns what it deleted."""
    backups = list_backups(directory)
    doomed = backups[:-keep] if keep > 0 else backups
    if spare is not None:
        doomed = [path for path in doomed if path.resolve() != spare.resolve()]
    for path in doomed:
        path.unlink(missing_ok=True)
        log.info("deleted old backup %s", path.name)
    return doomed


def check_sqlite_file(path: Path) -> None:
    """check_sqlite_file raises DatabaseError unless `path` is a readable, intact SQLite database."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseError(f"backup file {path}: cannot be read: {exc.strerror}") from None
    if magic != SQLITE_MAGIC:
        raise DatabaseError(f"backup file {path}: is not a SQLite database")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        raise DatabaseError(f"backup file {path}: cannot be opened as a database: {exc}") from None
    finally:
        conn.close()
    if result != "ok":
        raise DatabaseError(f"backup file {path}: is damaged ({result})")


def restore_backup(backup: Path, db: Path) -> None:
    """restore_backup replaces the content of `db` with `backup`, through the online backup API."""
    check_sqlite_file(backup)
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(db)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    log.info("restored %s from %s", db.name, backup)


def checkpoint(db: Path) -> None:
    """checkpoint moves everything from the WAL into the database file and empties the WAL."""
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def server_lock(db: Path) -> FileLock:
    """server_lock is the lock a running server holds on its SQLite database file."""
    return FileLock(str(db) + ".lock")


@contextlib.contextmanager
def no_server_running(db: Path, action: str) -> Iterator[None]:
    """no_server_running holds the server lock while `action` runs, or refuses when a server holds it."""
    lock = server_lock(db)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DatabaseError(
            f"cannot {action}: a server is running against {db}; stop it first (Ctrl+C or SIGTERM)"
        ) from None
    try:
        yield
    finally:
        lock.release()
