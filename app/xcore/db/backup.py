"""Backups of the core database: SQLite's with its online backup API, PostgreSQL's with pg_dump (`xcore.db.pgdump`).

Complete backups (the database, the plugins, their data and the settings in one archive) are `xcore.db.archive`'s;
they are named, listed, counted and pruned here like the database's own.

The lock that tells "a server is using this database" is `xcore.db.serving`'s.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from xcore.errors import DatabaseError

log = logging.getLogger("xcore.db")

# Why a backup was made: by an admin (CLI or API), on schedule, before a migration, or before a restore.
KINDS = ("manual", "scheduled", "migration", "safety")
# `.db`: a SQLite file; `.dump`: a pg_dump archive of a PostgreSQL database (`xcore.db.pgdump`); `.xcbackup`: a
# complete backup (`xcore.db.archive`).
BACKUP_NAME = re.compile(
    r"^xcore-(\d{8}T\d{6}Z)-([A-Za-z0-9_.]+?)(?:-(" + "|".join(KINDS) + r"))?(?:-(\d+))?\.(db|dump|xcbackup)\Z"
)
ARCHIVE_EXTENSION = ".xcbackup"
SQLITE_MAGIC = b"SQLite format 3\x00"
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".xcore-backup-", ".partial"
# The working copies `xcore.db.restore` and `xcore.db.migrate` make beside the database.
WORKING_SUFFIXES = (".restoring", ".restoring.migrating", ".migrating")


def backup_name(
    revision: str | None, when: datetime | None = None, kind: str | None = None, extension: str = ".db"
) -> str:
    """backup_name is `xcore-<UTC time>-<revision>[-<kind>].db` (`.dump` for PostgreSQL); the revision is `base`
    for an unmigrated database. Names without a kind come from xcore versions that did not record it."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"xcore-{stamp}-{revision or 'base'}{f'-{kind}' if kind else ''}{extension}"


def backup_source(url: str, file: Path | None) -> Path | str | None:
    """backup_source is what `make_backup` backs up for the core database at `url`: its SQLite `file`
    (`Runtime.database_file`), the URL of a PostgreSQL database, or None for a database xcore cannot back up."""
    if file is not None:
        return file
    from xcore.db.serving import is_postgres

    return url if is_postgres(url) else None


def is_dump(path: Path) -> bool:
    """is_dump tells a PostgreSQL backup (a pg_dump archive) from a SQLite one."""
    return path.suffix == ".dump"


def is_archive(path: Path) -> bool:
    """is_archive tells a complete backup (`xcore.db.archive`) from a backup of the database alone, by its name."""
    return path.suffix == ARCHIVE_EXTENSION


def backup_kind(name: str) -> str:
    """backup_kind is the kind in a backup's name: manual, scheduled, migration, safety, or unknown."""
    match = BACKUP_NAME.match(name)
    return (match.group(3) if match else None) or "unknown"


def backup_time(name: str) -> datetime | None:
    """backup_time is the UTC time in a backup's name (when it was made), or None for another name."""
    match = BACKUP_NAME.match(name)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if match else None


def copy_sqlite(
    source: Path | None, target: Path, *, source_mode: str = "ro", standalone: bool = False, timeout: float = 30.0
) -> None:
    """copy_sqlite copies the SQLite database `source` into `target` page by page with the online backup API, in
    one write transaction of `target`, which may be a live database (every connection to it reads the copied data
    from its next transaction). `source` None copies an empty database: `target` is emptied. `source_mode` "rw"
    opens the source for writing, though nothing is written: a WAL database that no connection has open needs a
    writer to create its -shm file, or to take in what a -wal file left by a crash holds (a missing source is an
    error either way, never created). `standalone` makes `target` one self-contained file, with no -wal or -shm
    beside it whatever mode the source used (a backup)."""
    if source is None:
        src = sqlite3.connect(":memory:")
    else:
        src = sqlite3.connect(f"{source.absolute().as_uri()}?mode={source_mode}", uri=True, timeout=timeout)
    try:
        dst = sqlite3.connect(target, timeout=timeout)
        try:
            src.backup(dst)
            if standalone:
                dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def copy_database(source: Path, target: Path) -> None:
    """copy_database copies a live SQLite database into a new, self-contained file (`copy_sqlite`)."""
    copy_sqlite(source, target, standalone=True)


def is_empty(db: Path) -> bool:
    """is_empty tells whether a SQLite file is missing or holds no tables at all."""
    if not db.exists() or db.stat().st_size == 0:
        return True
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return tables == 0
    finally:
        conn.close()


