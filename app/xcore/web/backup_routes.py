"""The backups admin API: list, make, download and restore backups of the core database.

On SQLite every action is here. On PostgreSQL backups are made (pg_dump), listed and downloaded here, but a
restore replaces the database under every node: it is `xcore db restore FILE` with every node stopped, and the
listing says so (`restore.supported` false, with the reason).

Superadmins only: the default ACCESS_RULES rule `/api/admin/backups*` requires the role, and each handler also
wants the permission `backups.manage`, which only superadmins hold (a restore replaces every account, theirs
included). Every action is in the audit log. A restore takes effect at once in every worker
(see `xcore.db.restore`), with no restart.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, get, post
from litestar.params import Parameter
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED
from msgspec import Struct

from xcore.auth import audit
from xcore.auth.errors import Conflict, NotFound
from xcore.auth.permissions import sync_builtin
from xcore.db.backup import (
    backup_kind,
    backup_revision,
    backup_source,
    backup_time,
    find_backup,
    is_dump,
    list_backups,
    make_backup,
)
from xcore.db.engine import mask_url
from xcore.db.restore import Restored, RestoreRefused, restore_live
from xcore.db.revisions import current_revision
from xcore.plugins.store import signal_state_change
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of
from xcore.web.download import attachment

TAGS = ["backups"]
PERMISSION = "backups.manage"
BackupName = Annotated[str, Parameter(max_length=200, description="The backup's file name, as listed.")]


class BackupOut(Struct):
    name: str
    size: int  # bytes
    created: datetime  # UTC, from the name (when it was made)
    kind: str  # manual | scheduled | migration | safety | unknown (made by an older xcore)


class RestoreSupport(Struct):
    supported: bool
    reason: str | None


class BackupList(Struct):
    items: list[BackupOut]  # newest first
    directory: str
    restore: RestoreSupport


class RestoreOut(Struct):
    restored: str
    safety_backup: str | None  # None only when there was no database to back up
    message: str
    restart_required: bool


def backup_out(path: Path) -> BackupOut:
    info = path.stat()
    created = backup_time(path.name) or datetime.fromtimestamp(info.st_mtime, UTC)
    return BackupOut(path.name, info.st_size, created, backup_kind(path.name))


def database(runtime: Runtime, action: str) -> Path | str:
    """database is what a backup copies: the SQLite file, or the PostgreSQL URL; a 409 says why `action` cannot be
    done on another database, or before the SQLite file exists."""
    source = backup_source(runtime.database_url, runtime.database_file)
    if source is None:
        raise Conflict(
            f"cannot {action}: the core database ({mask_url(runtime.database_url)}) is neither SQLite nor "
            "PostgreSQL; back it up and restore it with the database's own tools"
        )
    if isinstance(source, Path) and not source.exists():
        raise Conflict(f"cannot {action}: there is no database file at {source} yet")
    return source


def sqlite_file(runtime: Runtime, action: str) -> Path:
    """sqlite_file is the core database file; a 409 says why `action` cannot be done on another database."""
    source = database(runtime, action)
    if not isinstance(source, Path):
        raise Conflict(f"cannot {action}: {_not_sqlite(runtime)}")
    return source


def _not_sqlite(runtime: Runtime) -> str:
    return (
        f"the core database is not a SQLite file ({mask_url(runtime.database_url)}): a restore replaces it under "
        "every node, so stop every node and run `xcore db restore FILE` with one of the .dump backups listed here"
    )


@get("/api/admin/backups", sync_to_thread=True, tags=TAGS, summary="List backups")
def list_all(request: Request[Any, Any, Any]) -> BackupList:
    """The backups in `migration.backup.backup_directory`, newest first. `kind` says why each was made: by an
    admin, on schedule (task xcore.backup), before a migration, or as the safety copy taken before a restore.
    `restore.supported` is false, with the reason, when the core database is not SQLite (on PostgreSQL a restore
    is `xcore db restore`, every node stopped)."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    items = []
    for path in reversed(list_backups(runtime.backups_dir)):
        try:
            items.append(backup_out(path))
        except FileNotFoundError:  # pruned meanwhile
            continue
    supported = runtime.database_file is not None
    reason = None if supported else _not_sqlite(runtime)
    return BackupList(items, str(runtime.backups_dir), RestoreSupport(supported, reason))


