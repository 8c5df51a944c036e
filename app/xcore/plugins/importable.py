"""What a plugin may import in this xcore: the standard library and the top-level packages next to it.

A frozen build (PyInstaller) holds the standard library minus `STDLIB_LEFT_OUT`, xcore and its dependencies, and
nothing else; PyInstaller's finder lists what its archive holds through `pkgutil`. A source install lists what the
Python environment holds, since a plugin there may import anything installed. Either way the modules are only
listed, never imported, so `xcore plugin runtime` answers in well under a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import pkgutil
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

import xcore
from xcore.build import frozen

# Standard-library modules a frozen build leaves out: Tk needs Tcl/Tk libraries a server lacks, and the others are
# development tools or test suites. They are not listed from a source install either: a plugin cannot rely on them.
STDLIB_LEFT_OUT = (
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "test", "ensurepip", "venv", "lib2to3", "pydoc_data",
    "this", "antigravity",
)  # fmt: skip
# Private standard-library modules that plugins do use.
STDLIB_PRIVATE_LISTED = frozenset({"__future__", "_thread"})
# Modules of PyInstaller's bootloader, never meant for import.
_BOOTSTRAP = re.compile(r"^pyi(mod\d|boot|_rth)")


@dataclass(frozen=True)
class Package:
    """Package is one third-party top-level module, with its distribution and version when its metadata is there."""

    module: str
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PluginRuntime:
    """PluginRuntime is what a plugin may import: the top-level standard-library modules and packages, sorted."""

    frozen: bool
    stdlib: list[str]
    packages: list[Package]

    def as_json(self) -> dict[str, object]:
        """as_json is `{"frozen", "stdlib", "packages": [{"module", "distribution", "version"}]}`; unknowns are null."""
        return {
            "frozen": self.frozen,
            "stdlib": self.stdlib,
            "packages": [
                {"module": p.module, "distribution": p.distribution, "version": p.version} for p in self.packages
            ],
        }


def list_importable() -> PluginRuntime:
    """list_importable lists the top-level modules importable here, without importing any of them."""
    is_frozen = frozen()
    found = set(_top_level_names(is_frozen))
    found.update(name for name in sys.builtin_module_names if name in sys.stdlib_module_names)
    stdlib = [n for n in found if n in sys.stdlib_module_names and _listed_stdlib(n)]
    third_party = [n for n in found if n not in sys.stdlib_module_names and _listed_package(n)]
    return PluginRuntime(is_frozen, _sorted(stdlib), _describe(_sorted(third_party)))


def _top_level_names(is_frozen: bool) -> Iterator[str]:
    """_top_level_names yields the module names `pkgutil` finds on sys.path, less those of launch accidents."""
    if is_frozen:
        bundle = Path(getattr(sys, "_MEIPASS", "") or os.curdir)
        for info in pkgutil.iter_modules():
            # Shared libraries bundled for a package (libnss3.so beside Qt) look like extension modules to
            # pkgutil; a real extension module carries an ABI tag (name.cpython-311-x86_64-linux-gnu.so).
            if not info.ispkg and (bundle / f"{info.name}.so").is_file():
                continue
            yield info.name
        yield from _frozen_archive_names()
        return
    skipped = _source_entries_skipped()
    stdlib_places = _stdlib_places()
    for entry in sys.path:
        place = _resolved(entry)
        if place in skipped:
            continue
        for info in pkgutil.iter_modules([entry]):
            # test suites and build leftovers beside the standard library (test, xxlimited, __phello__, ...)
            if place not in stdlib_places or info.name in sys.stdlib_module_names:
                yield info.name


def _frozen_archive_names() -> Iterable[str]:
    """_frozen_archive_names is the top level of PyInstaller's archive, in case its `pkgutil` hook is not installed."""
    importers = sys.modules.get("pyimod02_importers")  # PyInstaller's bootstrap module, present in frozen builds
    toc_tree = getattr(importers, "get_pyz_toc_tree", None)
    return list(toc_tree()) if callable(toc_tree) else []


def _source_entries_skipped() -> set[Path]:
    """_source_entries_skipped are the sys.path entries that depend on how Python was started, not on what is
    installed: the current folder and the launcher's, and the top of xcore's checkout (tasks.py, tests)."""
    skipped = {_resolved(""), _resolved(os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv[0] else "")}
    home = Path(xcore.__file__).resolve().parent.parent  # the folder holding the xcore package
    if (home.parent / "pyproject.toml").is_file():
        skipped.add(home.parent)
    skipped.discard(home)
    return skipped


def _stdlib_places() -> set[Path]:
    """_stdlib_places are the folders and zip of the standard library (not site-packages inside them)."""
    roots = {Path(sysconfig.get_path(key)).resolve() for key in ("stdlib", "platstdlib")}
    places = roots | {root / "lib-dynload" for root in roots}
    places |= {_resolved(e) for e in sys.path if re.fullmatch(r"python\d+\.zip", Path(e).name)}
    return places


def _resolved(entry: str) -> Path:
    return Path(entry or os.curdir).resolve()


def _listed_stdlib(name: str) -> bool:
    return name not in STDLIB_LEFT_OUT and (not name.startswith("_") or name in STDLIB_PRIVATE_LISTED)


def _listed_package(name: str) -> bool:
    """_listed_package hides private and internal entries (`_distutils_hack`, `__editable__...`, compiler output
    named like `6ec57f84__mypyc`), which no plugin imports."""
    return name.isidentifier() and not name.startswith("_") and not _BOOTSTRAP.match(name)


def _describe(modules: list[str]) -> list[Package]:
    """_describe names each module's distribution and version from the installed metadata; a frozen build carries
    the metadata of some packages only, and the others are the module name alone."""
    try:
        owners = importlib.metadata.packages_distributions()
        versions: dict[str, tuple[str, str]] = {}
        for dist in importlib.metadata.distributions():
            name = dist.name
            if name:
                versions.setdefault(canonicalize_name(name), (name, dist.version))  # the first on sys.path is imported
    except (OSError, ValueError, KeyError):  # unreadable metadata: list the modules alone
        owners, versions = {}, {}
    packages = []
    for module in modules:
        if module == "xcore":  # the running xcore, whether or not its metadata is bundled
            packages.append(Package(module, "xcore", xcore.__version__))
            continue
        candidates = [canonicalize_name(d) for d in owners.get(module, [])]
        own = canonicalize_name(module)
        key = own if own in candidates else next(iter(candidates), own)
        known = versions.get(key)
        packages.append(Package(module, *known) if known else Package(module))
    return packages


def _sorted(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (n.lower(), n))
