"""`xcore db upgrade | downgrade REV | current | history | backup | restore FILE | backup-key KIT`."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xcore.cli.options import data_dir_option
from xcore.cli.output import echo
from xcore.errors import DatabaseError
from xcore.runtime import Runtime, open_runtime

if TYPE_CHECKING:
    from xcore.db.archive import ArchiveRestored
    from xcore.db.seal import Secret

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


def _read_secret_file(path: Path, option: str) -> str:
    """_read_secret_file reads a passphrase or key file (`-`: standard input); a ClickException says why not."""
    import sys

    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: cannot be read ({exc})", param_hint=option) from None


def _given_secret(passphrase_file: Path | None, key_file: Path | None) -> Secret | None:
    """_given_secret is the Secret the --passphrase-file or --key-file option gives (None for neither)."""
    from xcore.db.seal import SealError, Secret

    if passphrase_file and key_file:
        raise click.UsageError("give --passphrase-file or --key-file, not both")
    try:
        if passphrase_file:
            return Secret.passphrase(_read_secret_file(passphrase_file, "--passphrase-file").strip())
        if key_file:
            return Secret.key(_read_secret_file(key_file, "--key-file"))
    except SealError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-file" if key_file else "--passphrase-file") from None
    return None


passphrase_file_option = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the passphrase (`-`: standard input; surrounding whitespace is ignored).",
)
key_file_option = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File holding the backup key: its emergency kit, or the key alone (`-`: standard input).",
)


@db.command()
@click.option(
    "--database-only", is_flag=True, help="Back up the core database alone (a .db or .dump file), unencrypted."
)
@passphrase_file_option
@key_file_option
@click.option(
    "--new-key",
    "kit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Encrypt with a newly generated key, and write its emergency kit to this file (which must not exist).",
)
@click.option("--plain", is_flag=True, help="Do not encrypt, whatever migration.backup.encryption says.")
@data_dir_option
def backup(
    database_only: bool,
    passphrase_file: Path | None,
    key_file: Path | None,
    kit: Path | None,
    plain: bool,
    data_dir: str | None,
) -> None:
    """Back up everything now, safely while servers run: one .xcbackup archive with the core database (SQLite
    with its online backup API, PostgreSQL with pg_dump from the PostgreSQL client), the plugins folder's
    bundles, every plugin's data folder, config.json and the trust store.

    It is encrypted as migration.backup.encryption says (its passphrase or key from XCORE_BACKUP_SECRET or
    migration.backup.secret_file), or with --passphrase-file, --key-file or --new-key; --plain never encrypts.
    An encrypted archive also holds secret.key (the sessions' signing key, which also seals two-factor secrets)."""
    from xcore.db import migrate
    from xcore.db.archive import configured_secret, emergency_kit, make_archive, places
    from xcore.db.backup import make_backup
    from xcore.db.seal import Secret

    runtime = open_runtime(data_dir)
    source = _database(runtime, "backup")
    if isinstance(source, Path) and not source.exists():
        raise DatabaseError(f"there is no database yet at {source}")
    chosen = [name for name, on in (("--passphrase-file", passphrase_file), ("--key-file", key_file),
                                    ("--new-key", kit), ("--plain", plain)) if on]  # fmt: skip
    if len(chosen) > 1 or (database_only and chosen):
        given = chosen + (["--database-only"] if database_only else [])
        raise click.UsageError(f"{' and '.join(given)} do not go together: give one of them")
    if kit is not None and kit.exists():
        raise click.BadParameter(f"{kit} exists already; choose a new file for the kit", param_hint="--new-key")
    revision = migrate.current_revision(runtime.engine)
    keep = runtime.config.migration.backup.max_backup_files
    if database_only:
        path = make_backup(source, runtime.backups_dir, revision, keep, kind="manual")
        echo(f"backup written: {path}")
        return
    secret = _given_secret(passphrase_file, key_file)
    if kit is not None:
        secret = Secret.new_key()
    elif secret is None and not plain:
        secret = configured_secret(runtime.config.migration.backup, runtime.data, os.environ)
    made = make_archive(places(runtime.data, runtime.config, source), runtime.backups_dir, revision, keep,
                        "manual", secret)  # fmt: skip
    echo(f"backup written: {made.path}")
    if kit is not None and secret is not None:
        _write_private(kit, emergency_kit(secret, made.path.name, made.archive_id))
        echo(f"encrypted with a new key; its emergency kit is {kit}: keep it safe, away from this machine")
    elif secret is not None:
        echo(f"encrypted with the {'passphrase' if secret.kind == 'passphrase' else f'backup key {secret.key_id}'}")


def _write_private(path: Path, text: str) -> None:
    """_write_private writes a new file readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise DatabaseError(f"cannot write {path}: {exc.strerror or exc}") from None


@db.command("backup-key")
@click.argument("kit", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
def backup_key(kit: Path, data_dir: str | None) -> None:
    """Generate the backup key that encrypts scheduled backups (migration.backup.encryption "key"): it is written
    to migration.backup.secret_file, and its emergency kit to KIT, which you keep away from this machine.
    Refused when that file holds a key already: the backups made with it need it."""
    from xcore.db.archive import emergency_kit
    from xcore.db.seal import Secret, key_text

    runtime = open_runtime(data_dir)
    settings = runtime.config.migration.backup
    target = runtime.data.resolve(settings.secret_file)
    if target.exists():
        raise DatabaseError(
            f"{target} exists already: the backups encrypted with it need it. Move it away (with its emergency kit "
            "kept) first to make a new key"
        )
    if kit.exists():
        raise click.BadParameter(f"{kit} exists already; choose a new file for the kit", param_hint="KIT")
    secret = Secret.new_key()
    _write_private(kit, emergency_kit(secret))
    _write_private(target, key_text(secret.value) + "\n")
    echo(f"backup key {secret.key_id} written to {target}; its emergency kit is {kit}: keep it safe, away from here")
    if settings.encryption != "key":
        echo('set migration.backup.encryption to "key" for the backups to be encrypted with it')


def _restore_archive(runtime: Runtime, target: Path | str, file: Path, secret: Secret | None) -> ArchiveRestored:
    """_restore_archive restores the complete backup `file` into the data directory, the server stopped."""
    from xcore.auth.permissions import sync_builtin
    from xcore.db.archive import configured_secret, make_archive, open_archive, places, restore_archive
    from xcore.db.revisions import current_revision
    from xcore.plugins.bundle import bundle_problem

    settings = runtime.config.migration.backup
    check = partial(bundle_problem, default_entry=runtime.config.manager.plugins.entry_point)
    safety_secret = configured_secret(settings, runtime.data, os.environ)  # refused before anything is read

    def safety() -> Path:
        where = places(runtime.data, runtime.config, target)
        revision = current_revision(runtime.engine)
        made = make_archive(where, runtime.backups_dir, revision, settings.max_backup_files, "safety", safety_secret,
                            spare=file)  # fmt: skip
        runtime.engine.dispose()  # no connection of this command stays open on the database being restored
        return made.path

    try:
        with file.open("rb") as source:
            handle = open_archive(source, file.name, runtime.backups_dir, secret)
    except OSError as exc:
        raise DatabaseError(f"backup file {file}: cannot be read: {exc.strerror or exc}") from None
    with handle as staged:
        # No account in FILE is allowed here: the next start then asks for the owner account again.
        return restore_archive(
            staged, runtime.data, runtime.config, target, runtime.backups_dir, settings.max_backup_files,
            environ=os.environ, prepare=sync_builtin, check_bundle=check, safety_backup=safety,
            require_accounts=False,
        )  # fmt: skip


@db.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@passphrase_file_option
@key_file_option
@data_dir_option
def restore(file: Path, passphrase_file: Path | None, key_file: Path | None, data_dir: str | None) -> None:
    """Restore the backup FILE. Refused while a server runs (on PostgreSQL: any node); the current state is
    backed up first.

    A complete backup (.xcbackup, from `xcore db backup`) brings back the database, the very plugin bundles it
    holds (others are removed), every plugin's data folder, config.json and the trust store, and, from an
    encrypted one (--passphrase-file or --key-file), secret.key; it works into an empty data directory too.
    Everything in it is checked before anything is changed.

    A backup of the database alone (.db for SQLite, .dump for PostgreSQL) replaces the database only. An older
    database is migrated. On SQLite, revocations, lockouts and audit events recorded since it was made are kept;
    on PostgreSQL every session ends instead (see `xcore.db.restore`)."""
    from xcore.auth.permissions import sync_builtin
    from xcore.db.archive import looks_like_archive
    from xcore.db.backup import is_archive
    from xcore.db.engine import mask_url
    from xcore.db.restore import restore_live, restore_postgres
    from xcore.db.serving import ServingLock

    runtime = open_runtime(data_dir)
    target = _database(runtime, "restore")
    if not file.is_file():
        raise DatabaseError(f"backup file {file}: does not exist")
    secret = _given_secret(passphrase_file, key_file)
    keep = runtime.config.migration.backup.max_backup_files
    # By its first bytes, or by its name: a damaged .xcbackup is refused as an archive, not as a database.
    complete = looks_like_archive(file) or is_archive(file)
    with ServingLock(runtime.database_url, runtime.database_file).exclusive("restore the database"):
        if complete:
            restored = _restore_archive(runtime, target, file, secret)
            done = restored.database
        elif isinstance(target, Path):
            # No account in FILE is allowed here: the next start then asks for the owner account again.
            done = restore_live(target, file, runtime.backups_dir, keep, prepare=sync_builtin, require_accounts=False)
        else:
            done = restore_postgres(target, file, runtime.backups_dir, keep, prepare=sync_builtin)
    if done.safety is not None:
        echo(f"the current {'state' if complete else 'database'} was backed up first: {done.safety}")
    if done.migrated_to:
        echo(f"{file.name} was made by an older xcore: migrated {done.revision} -> {done.migrated_to}")
    shown = target if isinstance(target, Path) else mask_url(target)
    echo(f"restored {shown} from {file}" + ("" if isinstance(target, Path) else "; every session has ended"))
    if complete:
        echo(f"plugins: {', '.join(restored.plugins) or 'none'}; with every plugin's data and the settings files")
        for problem in restored.bundle_problems:
            echo(f"plugins/{problem}; restored as it was, it does not load here")
        for path in restored.kept_open:
            echo(f"{path} was in use, so it was emptied rather than deleted")
