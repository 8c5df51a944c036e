"""Imports in app/xcore point one way: down the layers of LAYERS, and never in a circle.

The checker parses every module with `ast` and counts every import: at the top, inside a function, and under
`if TYPE_CHECKING:` (a type dependency is a dependency). docs/architecture.md shows the same order and says what
each layer owns.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
ROOT_PACKAGE = "xcore"

# The layers, lowest first. A module may import its own layer and the layers below it, never one above.
# `xcore` alone is the package's __init__, not everything under it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "xcore",
            "xcore.errors",
            "xcore.resources",
            "xcore.build",
            "xcore.terminal",
            "xcore.heap",
            "xcore.paths",
            "xcore.codecache",
            "xcore.sdk",
        ),
    ),
    ("metrics", ("xcore.metrics",)),
    ("config", ("xcore.config",)),
    ("logs", ("xcore.logs",)),
    ("db", ("xcore.db",)),
    ("auth", ("xcore.auth",)),
    ("runtime", ("xcore.runtime",)),
    ("tasks", ("xcore.tasks",)),
    ("plugins", ("xcore.plugins",)),
    ("web", ("xcore.web",)),
    ("server", ("xcore.server", "xcore.desktop", "xcore.plugin_worker", "xcore.plugin_zygote")),
    ("entry points", ("xcore.cli", "xcore.testing", "xcore.__main__")),
]


@dataclass(frozen=True)
class Import:
    """Import is one import statement's dependency of `module` (in `file`, at `line`) on module `target`."""

    module: str
    file: Path
    line: int
    target: str

    def where(self, root: Path) -> str:
        return f"{self.file.relative_to(root.parent)}:{self.line}"


def modules(root: Path) -> dict[str, Path]:
    """modules maps the dotted name of every module of the `xcore` package under `root` to its file."""
    found = {}
    for file in sorted((root / ROOT_PACKAGE).rglob("*.py")):
        parts = file.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def imports(root: Path) -> list[Import]:
    """imports lists every dependency of an xcore module on another xcore module, wherever the import stands.

    `from a.b import c` depends on `a.b.c` when that is a module, else on `a.b`."""
    known = modules(root)
    found = []
    for module, file in known.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, package, known):
                    if target.split(".")[0] == ROOT_PACKAGE and target != module:
                        found.append(Import(module, file, node.lineno, target))
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: `from .x import y` in package a.b is a.b.x
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return list(dict.fromkeys(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names))


def layer_of(module: str) -> int | None:
    """layer_of is the index in LAYERS of the layer that holds `module`, or None when no layer does."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != ROOT_PACKAGE and module.startswith(prefix + ".")):
                return index
    return None


def unplaced_modules(root: Path) -> list[str]:
    """unplaced_modules names the modules under `root` that belong to no layer of LAYERS."""
    return [
        f"{file.relative_to(root.parent)}: {name}" for name, file in modules(root).items() if layer_of(name) is None
    ]


def upward_imports(root: Path) -> list[str]:
    """upward_imports names each import of a higher layer by a lower one: file, line, importer and imported."""
    found = []
    for imp in imports(root):
        low, high = layer_of(imp.module), layer_of(imp.target)
        if low is not None and high is not None and high > low:
            found.append(
                f"{imp.where(root)}: {imp.module} (layer {LAYERS[low][0]}) imports {imp.target} "
                f"(layer {LAYERS[high][0]}, higher)"
            )
    return found


def import_cycles(root: Path) -> list[str]:
    """import_cycles names one cycle through each group of modules that import one another, with the line of each
    import on it."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports(root):
        edges.setdefault(imp.module, {}).setdefault(imp.target, imp)
    found = []
    for group in _strongly_connected(edges):
        if len(group) > 1:
            cycle = _cycle_through(min(group), group, edges)
            steps = [f"{imp.module} ({imp.where(root)})" for imp in cycle]
            found.append(" -> ".join([*steps, cycle[0].module]))
    return found


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the groups of modules each reachable from all the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _cycle_through(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest cycle from `start` back to it, inside `group` (breadth first), as the imports along it."""
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, imp in sorted(edges.get(node, {}).items()):
                if target == start:
                    path = [imp]
                    while path[0].module != start:
                        path.insert(0, came_by[path[0].module])
                    return path
                if target in group and target not in came_by:
                    came_by[target] = imp
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = unplaced_modules(APP)
    assert not unplaced, "modules in no layer (add them to LAYERS and docs/architecture.md):\n" + "\n".join(unplaced)


def test_no_layer_imports_a_higher_one() -> None:
    upward = upward_imports(APP)
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    cycles = import_cycles(APP)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_sdk_imports_nothing_of_xcore() -> None:
    # Plugin code imports only xcore.sdk, so the contract must not pull in the core.
    found = [f"{imp.where(APP)}: {imp.target}" for imp in imports(APP) if imp.module == "xcore.sdk"]
    assert not found, f"xcore.sdk imports from xcore: {found}"


def test_the_architecture_document_shows_the_layers_of_this_module() -> None:
    text = (APP.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+?) \| (.+) \|$", text, re.MULTILINE)
    documented = [(name, tuple(re.findall(r"`(xcore[\w.]*)`", cell))) for _, name, cell in rows]
    assert documented == LAYERS, "the layer table of docs/architecture.md differs from LAYERS"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_the_checker_finds_a_planted_upward_import_and_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "xcore/__init__.py": "",
            "xcore/db/__init__.py": "",
            "xcore/db/x.py": "import os\n\nfrom xcore.web import app\n",
            "xcore/web/__init__.py": "",
            "xcore/web/app.py": "from xcore.db import engine\n",  # down: allowed
            "xcore/db/engine.py": "",
            "xcore/tasks/__init__.py": "",
            "xcore/tasks/host.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from xcore.tasks.schedule import Plan\n"
            ),
            "xcore/tasks/schedule.py": "def plan() -> None:\n    from xcore.tasks import host\n",
            "xcore/stray.py": "",
        },
    )
    assert upward_imports(tmp_path) == [
        f"{tmp_path.name}/xcore/db/x.py:3: xcore.db.x (layer db) imports xcore.web.app (layer web, higher)"
    ]
    assert import_cycles(tmp_path) == [
        f"xcore.tasks.host ({tmp_path.name}/xcore/tasks/host.py:4) -> "
        f"xcore.tasks.schedule ({tmp_path.name}/xcore/tasks/schedule.py:2) -> xcore.tasks.host"
    ]
    assert unplaced_modules(tmp_path) == [f"{tmp_path.name}/xcore/stray.py: xcore.stray"]
