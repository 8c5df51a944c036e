"""Where xcore's own files (`config.json`, `migrations/`, `ui/`) are, however xcore was installed.

There are three cases: a source checkout (the files sit at the top of the repository, two levels above
this package), an installed wheel (they are copied into `xcore/_resources/`), and a PyInstaller bundle
(the spec puts them under `<_MEIPASS>/xcore/_resources/`).
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def resource_root() -> Path:
    """resource_root returns the folder that holds `config.json`, `migrations/` and `ui/`."""
    candidates = []
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        candidates.append(Path(frozen_root) / "xcore" / "_resources")
    candidates += [_PACKAGE_DIR / "_resources", _PACKAGE_DIR.parent.parent]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        "xcore's resource files (config.json, migrations/, ui/) are missing; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Reinstall xcore."
    )


def resource_path(name: str) -> Path:
    """resource_path returns the path of one resource, for example `resource_path("migrations")`."""
    return resource_root() / name
