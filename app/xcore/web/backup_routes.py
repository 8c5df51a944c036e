"""The backups admin API: list, make, download and restore backups, complete ones (`xcore.db.archive`: the
database, the plugins, their data and the settings) and those of the core database alone.

On SQLite every action is here: a backup made here is complete, optionally encrypted, and a complete backup is
restored from the backups folder or uploaded. On PostgreSQL backups are made (with pg_dump), listed and downloaded
here, but a restore replaces the database under every node: it is `xcore db restore FILE` with every node stopped,
and the listing says so (`restore.supported` false, with the reason).

Superadmins only: the default ACCESS_RULES rule `/api/admin/backups*` requires the role, and each handler also
wants the permission `backups.manage`, which only superadmins hold (a restore replaces every account, theirs
included). Every action is in the audit log. A restore takes effect at once in every worker
(see `xcore.db.restore`): the database with no restart, restored bundles as the plugin managers reload them; a
restored settings file or signing key at the next start (`restart_required`).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Annotated, Any, Literal, TypeVar

import anyio.to_thread
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody, Parameter
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED
from msgspec import Meta, Struct

from xcore.auth import audit
from xcore.auth.errors import Conflict, InvalidInput, NotFound
from xcore.auth.permissions import sync_builtin
from xcore.db.archive import (
    ArchiveRestored,
    BackupRefused,
    archive_info,
    configured_secret,
    emergency_kit,
    make_archive,
    open_archive,
    places,
    restore_archive,
)
from xcore.db.backup import (
    backup_kind,
    backup_source,
    backup_time,
    find_backup,
    is_archive,
    is_dump,
    list_backups,
)
from xcore.db.engine import mask_url
from xcore.db.restore import RestoreBusy, Restored, RestoreRefused, restore_live
from xcore.db.revisions import current_revision
from xcore.db.seal import SealError, Secret
from xcore.plugins.bundle import bundle_problem
from xcore.plugins.store import signal_state_change
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of
from xcore.web.download import attachment

TAGS = ["backups"]
RestoreResult = TypeVar("RestoreResult", Restored, ArchiveRestored)
PERMISSION = "backups.manage"
BackupName = Annotated[str, Parameter(max_length=200, description="The backup's file name, as listed.")]
MAX_UPLOAD = 16 * 1024**3  # bytes: a complete backup holds every plugin's data
Passphrase = Annotated[str, Meta(max_length=1024)]
KeyText = Annotated[str, Meta(max_length=16384)]  # a key, or the whole emergency kit holding it


class BackupOut(Struct):
    name: str
    size: int  # bytes
    created: datetime  # UTC, from the name (when it was made)
    kind: str  # manual | scheduled | migration | safety | unknown (made by an older xcore)
    complete: bool  # a complete backup (database, plugins, their data, settings), or the database alone
    encrypted: bool
    secret: str | None  # what opens an encrypted one: passphrase | key
    key_id: str | None  # which generated key, for one encrypted with a key


class BackupMade(BackupOut):
    # The emergency kit of a backup encrypted with a key generated for it, shown this once: xcore keeps no copy.
    emergency_kit: str | None = None
    emergency_kit_name: str | None = None


class BackupIn(Struct, forbid_unknown_fields=True):
    encryption: Annotated[
        Literal["settings", "off", "passphrase", "key"],
        Meta(
            description="settings: as migration.backup.encryption says, with its configured secret; off; "
            "passphrase (give it); key (a new key is generated, and its emergency kit is in the answer, once)."
        ),
    ] = "settings"
    passphrase: Passphrase | None = None


class RestoreIn(Struct, forbid_unknown_fields=True):
    passphrase: Passphrase | None = None  # for a backup encrypted with a passphrase
    key: KeyText | None = None  # for one encrypted with a key: the key, or its whole emergency kit


class RestoreSupport(Struct):
    supported: bool
    reason: str | None


class EncryptionOut(Struct):
    mode: str  # migration.backup.encryption: off | passphrase | key
    problem: str | None  # why scheduled backups cannot be made with it now (no secret configured), or None


class BackupList(Struct):
    items: list[BackupOut]  # newest first
    directory: str
    restore: RestoreSupport
    encryption: EncryptionOut


class RestoreOut(Struct):
    restored: str
    safety_backup: str | None  # None only when there was no database to back up
    message: str
    restart_required: bool
    plugins: list[str] | None = None  # a complete backup's bundles, now in the plugins folder
    changed: list[str] | None = None  # the settings files a complete backup changed
    bundle_problems: list[str] | None = None  # its bundles that fail the bundle check here ("name.zip: why")


@dataclass
class ArchiveUpload:
    """ArchiveUpload is the upload form: the backup file in `data`, and what opens it when it is encrypted."""

    data: UploadFile
    passphrase: str | None = None
    key: str | None = None


def backup_out(path: Path) -> BackupOut:
    info = path.stat()
    created = backup_time(path.name) or datetime.fromtimestamp(info.st_mtime, UTC)
    about = archive_info(path) if is_archive(path) else None
    return BackupOut(
        path.name, info.st_size, created, backup_kind(path.name),
        complete=about is not None and about.complete,
        encrypted=about is not None and about.encrypted,
        secret=about.secret if about else None,
        key_id=about.key_id if about else None,
    )  # fmt: skip


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
        "every node, so stop every node and run `xcore db restore FILE` with one of the backups listed here"
    )


@get("/api/admin/backups", sync_to_thread=True, tags=TAGS, summary="List backups")
def list_all(request: Request[Any, Any, Any]) -> BackupList:
    """The backups in `migration.backup.backup_directory`, newest first. `kind` says why each was made: by an
    admin, on schedule (task xcore.backup), before a migration, or as the safety copy taken before a restore;
    `complete` whether it holds everything or the database alone; `encrypted` and `secret` whether and with what
    (passphrase, or the key `key_id`) it is encrypted. `encryption.problem` says why backups encrypted as
    `migration.backup.encryption` asks cannot be made now (no passphrase or key configured). `restore.supported`
    is false, with the reason, when the core database is not SQLite (on PostgreSQL a restore is `xcore db
    restore`, every node stopped)."""
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
    settings = runtime.config.migration.backup
    try:
        configured_secret(settings, runtime.data, os.environ)
        problem = None
    except BackupRefused as exc:
        problem = str(exc)
    return BackupList(
        items, str(runtime.backups_dir), RestoreSupport(supported, reason), EncryptionOut(settings.encryption, problem)
    )


@post("/api/admin/backups", sync_to_thread=True, tags=TAGS, status_code=HTTP_201_CREATED, summary="Back up now")
def create(request: Request[Any, Any, Any], data: JSONBody[BackupIn | None] = None) -> BackupMade:
    """Makes a complete backup now, as kind `manual`, safely while servers run: one `.xcbackup` archive with the
    database (SQLite with its online backup API, PostgreSQL with pg_dump: a 503 says what to install when this
    machine has none), the plugins folder's bundles, every plugin's data folder, the settings file and the trust
    store. The newest `migration.backup.max_backup_files` manual backups are kept; older manual ones are deleted
    (other kinds are counted apart).

    `encryption` (default `settings`, as `migration.backup.encryption` says, with its configured secret: a 409
    when that secret is missing): `off`, `passphrase` (with `passphrase`, at least 12 characters), or `key`: a
    new key is generated and its emergency kit is in the answer (`emergency_kit`), this once. An encrypted backup
    also holds the data directory's secret.key, so that two-factor codes work after a restore elsewhere."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    db = database(runtime, "back up the database")
    settings = runtime.config.migration.backup
    choice = data or BackupIn()
    secret = _secret_to_make(runtime, choice)
    made = make_archive(
        places(runtime.data, runtime.config, db), runtime.backups_dir, current_revision(runtime.engine),
        settings.max_backup_files, "manual", secret,
    )  # fmt: skip
    _audit(request, "backup.create", made.path.name, encrypted=made.encrypted, key_id=secret.key_id if secret else None)
    out = backup_out(made.path)
    kit = emergency_kit(secret, made.path.name, made.archive_id) if choice.encryption == "key" and secret else None
    kit_name = f"{made.path.stem}-emergency-kit.txt" if kit else None
    fields = {f: getattr(out, f) for f in out.__struct_fields__}
    return BackupMade(**fields, emergency_kit=kit, emergency_kit_name=kit_name)


