"""The import path of in-process plugins' libraries: each top-level module a plugin's wheels bring, found in that
plugin's library folder (`xcore.plugins.wheels`), and nowhere else on the host's path.

One process imports one copy of a module by name (`sys.modules`), so in one process a distribution has one
version at a time: the manager refuses a plugin whose wheels bring another version of a distribution than an
in-process plugin that is active already (a sandboxed plugin has its own process). `LibraryFinder` sits at the
end of `sys.meta_path`, after the host's finders, and answers only for the names of the folders it is given, which
are never names the host has (`wheels.host_module`): it cannot change what the host imports.

An upgrade that brings a new version of a library imports it afresh: `provide` drops the old version's modules
from `sys.modules` first, so the new plugin version imports its own; the old version keeps the modules it
imported until it is retired. `keep` then makes the active versions' folders the ones served.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.metadata
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import ClassVar

from xcore.plugins.pack import python_sources


class LibraryFinder(importlib.abc.MetaPathFinder):
    """LibraryFinder finds the top-level modules of the library folders it was given (one per process)."""

    folders: ClassVar[dict[str, str]] = {}  # top-level module name -> the library folder it is imported from

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is not None:  # a submodule: its package's __path__ finds it
            return None
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [folder])

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> Iterator[importlib.metadata.Distribution]:
        """find_distributions finds the metadata of the libraries too (`importlib.metadata.version("humanize")`,
        which packages ask of themselves), on a search of the default path."""
        context = context or importlib.metadata.DistributionFinder.Context()
        folders = sorted(set(self.folders.values()))
        if not folders or context.path is not sys.path:
            return iter(())
        ours = importlib.metadata.DistributionFinder.Context(name=context.name, path=folders)
        return iter(importlib.metadata.MetadataPathFinder.find_distributions(ours))

    @classmethod
    def owns(cls, module: ModuleType) -> bool:
        """owns says whether `module` was imported from a library folder of a plugin."""
        spec = getattr(module, "__spec__", None)
        where = [spec.origin] if spec is not None and spec.origin else []
        where += list(getattr(module, "__path__", None) or [])
        return any(in_libraries(place) for place in where)

    @classmethod
    def installed(cls) -> LibraryFinder:
        for finder in sys.meta_path:
            if isinstance(finder, cls):
                return finder
        finder = cls()
        sys.meta_path.append(finder)
        return finder


_LIBRARY_MARK = "-libs-"  # in the name of every library folder (`wheels.library_folder`)


def in_libraries(place: str) -> bool:
    """in_libraries says whether a path is in a plugin's library folder."""
    return any(_LIBRARY_MARK in part for part in Path(place).parts)


def provide(folder: Path, modules: Iterable[str]) -> None:
    """provide makes `modules` importable from `folder` in this process, for the plugin version about to be
    imported: a module of that name imported from another folder is forgotten first (the versions that use it
    keep their reference)."""
    LibraryFinder.installed()
    place = str(folder)
    for name in modules:
        if LibraryFinder.folders.get(name) != place:
            _forget(name)
            LibraryFinder.folders[name] = place


def keep(active: Iterable[tuple[Path, Iterable[str]]]) -> None:
    """keep serves the modules of the `active` (folder, modules) from those folders alone: the modules of a
    folder no active version uses are forgotten, and their names are no longer found."""
    wanted: dict[str, str] = {}
    for folder, modules in active:
        for name in modules:
            current = LibraryFinder.folders.get(name)
            if name not in wanted or current == str(folder):  # a name two versions share keeps its folder
                wanted[name] = str(folder)
    for name, place in list(LibraryFinder.folders.items()):
        if wanted.get(name) != place:
            _forget(name)
            del LibraryFinder.folders[name]
    for name, place in wanted.items():
        LibraryFinder.folders.setdefault(name, place)


def borrowed(folder: Path, own: Iterable[str]) -> str | None:
    """borrowed names the first import in the Python sources of `folder` (a version about to be imported in
    process) of a top-level module that another plugin's libraries bring and its own do not: it would import
    while that plugin is loaded and break when it goes, so it is refused now. None when there is none (and when
    no in-process plugin has libraries, without reading a file)."""
    others = set(LibraryFinder.folders) - set(own)
    if not others:
        return None
    for path in python_sources(folder):
        relative = path.relative_to(folder).as_posix()
        try:
            tree = ast.parse(path.read_bytes(), relative)
        except (OSError, SyntaxError, ValueError, RecursionError):
            continue  # the import reports it
        for line, module in sorted(_top_level_imports(tree)):
            if module in others:
                return (
                    f"{relative}, line {line}: imports {module}, which its plugin.json's requirements do not list "
                    "(another plugin's wheels bring it here); add it to requirements and pack with --wheels"
                )
    return None


def _top_level_imports(tree: ast.AST) -> Iterable[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _forget(name: str) -> None:
    for key in [k for k in list(sys.modules) if k == name or k.startswith(name + ".")]:
        sys.modules.pop(key, None)
