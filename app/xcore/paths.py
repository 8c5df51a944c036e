"""The data directory: where xcore keeps its database, logs, plugins, backups and secrets.

It comes from `--data-dir`, else `XCORE_DATA_DIR`, else platformdirs' `user_data_dir("xcore")`. It is
created at first run with mode 0700, because it holds the signing key and the database; one created beforehand
with looser modes is tightened, with a warning (`DataDir.tighten`). The files xcore writes, there and elsewhere
(databases and their -wal/-shm/-journal files, backups, logs, plugin data), are created 0600 (`private_files`).
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from xcore.errors import DataDirError

ENV_DATA_DIR = "XCORE_DATA_DIR"
SECRET_FILE = "secret.key"
PRIVATE_UMASK = 0o077  # files 0600, folders 0700: nothing xcore writes is for other users


def private_files() -> None:
    """private_files sets the process's umask so that every file it creates is readable by its owner only.

    SQLite creates a database's -wal, -shm and -journal files with the database's own mode, and Huey, logging
    and plugins create theirs with the umask's: this one setting covers them all. Not on Windows (no umask)."""
    if sys.platform != "win32":
        os.umask(PRIVATE_UMASK)


def default_data_dir() -> Path:
    """default_data_dir is platformdirs' per-user data folder for xcore."""
    return Path(platformdirs.user_data_dir("xcore", appauthor=False))


def choose_data_dir(flag: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Path:
    """choose_data_dir applies the precedence: flag, then XCORE_DATA_DIR, then the platform default."""
    env = os.environ if environ is None else environ
    chosen = flag or env.get(ENV_DATA_DIR) or default_data_dir()
    return Path(chosen).expanduser().absolute()


@dataclass(frozen=True)
class DataDir:
    """DataDir names the files and folders inside one data directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def secret_file(self) -> Path:
        return self.root / SECRET_FILE

    @property
    def database(self) -> Path:
        return self.root / "xcore.db"

    def resolve(self, relative: str) -> Path:
        """resolve turns a path from the settings into an absolute one; relative means inside the data dir."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def prepare(self) -> DataDir:
        """prepare creates the directory (mode 0700) if needed and checks that it is readable and writable."""
        try:
            if not self.root.exists():
                self.root.mkdir(mode=0o700, parents=True)
                _chmod(self.root, 0o700)
            elif not self.root.is_dir():
                raise DataDirError(f"data directory {self.root}: exists but is not a directory")
        except PermissionError:
            raise DataDirError(
                f"data directory {self.root}: cannot be created (permission denied); "
                "choose another with --data-dir or XCORE_DATA_DIR"
            ) from None
        except OSError as exc:
            raise DataDirError(f"data directory {self.root}: cannot be created: {exc.strerror}") from None
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise DataDirError(
                f"data directory {self.root}: is not readable and writable by this user; fix its "
                "permissions or choose another with --data-dir or XCORE_DATA_DIR"
            )
        try:  # os.access lies on some file systems and for root; a real write settles it
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise DataDirError(f"data directory {self.root}: cannot write to it: {exc.strerror}") from None
        return self

    def tighten(self) -> list[str]:
        """tighten makes the directory private to its owner (0700) when other users may enter or list it (one
        created beforehand with mode 0755), and returns a warning when it did, or could not. Everything in it,
        older files with looser modes included, is then out of other users' reach; the files themselves are not
        changed (the directory may be one the user also keeps other things in). Not on Windows (ACLs)."""
        if sys.platform == "win32":
            return []
        try:
            was = stat.S_IMODE(self.root.stat().st_mode)
        except OSError as exc:
            return [f"data directory {self.root}: cannot check its permissions: {exc.strerror}"]
        if not was & 0o077:
            return []
        try:
            os.chmod(self.root, 0o700)
        except OSError as exc:
            return [
                f"data directory {self.root}: other users may read the database and secrets in it (mode {was:04o}) "
                f"and it cannot be made private: {exc.strerror}; run `chmod 700 {self.root}`"
            ]
        return [
            f"data directory {self.root}: other users could read the database and secrets in it (mode {was:04o}); "
            "it is now 0700"
        ]

    def subdir(self, relative: str) -> Path:
        """subdir returns a folder of the data directory (or an absolute one), creating it with mode 0700."""
        path = self.resolve(relative)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"folder {path}: cannot be created: {exc.strerror}") from None
        return path

    def signing_key(self) -> str:
        """signing_key returns the JWT signing secret, creating it (mode 0600) at first use. Never logged."""
        path = self.secret_file
        if not path.exists():
            # Write a temporary file, then link it into place: a concurrent first start never reads a
            # half-written key, and exactly one key wins.
            try:
                fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".secret-")
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                _chmod(Path(tmp), 0o600)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
            except OSError as exc:
                raise DataDirError(f"secret file {path}: cannot be created: {exc.strerror}") from None
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise DataDirError(f"secret file {path}: cannot be read: {exc.strerror}") from None
        if len(key) < 32:
            raise DataDirError(f"secret file {path}: holds fewer than 32 characters; delete it to make a new one")
        if sys.platform != "win32" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            _chmod(path, 0o600)
        return key


def _chmod(path: Path, mode: int) -> None:
    if sys.platform != "win32":
        os.chmod(path, mode)


def write_atomically(path: Path, data: bytes, prefix: str | None = None) -> None:
    """write_atomically writes `data` to `path` through a temporary file beside it (mode 0600, named `prefix`...
    `.tmp`; `.<name>.` by default), then a rename, so that `path` is always whole (the old content or the new) and
    a failure leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
