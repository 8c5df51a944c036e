"""Packing: a plugin's source folder into a bundle zip that passes every rule of `inspect_bundle`.

The zip is deterministic: entries sorted, every timestamp 1980-01-01, fixed permissions, names in UTF-8
(zipfile flags each non-ASCII name as such), so the same folder always gives the same sha256. Caches and
version-control folders are left out; a symbolic link is refused rather than followed, since a bundle may
not hold one. The zip is written to a temporary file, checked with `inspect_bundle`, then renamed into place,
so a watcher never sees a half-written or invalid bundle, and a failed pack leaves the previous zip as it was.

The wheels of the folder's `wheels/` and those `--wheels` downloads (`xcore.plugins.wheelhouse`) go into the
zip's `wheels/`, with `wheels/lock.json` listing each one's sha256 and size (a lock.json in the folder is
written afresh).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.contract import DEFAULT_ENTRY, SIGNATURE_FILE, SOURCE_SUFFIXES, WHEELS_FOLDER, WHEELS_LOCK
from xcore.plugins.contract import MANIFEST_FILE as MANIFEST
from xcore.plugins.lock import make_lock
from xcore.plugins.manifest import Manifest, parse_manifest
from xcore.plugins.signing import SignatureError, content_manifest, read_private_key
from xcore.plugins.signing import sign as sign_manifest

EXCLUDED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"}
)
EXCLUDED_FILES = frozenset({".DS_Store"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def folder_manifest(folder: Path, default_entry: str = DEFAULT_ENTRY) -> Manifest:
    """folder_manifest reads and checks `<folder>/plugin.json`; raises BundleError (manifest-missing/-invalid)."""
    where = str(folder)
    if not folder.is_dir():
        raise BundleError(where, "not-a-folder", "there is no plugin folder here")
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BundleError(where, "manifest-missing", f"no {MANIFEST} in the folder") from None
    except OSError as exc:
        raise BundleError(where, "manifest-missing", f"cannot read {MANIFEST} ({exc.strerror})") from None
    manifest, problem = parse_manifest(raw, default_entry)
    if manifest is None:
        raise BundleError(where, "manifest-invalid", problem, entry=MANIFEST)
    return manifest


def pack_folder(
    folder: Path, out_dir: Path, host_version: str, wheels: Sequence[Path] = (), sign: Path | None = None
) -> Path:
    """pack_folder zips `folder` into `<out_dir>/<id>-<version>.zip` and returns its path; `wheels` go into its
    wheels/ with those of the folder; with `sign` (a private key of `xcore keys new`), the zip holds its
    signature (`xcore.plugins.signing`).

    Raises BundleError when the folder's manifest is missing or invalid, the entry module is missing, a
    symbolic link or a non-UTF-8 name is inside, or the zip breaks a rule of `inspect_bundle` (for example a
    `requires` that `host_version` does not meet); nothing is left behind then.
    """
    manifest = folder_manifest(folder)
    name = f"{manifest.id}-{manifest.version}.zip"
    files = [f for f in _collect(folder, out_dir, manifest.id) if f[0] != WHEELS_LOCK]
    files += [(f"{WHEELS_FOLDER}/{path.name}", path) for path in wheels]
    files.sort()
    _check_entry_module(folder, manifest, {relative for relative, _ in files})
    entries = [(relative, path.read_bytes(), bool(os.stat(path).st_mode & stat.S_IXUSR)) for relative, path in files]
    entries = [e for e in entries if e[0] != SIGNATURE_FILE]  # a signature packed along would be a stale one
    carried = [
        (n.split("/", 1)[1], data) for n, data, _ in entries if n.startswith(f"{WHEELS_FOLDER}/") and n.endswith(".whl")
    ]
    if carried:
        entries.append((WHEELS_LOCK, make_lock(carried), False))
    if sign is not None:
        try:
            key, signer = read_private_key(sign)
        except SignatureError as exc:
            raise BundleError(str(folder), "signature", str(exc)) from None
        signed = content_manifest(manifest.id, manifest.version, [(n, data) for n, data, _ in entries])
        entries.append((SIGNATURE_FILE, sign_manifest(key, signer, signed), False))
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _write_zip(out, entries)
            out.flush()
            os.fsync(out.fileno())
        _inspect(tmp, name, host_version)
        target = out_dir / name
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _collect(folder: Path, out_dir: Path, plugin_id: str) -> Iterator[tuple[str, Path]]:
    """_collect yields (zip name, file) for every file to pack; raises BundleError on a link or a bad name."""
    root = folder.resolve()
    out = out_dir.resolve()
    for current, dirs, names in os.walk(root):
        here = Path(current)
        dirs[:] = [d for d in dirs if not _skipped_dir(here / d, out)]
        for entry in [*dirs, *names]:
            path = here / entry
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise BundleError(str(folder), "symlink", "symbolic links cannot be packed; copy the file in", relative)
            if entry in names and not _skipped_file(path, root, plugin_id):
                if not path.is_file():
                    raise BundleError(str(folder), "special-file", "only regular files can be packed", relative)
                yield _zip_name(folder, relative), path


def python_sources(folder: Path) -> Iterator[Path]:
    """python_sources yields, sorted, the Python source files a bundle packed from `folder` would hold."""
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(here / d))
        yield from (here / name for name in sorted(names) if name.lower().endswith(SOURCE_SUFFIXES))


def _skipped_dir(path: Path, out: Path | None = None) -> bool:
    """_skipped_dir is true for caches, version control, virtual environments and the output folder."""
    if path.is_symlink():
        return False  # reported as a symlink by _collect
    return path.name in EXCLUDED_DIRS or path.name.endswith(".egg-info") or path == out


def _skipped_file(path: Path, root: Path, plugin_id: str) -> bool:
    """_skipped_file is true for bytecode, .DS_Store, and zips of this plugin at the top (`pack .` leaves them)."""
    if path.name in EXCLUDED_FILES or path.name.endswith(EXCLUDED_SUFFIXES):
        return True
    ours = path.name.startswith((f"{plugin_id}-", f".{plugin_id}-")) and path.name.endswith((".zip", ".tmp"))
    return ours and path.parent == root


def _zip_name(folder: Path, relative: str) -> str:
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        shown = relative.encode("utf-8", "backslashreplace").decode()
        raise BundleError(str(folder), "entry-name", "the file name is not valid UTF-8; rename it", shown) from None
    return relative


def _check_entry_module(folder: Path, manifest: Manifest, names: set[str]) -> None:
    if f"{manifest.entry}.py" not in names and f"{manifest.entry}/__init__.py" not in names:
        raise BundleError(
            str(folder), "entry-missing", f"the entry module {manifest.entry!r} needs {manifest.entry}.py in the folder"
        )


def _write_zip(out: BinaryIO, entries: list[tuple[str, bytes, bool]]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for relative, data, executable in sorted(entries, key=lambda e: e[0]):
            info = zipfile.ZipInfo(relative, date_time=FIXED_TIME)  # a non-ASCII name gets the UTF-8 flag (bit 11)
            # A wheel is a zip already: deflating it again costs time and saves next to nothing.
            info.compress_type = zipfile.ZIP_STORED if relative.endswith(".whl") else zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so the permission bits below are read as such everywhere
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            archive.writestr(info, data)


def _inspect(tmp: Path, name: str, host_version: str) -> None:
    """_inspect runs every bundle rule on the written zip, reporting errors under the final file name."""
    try:
        inspect_bundle(tmp, host_version)
    except BundleError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise BundleError(name, exc.rule, exc.reason, exc.entry) from None
