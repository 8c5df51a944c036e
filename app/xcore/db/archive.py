"""Complete backups: one archive with everything a data directory needs to come back as it was, and its restore.

An archive (`xcore-<UTC time>-<revision>-<kind>.xcbackup`) is a gzip-compressed tar (POSIX pax) of:

- `database.db`: the core database, copied with SQLite's online backup API (`database.dump`, pg_dump's archive, on
  PostgreSQL);
- `plugins/<name>.zip`: every bundle of the plugins folder, byte for byte;
- `plugin-data/<id>/...`: every plugin's data folder; its SQLite databases copied with the backup API, consistent
  while the plugin writes (their -wal, -shm and -journal files are not needed then), other files as they are read;
- `plugin-wheels/...`: the wheels of plugins' requirements that came from the package index, so a restore needs no
  network;
- `config.json` (the user's settings file of the data directory) and `trusted-keys.json` (the signing keys the
  operator trusts), when there are;
- `secret.key`, the key that signs sessions and seals the accounts' two-factor secrets, in an encrypted archive
  only: in a plain one it would let whoever reads the archive sign in as anyone on the running server;
- `manifest.json`, last: the format, xcore's version, the schema revision, the time, the kind, and each member's
  name, size and sha256.

Plugins' enabled flags, settings and key-value data are in the core database. An archive is written as a stream
(tar, then gzip, then, when encrypted, `xcore.db.seal`'s chunks) under a temporary name, then linked into place
complete; only one chunk of it is in memory at a time.

A restore (`open_archive`, then `restore_archive`) first unpacks the archive into a private folder of the backups
folder, checking as it goes, and refuses it before anything else is touched for anything wrong: a wrong secret, a
damaged or truncated archive (the encryption's tags, gzip's CRC, each member's sha256 against the manifest), a member
the manifest does not list or a listed one missing, a member name that is not one of the above, a database that is not
an intact xcore database this xcore can migrate, a plugin database that fails SQLite's check, a settings file this xcore
refuses. A bundle that fails the bundle check here is no reason to refuse: the archive holds the plugins folder as it
was, and its sha256 proves the bundle is the very one backed up; it is restored as it was, the plugin manager refuses it
as it did then, and the result names it (`bundle_problems`). Then the current state is backed up (kind `safety`, a
complete archive), the database is restored (`xcore.db.restore`), and the files are written back.

No file that may be open is renamed over or deleted while open (Windows refuses both): SQLite databases are written
through the backup API into the live file, as `restore_live` does with the core database; other files are
written in place. A plugin file the archive does not hold and that cannot be deleted (open) is emptied instead.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from filelock import FileLock, Timeout
from sqlalchemy.orm import Session

from xcore import __version__
from xcore.config import XcoreConfig
from xcore.config.schema import BackupConfig
from xcore.db.backup import (
    ARCHIVE_EXTENSION,
    PARTIAL_PREFIX,
    PARTIAL_SUFFIX,
    SQLITE_MAGIC,
    backup_name,
    check_sqlite_file,
    copy_sqlite,
    link_new,
    prune_backups,
)
from xcore.db.restore import RestoreBusy, Restored, RestoreRefused, restore_live, restore_postgres
from xcore.db.seal import SealedReader, SealedWriter, SealError, Secret, is_sealed, key_text, read_header
from xcore.errors import ConfigError, DatabaseError
from xcore.paths import DataDir, write_atomically

log = logging.getLogger("xcore.db")

FORMAT = "xcore-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_SQLITE, DATABASE_DUMP = "database.db", "database.dump"
CONFIG, TRUST, SECRET = "config.json", "trusted-keys.json", "secret.key"
PLUGINS, PLUGIN_DATA, WHEELS = "plugins", "plugin-data", "plugin-wheels"
# The places `xcore.plugins.store` keeps them in (plugin_data_dir, wheel_store, trust_store): the database layer
# cannot import it, and tests/test_archive.py checks that both agree.
PLUGIN_DATA_FOLDER, WHEELS_FOLDER, TRUST_FILE = "plugin-data", "plugin-wheels", "trusted-keys.json"
PLUGIN_ID = re.compile(r"^[a-z][a-z0-9_]{1,39}\Z")  # xcore.plugins.contract.PLUGIN_ID
# The names `xcore.plugins.leftovers` deletes at the next start when a process dies while writing one.
TEMP_PREFIX = ".upload-restore-"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
MAX_MANIFEST = 16 << 20
FREE_RESERVE = 256 << 20  # bytes an unpacking leaves free on its disk: an archive never fills it
COMPRESSION = 6  # gzip's level: most of the gain of 9 for a fraction of its time
RESTORE_LOCK = ".xcore-restore.lock"
WINDOWS_FORBIDDEN = set('<>:"|?*\\')
BUSY_TRIES, BUSY_WAIT = 20, 0.1  # a bundle the watcher is reading (Windows refuses to delete it meanwhile)


class ArchiveRefused(RestoreRefused):
    """ArchiveRefused is an archive this xcore will not restore, or a secret that does not open it: one line that
    names the archive and what is wrong. Nothing was changed."""


class BackupRefused(DatabaseError):
    """BackupRefused is a backup that was not made, for a reason the user can fix (an encryption without a secret)."""


# --- what a complete backup holds, and where -------------------------------------------------------------------


@dataclass(frozen=True)
class Places:
    """Places says where one data directory keeps each part of a complete backup."""

    database: Path | str  # the SQLite file, or the URL of the PostgreSQL database
    plugins: Path
    plugin_data: Path
    wheels: Path
    config: Path
    trust: Path
    secret: Path


def places(data: DataDir, config: XcoreConfig, database: Path | str) -> Places:
    """places is where `data`, with the settings `config`, keeps what a complete backup holds."""
    return Places(
        database=database,
        plugins=data.resolve(config.manager.plugins.directory),
        plugin_data=data.root / PLUGIN_DATA_FOLDER,
        wheels=data.root / WHEELS_FOLDER,
        config=data.config_file,
        trust=data.root / TRUST_FILE,
        secret=data.secret_file,
    )


# --- the secret of encrypted backups -----------------------------------------------------------------------------


def configured_secret(settings: BackupConfig, data: DataDir, environ: Mapping[str, str]) -> Secret | None:
    """configured_secret is the Secret `migration.backup.encryption` asks for (None when it is off), read from the
    environment variable XCORE_BACKUP_SECRET, else from `migration.backup.secret_file`. Raises BackupRefused saying
    where to put it when neither holds one, or what is wrong with the one found: an encrypted backup is never made
    unencrypted instead."""
    from xcore.config.loader import ENV_BACKUP_SECRET

    if settings.encryption == "off":
        return None
    file = data.resolve(settings.secret_file)
    what = "passphrase" if settings.encryption == "passphrase" else "backup key"
    if environ.get(ENV_BACKUP_SECRET):
        text, source = environ[ENV_BACKUP_SECRET], f"the environment variable {ENV_BACKUP_SECRET}"
    else:
        try:
            text, source = file.read_text(encoding="utf-8"), str(file)
        except FileNotFoundError:
            raise BackupRefused(
                f"migration.backup.encryption is {settings.encryption!r} but no {what} is set: put it in "
                f"{ENV_BACKUP_SECRET} or in {file} (mode 0600){_key_hint(settings)}; no backup was written"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupRefused(f"the {what} file {file} cannot be read ({exc}); no backup was written") from None
    try:
        return Secret.passphrase(text.strip()) if settings.encryption == "passphrase" else Secret.key(text)
    except SealError as exc:
        raise BackupRefused(f"the {what} in {source} cannot be used: {exc}; no backup was written") from None


def _key_hint(settings: BackupConfig) -> str:
    return " (`xcore db backup-key` makes one, with its emergency kit)" if settings.encryption == "key" else ""


def emergency_kit(secret: Secret, archive: str | None = None, archive_id: str | None = None) -> str:
    """emergency_kit is the text of the file that keeps a generated backup key: the key, its id, the backup it was
    made for (when one) and how to restore with it."""
    assert secret.kind == "key"
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "xcore backup emergency kit",
        "==========================",
        "",
        "Keep this file somewhere safe, away from this machine and its backups:",
        "print it, or keep it in a password manager. Whoever has the key can read",
        "the backups it encrypts; without it nobody can, you included. xcore does",
        "not keep a copy.",
        "",
        f"Backup key:  {key_text(secret.value)}",
        f"Key id:      {secret.key_id}",
    ]
    if archive:
        lines.append(f"Backup:      {archive}")
        if archive_id:
            lines.append(f"Backup id:   {archive_id}")
    lines += [
        f"Made:        {made} by xcore {__version__}",
        "",
        "To restore a backup encrypted with this key:",
        "  - in the admin UI: Backups, Restore from a file: choose the backup",
        "    file, then paste the key (or this whole kit);",
        "  - on the command line, with the server stopped:",
        "      xcore db restore BACKUP-FILE --key-file THIS-FILE",
        "",
    ]
    return "\n".join(lines)


# --- making one ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """Made is a complete backup just written."""

    path: Path
    archive_id: str
    encrypted: bool


@dataclass
class _Member:
    name: str
    size: int
    sha256: str
    sqlite: bool = False


class _Hashing:
    """A reader of exactly `size` bytes of `source` that hashes them; fails when the file ends sooner."""

    def __init__(self, source: IO[bytes], size: int, shown: str) -> None:
        self.source, self.left, self.shown = source, size, shown
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        wanted = self.left if size < 0 else min(size, self.left)
        data = self.source.read(wanted)
        if len(data) < wanted:
            raise BackupRefused(f"{self.shown} got shorter while it was backed up; back up again")
        self.left -= len(data)
        self.digest.update(data)
        return data


class _Writer:
    """Adds members to the tar stream of an archive and remembers each one's size and hash."""

    def __init__(self, tar: tarfile.TarFile, scratch: Path) -> None:
        self.tar, self.scratch = tar, scratch
        self.members: list[_Member] = []

    def add_file(self, name: str, path: Path, sqlite: bool = False) -> None:
        """add_file adds the file at `path` as `name`, as much of it as there was when it was opened."""
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            reader = _Hashing(source, size, str(path))
            self.tar.addfile(_info(name, size), reader)
        self.members.append(_Member(name, size, reader.digest.hexdigest(), sqlite))

    def add_sqlite(self, name: str, path: Path) -> None:
        """add_sqlite adds a consistent copy of the SQLite database at `path`, made with the backup API."""
        fd, tmp = tempfile.mkstemp(dir=self.scratch, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        os.close(fd)
        copy = Path(tmp)
        try:
            copy_sqlite(path, copy, source_mode="rw", standalone=True)
            self.add_file(name, copy, sqlite=True)
        finally:
            for suffix in ("", "-journal"):
                copy.with_name(copy.name + suffix).unlink(missing_ok=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


def is_sqlite(path: Path) -> bool:
    """is_sqlite tells a SQLite database file by its first bytes."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _side_file(path: Path) -> bool:
    """Tells the -wal, -shm and -journal files of a SQLite database beside it (its copy needs none of them)."""
    for suffix in SQLITE_SIDE_FILES:
        if path.name.endswith(suffix) and is_sqlite(path.with_name(path.name[: -len(suffix)])):
            return True
    return False


def _tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yields (relative POSIX path, path) of the regular files under `root`, sorted, links not followed."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                log.warning("backup: left out %s, which is not a regular file", path)
                continue
            yield path.relative_to(root).as_posix(), path


def make_archive(
    where: Places,
    directory: Path,
    revision: str | None,
    keep: int,
    kind: str,
    secret: Secret | None = None,
    spare: Path | None = None,
) -> Made:
    """make_archive writes a complete backup of `where` into `directory` (encrypted with `secret` when given) and
    keeps only the newest `keep` backups of its kind, and `spare` (as `xcore.db.backup.make_backup`). Raises
    DatabaseError (BackupRefused for a reason the user can fix); nothing named like a backup is left then."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    archive_id = uuid.uuid4().hex
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    partial = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink: Any = SealedWriter(raw, secret, archive_id) if secret is not None else raw
            with (
                gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=COMPRESSION, mtime=0) as compressed,
                tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                writer = _Writer(tar, directory)
                _write_members(writer, where, secret is not None)
                writer.add_bytes(MANIFEST, _manifest(archive_id, revision, kind, where, secret, writer.members))
            if secret is not None:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        target = link_new(partial, directory, backup_name(revision, kind=kind, extension=ARCHIVE_EXTENSION))
    except sqlite3.Error as exc:
        raise DatabaseError(f"complete backup into {directory} failed: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"complete backup into {directory} failed: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    log.info("backed up everything to %s%s", target, " (encrypted)" if secret else "")
    prune_backups(directory, keep, spare, kind=kind)
    return Made(target, archive_id, secret is not None)


def _write_members(writer: _Writer, where: Places, encrypted: bool) -> None:
    if isinstance(where.database, Path):
        writer.add_sqlite(DATABASE_SQLITE, where.database)
    else:
        from xcore.db import pgdump

        fd, tmp = tempfile.mkstemp(dir=writer.scratch, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
        os.close(fd)
        try:
            pgdump.dump(where.database, Path(tmp))
            writer.add_file(DATABASE_DUMP, Path(tmp))
        finally:
            Path(tmp).unlink(missing_ok=True)
    if where.plugins.is_dir():
        for path in sorted(where.plugins.iterdir()):
            if path.suffix.lower() == ".zip" and not path.name.startswith(".") and path.is_file():
                writer.add_file(f"{PLUGINS}/{path.name}", path)
    if where.plugin_data.is_dir():
        for folder in sorted(where.plugin_data.iterdir()):
            if not folder.is_dir() or folder.is_symlink() or not PLUGIN_ID.match(folder.name):
                log.warning("backup: left out %s, which is not a plugin's data folder", folder)
                continue
            for relative, path in _tree_files(folder):
                if not _side_file(path):
                    _add_unless_gone(writer, f"{PLUGIN_DATA}/{folder.name}/{relative}", path)
    for relative, path in _tree_files(where.wheels):
        _add_unless_gone(writer, f"{WHEELS}/{relative}", path)
    for name, path in ((CONFIG, where.config), (TRUST, where.trust)):
        if path.is_file():
            writer.add_file(name, path)
    if encrypted and where.secret.is_file():
        writer.add_file(SECRET, where.secret)


def _add_unless_gone(writer: _Writer, name: str, path: Path) -> None:
    """Adds a plugin's file (a SQLite database through the backup API); one the plugin deleted meanwhile is left
    out, as it would be had the backup started a moment later."""
    try:
        if is_sqlite(path):
            writer.add_sqlite(name, path)
        else:
            writer.add_file(name, path)
    except (FileNotFoundError, sqlite3.OperationalError):
        if path.exists():
            raise
        log.info("backup: left out %s, deleted while the backup was made", path)


def _manifest(
    archive_id: str, revision: str | None, kind: str, where: Places, secret: Secret | None, members: list[_Member]
) -> bytes:
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "id": archive_id,
        "xcore": __version__,
        "revision": revision,
        "database": "sqlite" if isinstance(where.database, Path) else "postgresql",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": kind,
        "encrypted": secret is not None,
        "key_id": secret.key_id if secret is not None else None,
        "members": [
            {"name": m.name, "size": m.size, "sha256": m.sha256, **({"sqlite": True} if m.sqlite else {})}
            for m in members
        ],
    }
    return json.dumps(document, indent=2).encode()


# --- reading one ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveInfo:
    """ArchiveInfo is what a backup file says of itself without being read through: whether it is a complete
    backup, and whether (and with what) it is encrypted."""

    complete: bool
    encrypted: bool
    secret: str | None  # "passphrase" or "key" when encrypted
    key_id: str | None


def archive_info(path: Path) -> ArchiveInfo:
    """archive_info reads the start of a backup file: a complete backup (plain: gzip; encrypted: a sealed header)
    or not."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
            if head == b"\x1f\x8b":
                return ArchiveInfo(True, False, None, None)
            handle.seek(0)
            if is_sealed(handle.read(8)):
                handle.seek(0)
                header = read_header(handle, path.name)
                return ArchiveInfo(True, True, header.kind, header.key_id)
    except (OSError, SealError):
        pass
    return ArchiveInfo(False, False, None, None)


def looks_like_archive(path: Path) -> bool:
    """looks_like_archive tells a complete backup from a database backup by its first bytes (not its name)."""
    return archive_info(path).complete


@dataclass
class Staged:
    """Staged is an archive unpacked and checked into a private folder (`root`), ready to restore; `close` deletes
    the folder."""

    name: str
    root: Path
    manifest: dict[str, Any]
    members: dict[str, _Member] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.root / (DATABASE_DUMP if DATABASE_DUMP in self.members else DATABASE_SQLITE)

    @property
    def zips(self) -> list[str]:
        return sorted(n.split("/", 1)[1] for n in self.members if n.startswith(PLUGINS + "/"))

    def close(self) -> None:
        """close deletes the unpacked files."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_archive(source: IO[bytes], name: str, scratch: Path, secret: Secret | None) -> Staged:
    """open_archive reads the archive from `source` (seekable; `name` is how messages call it) into a new folder
    of `scratch`, decrypting it with `secret` when it is encrypted, and checks every member against the manifest.
    Raises ArchiveRefused in one line; nothing is left in `scratch` then."""
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=scratch, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX))
    staged = Staged(name, root, {})
    try:
        _unpack(source, staged, secret)
        _check_manifest(staged)
    except ArchiveRefused:
        staged.close()
        raise
    except SealError as exc:
        staged.close()
        raise ArchiveRefused(str(exc)) from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        staged.close()
        raise ArchiveRefused(f"{name}: is damaged or cut short ({_one_line(exc)})") from None
    except OSError as exc:
        staged.close()
        raise DatabaseError(f"cannot unpack {name} into {scratch}: {exc.strerror or exc}") from None
    except BaseException:
        staged.close()
        raise
    return staged


def _unpack(source: IO[bytes], staged: Staged, secret: Secret | None) -> None:
    name = staged.name
    head = source.read(8)
    source.seek(0)
    reader: Any = source
    if is_sealed(head):
        header = read_header(source, name)
        if secret is None:
            raise ArchiveRefused(f"{name}: is encrypted; give {header.needs()}")
        reader = SealedReader(source, header, secret, name)
    elif head[:2] != b"\x1f\x8b":
        raise ArchiveRefused(
            f"{name}: is not an xcore backup archive (a .xcbackup file made by `xcore db backup` or the admin UI)"
        )
    seen: dict[str, str] = {}  # case-folded name -> name, for file systems that ignore case
    with gzip.GzipFile(fileobj=reader, mode="rb") as plain:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for info in tar:
                if staged.manifest:  # the manifest is the last member: nothing may follow it
                    raise ArchiveRefused(f"{name}: has a member after its manifest ({info.name!r}); it was edited")
                relative = _member_name(name, info)
                if relative.casefold() in seen:
                    raise ArchiveRefused(f"{name}: holds {relative!r} twice")
                seen[relative.casefold()] = relative
                _check_room(staged, relative, info.size)
                handle = tar.extractfile(info)
                assert handle is not None
                if relative == MANIFEST:
                    staged.manifest = _read_manifest(name, handle, info.size)
                else:
                    staged.members[relative] = _extract(handle, staged.root / relative, relative, name)
        # The rest of the stream: gzip checks its CRC and length at its end, and an encrypted archive's final
        # chunk is checked, so an archive cut after the tar's end is refused too.
        while plain.read(1 << 16):
            pass
    if secret is not None and is_sealed(head):
        reader.read()


def _check_room(staged: Staged, member: str, size: int) -> None:
    """Refuses a member whose unpacking would leave less than FREE_RESERVE free on the disk of the scratch folder
    (an archive that unpacks to more than its disk holds, by accident or by design, never fills it)."""
    free = shutil.disk_usage(staged.root).free
    if free - size < FREE_RESERVE:
        raise ArchiveRefused(
            f"{staged.name}: unpacking {member} ({size:,} bytes) would leave less than {FREE_RESERVE >> 20} MiB free "
            f"on the disk of {staged.root.parent} ({free:,} bytes free); make room there and try again"
        )


def _member_name(archive: str, info: tarfile.TarInfo) -> str:
    """The member's name, refused unless it is one an archive holds and safe to write on this system."""
    name = info.name
    if not info.isfile():
        raise ArchiveRefused(f"{archive}: member {name!r} is not a regular file")
    path = PurePosixPath(name)
    parts = path.parts
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveRefused(f"{archive}: holds a member whose name is not UTF-8; it is damaged") from None
    bad = (
        not parts
        or path.is_absolute()
        or "\\" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or any(ord(ch) < 32 or ch == "\x7f" for ch in name)
    )
    if not bad and sys.platform == "win32":
        bad = any(WINDOWS_FORBIDDEN & set(part) or part.endswith((".", " ")) for part in parts)
    allowed = (
        (len(parts) == 1 and name in (MANIFEST, DATABASE_SQLITE, DATABASE_DUMP, CONFIG, TRUST, SECRET))
        or (len(parts) == 2 and parts[0] == PLUGINS and name.lower().endswith(".zip") and not parts[1].startswith("."))
        or (len(parts) >= 3 and parts[0] == PLUGIN_DATA and PLUGIN_ID.match(parts[1]) is not None)
        or (len(parts) >= 2 and parts[0] == WHEELS)
    )
    if bad or not allowed:
        raise ArchiveRefused(f"{archive}: holds {name!r}, which is not a member of an xcore backup")
    return name


def _read_manifest(archive: str, handle: IO[bytes], size: int) -> dict[str, Any]:
    if size > MAX_MANIFEST:
        raise ArchiveRefused(f"{archive}: its manifest is {size} bytes; it is damaged")
    try:
        document = json.loads(handle.read())
    except (ValueError, UnicodeDecodeError):
        raise ArchiveRefused(f"{archive}: its manifest is not JSON; it is damaged") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArchiveRefused(f"{archive}: its manifest is not an xcore backup's")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArchiveRefused(
            f"{archive}: is in backup format {version!r}, which this xcore {__version__} does not read (it reads "
            f"{FORMAT_VERSION}): a newer xcore made it"
        )
    return document


def _extract(handle: IO[bytes], target: Path, name: str, archive: str) -> _Member:
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = target.open("xb")
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise ArchiveRefused(f"{archive}: holds {name!r}, which cannot be written here ({exc.strerror})") from None
        raise
    digest = hashlib.sha256()
    size = 0
    with out:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return _Member(name, size, digest.hexdigest())


def _check_manifest(staged: Staged) -> None:
    """Refuses an archive whose members and manifest disagree in any way."""
    name, manifest = staged.name, staged.manifest
    if not manifest:
        raise ArchiveRefused(f"{name}: has no manifest; it is cut short or not an xcore backup")
    listed = manifest.get("members")
    if not isinstance(listed, list):
        raise ArchiveRefused(f"{name}: its manifest lists no members; it is damaged")
    found = dict(staged.members)
    for entry in listed:
        member = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(member, str):
            raise ArchiveRefused(f"{name}: its manifest is damaged (a member without a name)")
        got = found.pop(member, None)
        if got is None:
            raise ArchiveRefused(f"{name}: {member} is missing, though its manifest lists it; the archive is damaged")
        if got.size != entry.get("size") or got.sha256 != entry.get("sha256"):
            raise ArchiveRefused(
                f"{name}: {member} does not match its manifest (size or sha256); the archive is damaged or was edited"
            )
        got.sqlite = bool(entry.get("sqlite"))
    if found:
        raise ArchiveRefused(f"{name}: holds {sorted(found)[0]}, which its manifest does not list; it was edited")
    databases = [m for m in (DATABASE_SQLITE, DATABASE_DUMP) if m in staged.members]
    if len(databases) != 1:
        raise ArchiveRefused(f"{name}: holds {len(databases)} core databases; an xcore backup holds one")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- restoring one --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveRestored:
    """ArchiveRestored tells what restore_archive did."""

    database: Restored
    plugins: list[str]  # the bundles now in the plugins folder
    restart_required: bool  # the settings file or the signing key changed: each process reads them at its start
    changed: list[str]  # the settings files that changed (config.json, secret.key, trusted-keys.json)
    kept_open: list[str]  # files the archive does not hold that were in use, so emptied instead of deleted
    # Bundles restored as they were that fail the bundle check here ("name.zip: why"): the plugin manager refuses
    # them as it did before the backup (a backup holds the plugins folder as it was, loadable or not).
    bundle_problems: list[str]


def future_config(staged: Staged, environ: Mapping[str, str]) -> XcoreConfig:
    """future_config is the settings as they will be once `staged` is restored: its config.json (or none), with
    this process's environment. Raises ArchiveRefused when this xcore refuses that config.json."""
    from xcore.config import load_config

    try:
        return load_config(staged.root, environ).config
    except ConfigError as exc:
        raise ArchiveRefused(f"{staged.name}: its config.json is not valid for this xcore: {exc}") from None


def restore_archive(
    staged: Staged,
    data: DataDir,
    config: XcoreConfig,
    database: Path | str,
    backups: Path,
    keep: int,
    *,
    environ: Mapping[str, str],
    prepare: Callable[[Session], None],
    check_bundle: Callable[[Path], str | None],
    safety_backup: Callable[[], Path | None],
    require_accounts: bool = True,
) -> ArchiveRestored:
    """restore_archive brings the data directory `data` (with the settings `config`; its core database is
    `database`, a SQLite file or a PostgreSQL URL) back to the state in `staged`.

    Every member is checked first: the database (`xcore.db.restore`), each plugin database with SQLite's check, the
    settings file against this xcore's schema; a refusal (ArchiveRefused, RestoreRefused) changes nothing. Then
    `safety_backup` backs up the current state, the database is restored (into the live SQLite file, which a running
    server may be using, or into PostgreSQL with every node stopped), and the plugins folder, the plugins' data
    folders, their wheels and the settings files are made what the archive holds. One restore runs at a time per
    data directory. A bundle `check_bundle` finds fault with (it says why, or None) is restored all the same and
    named in the result: the archive holds the plugins folder as it was."""
    lock = FileLock(str(data.root / RESTORE_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RestoreBusy(f"another restore into {data.root} is running; try again when it has finished") from None
    try:
        future = future_config(staged, environ)
        if future.xcore.data.url != config.xcore.data.url:
            raise ArchiveRefused(
                f"{staged.name}: its config.json puts the core database elsewhere (xcore.data.url) than the "
                "settings in force now; restore it with that setting given in the environment "
                "(XCORE_XCORE__DATA__URL or DATABASE_URL), which both then use"
            )
        target = places(data, future, database)
        _check_members(staged, target)
        bundle_problems = [
            f"{zip_name}: {problem}"
            for zip_name in staged.zips
            if (problem := check_bundle(staged.root / PLUGINS / zip_name))
        ]
        if isinstance(database, Path):
            done = restore_live(
                database, staged.database, backups, keep,
                prepare=prepare, require_accounts=require_accounts, safety_backup=safety_backup,
            )  # fmt: skip
        else:
            done = restore_postgres(
                database, staged.database, backups, keep, prepare=prepare, safety_backup=safety_backup
            )
        try:
            return _write_back(staged, target, done, bundle_problems)
        except (OSError, sqlite3.Error) as exc:
            kept = f"; everything as it was before is in {done.safety.name}" if done.safety else ""
            where = getattr(exc, "filename", None)
            raise DatabaseError(
                f"{staged.name}: the database was restored, but writing back its files failed: "
                f"{getattr(exc, 'strerror', None) or exc}{f' ({where})' if where else ''}{kept}"
            ) from None
    finally:
        lock.release()


def _check_members(staged: Staged, target: Places) -> None:
    """Refuses the archive for a member that would not work here; changes nothing."""
    name = staged.name
    kind = "sqlite" if DATABASE_SQLITE in staged.members else "postgresql"
    here = "sqlite" if isinstance(target.database, Path) else "postgresql"
    if kind != here:
        raise ArchiveRefused(
            f"{name}: holds a {_db_name(kind)} database, but the core database here is {_db_name(here)}; restore it "
            f"where the core database is {_db_name(kind)}"
        )
    for member in staged.members.values():
        if member.name.startswith(PLUGIN_DATA + "/") and member.sqlite:
            try:
                check_sqlite_file(staged.root / member.name)
            except DatabaseError:
                raise ArchiveRefused(f"{name}: {member.name} is not an intact SQLite database; it is damaged") from None
    if SECRET in staged.members and len((staged.root / SECRET).read_text(errors="replace").strip()) < 32:
        raise ArchiveRefused(f"{name}: its secret.key holds fewer than 32 characters; it is damaged")
    if TRUST in staged.members:
        try:
            json.loads((staged.root / TRUST).read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise ArchiveRefused(f"{name}: its trusted-keys.json is not JSON; it is damaged") from None


def _db_name(kind: str) -> str:
    return "SQLite" if kind == "sqlite" else "PostgreSQL"


def _write_back(staged: Staged, target: Places, done: Restored, bundle_problems: list[str]) -> ArchiveRestored:
    kept_open: list[str] = []
    _write_plugins(staged, target.plugins)
    _write_tree(staged, PLUGIN_DATA, target.plugin_data, kept_open)
    _write_tree(staged, WHEELS, target.wheels, kept_open)
    changed = []
    for member, path in ((CONFIG, target.config), (TRUST, target.trust)):
        if _write_small(staged.root / member if member in staged.members else None, path):
            changed.append(member)
    if SECRET in staged.members and _write_small(staged.root / SECRET, target.secret):
        changed.append(SECRET)  # a plain archive holds none: the current key stays
    for emptied in kept_open:
        log.warning("restore: %s is in use, so it was emptied rather than deleted", emptied)
    restart = CONFIG in changed or SECRET in changed
    for problem in bundle_problems:
        log.warning("restore: plugins/%s; restored as it was, the plugin manager refuses it", problem)
    return ArchiveRestored(done, staged.zips, restart, changed, kept_open, bundle_problems)


def _write_plugins(staged: Staged, folder: Path) -> None:
    """Makes the plugins folder hold exactly the archive's bundles, byte for byte."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = {name: staged.members[f"{PLUGINS}/{name}"] for name in staged.zips}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == ".zip" and not path.name.startswith(".") and path.name not in wanted:
            _retry(path.unlink)  # the watcher reads a bundle now and then, and never keeps it open
    for name, member in wanted.items():
        path = folder / name
        if path.is_file() and _sha256(path) == member.sha256:
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, (staged.root / member.name).open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            before = time.time() - 1.0  # settled: the watcher need not wait to see it complete
            os.utime(tmp, (before, before))
            _retry(partial(os.replace, tmp, path))
        finally:
            Path(tmp).unlink(missing_ok=True)


def _retry(action: Callable[[], object]) -> None:
    """Runs `action`, again for a moment while Windows refuses it because another process has the file open."""
    for attempt in range(BUSY_TRIES):
        try:
            action()
            return
        except FileNotFoundError:
            return
        except PermissionError:
            if attempt == BUSY_TRIES - 1:
                raise
            time.sleep(BUSY_WAIT)


def _write_tree(staged: Staged, prefix: str, root: Path, kept_open: list[str]) -> None:
    """Makes the folder `root` hold exactly the archive's files under `prefix`: SQLite databases through the backup
    API, other files in place; files it does not hold are deleted (emptied when in use)."""
    wanted = {n[len(prefix) + 1 :]: m for n, m in staged.members.items() if n.startswith(prefix + "/")}
    for relative, member in sorted(wanted.items()):
        path = root / Path(*relative.split("/"))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = staged.root / member.name
        if member.sqlite:
            _restore_sqlite(source, path)
        elif not (path.is_file() and _sha256(path) == member.sha256):
            _write_in_place(source, path)
    keep = {root / Path(*relative.split("/")) for relative in wanted}
    for _relative, path in list(_tree_files(root)):
        if path in keep or _side_file(path):
            continue
        _remove(path, kept_open)
    for _relative, path in list(_tree_files(root)):  # -wal/-shm of databases removed just now
        if any(path.name.endswith(s) for s in SQLITE_SIDE_FILES) and not _side_file(path) and path not in keep:
            _remove(path, kept_open)
    _remove_empty_folders(root)


def _restore_sqlite(source: Path, target: Path) -> None:
    """Writes the database `source` into `target` with the backup API: in one write transaction of the live file,
    which a plugin may have open (every connection reads the restored data from its next transaction)."""
    if target.exists() and not is_sqlite(target) and target.stat().st_size > 0:
        target.unlink()  # a plain file where the archive has a database: not one SQLite has open
    copy_sqlite(source, target)


def _write_in_place(source: Path, target: Path) -> None:
    """Writes `source` over `target` in place (truncated and rewritten, never renamed over: it may be open)."""
    with source.open("rb") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _remove(path: Path, kept_open: list[str]) -> None:
    """Deletes a file the archive does not hold; one in use (Windows refuses to delete it) is emptied instead."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except PermissionError:
        if is_sqlite(path):
            copy_sqlite(None, path)
        else:
            with path.open("r+b") as handle:
                handle.truncate(0)
        kept_open.append(str(path))


def _remove_empty_folders(root: Path) -> None:
    if not root.is_dir():
        return
    for folder, _dirs, _files in sorted(os.walk(root, topdown=False), key=lambda entry: -len(entry[0])):
        if Path(folder) != root:
            try:
                os.rmdir(folder)
            except OSError:
                continue


def _write_small(source: Path | None, target: Path) -> bool:
    """Makes `target` hold what `source` holds (deleted when `source` is None); true when that changed it."""
    before = target.read_bytes() if target.is_file() else None
    after = source.read_bytes() if source is not None else None
    if before == after:
        return False
    if after is None:
        target.unlink(missing_ok=True)
    else:
        write_atomically(target, after)  # read once by each process at its start: never open for long
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
