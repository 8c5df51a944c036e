"""Bundles: a plugin's zip, checked against every rule of DESIGN.md before any of its code runs.

`inspect_bundle` reads only the zip's directory and plugin.json; `extract_bundle` then unpacks the checked
entries into `<cache>/<id>-<version>-<sha256 prefix>/`, atomically (a temporary folder, then a rename), so a
half-extracted bundle is never seen and the same zip is extracted once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from xcore.errors import XcoreError
from xcore.plugins.manifest import CORE_PREFIXES, DEFAULT_ENTRY, Manifest, overlaps, parse_manifest

MAX_ENTRIES = 5_000
MAX_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100
# Below this many uncompressed bytes the ratio is not checked: a few kB of blank lines compress 1000:1.
RATIO_FLOOR = 1024 * 1024
MANIFEST = "plugin.json"


class BundleError(XcoreError):
    """BundleError is a bundle that breaks a rule; `rule` names it, and `entry` the zip entry at fault."""

    exit_code = 2

    def __init__(self, bundle: str, rule: str, detail: str, entry: str | None = None) -> None:
        where = f" (entry {entry!r})" if entry else ""
        super().__init__(f"bundle {bundle}: {rule}: {detail}{where}")
        self.bundle, self.rule, self.detail, self.entry = bundle, rule, detail, entry


@dataclass(frozen=True)
class Bundle:
    """Bundle is a checked zip: its manifest, its sha256, and the entries to extract (without the top folder)."""

    path: Path
    manifest: Manifest
    sha256: str
    root: str  # "" or "<folder>/" when every entry sits under one top-level folder holding plugin.json
    entries: tuple[str, ...]


def inspect_bundle(
    path: Path, host_version: str, taken_prefixes: dict[str, str] | None = None, default_entry: str = DEFAULT_ENTRY
) -> Bundle:
    """inspect_bundle checks `path` against every rule; raises BundleError naming the rule and the entry.

    `taken_prefixes` maps the URL prefixes of other plugins to their ids; the core's prefixes are always taken.
    `default_entry` is the entry module of a manifest that names none.
    """
    name = path.name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        archive = zipfile.ZipFile(path)
    except UnicodeDecodeError as exc:
        raise BundleError(name, "entry-name", f"an entry's name is not valid UTF-8 ({exc.reason})") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(name, "not-a-zip", f"cannot be read as a zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BundleError(name, "too-many-entries", f"{len(infos)} entries; at most {MAX_ENTRIES}")
        total = compressed = 0
        for info in infos:
            _check_entry(name, info)
            total += info.file_size
            compressed += info.compress_size
        if total > MAX_UNCOMPRESSED:
            raise BundleError(name, "too-large", f"{total:,} bytes uncompressed; at most {MAX_UNCOMPRESSED:,}")
        if total > RATIO_FLOOR and total > MAX_RATIO * max(compressed, 1):
            raise BundleError(name, "compression-ratio", f"{total / max(compressed, 1):.0f}:1; at most {MAX_RATIO}:1")
        root = _root(name, [i.filename for i in infos])
        try:
            raw = archive.read(root + MANIFEST)
        except KeyError:
            raise BundleError(name, "manifest-missing", f"no {MANIFEST} at the top of the zip") from None
        manifest, problem = parse_manifest(raw, default_entry)
        if manifest is None:
            raise BundleError(name, "manifest-invalid", problem, entry=root + MANIFEST)
        entries = tuple(i.filename for i in infos if not i.is_dir() and i.filename.startswith(root))
    if manifest.requires and Version(host_version) not in SpecifierSet(manifest.requires, prereleases=True):
        raise BundleError(name, "requires", f"needs xcore {manifest.requires}; this is xcore {host_version}")
    _check_prefix(name, manifest, taken_prefixes or {})
    if f"{root}{manifest.entry}.py" not in entries and f"{root}{manifest.entry}/__init__.py" not in entries:
        raise BundleError(name, "entry-missing", f"the entry module {manifest.entry!r} is not in the zip")
    return Bundle(path, manifest, digest, root, entries)


def _check_entry(bundle: str, info: zipfile.ZipInfo) -> None:
    entry = info.filename
    if not info.flag_bits & 0x800:  # a name not flagged UTF-8 was decoded as cp437: it must be plain ASCII
        try:
            entry.encode("ascii")
        except UnicodeEncodeError:
            raise BundleError(bundle, "entry-name", "the name is not valid UTF-8", entry=entry) from None
    parts = PurePosixPath(entry).parts
    if entry.startswith(("/", "\\")) or (len(entry) > 1 and entry[1] == ":") or "\\" in entry:
        raise BundleError(bundle, "unsafe-path", "absolute paths and backslashes are not allowed", entry=entry)
    if ".." in parts:
        raise BundleError(bundle, "unsafe-path", "'..' is not allowed in a path", entry=entry)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BundleError(bundle, "symlink", "symbolic links are not allowed", entry=entry)


def _root(bundle: str, names: list[str]) -> str:
    """_root is "" when plugin.json is at the top, or "<folder>/" when every entry sits under that one folder."""
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n or n.endswith("/") for n in names):
        folder = f"{tops.pop()}/"
        if folder + MANIFEST in names:
            return folder
    raise BundleError(bundle, "manifest-missing", f"no {MANIFEST} at the top of the zip or of its one top folder")


def _check_prefix(bundle: str, manifest: Manifest, taken: dict[str, str]) -> None:
    prefix = manifest.prefix
    for core in CORE_PREFIXES:
        if overlaps(prefix, core):
            raise BundleError(bundle, "api-prefix", f"{prefix} overlaps the core's {core}")
    for other, owner in taken.items():
        if owner != manifest.id and overlaps(prefix, other):
            raise BundleError(bundle, "api-prefix", f"{prefix} overlaps {other} of plugin {owner}")


def extract_bundle(bundle: Bundle, cache: Path) -> Path:
    """extract_bundle unpacks the checked entries into the cache, once per zip content; returns the folder."""
    target = cache / f"{bundle.manifest.id}-{bundle.manifest.version}-{bundle.sha256[:16]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".extract-"))
    try:
        with zipfile.ZipFile(bundle.path) as archive:
            for entry in bundle.entries:
                destination = tmp / entry[len(bundle.root) :]
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(entry) as source, open(destination, "wb") as out:
                    shutil.copyfileobj(source, out)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another process extracting the same zip won the race: use its folder
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def collect_garbage(cache: Path, in_use: set[Path], older_than: float = 3600.0, idle: float = 0.0) -> list[Path]:
    """collect_garbage deletes cache folders no plugin uses any more; returns what it deleted.

    Leftover temporary folders of an interrupted extraction go once they are `older_than` seconds old, so an
    extraction running in another process right now is never pulled from under it. A folder modified less than
    `idle` seconds ago is kept too: every worker touches the folders it serves, so `in_use` need only list this
    process's.
    """
    if not cache.is_dir():
        return []
    keep = {p.resolve() for p in in_use}
    now = time.time()
    removed = []
    for folder in cache.iterdir():
        if not folder.is_dir() or folder.resolve() in keep:
            continue
        age = now - folder.stat().st_mtime
        if age < idle or (folder.name.startswith(".extract-") and age < older_than):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
