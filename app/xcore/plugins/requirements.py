"""A plugin's `requirements` (PEP 508 strings in plugin.json): which of them this xcore meets, and how.

A bundle cannot carry packages of its own yet (wheels in the bundle are a later step). So a requirement is met
when a distribution that this xcore runs with has a version that satisfies it. That is the Python environment of
an installation, or the metadata a frozen build carries. A requirement whose environment marker does not hold
for this interpreter (`"tomli; python_version < '3.11'"`) is no requirement here.

The answer to each requirement is one of three:
- met, with the version that meets it;
- a clash with the version xcore ships, refused with both versions named;
- absent, refused with the requirement named.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from packaging.requirements import InvalidRequirement, Requirement

HOST = "xcore"  # where a met requirement comes from: the packages this xcore runs with


@dataclass(frozen=True)
class Resolved:
    """Resolved is one requirement of a plugin and what meets it (`version` None: nothing does)."""

    requirement: str
    name: str
    version: str | None
    source: str | None  # HOST when met

    def as_json(self) -> dict[str, str | None]:
        return {"requirement": self.requirement, "name": self.name, "version": self.version, "source": self.source}


def requirement_syntax_problem(text: str) -> str | None:
    """requirement_syntax_problem says what is wrong with one requirement string, or None when it is PEP 508."""
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        return f"{text!r} is not a PEP 508 requirement such as httpx>=0.27 ({exc})"
    return None


@cache
def host_versions() -> dict[str, tuple[str, str]]:
    """host_versions are the distributions this xcore runs with: (name, version) by normalized name, the first
    found on the import path winning (it is the one imported)."""
    found: dict[str, tuple[str, str]] = {}
    try:
        for dist in importlib.metadata.distributions():
            name = dist.name
            if name:
                found.setdefault(normalized(name), (name, dist.version))
    except (OSError, ValueError):  # unreadable metadata: nothing is known to be there
        return {}
    return found


def normalized(name: str) -> str:
    """normalized is a distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(requirements: Sequence[str]) -> list[Resolved]:
    """resolve answers each requirement that applies to this interpreter (see the module's docstring)."""
    answers = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        have = host_versions().get(normalized(requirement.name))
        if have is None:
            answers.append(Resolved(text, requirement.name, None, None))
        else:
            met = requirement.specifier.contains(have[1], prereleases=True)
            answers.append(Resolved(text, have[0], have[1], HOST if met else None))
    return answers


def requirements_problem(requirements: Sequence[str]) -> str | None:
    """requirements_problem is why a plugin with these requirements cannot load here, naming each one that is not
    met; None when all are."""
    problems = []
    for answer in resolve(requirements):
        if answer.source is not None:
            continue
        if answer.version is None:
            problems.append(
                f"{answer.requirement} is not among the packages of this xcore, and a bundle cannot carry its own yet"
            )
        else:
            problems.append(f"{answer.requirement} clashes with {answer.name} {answer.version}, which xcore ships")
    return f"requirements: {'; '.join(problems)}" if problems else None
