"""The import path of in-process plugins' libraries: each top-level module a plugin's wheels bring, found in that
plugin's library folder (`xcore.plugins.wheels`) for that plugin's imports only, and nowhere else on the host's
path.

`LibraryFinder` sits at the end of `sys.meta_path`, after the host's finders, and answers only for the names of
the folders it is given, which are never names the host has (`wheels.host_module`): it cannot change what the
host imports. It answers an import only when the code importing is the plugin's own (a module of its package,
`xcore_plugin_<id>_<n>`, as the loader names it) or a module of that plugin's library folder (a library importing
its dependencies, at import or at request time): the newest such frame on the importing thread's stack decides.
Host code, and another plugin, are not answered: an import gets ModuleNotFoundError (naming the plugin that has
the module, when a plugin asked), `importlib.util.find_spec` gets None.

One process keeps one module of a name in `sys.modules`, and CPython answers an import from there without asking
a finder: once a plugin has imported its library, an import by name finds that module whoever asks. So in one
process a distribution has one version at a time (the manager refuses a plugin whose wheels bring another version
than an in-process plugin that is active already; a sandboxed plugin has its own process), and the manager
refuses a version whose sources import, statically or by a literal `importlib.import_module`, a library that only
another plugin brings (`borrowed`).

An upgrade that brings another library folder imports it afresh (`importing`): the serving version's modules are
set aside while the new version imports its own, then put back, so the version that serves keeps finding its own
modules by name (a function-level `import`, a lazy submodule) until the swap; `keep` then serves the active
versions' folders and modules.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import FrameType, ModuleType
from typing import ClassVar

from xcore.plugins.pack import python_sources

PLUGIN_PACKAGE = "xcore_plugin_"  # the loader imports each version of a plugin as `xcore_plugin_<id>_<n>`
_LIBRARY_MARK = "-libs-"  # in the name of every library folder, `<id>-libs-<key>` (`wheels.library_folder`)
_LIBRARY_FOLDER = re.compile(r"^([a-z][a-z0-9_]*)-libs-[0-9a-f]+$")
_IMPORTING = "_find_and_load_unlocked"  # the import machinery's function that asks the finders for a module
_BOOTSTRAP = ("importlib._bootstrap", "_frozen_importlib")
_DYNAMIC = {("importlib", "import_module"), ("builtins", "__import__"), ("", "__import__"), ("", "import_module")}


class LibraryFinder(importlib.abc.MetaPathFinder):
    """LibraryFinder finds the top-level modules of the library folders it was given for the imports of the plugin
    that owns each folder (one finder per process)."""

    folders: ClassVar[dict[str, dict[str, str]]] = {}  # top-level module name -> {plugin id -> its folder}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is not None:  # a submodule: its package's __path__ finds it
            return None
        owners = self.folders.get(fullname)
        if not owners:
            return None
        importer, importing = _importer(sys._getframe(1))
        folder = owners.get(importer) if importer is not None else None
        if folder is None:
            if importer is not None and importing:
                holders = ", ".join(repr(o) for o in sorted(owners))
                raise ModuleNotFoundError(
                    f"No module named {fullname!r} for plugin {importer!r}: the wheels of plugin {holders} bring it, "
                    "and a plugin imports only its own (add it to its requirements and pack with --wheels)",
                    name=fullname,
                )
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [folder])

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> Iterator[importlib.metadata.Distribution]:
        """find_distributions finds the metadata of the importing plugin's libraries too
        (`importlib.metadata.version("humanize")`, which packages ask of themselves), on a search of the default
        path; the host finds none."""
        context = context or importlib.metadata.DistributionFinder.Context()
        if not self.folders or context.path is not sys.path:
            return iter(())
        importer = _importer(sys._getframe(1))[0]
        folders = sorted({owners[importer] for owners in self.folders.values() if importer in owners})
        if not folders:
            return iter(())
        ours = importlib.metadata.DistributionFinder.Context(name=context.name, path=folders)
        return iter(importlib.metadata.MetadataPathFinder.find_distributions(ours))

    @classmethod
    def owns(cls, module: ModuleType) -> bool:
        """owns says whether `module` was imported from a library folder of a plugin."""
        return any(in_libraries(place) for place in _places(module))

    @classmethod
    def installed(cls) -> LibraryFinder:
        for finder in sys.meta_path:
            if isinstance(finder, cls):
                return finder
        finder = cls()
        sys.meta_path.append(finder)
        return finder


def _importer(frame: FrameType | None) -> tuple[str | None, bool]:
    """_importer is (the plugin whose code is importing, or None for the host's; whether an import is under way
    rather than a search such as `importlib.util.find_spec`), read from the newest frames first."""
    importing = False
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str):
            if name.startswith(PLUGIN_PACKAGE):
                return name[len(PLUGIN_PACKAGE) :].split(".", 1)[0].rpartition("_")[0] or None, importing
            if name in _BOOTSTRAP and frame.f_code.co_name == _IMPORTING:
                importing = True
        owner = library_owner(frame.f_code.co_filename)
        if owner is not None:
            return owner, importing
        frame = frame.f_back
    return None, importing


def library_owner(place: str) -> str | None:
    """library_owner is the id of the plugin whose library folder holds the path `place`, None when none does."""
    if _LIBRARY_MARK not in place:
        return None
    for part in Path(place).parts:
        found = _LIBRARY_FOLDER.match(part)
        if found:
            return found.group(1)
    return None


def in_libraries(place: str) -> bool:
    """in_libraries says whether a path is in a plugin's library folder."""
    return any(_LIBRARY_MARK in part for part in Path(place).parts)


