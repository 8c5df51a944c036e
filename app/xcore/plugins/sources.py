"""Where plugin versions come from: the zips of the plugins folder, and the folders of `serve --plugins-dev`.

`Scanner.scan()` looks at the plugins folder and returns one `Source` per usable version, plus the files that
are still being written (`pending`) or broken (`failed`, with the rule they break). It remembers what it saw by
file size and modification time, so a rescan of an unchanged folder reads no zip.

A zip is pending, never failed, while it may still be growing: it changed less than `SETTLE` seconds ago, or it
does not read as a zip yet and changed less than `manager.plugins.interval` seconds ago.

Each refusal (a failed file, with its reason) is logged once: again only when the file's reason changes, or once it
was fixed or removed and is refused anew.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from xcore.plugins.bundle import Bundle, BundleError, extract_bundle, inspect_bundle
from xcore.plugins.contract import DEFAULT_ENTRY
from xcore.plugins.contract import MANIFEST_FILE as MANIFEST_NAME
from xcore.plugins.manifest import Manifest
from xcore.plugins.pack import folder_manifest

log = logging.getLogger("xcore.plugins")
SETTLE = 0.05  # seconds a zip must rest before it is read
STILL_WRITTEN = "the file is still being written"
SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "tests"}


@dataclass(frozen=True)
class Source:
    """Source is one version of a plugin that can be loaded: a checked zip or a dev folder."""

    manifest: Manifest
    path: Path  # the zip or the folder
    fingerprint: str  # sha256 of the zip, or a stamp of the folder's files
    bundle: Bundle | None  # None for a dev folder
    dev: bool = False

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def version(self) -> Version:
        return Version(self.manifest.version)

    def folder(self, cache: Path) -> Path:
        """folder is what to import: the dev folder itself, or the zip extracted into the cache."""
        if self.bundle is None:
            return self.path
        return extract_bundle(self.bundle, cache)


@dataclass(frozen=True)
class Problem:
    """Problem is a file that is not (yet) a usable bundle: `pending` while it may be growing, else `failed`."""

    path: Path
    plugin_id: str  # the id from the manifest when readable, else guessed from the file name
    state: str  # pending | failed
    error: str


@dataclass
class Scan:
    sources: list[Source]
    problems: list[Problem]
    settles_in: float = 0.0  # seconds until the youngest pending zip has rested SETTLE seconds

    @property
    def pending(self) -> bool:
        return any(p.state == "pending" for p in self.problems)


class Scanner:
    """Scanner reads the plugins folder and the dev folders; it caches what it learnt per file stamp."""

    def __init__(
        self, folder: Path, dev_dirs: list[Path], host_version: str, interval: float, default_entry: str
    ) -> None:
        self.folder = folder
        self.default_entry = default_entry
        self.dev_dirs = dev_dirs
        self.host_version = host_version
        self.interval = interval
        self._seen: dict[Path, tuple[tuple[int, int], Source | Problem]] = {}
        self._refused: dict[Path, str] = {}  # the refusals logged, by file: each is logged once

    def forget(self, path: Path | None = None) -> None:
        """forget drops what was learnt (of `path`, or of every file), so the next scan reads it again."""
        if path is None:
            self._seen.clear()
        else:
            self._seen.pop(path, None)

    def scan(self) -> Scan:
        sources: list[Source] = []
        problems: list[Problem] = []
        settles_in = 0.0
        now = time.time()
        present = set()
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() != ".zip":
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            present.add(path)
            age = now - st.st_mtime
            settles_in = max(settles_in, SETTLE - age)
            found = self._zip(path, (st.st_size, st.st_mtime_ns), age)
            if isinstance(found, Source):
                sources.append(found)
            else:
                problems.append(found)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        sources, problems = _one_per_version(sources), problems + _duplicates(sources)
        for folder in self._dev_folders():
            found = read_dev_folder(folder, self.default_entry)
            if isinstance(found, Source):
                sources.append(found)
            else:
                problems.append(found)
        self._log_refusals(problems)
        return Scan(sources, problems, settles_in)

    def _log_refusals(self, problems: list[Problem]) -> None:
        refused = {p.path: p for p in problems if p.state == "failed"}
        for path, problem in refused.items():
            if self._refused.get(path) != problem.error:
                log.error("plugin %s refused: %s", problem.plugin_id, problem.error, extra={"context": "plugins"})
        self._refused = {path: problem.error for path, problem in refused.items()}

    def _zip(self, path: Path, stamp: tuple[int, int], age: float) -> Source | Problem:
        cached = self._seen.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        guessed = path.stem.split("-", 1)[0]
        if age < SETTLE:
            return Problem(path, guessed, "pending", STILL_WRITTEN)
        try:
            bundle = inspect_bundle(path, self.host_version, default_entry=self.default_entry)
        except BundleError as exc:
            if exc.rule == "not-a-zip" and age < self.interval:
                return Problem(path, guessed, "pending", "the file does not read as a zip yet (still being copied?)")
            result: Source | Problem = Problem(path, guessed, "failed", str(exc))
        except Exception as exc:  # never let one file stop the scan of the others
            log.error("plugin bundle %s cannot be checked", path.name, exc_info=exc, extra={"context": "plugins"})
            result = Problem(path, guessed, "failed", f"bundle {path.name}: cannot be checked ({exc!r})")
        else:
            result = Source(bundle.manifest, path, bundle.sha256, bundle)
        self._seen[path] = (stamp, result)
        return result

    def _dev_folders(self) -> list[Path]:
        folders: list[Path] = []
        for root in self.dev_dirs:
            if (root / MANIFEST_NAME).is_file():
                folders.append(root)
            elif root.is_dir():
                folders += sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file())
        return folders


def _one_per_version(sources: list[Source]) -> list[Source]:
    """_one_per_version keeps, of the zips holding the same plugin at equal versions (PEP 440: 1.0 is 1.0.0), the
    most recently written one: the last installed is the one meant."""
    newest: dict[tuple[str, Version], Source] = {}
    for source in sources:
        key = (source.id, source.version)
        if key not in newest or _written(source) > _written(newest[key]):
            newest[key] = source
    return [s for s in sources if newest[(s.id, s.version)] is s]


def _duplicates(sources: list[Source]) -> list[Problem]:
    """_duplicates are the zips `_one_per_version` leaves out, each failed with the file that serves instead."""
    kept = {(s.id, s.version): s for s in _one_per_version(sources)}
    return [
        Problem(
            s.path,
            s.id,
            "failed",
            f"version {s.manifest.version} is also in {kept[(s.id, s.version)].path.name}, which is newer: one "
            "version is one bundle, so this file is ignored; delete it",
        )
        for s in sources
        if kept[(s.id, s.version)] is not s
    ]


def _written(source: Source) -> tuple[int, str]:
    try:
        return source.path.stat().st_mtime_ns, source.path.name
    except FileNotFoundError:
        return 0, source.path.name


def read_dev_folder(folder: Path, default_entry: str = DEFAULT_ENTRY) -> Source | Problem:
    """read_dev_folder is the Source of a plugin folder, or the Problem with its plugin.json."""
    try:
        manifest = folder_manifest(folder, default_entry)
    except BundleError as exc:
        return Problem(folder, folder.name, "failed", str(exc))
    return Source(manifest, folder, folder_stamp(folder), None, dev=True)


def folder_stamp(folder: Path) -> str:
    """folder_stamp changes whenever a file of the folder is added, removed, resized or saved."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            digest.update(
                f"{os.path.relpath(os.path.join(root, name), folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    return "dev-" + digest.hexdigest()[:16]
