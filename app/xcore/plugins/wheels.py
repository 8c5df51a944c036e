"""Wheels: the third-party packages a plugin brings, checked and unpacked into its library folder.

A bundle carries its wheels in `wheels/` with `wheels/lock.json`, which `xcore plugin pack` writes: each wheel's
file name, sha256 and size (`read_lock`). `inspect_bundle` holds the bundle to its lock; the requirements'
planner (`xcore.plugins.requirements`) picks the wheels this interpreter needs; `install_libraries` checks each
of them and unpacks them into one folder per plugin, named after the hashes of the wheels it holds
(`<cache>/<id>-libs-<key>`): a new version of the plugin with the same wheels finds the folder there and unpacks
nothing. The folder goes on that plugin's import path only (`xcore.plugins.libraries`).

Every check a bundle gets, a wheel gets too, before a byte of it is written: the sha256 the lock names, a tag
this interpreter takes, no absolute path, `..`, symbolic link or two entries for one file, at most
MAX_WHEEL_ENTRIES entries, at most MAX_LIBRARIES bytes for all the wheels of a plugin, a compression ratio under
the bundle's. A wheel may not bring a module that the standard library or xcore already has (it could not be
imported, or would change what the host imports), nor a file another wheel of the plugin brings.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from functools import cache
from pathlib import Path, PurePosixPath

from packaging.tags import Tag, sys_tags
from packaging.version import Version

from xcore.plugins.bundle import READ_ERRORS, BundleError, check_entry, check_paths, extract_entry
from xcore.plugins.contract import MAX_LIBRARIES, MAX_RATIO, MAX_WHEEL_ENTRIES, RATIO_FLOOR
from xcore.plugins.leftovers import EXTRACT_PREFIX
from xcore.plugins.libraries import LibraryFinder
from xcore.plugins.lock import WheelError, parse_wheel_name

LIBRARIES_MARKER = "xcore-libraries.json"  # written last into a library folder: the folder is complete
MAX_METADATA = 4 * 1024 * 1024  # the most bytes a wheel's METADATA may hold (long descriptions are a few 10 kB)
SOURCE_BUNDLE = "bundle"  # a wheel the bundle carries
SOURCE_INDEX = "index"  # a wheel downloaded from `manager.plugins.index_url`


@dataclass(frozen=True)
class WheelRef:
    """WheelRef is one wheel a plugin could use: its file name, parts, sha256 and where it comes from; `read`
    returns its bytes (from the bundle, or downloaded), which `install_libraries` checks against `sha256`."""

    file: str
    name: str
    version: Version
    tags: frozenset[Tag]
    sha256: str
    size: int
    source: str  # SOURCE_BUNDLE or SOURCE_INDEX
    read: Callable[[], bytes] = field(compare=False, repr=False)
    requires_python: str | None = None  # from the index's listing, when it gives one


def wheel_ref(file: str, sha256: str, size: int, source: str, read: Callable[[], bytes]) -> WheelRef:
    name, version, tags = parse_wheel_name(file)
    return WheelRef(file, name, version, tags, sha256, size, source, read)


@cache
def interpreter_tags() -> tuple[Tag, ...]:
    """interpreter_tags are the tags this interpreter takes, best first (`packaging.tags.sys_tags`)."""
    return tuple(sys_tags())


def tag_rank(wheel: WheelRef) -> int | None:
    """tag_rank is the rank of the best tag of `wheel` this interpreter takes (0 is the best), None when none."""
    ranks = _tag_ranks()
    found = [ranks[t] for t in wheel.tags if t in ranks]
    return min(found) if found else None


@cache
def _tag_ranks() -> dict[Tag, int]:
    return {tag: rank for rank, tag in enumerate(interpreter_tags())}


def tags_text(tags: Iterable[Tag]) -> str:
    return ", ".join(sorted(str(t) for t in tags))


def wheel_metadata(wheel: WheelRef, data: bytes) -> tuple[list[str], str | None]:
    """wheel_metadata is (Requires-Dist lines, Requires-Python) of the wheel's METADATA; raises WheelError when
    the wheel has none it can read."""
    with _open(wheel, data) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise WheelError(wheel.file, "wheel-metadata", "it has no single <name>.dist-info/METADATA")
        size = archive.getinfo(names[0]).file_size
        if size > MAX_METADATA:  # read before the wheel's other checks: never inflate a bomb into memory
            raise WheelError(wheel.file, "too-large", f"{size:,} bytes; at most {MAX_METADATA:,}", names[0])
        try:
            raw = archive.read(names[0])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise WheelError(wheel.file, "wheel-corrupt", f"its METADATA cannot be read ({exc})", names[0]) from None
    headers = BytesHeaderParser().parsebytes(raw)
    return list(headers.get_all("Requires-Dist") or []), headers.get("Requires-Python")


@dataclass(frozen=True)
class Libraries:
    """Libraries is a plugin's library folder: the wheels unpacked there and the top-level modules they give."""

    folder: Path
    wheels: tuple[str, ...]  # file names
    modules: frozenset[str]  # top-level module and package names

    def as_json(self) -> dict[str, object]:
        return {"wheels": list(self.wheels), "modules": sorted(self.modules)}


def library_folder(cache: Path, plugin_id: str, wheels: Sequence[WheelRef]) -> Path:
    """library_folder is where these wheels of plugin `plugin_id` are unpacked: named after their hashes."""
    key = hashlib.sha256("\n".join(sorted(w.sha256 for w in wheels)).encode()).hexdigest()[:16]
    return cache / f"{plugin_id}-libs-{key}"