@post("/api/admin/backups", sync_to_thread=True, tags=TAGS, status_code=HTTP_201_CREATED, summary="Back up now")
def create(request: Request[Any, Any, Any]) -> BackupOut:
    """Backs up the database now, as kind `manual`, safely while servers run: SQLite with its online backup API,
    PostgreSQL with pg_dump (a .dump archive; a 503 says what to install, and the command to run meanwhile, when
    this machine has no pg_dump). The newest `migration.backup.max_backup_files` manual backups are kept; older
    manual ones are deleted (other kinds are counted apart)."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    db = database(runtime, "back up the database")
    keep = runtime.config.migration.backup.max_backup_files
    revision = backup_revision(db) if isinstance(db, Path) else current_revision(runtime.engine)
    path = make_backup(db, runtime.backups_dir, revision, keep, kind="manual")
    _audit(request, "backup.create", path.name)
    return backup_out(path)


@get("/api/admin/backups/{name:str}", sync_to_thread=True, tags=TAGS, summary="Download a backup")
def download(request: Request[Any, Any, Any], name: BackupName) -> Stream:
    """The backup file (a SQLite database, or a pg_dump archive for PostgreSQL) as an attachment. Only names of
    backups in the backup directory are served; anything else is a 404."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    path = _find(runtime, name)
    response = attachment(path, path.name, "application/octet-stream" if is_dump(path) else "application/vnd.sqlite3")
    _audit(request, "backup.download", path.name)
    return response


@post("/api/admin/backups/{name:str}/restore", tags=TAGS, status_code=200, summary="Restore a backup")
async def restore(request: Request[Any, Any, Any], name: BackupName) -> RestoreOut:
    """Replaces the database's content with the backup's, while the server runs: no restart is needed.

    First the backup is checked and, when an older xcore made it, migrated (on a copy); the current database is
    backed up (kind `safety`); then the copy goes into the live database in one transaction, and every worker
    reads the restored data from its next request on. Accounts, roles, sessions, plugin states and settings are
    all as they were in the backup: whoever signed in after it was made must sign in again. What only grows is
    kept from the live database: sessions and token families revoked, refresh tokens and recovery codes used,
    lockouts and failed logins counted, and audit events recorded after the backup was made.

    409 when the database is not SQLite, when the file is not an xcore database (another SQLite file), was made
    by a newer xcore (a schema revision this one does not know), holds no account, is damaged or truncated, or
    when another restore is running; 404 for an unknown name.
    """
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    db = sqlite_file(runtime, "restore a backup")
    path = _find(runtime, name)
    keep = runtime.config.migration.backup.max_backup_files
    try:
        done: Restored = await anyio.to_thread.run_sync(
            lambda: restore_live(db, path, runtime.backups_dir, keep, prepare=sync_builtin)
        )
    except RestoreRefused as exc:
        reason = str(exc)
        await anyio.to_thread.run_sync(lambda: _audit(request, "backup.restore_refused", name, reason=reason))
        raise Conflict(f"cannot restore: {reason}") from None
    # Nothing cached outside the database may outlive it: accounts (every worker re-reads them at its next
    # request), plugin states and settings (the plugin managers reconcile).
    runtime.auth.accounts_changed()
    manager = request.app.state.plugins
    if manager is not None:
        await anyio.to_thread.run_sync(signal_state_change, runtime)
    safety = done.safety.name if done.safety else None
    detail: dict[str, Any] = {"safety_backup": safety, "revision": done.revision}
    if done.migrated_to:
        detail["migrated_to"] = done.migrated_to
    await anyio.to_thread.run_sync(lambda: _audit(request, "backup.restore", name, **detail))
    if manager is not None:
        await manager.reconcile()
    migrated = f" (made by an older xcore, migrated to {done.migrated_to})" if done.migrated_to else ""
    message = (
        f"The database now holds the data of {name}{migrated}, and every worker uses it; no restart is needed. "
        "Everything changed after that backup was made is gone, including accounts, roles and sessions: "
        "anyone who signed in since, you perhaps included, may need to sign in again (revocations, lockouts and "
        "the audit log since then are kept). The database as it was "
        f"just before is kept as {safety}: restore that backup to undo this."
    )
    return RestoreOut(name, safety, message, restart_required=False)


def _find(runtime: Runtime, name: str) -> Path:
    path = find_backup(runtime.backups_dir, name)
    if path is None:
        raise NotFound(f"there is no backup named {name!r} in {runtime.backups_dir}; GET /api/admin/backups lists them")
    return path


def _audit(request: Request[Any, Any, Any], action: str, target: str, **detail: Any) -> None:
    runtime: Runtime = request.app.state.runtime
    with runtime.auth.transaction() as session:
        who = actor(request)
        audit.record(session, action, actor=who.username, target=target, ip=client_of(request).ip, **detail)


def backup_handlers() -> list[Any]:
    return [list_all, create, download, restore]
