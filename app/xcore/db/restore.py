"""Restoring a backup into the live SQLite database of a running server, without a restart.

The backup never goes in as it is:

1. it is checked: an intact SQLite file, an xcore database (its `alembic_version` and core tables), at a schema
   revision this xcore knows, with at least one account (`check_backup`);
2. a working copy is made, migrated to this xcore's head when it is older (then it must hold every core table),
   and brought up to date by the caller's `prepare` (the current built-in roles and permissions: the accounts'
   rules, which the database layer only applies), so the live database is never at an old schema or with old
   built-in roles, not even for a moment;
3. the security state that only grows is carried over from the live database, so nothing revoked or spent
   after the backup was made comes back (`carry_security_state`): each account's token version is raised to at
   least its live value (and past it when the id now names another account); refresh tokens revoked or used
   since stay so, and so does every token of a family revoked since; spent recovery codes stay spent, the last
   accepted TOTP step stays, login throttles and lockouts stay, and the audit events recorded since are kept.
   An account the restore removes needs nothing: the next account given its id starts at a random token
   version (`models.first_token_version`), so the removed account's tokens do not work for it;
4. the live database is backed up (kind `safety`), when there is one;
5. the working copy is copied into the live file with SQLite's online backup API, in one write transaction. Every
   other connection, in this process and in the other workers, reads the restored data from its next
   transaction on: SQLite bumps the schema cookie, so none of them keeps a stale schema either.

Caches outside the database (principals, plugin states) are the caller's to refresh. One restore runs at a time
per database, across processes. `xcore db restore` takes the same path, with the server stopped.

On PostgreSQL (`restore_postgres`, for `xcore db restore` with every node stopped) the backup is a pg_dump archive:
it is checked the same way, the live database is backed up (kind `safety`), the backup replaces the database's
tables in one transaction (`xcore.db.pgdump.restore_dump`), and it is migrated and prepared in place. The security
state is not carried over there: every account's sessions end instead (its token version is raised), so no
session from before the restore, revoked since or not, works after it.

The working copy is `<db>.restoring` (and `<db>.restoring.migrating` while it is migrated);
`xcore.db.backup.remove_working_copies` deletes the ones an interrupted restore left, at the next start.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from xcore import __version__
from xcore.config.schema import BackupConfig
from xcore.db import revisions
from xcore.db.backup import backup_revision, check_sqlite_file, copy_database, copy_sqlite, is_empty, make_backup
from xcore.errors import DatabaseError, MigrationError

log = logging.getLogger("xcore.db")
# The tables of xcore's first revision: a file with an `alembic_version` table but without these is another
# application's database.
FIRST_TABLES = frozenset({"alembic_version", "plugin_state", "setting_override", "audit_event"})


class RestoreRefused(DatabaseError):
    """RestoreRefused is a backup this xcore will not restore (damaged, too new, failing to migrate, not xcore's,
    no account), or a restore already running. Nothing was changed."""


class RestoreBusy(RestoreRefused):
    """RestoreBusy is a restore refused because another one is running. Nothing was changed."""


@dataclass(frozen=True)
class Restored:
    """Restored tells what restore_live did."""

    backup: Path
    safety: Path | None  # the backup of the database as it was just before (None: there was none)
    revision: str  # the backup's schema revision
    migrated_to: str | None  # the head it was migrated to, when it was older


def restore_live(
    db: Path,
    backup: Path,
    backups: Path,
    keep: int,
    *,
    prepare: Callable[[Session], None],
    require_accounts: bool = True,
    safety_backup: Callable[[], Path | None] | None = None,
) -> Restored:
    """restore_live replaces the content of the live SQLite database `db` with `backup`, safely while it is in use.

    `prepare` runs in one transaction on the working copy, once it is at this xcore's schema: callers pass
    `xcore.auth.permissions.sync_builtin`. `db` may be missing or empty (`xcore db restore` into a new data
    directory): there is then no safety backup and nothing to carry over. `require_accounts` refuses a backup
    without any account. `safety_backup`, when given, makes the safety backup instead of a backup of the database
    alone (`xcore.db.archive` takes a complete one), once the backup is checked, migrated and prepared. Raises
    RestoreRefused
    (nothing changed) or DatabaseError (the copy failed; the database is as it was, and the safety backup is
    kept).
    """
    lock = FileLock(str(db) + ".restore.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RestoreBusy(f"another restore of {db.name} is running; try again when it has finished") from None
    working = db.with_name(db.name + ".restoring")
    try:
        revision = check_backup(backup)
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
        _check_tables(working, backup.name)
        _prepare(working, backup.name, prepare, require_accounts)
        safety = None
        if not _is_empty_live(db):
            if safety_backup is not None:
                safety = safety_backup()
            else:
                safety = make_backup(db, backups, backup_revision(db), keep, kind="safety", spare=backup)
        try:
            if safety is not None:
                # Read last: a revocation made while the safety backup was written is carried over too.
                _carry_into(working, db)
            copy_sqlite(working, db)  # one write transaction on the live database
        except sqlite3.Error as exc:
            kept = f"; its backup from just before is {safety.name}" if safety else ""
            raise DatabaseError(
                f"restoring {backup.name} into {db} failed: {exc}. The database was left as it was{kept}"
            ) from None
    finally:
        _remove(working)
        lock.release()
    undo = f"; the database as it was is in {safety.name}" if safety else ""
    log.info(
        "restored %s from %s%s%s",
        db.name, backup.name, f" (migrated {revision} -> {migrated})" if migrated else "", undo,
    )  # fmt: skip
    return Restored(backup, safety, revision, migrated)


def _is_empty_live(db: Path) -> bool:
    try:
        return is_empty(db)
    except sqlite3.Error as exc:
        raise DatabaseError(
            f"the current database {db} cannot be read ({exc}), so it cannot be backed up before the restore; "
            "move it out of the data directory, then restore again"
        ) from None


def check_backup(backup: Path) -> str:
    """check_backup returns the schema revision of `backup` if it is an intact xcore database this xcore can
    restore. Raises RestoreRefused, in one sentence naming the file, for anything else: not SQLite, truncated or
    damaged, another application's database, or one from a newer xcore."""
    try:
        check_sqlite_file(backup)
        tables = _tables(backup)
        revision = backup_revision(backup)
    except DatabaseError as exc:
        raise RestoreRefused(str(exc)) from None
    except sqlite3.Error as exc:  # a header that reads, pages that do not
        raise RestoreRefused(f"backup file {backup}: cannot be read as a database: {exc}") from None
    return _check_revision(backup, revision, tables)


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def _check_tables(working: Path, name: str) -> None:
    """Refuses a working copy (at this xcore's head) that lacks one of the core tables."""
    from xcore.db.models import Base

    missing = sorted(set(Base.metadata.tables) - _tables(working))
    if missing:
        raise RestoreRefused(
            f"{name} is not a complete xcore database: it has no {', '.join(missing)} table; choose another backup"
        )


