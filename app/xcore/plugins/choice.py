"""Which versions may load together: the order of the plugin ids, and the rules that do not need a version's code.

The manager tries the versions of each id, newest first, in the order `load_order` gives (dependencies first),
and skips a version `static_problem` refuses: a prefix another chosen plugin holds, a dependency that is
missing, disabled, failed or of the wrong version.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from xcore.plugins.loader import LoadedPlugin
from xcore.plugins.manifest import Manifest, overlaps


class Candidate(Protocol):
    """Candidate is a version that may be chosen: a `Source` (not loaded yet) or a `LoadedPlugin`."""

    @property
    def manifest(self) -> Manifest: ...


def load_order(
    candidates: Mapping[str, Sequence[Candidate]], loaded: Mapping[str, LoadedPlugin]
) -> tuple[list[str], dict[str, str]]:
    """load_order sorts plugin ids so dependencies come first; plugins on a cycle get its description."""
    graph: dict[str, set[str]] = {}
    for pid in sorted(set(candidates) | set(loaded)):
        manifest = candidates[pid][0].manifest if candidates.get(pid) else loaded[pid].manifest
        graph[pid] = set(manifest.dependencies)
    cycles: dict[str, str] = {}
    while True:
        sorter = graphlib.TopologicalSorter(graph)
        try:
            sorter.prepare()
            break
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            text = "dependency cycle " + " -> ".join(cycle)
            for pid in cycle[:-1]:
                cycles[pid] = text
                graph[pid] = set()
    order: list[str] = []
    while sorter.is_active():
        # Of the plugins ready to load, those serving now go first: they keep their prefix against a newcomer.
        ready = sorted(sorter.get_ready(), key=lambda pid: (pid not in loaded, pid))
        order += ready
        sorter.done(*ready)
    return [pid for pid in order if pid in candidates or pid in loaded], cycles


def static_problem(
    manifest: Manifest,
    chosen: Mapping[str, LoadedPlugin],
    candidates: Mapping[str, Sequence[Candidate]],
    enabled: Mapping[str, bool],
) -> str | None:
    """static_problem is why a version cannot load next to the plugins chosen so far: a prefix or a dependency.
    (Whether it may run sandboxed is `xcore.plugins.sandbox.sandbox_reason`'s to say.)"""
    for other in chosen.values():
        if overlaps(manifest.prefix, other.manifest.prefix):
            return f"its api_prefix {manifest.prefix} overlaps {other.manifest.prefix} of plugin {other.id}"
    for dep, spec in manifest.dependencies.items():
        have = chosen.get(dep)
        if have is None:
            if dep not in candidates:
                return f"it needs plugin {dep}, which is not installed"
            if not enabled.get(dep, True):
                return f"it needs plugin {dep}, which is disabled"
            return f"it needs plugin {dep}, which failed to load"
        if Version(have.version) not in SpecifierSet(spec, prereleases=True):
            return f"it needs plugin {dep} {spec}, and {dep} {have.version} is the one loaded"
    return None


def differs(chosen: Mapping[str, LoadedPlugin], loaded: Mapping[str, LoadedPlugin]) -> bool:
    """differs is whether `chosen` serves anything other than `loaded`: another id, order or version."""
    return list(chosen) != list(loaded) or any(loaded[k] is not v for k, v in chosen.items())
