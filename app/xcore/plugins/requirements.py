"""A plugin's `requirements` (PEP 508 strings in plugin.json): what meets each of them here, and which wheels to
install for it.

`plan` answers each requirement whose environment marker holds for this interpreter (`"tomli; python_version <
'3.11'"` is no requirement on 3.11), and then the requirements of each wheel it picks (their `Requires-Dist`):
- a distribution this xcore runs with (the Python environment of an installation, or the metadata a frozen
  build carries) meets it when its version does; when not, that is a clash, refused with both versions named: a
  plugin cannot bring another version of a package xcore has imported already;
- otherwise a wheel the bundle carries (`wheels/`) meets it: the highest version that meets it, with the best tag
  this interpreter takes. A bundle whose wheels of that package fit no tag of this interpreter is refused naming
  the wheels, their tags and the interpreter's;
- otherwise, in the online mode (`manager.plugins.index_url`), a wheel the index lists, pinned by its sha256;
  the pins of a bundle are recorded (`Pins`), so a later load takes the same wheels, offline;
- otherwise nothing does, refused naming the requirement.

The resolver is greedy, as a plugin's requirements are few: the first version picked for a package stays, and a
later requirement it does not meet is refused naming both, rather than searched around.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Protocol

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from xcore.paths import write_atomically
from xcore.plugins.bundle import READ_ERRORS, Bundle, BundleError
from xcore.plugins.contract import WHEELS_FOLDER
from xcore.plugins.libraries import in_libraries
from xcore.plugins.lock import WheelError
from xcore.plugins.wheels import (
    SOURCE_BUNDLE,
    SOURCE_INDEX,
    WheelRef,
    interpreter_tags,
    tag_rank,
    tags_text,
    wheel_metadata,
    wheel_ref,
)

HOST = "xcore"  # where a requirement met by the packages this xcore runs with comes from
SHOWN_TAGS = 3  # how many of the interpreter's tags a refusal names


class Unmet(Exception):
    """Unmet says why a plugin's requirements are not met here (`Plan.problem`)."""


class Index(Protocol):
    """Index is a package index to download wheels from (`xcore.plugins.index.PackageIndex`)."""

    url: str

    def wheels(self, name: str) -> list[WheelRef]: ...


@dataclass(frozen=True)
class Resolved:
    """Resolved is one requirement and what meets it: `version` None when nothing does; `source` HOST, "bundle" or
    "index" when met, None when not; `wheel` the file that brings it; `needed_by` the package whose wheel asks for
    it (None: plugin.json does)."""

    requirement: str
    name: str
    version: str | None
    source: str | None
    wheel: str | None = None
    needed_by: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "requirement": self.requirement, "name": self.name, "version": self.version, "source": self.source,
            "wheel": self.wheel, "needed_by": self.needed_by,
        }  # fmt: skip


@dataclass
class Plan:
    """Plan is the answer to a plugin's requirements: each one resolved, the wheels to install, and why any
    requirement is not met."""

    resolved: list[Resolved] = field(default_factory=list)
    wheels: list[WheelRef] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)  # the wheels read while planning, by file name

    def problem(self) -> str | None:
        return f"requirements: {'; '.join(self.problems)}" if self.problems else None


@cache
def host_versions() -> dict[str, tuple[str, str]]:
    """host_versions are the distributions this xcore runs with: (name, version) by normalized name, the first
    found on the import path winning (it is the one imported)."""
    found: dict[str, tuple[str, str]] = {}
    try:
        for dist in importlib.metadata.distributions():
            name = dist.name
            if name and not in_libraries(str(dist.locate_file(""))):  # a plugin's library is not the host's
                found.setdefault(canonicalize_name(name), (name, dist.version))
    except (OSError, ValueError):  # unreadable metadata: nothing is known to be there
        return {}
    return found


_Pending = tuple[Requirement, str, str | None, frozenset[str]]  # a requirement, as written, who asks, the extras
_metadata_cache: dict[str, tuple[list[str], str | None]] = {}  # by wheel sha256: what it requires


def plan(
    requirements: Sequence[str], wheels: Sequence[WheelRef] = (), index: Index | None = None, *, deep: bool = True
) -> Plan:
    """plan resolves `requirements` against this xcore's packages, then `wheels`, then `index` (see the module's
    docstring). `deep` False answers plugin.json's requirements alone, reading no wheel (for a version that is
    not loaded)."""
    return _Planner(wheels, index, deep).run(requirements)


