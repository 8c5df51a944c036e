"""Bundles: a plugin's zip, checked against every rule of plugins/README.md ("plugin.json") before any of its code runs.

`inspect_bundle` reads the zip's directory, plugin.json and the Python sources (which import only xcore.sdk from
xcore: `contract.xcore_import`); `extract_bundle` then unpacks the checked entries into
`<cache>/<id>-<version>-<sha256 prefix>/`, atomically (a temporary folder, then a rename), so a half-extracted
bundle is never seen and the same zip is extracted once. The limits and names are the plugin contract's.

Both raise only BundleError for a zip that cannot be read, whatever `zipfile` or the disk raise underneath (a bad
CRC, a bad local header, an unsupported method, an encrypted entry, truncated data, a zlib error, a size other
than the declared one, a file that changed or vanished since it was checked): the caller fails that one version.
"""

from __future__ import annotations

import errno
import hashlib
import io
import lzma
import os
import shutil
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from xcore.errors import FieldProblem, RequestError
from xcore.plugins.contract import (
    COMPRESSION_METHODS,
    DEFAULT_ENTRY,
    MAX_ENTRIES,
    MAX_RATIO,
    MAX_UNCOMPRESSED,
    RATIO_FLOOR,
    SIGNATURE_FILE,
    SOURCE_SUFFIXES,
    WHEELS_FOLDER,
    WHEELS_LOCK,
    xcore_import,
)
from xcore.plugins.contract import MANIFEST_FILE as MANIFEST
from xcore.plugins.leftovers import EXTRACT_PREFIX
from xcore.plugins.lock import WheelError, parse_wheel_name, read_lock
from xcore.plugins.manifest import CORE_PREFIXES, Manifest, overlaps, parse_manifest
from xcore.plugins.signing import SignatureError, Signer, content_manifest, verify

# What `zipfile` raises for an entry it cannot read once the central directory was read (bz2 raises OSError).
READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, ValueError,
    OSError, struct.error,
)  # fmt: skip
# A failure to write an extracted file for these reasons is the host's (its disk), not the bundle's.
HOST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EMFILE}


class BundleError(RequestError):
    """BundleError is a bundle that breaks a rule (status 422); `rule` names it, `entry` the zip entry at fault and
    `reason` what is wrong with it. The problem document carries `rule` and `entry` as members too."""

    status = 422

    def __init__(self, bundle: str, rule: str, reason: str, entry: str | None = None) -> None:
        where = f" (entry {entry!r})" if entry else ""
        super().__init__(
            f"bundle {bundle}: {rule}: {reason}{where}",
            fields=[FieldProblem(entry, reason, rule)],
            extra={"rule": rule, "entry": entry},
        )
        self.bundle, self.rule, self.reason, self.entry = bundle, rule, reason, entry


@dataclass(frozen=True)
class Bundle:
    """Bundle is a checked zip: its manifest, its sha256, and the entries to extract (without the top folder)."""

    path: Path
    manifest: Manifest
    sha256: str
    root: str  # "" or "<folder>/" when every entry sits under one top-level folder holding plugin.json
    entries: tuple[str, ...]  # what extract_bundle unpacks: all but the wheels
    wheels: tuple[tuple[str, str, int], ...] = ()  # (entry, sha256, size) of each wheel of wheels/, as checked
    signer: Signer | None = None  # who signed it, the signature checked; None: unsigned


