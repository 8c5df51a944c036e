"""`xcore plugin pack --wheels`: the wheels of a plugin's requirements, downloaded by pip for the Pythons and
platforms the bundle is for, to be packed into its `wheels/`.

pip resolves, xcore does not: pip's resolver, indexes, `--find-links` folders and configuration are the author's
usual ones. Each target is one `pip download --only-binary=:all:` run: the Python version (this xcore's by
default) and the platform tags (this machine's by default; `--platform` names others, as pip's tags or as one
of PLATFORMS). Pure-Python wheels serve every platform, so they are downloaded once.

A package xcore ships is not packed: the host's meets it, and pip is held to the host's version of each
(a constraints file), so that what the wheels need of them is what the host has. A requirement the host's
version does not meet is refused before pip runs, naming both versions.

The binary has no pip: there, `--python` names a Python with pip (by default `python3` on the PATH).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.tags import platform_tags
from packaging.utils import canonicalize_name

from xcore.build import frozen
from xcore.plugins.bundle import BundleError
from xcore.plugins.lock import parse_wheel_name
from xcore.plugins.manifest import Manifest
from xcore.plugins.requirements import HOST, host_versions, plan

GLIBC_MINOR = 28  # `linux` and `linux-arm` are glibc 2.28 and newer (manylinux_2_28 and every older manylinux tag)


def _manylinux(arch: str) -> tuple[str, ...]:
    """_manylinux is every manylinux tag a glibc 2.GLIBC_MINOR machine takes, newest first: pip expands a macOS
    tag to the older macOS versions itself, but `manylinux_2_28` to nothing older (a manylinux2014 wheel is
    `manylinux_2_17`)."""
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(GLIBC_MINOR, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tuple(tags)


# Short names for the platforms authors pack for most, each the pip platform tags its wheels may have (pip takes
# the older macOS versions of a macosx tag by itself: macosx_11_0 takes macosx_10_9).
PLATFORMS = {
    "linux": _manylinux("x86_64"),
    "linux-arm": _manylinux("aarch64"),
    "macos": ("macosx_11_0_arm64",),
    "macos-intel": ("macosx_10_12_x86_64",),
    "windows": ("win_amd64",),
}
PIP_TIMEOUT = 600.0  # seconds one pip run may take
SHOWN_PIP_LINES = 6  # the last lines of pip's messages a failure quotes


@dataclass(frozen=True)
class WheelOptions:
    """WheelOptions are the options of `pack --wheels`: for which Python and platforms, from where, with which
    pip. `platforms` empty: this machine's."""

    platforms: tuple[str, ...] = ()
    python_version: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    find_links: tuple[Path, ...] = ()
    index_url: str | None = None
    no_index: bool = False
    python: Path | None = None
    extra: tuple[str, ...] = field(default=())  # more pip options, as given


def download_wheels(folder: Path, manifest: Manifest, options: WheelOptions, dest: Path) -> list[Path]:
    """download_wheels downloads the wheels of the manifest's requirements into `dest` and returns them, sorted,
    without the packages xcore ships; raises BundleError (rule `wheels-download`) saying why not."""
    where = str(folder)
    if not manifest.requirements:
        return []
    answer = plan(manifest.requirements, deep=False)
    clashes = [p for p in answer.problems if "which xcore ships" in p]
    if clashes:
        raise BundleError(where, "requirements", "; ".join(clashes))
    wanted = [r.requirement for r in answer.resolved if r.source != HOST]  # the host's packages are not packed
    if not wanted:
        return []
    python = _pip_python(where, options.python)
    with tempfile.TemporaryDirectory(prefix="xcore-pack-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in host_versions().values()))
        targets = [list(PLATFORMS.get(p, (p,))) for p in options.platforms] or [list(platform_tags())]
        for tags in targets:
            _pip_download(where, python, wanted, tags, options, constraints, dest)
    wheels = []
    for path in sorted(dest.glob("*.whl")):
        name = parse_wheel_name(path.name)[0]
        if canonicalize_name(name) in host_versions():
            path.unlink()  # the host's version meets it (pip was held to it)
        else:
            wheels.append(path)
    return wheels


def _pip_python(where: str, chosen: Path | None) -> str:
    """_pip_python is the Python whose pip downloads: `chosen`, this one (from source), or python3 on the PATH."""
    if chosen is not None:
        python = str(chosen)
    elif not frozen():
        # Asked in this process: `python -m pip --version` would start pip once more only to see that it starts.
        if importlib.util.find_spec("pip") is None:
            raise BundleError(
                where, "wheels-download", f"{sys.executable} has no pip: install pip, or name another by --python"
            )
        return sys.executable
    else:
        found = shutil.which("python3") or shutil.which("python")
        if found is None:
            raise BundleError(where, "wheels-download", "this xcore has no pip: name a Python with pip by --python")
        python = found
    try:
        result = subprocess.run(
            [python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BundleError(where, "wheels-download", f"cannot run {python} ({exc})") from None
    if result.returncode != 0:
        raise BundleError(where, "wheels-download", f"{python} has no pip: install pip, or name another by --python")
    return python


def _pip_download(
    where: str, python: str, requirements: Sequence[str], tags: Sequence[str], options: WheelOptions,
    constraints: Path, dest: Path,
) -> None:  # fmt: skip
    command = [
        python, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--only-binary=:all:", "--dest", str(dest), "--python-version", options.python_version,
        "--implementation", "cp", "--constraint", str(constraints),
    ]  # fmt: skip
    for tag in tags:
        command += ["--platform", tag]
    for link in options.find_links:
        command += ["--find-links", str(link)]
    if options.index_url:
        command += ["--index-url", options.index_url]
    if options.no_index:
        command.append("--no-index")
    command += [*options.extra, *requirements]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BundleError(where, "wheels-download", f"pip did not finish within {PIP_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise BundleError(where, "wheels-download", f"cannot run pip ({exc})") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
        said = " | ".join(lines[-SHOWN_PIP_LINES:]) or f"exit status {result.returncode}"
        more = f" and {len(tags) - 1} more" if len(tags) > 1 else ""
        target = f"Python {options.python_version} on {tags[0]}{more}"
        raise BundleError(where, "wheels-download", f"pip found no wheels for {target}: {said}")