class _Planner:
    def __init__(self, wheels: Sequence[WheelRef], index: Index | None, deep: bool) -> None:
        self.wheels, self.index, self.deep = list(wheels), index, deep
        self.result = Plan()
        self.picked: dict[str, WheelRef | None] = {}  # normalized name -> the wheel picked, None: the host's
        self.extras_done: dict[str, set[str]] = {}

    def run(self, requirements: Sequence[str]) -> Plan:
        queue: list[_Pending] = []
        for text in requirements:
            queue.append((Requirement(text), text, None, frozenset({""})))
        while queue:
            requirement, text, parent, extras = queue.pop(0)
            if requirement.marker is not None and not _holds(requirement.marker, extras):
                continue
            queue += self.answer(requirement, text, parent)
        return self.result

    def answer(self, requirement: Requirement, text: str, parent: str | None) -> list[_Pending]:
        """answer resolves one requirement; returns the requirements of the wheel it picked, to answer next."""
        key = canonicalize_name(requirement.name)
        if key in self.picked:
            return self.again(requirement, text, parent, key)
        host = host_versions().get(key)
        if host is not None:
            met = requirement.specifier.contains(host[1], prereleases=True)
            self.record(Resolved(text, host[0], host[1], HOST if met else None, None, parent))
            if met:
                self.picked[key] = None
            else:
                self.result.problems.append(f"{text} clashes with {host[0]} {host[1]}, which xcore ships")
            return []
        wheel = self.pick(requirement, text, key)
        if wheel is None:
            self.record(Resolved(text, requirement.name, None, None, None, parent))
            return []
        self.picked[key] = wheel
        self.result.wheels.append(wheel)
        self.record(Resolved(text, wheel.name, str(wheel.version), wheel.source, wheel.file, parent))
        return self.needs(wheel, requirement.extras)

    def again(self, requirement: Requirement, text: str, parent: str | None, key: str) -> list[_Pending]:
        """again checks a requirement on a package picked already against the version picked."""
        wheel = self.picked[key]
        if wheel is None:  # the host's: answered like the first time, but recorded once
            have = host_versions()[key]
            if not requirement.specifier.contains(have[1], prereleases=True):
                self.result.problems.append(f"{text} clashes with {have[0]} {have[1]}, which xcore ships")
            return []
        if not requirement.specifier.contains(wheel.version, prereleases=True):
            who = f"{parent} needs" if parent else "plugin.json asks for"
            self.result.problems.append(f"{who} {text}, and {wheel.file} was picked for another requirement")
            return []
        return self.needs(wheel, requirement.extras)

    def record(self, resolved: Resolved) -> None:
        self.result.resolved.append(resolved)

    def pick(self, requirement: Requirement, text: str, key: str) -> WheelRef | None:
        """pick is the best wheel for a requirement: the bundle's, else the index's; None (with the problem
        recorded) when none fits."""
        carried = [w for w in self.wheels if canonicalize_name(w.name) == key]
        found = self.best(requirement, carried)
        if found is not None:
            return found
        listed: list[WheelRef] = []
        if self.index is not None and self.deep:
            listed = [w for w in self.index.wheels(requirement.name) if canonicalize_name(w.name) == key]
            found = self.best(requirement, listed)
            if found is not None:
                return found
        self.result.problems.append(self.missing(requirement, text, carried, listed))
        return None

    def best(self, requirement: Requirement, candidates: list[WheelRef]) -> WheelRef | None:
        fitting = [
            w for w in candidates
            if requirement.specifier.contains(w.version, prereleases=True) and tag_rank(w) is not None
            and _python_ok(w.requires_python)
        ]  # fmt: skip
        fitting.sort(key=lambda w: (w.version, -(tag_rank(w) or 0)), reverse=True)  # newest, best tag
        for wheel in fitting:
            if not self.deep:
                return wheel
            _requires, python = self.metadata(wheel)
            if _python_ok(python):
                return wheel
        return None

    def missing(self, requirement: Requirement, text: str, carried: list[WheelRef], listed: list[WheelRef]) -> str:
        """missing says why no wheel meets a requirement, naming what the bundle (and the index) offered."""
        offered = carried + listed
        meeting = [w for w in offered if requirement.specifier.contains(w.version, prereleases=True)]
        if meeting:
            named = "; ".join(f"{w.file} is for {tags_text(w.tags)}" for w in meeting[:SHOWN_TAGS])
            mine = ", ".join(str(t) for t in interpreter_tags()[:SHOWN_TAGS])
            more = len(interpreter_tags()) - SHOWN_TAGS
            python = f"Python {sys.version_info.major}.{sys.version_info.minor}"
            return (
                f"{text}: no wheel fits this xcore ({python}): {named}; this xcore takes {mine} "
                f"and {more} more tags; pack the plugin with --platform for this one"
            )
        if offered:
            versions = ", ".join(sorted({str(w.version) for w in offered}))
            return f"{text}: the wheels of {requirement.name} are of version {versions}, and none meets it"
        where = "the bundle carries no wheel of it"
        if self.index is not None:
            where += f", and the index {self.index.url} has none"
        return f"{text} is not among the packages of this xcore, and {where}; pack the plugin with --wheels"

    def needs(self, wheel: WheelRef, extras: set[str] | frozenset[str]) -> list[_Pending]:
        """needs are the requirements of `wheel` (for `extras` not looked at yet), to answer next."""
        if not self.deep:
            return []
        done = self.extras_done.setdefault(canonicalize_name(wheel.name), set())
        wanted = frozenset({"", *extras}) - done
        if not wanted:
            return []
        done |= wanted
        requires, _python = self.metadata(wheel)
        found: list[_Pending] = []
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                self.result.problems.append(f"{wheel.file} requires {text!r}, which is not PEP 508")
                continue
            found.append((requirement, str(requirement), f"{wheel.name} {wheel.version}", wanted))
        return found

    def metadata(self, wheel: WheelRef) -> tuple[list[str], str | None]:
        known = _metadata_cache.get(wheel.sha256)
        if known is None:
            data = self.result.data.get(wheel.file)
            if data is None:
                data = self.result.data[wheel.file] = wheel.read()
            known = _metadata_cache[wheel.sha256] = wheel_metadata(wheel, data)
        return known