def inspect_bundle(
    path: Path, host_version: str | None, taken_prefixes: dict[str, str] | None = None,
    default_entry: str = DEFAULT_ENTRY,
) -> Bundle:  # fmt: skip
    """inspect_bundle checks `path` against every rule; raises BundleError naming the rule and the entry.
    `host_version` None leaves out the check of the manifest's `requires` (a catalogue lists bundles for other
    xcore versions too).

    `taken_prefixes` maps the URL prefixes of other plugins to their ids; the core's prefixes are always taken.
    `default_entry` is the entry module of a manifest that names none.
    """
    name = path.name
    try:
        data = path.read_bytes()  # read once: the digest, the directory and plugin.json are of the same bytes
    except OSError as exc:
        raise BundleError(name, "not-a-zip", f"cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError as exc:
        raise BundleError(name, "entry-name", f"an entry's name is not valid UTF-8 ({exc.reason})") from None
    except READ_ERRORS as exc:
        raise BundleError(name, "not-a-zip", f"cannot be read as a zip file ({_one_line(exc)})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BundleError(name, "too-many-entries", f"{len(infos)} entries; at most {MAX_ENTRIES}")
        total = compressed = 0
        for info in infos:
            check_entry(name, info)
            total += info.file_size
            compressed += info.compress_size
        check_paths(name, infos)
        if total > MAX_UNCOMPRESSED:
            raise BundleError(name, "too-large", f"{total:,} bytes uncompressed; at most {MAX_UNCOMPRESSED:,}")
        if total > RATIO_FLOOR and total > MAX_RATIO * max(compressed, 1):
            raise BundleError(name, "compression-ratio", f"{total / max(compressed, 1):.0f}:1; at most {MAX_RATIO}:1")
        root = _root(name, [i.filename for i in infos])
        try:
            raw = archive.read(root + MANIFEST)
        except KeyError:
            raise BundleError(name, "manifest-missing", f"no {MANIFEST} at the top of the zip") from None
        except READ_ERRORS as exc:
            raise BundleError(name, "corrupt-entry", _unreadable(exc), entry=root + MANIFEST) from None
        manifest, problem = parse_manifest(raw, default_entry)
        if manifest is None:
            raise BundleError(name, "manifest-invalid", problem, entry=root + MANIFEST)
        entries = tuple(i.filename for i in infos if not i.is_dir() and i.filename.startswith(root))
        entries, signer = _check_signature(name, archive, root, entries, manifest)
        entries, wheels = _check_wheels(name, archive, root, entries)
    if (
        manifest.requires
        and host_version
        and Version(host_version) not in SpecifierSet(manifest.requires, prereleases=True)
    ):
        raise BundleError(name, "requires", f"needs xcore {manifest.requires}; this is xcore {host_version}")
    check_prefix(name, manifest, taken_prefixes or {})
    if f"{root}{manifest.entry}.py" not in entries and f"{root}{manifest.entry}/__init__.py" not in entries:
        raise BundleError(name, "entry-missing", f"the entry module {manifest.entry!r} is not in the zip")
    for missing in page_files_missing(manifest, {e[len(root) :] for e in entries}):
        raise BundleError(name, "page-missing", f"a page's {missing} is not in the zip", entry=f"{root}{missing}")
    _check_imports(name, data, root, entries)
    return Bundle(path, manifest, digest, root, entries, wheels, signer)


def page_files_missing(manifest: Manifest, files: set[str]) -> list[str]:
    """page_files_missing are the modules and icons the manifest's pages name that are not among `files`."""
    named = [p.module for p in manifest.pages] + [p.icon for p in manifest.pages if p.icon]
    return [path for path in named if path not in files]


def check_entry(bundle: str, info: zipfile.ZipInfo) -> None:
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
    if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strong encryption
        raise BundleError(bundle, "encrypted", "encrypted entries cannot be read; zip it without a password", entry)
    if info.flag_bits & 0x20:
        raise BundleError(bundle, "compression-method", "compressed patched data (flag bit 5) is not supported", entry)
    if info.compress_type not in COMPRESSION_METHODS:
        methods = ", ".join(COMPRESSION_METHODS.values())
        raise BundleError(
            bundle, "compression-method", f"method {info.compress_type} is not supported; use {methods}", entry
        )


def check_paths(bundle: str, infos: list[zipfile.ZipInfo]) -> None:
    """_check_paths refuses two files that extract to the same path, and a path that is a file and a folder: tools
    disagree about which copy wins (or fail half-way), so what was checked might not be what runs. Paths compare
    without case, as on Windows and macOS, where `Run.py` and `run.py` are one file."""
    files: set[str] = set()
    folders: set[str] = set()
    for info in infos:
        path = PurePosixPath(info.filename.casefold())
        folders.update(str(p) for p in path.parents if str(p) != ".")
        if info.is_dir():
            folders.add(str(path))
        elif str(path) in files:
            raise BundleError(bundle, "duplicate-entry", "two entries extract to this path", entry=info.filename)
        else:
            files.add(str(path))
    for info in infos:
        if not info.is_dir() and str(PurePosixPath(info.filename.casefold())) in folders:
            raise BundleError(bundle, "duplicate-entry", "this path is a file and a folder", entry=info.filename)


def _check_imports(bundle: str, data: bytes, root: str, entries: tuple[str, ...]) -> None:
    """_check_imports refuses (rule `imports-xcore`) a bundle whose Python source imports an xcore module other than
    xcore.sdk, naming the file, the line and the module."""
    sources = sorted(e for e in entries if e.lower().endswith(SOURCE_SUFFIXES))
    if not sources:
        return
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # the bytes inspect_bundle read, checked already
        for entry in sources:
            try:
                source = archive.read(entry)
            except READ_ERRORS as exc:
                raise BundleError(bundle, "corrupt-entry", _unreadable(exc), entry=entry) from None
            refusal = xcore_import(source, entry[len(root) :])
            if refusal:
                raise BundleError(bundle, "imports-xcore", refusal)


def _check_signature(
    bundle: str, archive: zipfile.ZipFile, root: str, entries: tuple[str, ...], manifest: Manifest
) -> tuple[tuple[str, ...], Signer | None]:
    """_check_signature verifies the bundle's signature, when it has one, against every other entry as the zip
    holds it; returns the other entries and the signer. A signature that does not hold is refused (rule
    `signature`), whatever the policy: the bundle changed after it was signed, or the file is damaged."""
    signature_entry = f"{root}{SIGNATURE_FILE}"
    if signature_entry not in entries:
        return entries, None
    others = tuple(e for e in entries if e != signature_entry)
    try:
        signature = archive.read(signature_entry)
        hashed = [(e[len(root) :], hashlib.sha256(archive.read(e)).hexdigest()) for e in others]
    except READ_ERRORS as exc:
        raise BundleError(bundle, "corrupt-entry", _unreadable(exc)) from None
    try:
        signer = verify(signature, content_manifest(manifest.id, manifest.version, hashed))
    except SignatureError as exc:
        raise BundleError(bundle, "signature", str(exc), signature_entry) from None
    return others, signer


def _check_wheels(
    bundle: str, archive: zipfile.ZipFile, root: str, entries: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[tuple[str, str, int], ...]]:
    """_check_wheels holds the bundle's wheels/ to its lock: only wheels and the lock in it, each wheel listed
    with the sha256 and size it has, each one listed there. Returns the other entries, and the wheels."""
    folder = f"{root}{WHEELS_FOLDER}/"
    inside = [e for e in entries if e.startswith(folder)]
    if not inside:
        return entries, ()
    lock_entry = f"{root}{WHEELS_LOCK}"
    for entry in inside:
        if entry != lock_entry and ("/" in entry[len(folder) :] or not entry.endswith(".whl")):
            raise BundleError(bundle, "wheels", f"only wheels (*.whl) and {WHEELS_LOCK} belong in {folder}", entry)
    if lock_entry not in inside:
        reason = f"the wheels come without {WHEELS_LOCK}; pack the bundle with `xcore plugin pack`"
        raise BundleError(bundle, "wheels", reason)
    try:
        listed = read_lock(archive.read(lock_entry))
    except READ_ERRORS as exc:
        raise BundleError(bundle, "corrupt-entry", _unreadable(exc), entry=lock_entry) from None
    except ValueError as exc:
        raise BundleError(bundle, "wheels", str(exc), entry=lock_entry) from None
    files = {e[len(folder) :]: e for e in inside if e != lock_entry}
    wheels = []
    for file, sha256, size in listed:
        if file not in files:
            raise BundleError(bundle, "wheels", f"{WHEELS_LOCK} lists {file}, which is not in the zip", lock_entry)
        wheel_entry = files.pop(file)
        try:
            parse_wheel_name(file)
        except WheelError as exc:
            raise BundleError(bundle, "wheels", exc.reason, wheel_entry) from None
        try:
            data = archive.read(wheel_entry)
        except READ_ERRORS as exc:
            raise BundleError(bundle, "corrupt-entry", _unreadable(exc), entry=wheel_entry) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256 or len(data) != size:
            detail = f"its sha256 is {digest} ({len(data):,} bytes); {WHEELS_LOCK} says {sha256} ({size:,} bytes)"
            raise BundleError(bundle, "wheel-hash", detail, wheel_entry)
        wheels.append((wheel_entry, sha256, size))
    if files:
        raise BundleError(bundle, "wheels", f"{WHEELS_LOCK} does not list this wheel", next(iter(files.values())))
    return tuple(e for e in entries if not e.startswith(folder)), tuple(wheels)


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


def check_prefix(bundle: str, manifest: Manifest, taken: dict[str, str]) -> None:
    """check_prefix refuses (rule `api-prefix`) a manifest whose prefix overlaps the core's or one in `taken`
    (URL prefix -> the id of the plugin that has it)."""
    prefix = manifest.prefix
    for core in CORE_PREFIXES:
        if overlaps(prefix, core):
            raise BundleError(bundle, "api-prefix", f"{prefix} overlaps the core's {core}")
    for other, owner in taken.items():
        if owner != manifest.id and overlaps(prefix, other):
            raise BundleError(bundle, "api-prefix", f"{prefix} overlaps {other} of plugin {owner}")


def extract_bundle(bundle: Bundle, cache: Path) -> Path:
    """extract_bundle unpacks the checked entries into the cache, once per zip content; returns the folder.

    Raises BundleError naming the entry when an entry cannot be read (rule `corrupt-entry`) or written
    (`extract-failed`; `host_fault(error)` says whether the disk is to blame), and rule `changed` when the file
    is no longer the one checked (replaced, edited or deleted since). Nothing is left in the cache then. A
    cached folder that lost files (deleted by hand) is extracted afresh.
    """
    target = cache / f"{bundle.manifest.id}-{bundle.manifest.version}-{bundle.sha256[:16]}"
    if target.is_dir():
        if all((target / entry[len(bundle.root) :]).is_file() for entry in bundle.entries):
            return target
        _move_aside(bundle.path.name, target)
    name = bundle.path.name
    try:
        data = bundle.path.read_bytes()  # the very bytes checked, or a refusal: never extract something else
    except OSError as exc:
        raise BundleError(name, "changed", f"cannot be read any more ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != bundle.sha256:
        raise BundleError(name, "changed", "the file changed after it was checked; it is checked again")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=EXTRACT_PREFIX))
    except OSError as exc:
        raise BundleError(name, "extract-failed", f"cannot create a folder in {cache} ({exc.strerror})") from exc
    try:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except READ_ERRORS as exc:
            raise BundleError(name, "not-a-zip", f"cannot be read as a zip file ({_one_line(exc)})") from None
        with archive:
            wanted = set(bundle.entries)
            made: set[Path] = set()
            for info in archive.infolist():
                if info.filename in wanted:
                    extract_entry(name, archive, info, tmp / info.filename[len(bundle.root) :], made)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if not target.is_dir():  # another process extracting the same zip won the race: use its folder
                raise BundleError(name, "extract-failed", f"cannot rename into {target} ({exc.strerror})") from exc
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _move_aside(bundle: str, folder: Path) -> None:
    """_move_aside renames an incomplete cached folder to a temporary name (garbage collection removes it), so
    that the fresh extraction can take its place; another process may have done it first."""
    aside = folder.with_name(f"{EXTRACT_PREFIX}stale-{folder.name}-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BundleError(bundle, "extract-failed", f"cannot replace {folder} ({exc.strerror})") from exc


def extract_entry(
    bundle: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, made: set[Path] | None = None
) -> None:
    """extract_entry writes one entry to `destination`, checking its CRC (zipfile does) and its size. `made` are
    the folders made already by the extraction under way (each is made once)."""
    entry = info.filename
    try:
        if made is None or destination.parent not in made:
            destination.parent.mkdir(parents=True, exist_ok=True)
            if made is not None:
                made.add(destination.parent)
        out = open(destination, "wb")  # noqa: SIM115 (closed below, apart from the reading errors)
    except OSError as exc:
        raise BundleError(bundle, "extract-failed", f"cannot write it ({exc.strerror})", entry) from exc
    written = 0
    with out:
        try:
            source = archive.open(info)
        except READ_ERRORS as exc:
            raise BundleError(bundle, "corrupt-entry", _unreadable(exc), entry) from None
        with source:
            while True:
                try:
                    chunk = source.read(1 << 20)
                except READ_ERRORS as exc:
                    raise BundleError(bundle, "corrupt-entry", _unreadable(exc), entry) from None
                if not chunk:
                    break
                written += len(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise BundleError(bundle, "extract-failed", f"cannot write it ({exc.strerror})", entry) from exc
    if written != info.file_size:  # zipfile stops at the declared size, but not short of it
        detail = f"it holds {written:,} bytes, and the zip's directory says {info.file_size:,}"
        raise BundleError(bundle, "corrupt-entry", f"cannot be extracted: {detail}; pack the bundle again", entry)


def bundle_problem(path: Path, default_entry: str) -> str | None:
    """bundle_problem is why the bundle at `path` fails the bundle check (its rule, the reason, the entry), or None.
    Its `requires` is left out: the plugin manager says when this xcore is not one the bundle takes."""
    try:
        inspect_bundle(path, None, default_entry=default_entry)
    except BundleError as exc:
        return f"{exc.rule}: {exc.reason}" + (f" (entry {exc.entry!r})" if exc.entry else "")
    return None


def host_fault(error: BundleError) -> bool:
    """host_fault is true when `error` is this host's disk failing (full, read-only, no permission), not the
    bundle's fault: the same bundle may extract once the disk is fixed."""
    cause = error.__cause__
    return error.rule == "extract-failed" and isinstance(cause, OSError) and cause.errno in HOST_ERRNOS


def _unreadable(exc: BaseException) -> str:
    what = "its data ends early" if isinstance(exc, EOFError) else _one_line(exc)  # EOFError says nothing
    return f"cannot be extracted ({what}); the zip is damaged: pack or download it again"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
        if age < idle or (folder.name.startswith(EXTRACT_PREFIX) and age < older_than):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
