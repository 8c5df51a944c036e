"""Safe mode: a start with every plugin off for that run, so a plugin that breaks the start can be removed.

`xcore serve --safe` asks for it. It also comes by itself: every start is journalled in
`<data>/start-attempts.json` (`begin_start`), and a start that never came up (the server stopped, or a worker
died, before `mark_up`) counts as failed when it had plugins to load: it began loading one in the server's
process (a sandboxed plugin cannot take the server down). A start that failed before any plugin loaded says
nothing about plugins: it is not counted, and the count stays as it was. After SAFE_AFTER failed starts in a row
the next one is in safe mode, and names the suspect: the plugin whose load was under way when the process died
(`<data>/plugin-loading.json`, written before each load), else the plugin whose load finished last in that start
(`<data>/plugin-loaded.json`, which `loaded` moves it to), else the suspect of the start before. A start that comes
up resets the count, safe or not, so the next one tries the plugins again.

The mode travels to the server's workers in the environment (ENV_SAFE_MODE); the plugin manager then loads no
plugin, touches no enabled flag, and says why in every plugin's state; `/health` and the app's banner say so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xcore.config.loader import ENV_SAFE_MODE
from xcore.paths import write_atomically

SAFE_AFTER = 3  # failed starts in a row before the next start is in safe mode
START_FILE = "start-attempts.json"
LOADING_FILE = "plugin-loading.json"
LOADED_FILE = "plugin-loaded.json"  # the plugin whose load finished last in this start


@dataclass(frozen=True)
class SafeMode:
    """SafeMode is why this run has every plugin off (`reason`), and the plugin suspected of breaking the start."""

    reason: str
    suspect: str | None = None

    def describe(self) -> str:
        suspect = f"; the suspect is plugin {self.suspect}" if self.suspect else ""
        return f"safe mode: every plugin is off for this run ({self.reason}){suspect}"


def begin_start(root: Path, *, forced: bool) -> SafeMode | None:
    """begin_start journals a start in the data directory `root` and says whether it is in safe mode: `forced`
    (--safe), or after SAFE_AFTER failed starts in a row."""
    journal = _read(root / START_FILE)
    interrupted, last = _read(root / LOADING_FILE), _read(root / LOADED_FILE)
    had_plugins = bool(interrupted.get("id") or last.get("id"))
    failed = not journal.get("up", True) and had_plugins  # one that failed with no plugin loading says nothing
    failures = int(journal.get("failures", 0)) + (1 if failed else 0)
    suspect = (_named(interrupted) or _named(last)) if failed else None
    suspect = suspect or (str(journal["suspect"]) if journal.get("suspect") else None)
    for stale in (LOADING_FILE, LOADED_FILE):  # what this start loads is its own
        (root / stale).unlink(missing_ok=True)
    _write(root / START_FILE, {"up": False, "failures": failures, "started": time.time(), "suspect": suspect})
    if forced:
        return SafeMode("asked for with --safe", suspect if failures else None)
    if failures >= SAFE_AFTER:
        return SafeMode(f"the last {failures} starts failed before the server came up", suspect)
    return None


def mark_up(root: Path) -> None:
    """mark_up records that this start came up: the count of failed starts goes back to zero."""
    journal = _read(root / START_FILE)
    if journal.get("up") is not True:
        _write(root / START_FILE, {"up": True, "failures": 0, "started": journal.get("started")})


def loading(root: Path, plugin_id: str, version: str) -> None:
    """loading records that this process is about to load a plugin version (`loaded` clears it)."""
    _write(root / LOADING_FILE, {"id": plugin_id, "version": version, "pid": os.getpid()})


def loaded(root: Path) -> None:
    """loaded records that the load `loading` announced finished (loaded or failed): that plugin becomes the one
    whose load finished last, the suspect should the start still fail."""
    finished = _read(root / LOADING_FILE)
    if finished.get("id"):
        _write(root / LOADED_FILE, finished)
    (root / LOADING_FILE).unlink(missing_ok=True)


def current() -> SafeMode | None:
    """current is this process's safe mode, from the environment the server passed (None: plugins load)."""
    raw = os.environ.get(ENV_SAFE_MODE)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return SafeMode(str(data["reason"]), data.get("suspect"))
    except (ValueError, KeyError, TypeError):
        return SafeMode("asked for in the environment")


def environment(mode: SafeMode) -> dict[str, str]:
    """environment is what passes `mode` on to the server's workers."""
    return {ENV_SAFE_MODE: json.dumps(asdict(mode))}


def _named(load: dict[str, Any]) -> str | None:
    """_named is "<id> <version>" of a journalled load, or None."""
    return f"{load['id']} {load.get('version', '')}".strip() if load.get("id") else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(data).encode())