def _holds(marker: Marker, extras: frozenset[str]) -> bool:
    return any(marker.evaluate({"extra": extra}) for extra in extras)


def _python_ok(specifier: str | None) -> bool:
    if not specifier:
        return True
    try:
        wanted = SpecifierSet(specifier)
    except ValueError:
        return True  # an unreadable Requires-Python says nothing
    here = ".".join(str(part) for part in sys.version_info[:3])
    return wanted.contains(here, prereleases=True)


def bundle_wheels(bundle: Bundle) -> list[WheelRef]:
    """bundle_wheels are the wheels a checked bundle carries, read from its zip when needed."""
    return [
        wheel_ref(entry.rsplit("/", 1)[-1], sha256, size, SOURCE_BUNDLE, _entry_reader(bundle, entry))
        for entry, sha256, size in bundle.wheels
    ]


def _entry_reader(bundle: Bundle, entry: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with zipfile.ZipFile(bundle.path) as archive:
                return archive.read(entry)
        except (*READ_ERRORS, KeyError) as exc:
            raise BundleError(bundle.path.name, "changed", f"cannot be read any more ({exc})", entry) from None

    return read


def folder_wheels(folder: Path) -> list[WheelRef]:
    """folder_wheels are the wheels of a dev folder's wheels/ (no lock: their hashes are taken as they are)."""
    found = []
    for path in sorted((folder / WHEELS_FOLDER).glob("*.whl")):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WheelError(path.name, "wheel-corrupt", f"cannot be read ({exc.strerror or exc})") from None
        digest = hashlib.sha256(data).hexdigest()
        found.append(wheel_ref(path.name, digest, len(data), SOURCE_BUNDLE, _file_reader(path)))
    return found


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


class Pins:
    """Pins are the wheels downloaded from the index for one bundle, by its sha256: file name and sha256 of each,
    in `<folder>/pins/<plugin id>-<bundle sha256>.json`, the wheels themselves in `<folder>/<sha256>/<file>`.
    A later load of the same bundle takes these wheels from the disk, with no index to ask."""

    def __init__(self, folder: Path, plugin_id: str, fingerprint: str) -> None:
        self.folder = folder
        self.path = folder / "pins" / f"{plugin_id}-{fingerprint[:32]}.json"

    def wheels(self) -> list[WheelRef]:
        """wheels are the pinned wheels still on the disk."""
        try:
            listed = json.loads(self.path.read_text())["wheels"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        found = []
        for item in listed if isinstance(listed, list) else []:
            try:
                file, sha256 = str(item["file"]), str(item["sha256"])
                path = self.folder / sha256 / file
                if path.is_file():
                    found.append(wheel_ref(file, sha256, path.stat().st_size, SOURCE_INDEX, _file_reader(path)))
            except (KeyError, TypeError, WheelError, OSError):
                continue
        return found

    def record(self, wheels: Sequence[WheelRef]) -> None:
        """record pins the index's wheels among `wheels` (written atomically; nothing when there are none)."""
        pinned = [{"file": w.file, "sha256": w.sha256} for w in wheels if w.source == SOURCE_INDEX]
        if not pinned:
            return
        write_atomically(self.path, json.dumps({"wheels": pinned}, indent=2).encode())


def collect_downloads(folder: Path, installed: set[str], older_than: float = 3600.0) -> list[Path]:
    """collect_downloads deletes, in the index's download folder (`Pins`), the pins of bundles no longer
    installed (`installed`: the sha256 of every zip in the plugins folder), then the downloaded wheels no pin
    names that are `older_than` seconds old (a download under way is never younger than its pin); returns what
    it deleted."""
    removed: list[Path] = []
    kept: set[str] = set()
    prefixes = {fingerprint[:32] for fingerprint in installed}
    for pin in sorted((folder / "pins").glob("*.json")) if (folder / "pins").is_dir() else []:
        if pin.stem.rsplit("-", 1)[-1] not in prefixes:
            pin.unlink(missing_ok=True)
            removed.append(pin)
            continue
        try:
            kept |= {str(w["sha256"]) for w in json.loads(pin.read_text())["wheels"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    now = time.time()
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name == "pins" or not entry.is_dir() or entry.name in kept:
            continue
        if now - entry.stat().st_mtime >= older_than:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