def provide(folder: Path, modules: Iterable[str]) -> None:
    """provide makes `modules` importable from `folder` for its plugin's imports in this process: a module of
    that name imported from another folder is forgotten first (the versions that use it keep their reference)."""
    LibraryFinder.installed()
    place = str(folder)
    owner = _folder_owner(folder)
    for name in modules:
        for module in list(_modules_of(name).values()):
            if not _from_folder(module, place):
                _forget(name)
                break
        LibraryFinder.folders.setdefault(name, {})[owner] = place


_waiting: dict[str, dict[str, ModuleType]] = {}  # library folder -> the modules a version not served yet imported


@contextmanager
def importing(folder: Path | None, modules: Iterable[str]) -> Iterator[None]:
    """importing serves `modules` from `folder` while a version of its plugin is imported in this process (None:
    a version without libraries). The modules of those names from other folders are set aside meanwhile; if
    there were any, or the plugin's serving version has another folder, they and that folder are put back after
    the import, and the version's own modules wait for `keep` (the swap): the version serving now keeps finding
    its own modules by name."""
    if folder is None:
        yield
        return
    LibraryFinder.installed()
    place, owner, names = str(folder), _folder_owner(folder), list(modules)
    aside: dict[str, ModuleType] = {}
    before: dict[str, str | None] = {}
    for name in names:
        found = _modules_of(name)
        if any(not _from_folder(m, place) for m in found.values()):
            aside.update(found)
            for key in found:
                sys.modules.pop(key, None)
        owners = LibraryFinder.folders.setdefault(name, {})
        before[name] = owners.get(owner)
        owners[owner] = place
    upgrade = any(previous not in (None, place) for previous in before.values())
    try:
        yield
    finally:
        if aside or upgrade:
            mine: dict[str, ModuleType] = {}
            for name in names:
                mine.update(_take(name))
            _waiting.setdefault(place, {}).update(mine)
            sys.modules.update(aside)
        for name, previous in before.items():
            if previous is not None and previous != place:
                LibraryFinder.folders[name][owner] = previous


def keep(active: Iterable[tuple[Path, Iterable[str]]]) -> None:
    """keep serves the modules of the `active` (folder, modules) from those folders alone: each plugin's names
    are found in its active folder; a module in `sys.modules` from a folder no active version uses is forgotten,
    and one an active version imported before it was served (`importing`) takes its place."""
    wanted: dict[str, dict[str, str]] = {}
    for folder, modules in active:
        for name in modules:
            wanted.setdefault(name, {})[_folder_owner(folder)] = str(folder)
    places = {place for owners in wanted.values() for place in owners.values()}
    for name in set(LibraryFinder.folders) | set(wanted):
        serving = wanted.get(name, {})
        current = sys.modules.get(name)
        mine = current is not None and LibraryFinder.owns(current)
        if mine and current is not None and not any(_from_folder(current, p) for p in serving.values()):
            _forget(name)
            current = None
        if current is None:
            for place in sorted(serving.values()):
                waiting = {k: m for k, m in _waiting.get(place, {}).items() if k == name or k.startswith(name + ".")}
                if name in waiting:
                    sys.modules.update(waiting)
                    break
        if serving:
            LibraryFinder.folders[name] = dict(serving)
        else:
            LibraryFinder.folders.pop(name, None)
    for place in list(_waiting):
        if place not in places:
            del _waiting[place]
    for place in places:
        _waiting.pop(place, None)  # served now: sys.modules holds them, or an active version's references do


def borrowed(folder: Path, own: Iterable[str]) -> str | None:
    """borrowed names the first import in the Python sources of `folder` (a version about to be imported in
    process) of a top-level module that another plugin's libraries bring and its own do not, by an import
    statement or a call of `importlib.import_module` or `__import__` with a literal name: it would find that
    plugin's module while it is loaded and break when it goes, so it is refused now. None when there is none (and
    when no in-process plugin has libraries, without reading a file)."""
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
        elif isinstance(node, ast.Call) and node.args and _dynamic_import(node.func):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value.split(".")[0]


def _dynamic_import(func: ast.expr) -> bool:
    """_dynamic_import says whether a call's function reads as `importlib.import_module`, `import_module` or
    `__import__`."""
    if isinstance(func, ast.Name):
        return ("", func.id) in _DYNAMIC
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return (func.value.id, func.attr) in _DYNAMIC
    return False


def _folder_owner(folder: Path) -> str:
    found = _LIBRARY_FOLDER.match(folder.name)
    return found.group(1) if found else folder.name


def _places(module: ModuleType) -> list[str]:
    spec = getattr(module, "__spec__", None)
    where = [spec.origin] if spec is not None and spec.origin else []
    with suppress(TypeError):  # a namespace package's path may not be listable any more
        where += list(getattr(module, "__path__", None) or [])
    return where


def _from_folder(module: ModuleType, place: str) -> bool:
    return any(p == place or p.startswith(place + "/") or p.startswith(place + "\\") for p in _places(module))


def _modules_of(name: str) -> dict[str, ModuleType]:
    return {k: m for k, m in list(sys.modules.items()) if k == name or k.startswith(name + ".")}


def _take(name: str) -> dict[str, ModuleType]:
    taken = _modules_of(name)
    for key in taken:
        sys.modules.pop(key, None)
    return taken


def _forget(name: str) -> None:
    _take(name)