def _prepare(working: Path, name: str, prepare: Callable[[Session], None], require_accounts: bool) -> None:
    """Runs `prepare` on the working copy; refuses it without accounts if they are required."""
    engine = create_engine(f"sqlite:///{working}", poolclass=NullPool)
    try:
        with Session(engine) as session, session.begin():
            prepare(session)
    finally:
        engine.dispose()
    conn = sqlite3.connect(working)
    try:
        if require_accounts and conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0:
            raise RestoreRefused(f"{name} holds no account: restoring it would lock everyone out")
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, readable through a read-only handle
    finally:
        conn.close()


def _carry_into(working: Path, live: Path) -> None:
    conn = sqlite3.connect(working.absolute().as_uri(), uri=True)  # a URI connection may ATTACH a read-only URI
    try:
        carry_security_state(conn, live)
    finally:
        conn.close()


# Accounts present in both databases under the same id and name: their live state is theirs.
_SAME_USERS = "SELECT u.id FROM main.users AS u JOIN live.users AS l ON l.id = u.id AND l.username = u.username"
_LATER = "CASE WHEN {new} IS NULL THEN {old} WHEN {old} IS NULL OR {new} > {old} THEN {new} ELSE {old} END"
# Correlated subqueries rather than UPDATE ... FROM, which needs SQLite 3.33 (the binary may link an older one).
_LIVE_TOKEN = "(SELECT l.{column} FROM live.refresh_tokens AS l WHERE l.token_hash = refresh_tokens.token_hash)"
_LIVE_CODE = (
    "FROM live.recovery_codes AS l WHERE l.user_id = recovery_codes.user_id AND l.code_hash = recovery_codes.code_hash"
)
_LIVE_USER = "FROM live.users AS l WHERE l.id = users.id AND l.username = users.username"
_CARRY: dict[str, list[str]] = {
    "refresh_tokens": [
        # Revoked or exchanged since the backup: still revoked, still spent (a reuse then revokes the family).
        f"""UPDATE main.refresh_tokens SET
             revoked_at = coalesce(revoked_at, {_LIVE_TOKEN.format(column="revoked_at")}),
             used_at = coalesce(used_at, {_LIVE_TOKEN.format(column="used_at")})
           WHERE token_hash IN
             (SELECT token_hash FROM live.refresh_tokens WHERE revoked_at IS NOT NULL OR used_at IS NOT NULL)""",
        # A family revoked since (a detected reuse, a logout) is revoked whole, its older tokens included.
        """UPDATE main.refresh_tokens SET revoked_at =
             (SELECT max(l.revoked_at) FROM live.refresh_tokens AS l WHERE l.family = refresh_tokens.family)
           WHERE revoked_at IS NULL
             AND family IN (SELECT family FROM live.refresh_tokens WHERE revoked_at IS NOT NULL)""",
        # Revoked families the backup never saw: their access tokens are refused by family until they expire.
        f"""INSERT INTO main.refresh_tokens
             (token_hash, family, user_id, token_version, created_at, expires_at, used_at, revoked_at)
           SELECT token_hash, family, user_id, token_version, created_at, expires_at, used_at, revoked_at
           FROM live.refresh_tokens
           WHERE revoked_at IS NOT NULL AND user_id IN ({_SAME_USERS})
             AND token_hash NOT IN (SELECT token_hash FROM main.refresh_tokens)""",
    ],
    "recovery_codes": [
        f"""UPDATE main.recovery_codes SET used_at = (SELECT max(l.used_at) {_LIVE_CODE})
           WHERE used_at IS NULL AND EXISTS (SELECT 1 {_LIVE_CODE} AND l.used_at IS NOT NULL)""",
    ],
    "users": [
        # A TOTP code accepted since must not be accepted again.
        f"""UPDATE main.users SET totp_last_step = (SELECT l.totp_last_step {_LIVE_USER})
           WHERE EXISTS (SELECT 1 {_LIVE_USER} AND l.totp_last_step IS NOT NULL
                         AND (users.totp_last_step IS NULL OR l.totp_last_step > users.totp_last_step))""",
    ],
    "login_throttle": [
        # Failed logins and lockouts since the backup still count.
        f"""INSERT INTO main.login_throttle (key, failures, locked_until, last_failure_at)
           SELECT key, failures, locked_until, last_failure_at FROM live.login_throttle WHERE true
           ON CONFLICT (key) DO UPDATE SET
             failures = max(failures, excluded.failures),
             locked_until = {_LATER.format(new="excluded.locked_until", old="locked_until")},
             last_failure_at = {_LATER.format(new="excluded.last_failure_at", old="last_failure_at")}""",
    ],
    "audit_event": [
        # The trail of what happened since the backup, the restore's cause included, is not erased by it.
        """INSERT INTO main.audit_event (at, actor, action, target, detail, ip)
           SELECT at, actor, action, target, detail, ip FROM live.audit_event
           WHERE at > coalesce((SELECT max(at) FROM main.audit_event), '') ORDER BY at, id""",
    ],
}


