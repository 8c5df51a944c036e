"""What this xcore is: its version, the git commit it was built from, whether it runs as a frozen binary, and
the command that runs it again.

`xcore --version` prints it. A frozen build (PyInstaller) carries the commit in `_build.json` next to this
module, written when the bundle is made; a source checkout reads it from `.git` without running git (the
version must print fast, and git may not be installed); an installed wheel without either says "unknown".
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from xcore import __version__

_PACKAGE = Path(__file__).resolve().parent
BUILD_FILE = _PACKAGE / "_build.json"


def frozen() -> bool:
    """frozen is true inside a PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False))


def commit() -> str:
    """commit is the short git commit xcore was built from, or "unknown"."""
    try:
        stamped = json.loads(BUILD_FILE.read_text())
        return str(stamped["commit"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _git_head(_PACKAGE.parent.parent) or "unknown"


def _git_head(root: Path) -> str | None:
    """_git_head reads the checked-out commit of the repository at `root` from its .git folder."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:12] or None
        ref = head.split(":", 1)[1].strip()
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip()[:12]
        common = git / "commondir"  # a worktree keeps its branches in the main repository's .git
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        shared = base / ref
        if shared.is_file():
            return shared.read_text().strip()[:12]
        for line in (base / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0][:12]
    except (OSError, IndexError):
        return None
    return None


def describe() -> str:
    """describe is the line `xcore --version` prints."""
    kind = "frozen build" if frozen() else "from source"
    return f"xcore {__version__} (commit {commit()}, {kind}, Python {sys.version.split()[0]})"


def self_command() -> list[str]:
    """self_command is the command that runs this same xcore again from any folder and any shell, for the
    hints xcore prints (`xcore` may not be on the PATH: a checkout's .venv is not active in the user's shell).

    A frozen build is its own executable; the `xcore` script of an installation is named by its absolute path;
    otherwise (`python -m xcore`) it is this interpreter with `-m xcore`.
    """
    if frozen():
        return [sys.executable]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name in ("xcore", "xcore.exe") and script.is_file():
        return [str(script.absolute())]
    return [sys.executable, "-m", "xcore"]


def python_command() -> list[str] | None:
    """python_command is the interpreter xcore runs on, to run a plugin's tests with (`-m pytest`) in the
    environment that holds xcore and its pytest plugin; None in a frozen build, which has no Python to offer."""
    return None if frozen() else [sys.executable]


def shell_line(argv: list[str]) -> str:
    """shell_line quotes a command for the user's shell (POSIX sh, or cmd.exe on Windows)."""
    if os.name == "nt":
        import subprocess

        return subprocess.list2cmdline(argv)
    return shlex.join(argv)