def make_backup(
    db: Path | str,
    directory: Path,
    revision: str | None,
    keep: int,
    kind: str | None = None,
    spare: Path | None = None,
) -> Path:
    """make_backup writes a backup of `db` (a SQLite file, or the URL of a PostgreSQL database: pg_dump) into
    `directory` and keeps only the newest `keep` backups of its kind, and `spare`.

    `kind` (one of KINDS) goes into the name, so a listing can say why each backup exists, and backups are
    counted per kind: a scheduled backup never prunes an admin's manual one or a safety one. `spare` is the backup
    a restore is about to read (the safety backup comes first): pruning it would lose the very data being
    restored when it is the oldest."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written under a temporary name (mode 0600) and linked into place complete: an interrupted backup leaves no
    # damaged file named like a backup, only a `.partial` one that `remove_partial_backups` deletes.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    os.close(fd)
    partial = Path(tmp)
    if isinstance(db, Path):
        shown = db.name
    else:
        from xcore.db.engine import mask_url  # SQLAlchemy's URL parser: the start of a SQLite server never needs it

        shown = mask_url(db)
    try:
        if isinstance(db, Path):
            copy_database(db, partial)
            target = link_new(partial, directory, backup_name(revision, kind=kind))
        else:
            from xcore.db import pgdump

            pgdump.dump(db, partial)
            target = link_new(partial, directory, backup_name(revision, kind=kind, extension=".dump"))
    except sqlite3.Error as exc:
        raise DatabaseError(f"backup of {shown} into {directory} failed: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"backup of {shown} into {directory} failed: {exc.strerror}") from None
    finally:
        for suffix in ("", "-journal"):
            partial.with_name(partial.name + suffix).unlink(missing_ok=True)
    log.info("backed up %s to %s", shown, target)
    prune_backups(directory, keep, spare, kind=kind or "unknown")
    return target


def link_new(source: Path, directory: Path, name: str) -> Path:
    """link_new links `source` into `directory` as `name`, or `name` with -2, -3... when taken (two backups in
    a second)."""
    n = 1
    while True:
        stem, dot, extension = name.rpartition(".")
        target = directory / (name if n == 1 else f"{stem}-{n}{dot}{extension}")
        try:
            os.link(source, target)
            return target
        except FileExistsError:
            n += 1
        except OSError:  # a file system without hard links: a rename, after the same check
            if not target.exists():
                os.replace(source, target)
                return target
            n += 1


def remove_partial_backups(directory: Path) -> list[Path]:
    """remove_partial_backups deletes the unfinished backups an interrupted `make_backup` or `xcore.db.archive`
    left in `directory` (and the folders an interrupted restore of an archive unpacked it into) and returns them.
    Call it only while holding the database's server lock (no backup is being written)."""
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}*"):
        try:
            if path.is_dir() and not path.is_symlink():  # a complete backup's files, or a restore's, being read
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    if removed:
        log.warning(
            "deleted %d unfinished backup file(s) in %s, left by an interrupted backup", len(removed), directory
        )
    return removed


def remove_working_copies(db: Path) -> list[Path]:
    """remove_working_copies deletes the working copies an interrupted restore or migration of `db` left beside it
    (`<db>.restoring`, `<db>.migrating`, with their -wal, -shm and -journal files) and returns them. Call it only
    while holding the database's server lock: no restore or migration can be running then."""
    removed = []
    for suffix in WORKING_SUFFIXES:
        for extra in ("", "-wal", "-shm", "-journal"):
            path = db.with_name(db.name + suffix + extra)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot delete %s, left by an interrupted restore or migration: %s", path, exc.strerror)
                continue
            removed.append(path)
    if removed:
        log.warning(
            "deleted %s, left by an interrupted restore or migration (the database itself was not changed by it)",
            ", ".join(p.name for p in removed),
        )
    return removed


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
    """backup_revision reads the Alembic revision of a backup (None when it has none; a complete backup's is in
    its name). Raises DatabaseError."""
    if is_archive(path):
        match = BACKUP_NAME.match(path.name)
        return match.group(2) if match and match.group(2) != "base" else None
    if is_dump(path):
        from xcore.db import pgdump

        return pgdump.dump_revision(path)
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


def prune_backups(directory: Path, keep: int, spare: Path | None = None, kind: str | None = None) -> list[Path]:
    """prune_backups deletes all but the newest `keep` backups of `kind` (of every kind when None: a `kind` of
    `unknown` means names without one), never `spare`, and returns what it deleted."""
    backups = [p for p in list_backups(directory) if kind is None or backup_kind(p.name) == kind]
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


def checkpoint(db: Path) -> None:
    """checkpoint moves everything from the WAL into the database file and empties the WAL."""
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