def carry_security_state(conn: sqlite3.Connection, live: Path) -> None:
    """carry_security_state writes into the working copy open on `conn` the live database's security state that
    only grows, so that a restore brings back no revoked session, spent code or lifted lockout, and erases no
    audit event. Tables the live database lacks (it may be older, in `xcore db restore`) are skipped."""
    conn.execute("ATTACH DATABASE ? AS live", (f"{live.absolute().as_uri()}?mode=ro",))
    try:
        present = {row[0] for row in conn.execute("SELECT name FROM live.sqlite_master WHERE type = 'table'")}
        if "users" in present:
            _carry_token_versions(conn)
        for table, statements in _CARRY.items():
            if table in present:
                for statement in statements:
                    conn.execute(statement)
        conn.commit()
    finally:
        conn.execute("DETACH DATABASE live")


def _carry_token_versions(conn: sqlite3.Connection) -> None:
    live_users = {
        row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, username, token_version FROM live.users")
    }
    for user_id, username, version in conn.execute("SELECT id, username, token_version FROM main.users").fetchall():
        if user_id not in live_users:
            continue
        live_name, live_version = live_users[user_id]
        # A token names its user by id: one issued to another account with this id must not work for this one.
        wanted = max(version, live_version) + (0 if live_name == username else 1)
        if wanted != version:
            conn.execute("UPDATE main.users SET token_version = ? WHERE id = ?", (wanted, user_id))