def _secret_to_make(runtime: Runtime, choice: BackupIn) -> Secret | None:
    """_secret_to_make is what encrypts a backup made now, as `choice` asks; 400 or 409 say what is missing."""
    if choice.encryption == "off":
        return None
    if choice.encryption == "key":
        return Secret.new_key()
    if choice.encryption == "passphrase":
        if not choice.passphrase:
            raise InvalidInput('encryption "passphrase" needs the passphrase', field="passphrase")
        try:
            return Secret.passphrase(choice.passphrase)
        except SealError as exc:
            raise InvalidInput(str(exc), field="passphrase") from None
    try:
        return configured_secret(runtime.config.migration.backup, runtime.data, os.environ)
    except BackupRefused as exc:
        raise Conflict(str(exc)) from None


@get("/api/admin/backups/{name:str}", sync_to_thread=True, tags=TAGS, summary="Download a backup")
def download(request: Request[Any, Any, Any], name: BackupName) -> Stream:
    """The backup file (a complete backup, a `.xcbackup` archive; or a backup of the database alone: a SQLite
    database, or a pg_dump archive for PostgreSQL) as an attachment. Only names of
    backups in the backup directory are served; anything else is a 404."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    path = _find(runtime, name)
    sqlite = not is_dump(path) and not is_archive(path)
    response = attachment(path, path.name, "application/vnd.sqlite3" if sqlite else "application/octet-stream")
    _audit(request, "backup.download", path.name)
    return response


@post("/api/admin/backups/{name:str}/restore", tags=TAGS, status_code=200, summary="Restore a backup")
async def restore(
    request: Request[Any, Any, Any], name: BackupName, data: JSONBody[RestoreIn | None] = None
) -> RestoreOut:
    """Restores a backup of the backups folder while the server runs.

    A complete backup (`.xcbackup`) brings back everything it holds (see `POST /api/admin/backups/restore-upload`);
    give `passphrase` or `key` when it is encrypted. A backup of the database alone (`.db`: one an older xcore
    made, a migration's, a safety one taken before such a restore) replaces the database's content only.

    First the backup is checked and, when an older xcore made it, migrated (on a copy); the current state is backed
    up (kind `safety`); then the copy goes into the live database in one transaction, and every worker reads the
    restored data from its next request on. Accounts, roles, sessions, plugin states and settings are all as they
    were in the backup: whoever signed in after it was made must sign in again. What only grows is kept from the
    live database: sessions and token families revoked, refresh tokens and recovery codes used, lockouts and
    failed logins counted, and audit events recorded after the backup was made.

    409 when the database is not SQLite, when the file is not an xcore backup (another SQLite file), was made by a
    newer xcore (a schema revision this one does not know), holds no account, is damaged or truncated, when the
    passphrase or key is missing or wrong, or when another restore is running; 400 for a passphrase or key that
    cannot be one (too short, mistyped); 404 for an unknown name.
    """
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    db = sqlite_file(runtime, "restore a backup")
    path = _find(runtime, name)
    if is_archive(path):
        secret = _secret_to_open(data or RestoreIn())  # 400 for one that cannot be a passphrase or key

        def work() -> ArchiveRestored:
            with path.open("rb") as source:
                return _restore_archive(runtime, db, source, name, secret, spare=path)

        return await _restored(request, name, await _restoring(request, name, work))
    keep = runtime.config.migration.backup.max_backup_files
    restored = await _restoring(
        request, name, lambda: restore_live(db, path, runtime.backups_dir, keep, prepare=sync_builtin)
    )
    return await _restored(request, name, restored)


@post(
    "/api/admin/backups/restore-upload",
    tags=TAGS,
    status_code=200,
    summary="Restore an uploaded backup",
    request_max_body_size=MAX_UPLOAD,
)
async def restore_upload(
    request: Request[Any, Any, Any],
    data: Annotated[
        ArchiveUpload,
        Body(
            media_type=RequestEncodingType.MULTI_PART,
            description="The complete backup (.xcbackup) in `data`; `passphrase` or `key` when it is encrypted.",
        ),
    ],
) -> RestoreOut:
    """Restores a complete backup uploaded as the multipart field `data` (a `.xcbackup` file, at most 16 GiB),
    while the server runs: the database, the plugins (the very bundles backed up, byte for byte; others are
    removed), every plugin's data folder, the settings file, the trust store and, from an encrypted backup, the
    signing key. Give `passphrase` or `key` (the key, or the whole emergency kit) for an encrypted one.

    The whole archive is checked before anything is changed (the encryption, every member against the manifest's
    sha256, the database, each bundle, each plugin database, the settings); then the current state is backed up
    (kind `safety`, complete), and everything is put back. Every worker serves the restored database at once and
    reloads the restored plugins; `restart_required` says when the settings file or the signing key changed,
    which each process reads only at its start.

    400 for an upload that is not a backup this xcore restores (damaged, cut short, edited, a newer xcore's, no
    account in it) or a missing or wrong passphrase or key, with the reason; 409 when the core database is not
    SQLite or another restore is running. Nothing is changed by a refused restore."""
    actor(request, PERMISSION)
    runtime: Runtime = request.app.state.runtime
    upload = data.data
    name = Path(upload.filename or "upload.xcbackup").name
    try:
        db = sqlite_file(runtime, "restore a backup")
        secret = _secret_to_open(RestoreIn(passphrase=data.passphrase or None, key=data.key or None))
        source: IO[bytes] = upload.file  # Litestar's spooled copy of the upload: on disk past 1 MiB

        def work() -> ArchiveRestored:
            source.seek(0)
            return _restore_archive(runtime, db, source, name, secret, spare=None)

        done = await _restoring(request, name, work, upload=True)
    finally:
        await upload.close()
    return await _restored(request, name, done, upload=True)


def _secret_to_open(given: RestoreIn) -> Secret | None:
    """_secret_to_open is the Secret given to open an encrypted backup; 400 for one that cannot be one."""
    if given.passphrase and given.key:
        raise InvalidInput("give the passphrase or the key, not both", field="key")
    try:
        if given.key:
            return Secret.key(given.key)
        if given.passphrase:
            return Secret.passphrase(given.passphrase)
    except SealError as exc:
        raise InvalidInput(str(exc), field="key" if given.key else "passphrase") from None
    return None


def _restore_archive(
    runtime: Runtime, db: Path, source: IO[bytes], name: str, secret: Secret | None, spare: Path | None
) -> ArchiveRestored:
    """_restore_archive checks and restores a complete backup into the running server's data directory."""
    settings = runtime.config.migration.backup
    safety_secret = configured_secret(settings, runtime.data, os.environ)  # BackupRefused before anything else

    def safety() -> Path | None:
        where = places(runtime.data, runtime.config, db)
        revision = current_revision(runtime.engine)
        made = make_archive(
            where, runtime.backups_dir, revision, settings.max_backup_files, "safety", safety_secret, spare=spare
        )
        return made.path

    with open_archive(source, name, runtime.backups_dir, secret) as staged:
        return restore_archive(
            staged, runtime.data, runtime.config, db, runtime.backups_dir, settings.max_backup_files,
            environ=os.environ, prepare=sync_builtin, check_bundle=bundle_check(runtime), safety_backup=safety,
        )  # fmt: skip


def bundle_check(runtime: Runtime) -> Callable[[Path], str | None]:
    """bundle_check checks a bundle of a backup with the plugin bundle check (`xcore.plugins.bundle`)."""
    return partial(bundle_problem, default_entry=runtime.config.manager.plugins.entry_point)


async def _restoring(
    request: Request[Any, Any, Any], name: str, work: Callable[[], RestoreResult], upload: bool = False
) -> RestoreResult:
    """_restoring runs the restore `work` in a thread and answers its refusals: the safety backup that cannot be
    made and a restore already running are 409; a backup refused is audited, then 409 for one of the backups
    folder, 400 (field `data`) for an upload, the client's file."""
    try:
        return await anyio.to_thread.run_sync(work)
    except BackupRefused as exc:
        raise Conflict(f"cannot restore: the safety backup taken first cannot be made: {exc}") from None
    except RestoreBusy as exc:
        raise Conflict(f"cannot restore: {exc}") from None
    except RestoreRefused as exc:
        extra = {"upload": True} if upload else {}
        reason = str(exc)
        await anyio.to_thread.run_sync(lambda: _audit(request, "backup.restore_refused", name, reason=reason, **extra))
        if upload:
            raise InvalidInput(f"cannot restore: {exc}", field="data") from None
        raise Conflict(f"cannot restore: {exc}") from None


async def _restored(
    request: Request[Any, Any, Any], name: str, done: Restored | ArchiveRestored, upload: bool = False
) -> RestoreOut:
    """_restored refreshes what is cached outside the database, audits the restore and says what it did."""
    runtime: Runtime = request.app.state.runtime
    restored = done.database if isinstance(done, ArchiveRestored) else done
    # Nothing cached outside the database may outlive it: accounts (every worker re-reads them at its next
    # request), plugin states, settings and bundles (the plugin managers reconcile).
    runtime.auth.accounts_changed()
    manager = request.app.state.plugins
    if manager is not None:
        await anyio.to_thread.run_sync(signal_state_change, runtime)
    safety = restored.safety.name if restored.safety else None
    detail: dict[str, Any] = {"safety_backup": safety, "revision": restored.revision}
    if restored.migrated_to:
        detail["migrated_to"] = restored.migrated_to
    if isinstance(done, ArchiveRestored):
        detail.update(plugins=done.plugins, changed=done.changed, restart_required=done.restart_required)
    if upload:
        detail["upload"] = True
    await anyio.to_thread.run_sync(lambda: _audit(request, "backup.restore", name, **detail))
    if manager is not None:
        await manager.reconcile()
    migrated = f" (made by an older xcore, migrated to {restored.migrated_to})" if restored.migrated_to else ""
    undo = f"The state as it was just before is kept as {safety}: restore that backup to undo this."
    signed_out = (
        "Everything changed after that backup was made is gone, including accounts, roles and sessions: "
        "anyone who signed in since, you perhaps included, may need to sign in again (revocations, lockouts and "
        "the audit log since then are kept)."
    )
    if not isinstance(done, ArchiveRestored):
        message = (
            f"The database now holds the data of {name}{migrated}, and every worker uses it; no restart is needed. "
            f"{signed_out} {undo.replace('state', 'database')}"
        )
        return RestoreOut(name, safety, message, restart_required=False)
    count = len(done.plugins)
    restart = (
        ". The settings file or the signing key changed: xcore reads them when it starts, so restart it for them to "
        "take effect."
        if done.restart_required
        else "; no restart is needed."
    )
    message = (
        f"Everything is now as it was in {name}{migrated}: the database, {count} plugin bundle(s) with every "
        f"plugin's data, and the settings. Every worker uses the restored database and reloads the plugins"
        f"{restart} {signed_out} {undo}"
    )
    if done.bundle_problems:
        message += (
            " Restored as they were, these bundles fail the bundle check here, so they do not load: "
            + "; ".join(done.bundle_problems)
            + "."
        )
    return RestoreOut(
        name, safety, message, done.restart_required, plugins=done.plugins, changed=done.changed,
        bundle_problems=done.bundle_problems,
    )  # fmt: skip


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
    return [list_all, create, download, restore, restore_upload]