def install_libraries(
    cache: Path, plugin_id: str, wheels: Sequence[WheelRef], data: dict[str, bytes] | None = None
) -> Libraries:
    """install_libraries checks the wheels and unpacks them into the plugin's library folder (reused when it is
    there already, and then nothing is read); raises WheelError naming the wheel, the rule and the entry.

    `data` holds the bytes of wheels read already, by file name. A module the host has (`host_module`) is refused.
    """
    folder = library_folder(cache, plugin_id, wheels)
    done = _read_marker(folder)
    if done is not None:
        return done
    data = data or {}
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=EXTRACT_PREFIX))
    try:
        files: dict[str, str] = {}  # casefolded path -> the wheel that brings it
        total = 0
        for wheel in wheels:
            raw = data.get(wheel.file)
            if raw is None:
                raw = wheel.read()
            digest = hashlib.sha256(raw).hexdigest()
            if digest != wheel.sha256:
                said = f"its sha256 is {digest}, and the {wheel.source} says {wheel.sha256}"
                raise WheelError(wheel.file, "wheel-hash", said)
            total = _unpack(wheel, raw, tmp, files, total)
        modules = top_level_modules(tmp)
        for module in sorted(modules):
            if host_module(module):
                owner = next((w for k, w in files.items() if _top(k) == module.casefold()), "a wheel")
                raise WheelError(owner, "wheel-shadows", f"its module {module!r} is one this xcore has already")
        libraries = Libraries(folder, tuple(w.file for w in wheels), frozenset(modules))
        (tmp / LIBRARIES_MARKER).write_text(json.dumps(libraries.as_json()))
        try:
            os.rename(tmp, folder)
        except OSError:
            if _read_marker(folder) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process unpacked the same wheels first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return libraries


def _top(path: str) -> str:
    """_top is the module name a path in the library folder falls under (`pkg/x.py`, `mod.cpython-311-....so`)."""
    return path.split("/", 1)[0].split(".", 1)[0]


def _read_marker(folder: Path) -> Libraries | None:
    try:
        data = json.loads((folder / LIBRARIES_MARKER).read_text())
        return Libraries(folder, tuple(data["wheels"]), frozenset(data["modules"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _open(wheel: WheelRef, data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WheelError(wheel.file, "wheel-corrupt", f"it cannot be read as a zip file ({exc})") from None


def _unpack(wheel: WheelRef, data: bytes, target: Path, files: dict[str, str], total: int) -> int:
    """_unpack checks every entry of one wheel, then writes those that go on the import path into `target`:
    everything but `<name>.data/` (of which `purelib` and `platlib` go to the top, and the scripts, headers and
    data files are left out: a plugin imports, it does not install commands). Returns the running total of
    bytes."""
    made: set[Path] = set()
    with _open(wheel, data) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_WHEEL_ENTRIES:
            raise WheelError(wheel.file, "too-many-entries", f"{len(infos)} entries; at most {MAX_WHEEL_ENTRIES}")
        try:
            for info in infos:
                check_entry(wheel.file, info)
            check_paths(wheel.file, infos)
        except BundleError as exc:
            raise WheelError(wheel.file, exc.rule, exc.reason, exc.entry) from None
        size = sum(i.file_size for i in infos)
        compressed = sum(i.compress_size for i in infos)
        if size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1):
            ratio = f"{size / max(compressed, 1):.0f}:1; at most {MAX_RATIO}:1"
            raise WheelError(wheel.file, "compression-ratio", ratio)
        total += size
        if total > MAX_LIBRARIES:
            raise WheelError(wheel.file, "too-large", f"the plugin's wheels hold over {MAX_LIBRARIES:,} bytes unpacked")
        for info in infos:
            if info.is_dir():
                continue
            relative = _installed_path(info.filename)
            if relative is None:
                continue
            key = relative.casefold()
            if key in files:
                raise WheelError(wheel.file, "wheel-overlap", f"{files[key]} brings this file too", info.filename)
            files[key] = wheel.file
            try:
                extract_entry(wheel.file, archive, info, target / relative, made)
            except BundleError as exc:
                if exc.rule == "extract-failed":
                    raise
                raise WheelError(wheel.file, exc.rule, exc.reason, exc.entry) from None
            except READ_ERRORS as exc:
                raise WheelError(wheel.file, "wheel-corrupt", str(exc), info.filename) from None
    return total


def _installed_path(entry: str) -> str | None:
    """_installed_path is where a wheel's entry goes in the library folder, or None when it is left out."""
    parts = PurePosixPath(entry).parts
    if parts and parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None
    return entry


def top_level_modules(folder: Path) -> set[str]:
    """top_level_modules are the names a library folder lets `import` find at its top: packages (folders, with
    or without __init__.py) and modules (sources and extension modules)."""
    suffixes = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)
    found = set()
    for path in folder.iterdir():
        name = path.name
        if path.is_dir():
            if name.isidentifier() and name != "__pycache__":
                found.add(name)
            continue
        for suffix in suffixes:
            if name.endswith(suffix) and name[: -len(suffix)].isidentifier():
                found.add(name[: -len(suffix)])
                break
    return found


def host_module(name: str) -> bool:
    """host_module says whether this process can import top-level module `name` without any plugin's library
    folder: the standard library's, xcore's and its dependencies', whether imported already or not, and any name
    xcore takes (`xcore`, `xcore_*`)."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names or name.split("_")[0] == "xcore":
        return True  # xcore_plugin_<id>_<n> are the plugins' own packages
    module = sys.modules.get(name)
    if module is not None:
        return not LibraryFinder.owns(module)
    for finder in sys.meta_path:
        if isinstance(finder, LibraryFinder):
            continue
        find = getattr(finder, "find_spec", None)
        try:
            if find is not None and find(name, None) is not None:
                return True
        except (ImportError, ValueError, AttributeError):
            continue
    return False