def _files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


def _remove(path: Path) -> None:
    for file in _files(path):
        file.unlink(missing_ok=True)


def restore_postgres(
    url: str,
    backup: Path,
    backups: Path,
    keep: int,
    *,
    prepare: Callable[[Session], None],
    safety_backup: Callable[[], Path | None] | None = None,
) -> Restored:
    """restore_postgres replaces the content of the PostgreSQL database at `url` with the pg_dump archive `backup`,
    with no server running on it (the caller holds `xcore.db.serving`'s lock alone). `safety_backup` is as for
    `restore_live`. Raises RestoreRefused (nothing changed) or DatabaseError (the restore failed and changed
    nothing; the safety backup is kept)."""
    from sqlalchemy import inspect, update

    from xcore.db import pgdump
    from xcore.db.backup import is_dump
    from xcore.db.engine import make_engine
    from xcore.db.models import User

    if not is_dump(backup):
        raise RestoreRefused(
            f"backup file {backup}: is not a PostgreSQL backup; the core database is on PostgreSQL, which restores "
            "the .dump files `xcore db backup` writes there (a .db file is a SQLite database's backup)"
        )
    try:
        revision, tables = pgdump.dump_revision(backup), pgdump.dump_tables(backup)
    except DatabaseError as exc:
        raise RestoreRefused(str(exc)) from None
    revision = _check_revision(backup, revision, tables)
    engine = make_engine(url)
    try:
        live_tables = sorted(inspect(engine).get_table_names())
        safety = None
        if live_tables and safety_backup is not None:
            safety = safety_backup()
        elif live_tables:
            safety = make_backup(url, backups, revisions.current_revision(engine), keep, kind="safety", spare=backup)
        engine.dispose()  # no connection of ours holds a table the restore drops
        pgdump.restore_dump(url, backup, live_tables)
        migrated = None
        if revision != revisions.head_revision():
            from xcore.db import migrate

            no_backup = BackupConfig(auto_backup_before_migration=False)  # the safety backup is the one to go back to
            try:
                migrated = migrate.upgrade(url, backups, no_backup).after
            except MigrationError as exc:
                kept = f"; the database as it was is in {safety.name}" if safety else ""
                raise DatabaseError(f"{backup.name} was restored but could not be migrated: {exc}{kept}") from None
        with Session(engine) as session, session.begin():
            prepare(session)
            session.execute(update(User).values(token_version=User.token_version + 1))
    finally:
        engine.dispose()
    log.info("restored the database from %s%s", backup.name, f" (migrated {revision} -> {migrated})" * bool(migrated))
    return Restored(backup, safety, revision, migrated)


def _check_revision(backup: Path, revision: str | None, tables: set[str]) -> str:
    """Returns the backup's revision; refuses a backup that is not an xcore database, or one a newer xcore made."""
    missing = sorted(FIRST_TABLES - tables)
    if revision is None or missing:
        raise RestoreRefused(
            f"backup file {backup}: is not an xcore database (it has no {', '.join(missing) or 'schema revision'} "
            "table); choose a file made by `xcore db backup` or listed by GET /api/admin/backups"
        )
    if revision not in revisions.shipped():
        raise RestoreRefused(
            f"{backup.name} is at schema revision {revision!r}, which this xcore {__version__} does not know "
            f"(its newest is {revisions.head_revision()!r}): a newer xcore made it. Restore it with that version, "
            "or choose an older backup"
        )
    return revision
