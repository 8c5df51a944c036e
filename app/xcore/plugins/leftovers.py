"""What an interrupted plugin upload or extraction leaves behind, and its removal when the server starts.

An upload is written to a hidden `<plugins>/.upload-*.tmp` file and a bundle is extracted into a hidden
`<cache>/.extract-*` folder, each renamed into place once complete; a process killed half-way leaves them behind.
This module imports nothing heavy: the server's parent process runs it before any worker starts.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")
TEMP_PREFIX = ".upload-"  # `<plugins>/.upload-*.tmp`: an upload being received, or a bundle being installed
EXTRACT_PREFIX = ".extract-"  # `<cache>/.extract-*/`: an extraction under way
CACHE_FOLDER = "cache/plugins"  # the extracted bundles, under the data directory


def remove_leftovers(runtime: Runtime) -> list[Path]:
    """remove_leftovers deletes every `.upload-*.tmp` file of the plugins folder and every `.extract-*` folder of
    the cache; returns what it deleted. One that cannot be deleted is logged and left.

    Only safe while no other process uses the data directory: `xcore serve` and `xcore desktop` run it at their
    start, holding the server lock, before any worker runs (an upload or extraction under way would lose its
    file). A running server removes its own temporary files, even when an upload or an extraction fails.
    """
    plugins = runtime.data.resolve(runtime.config.manager.plugins.directory)
    cache = runtime.data.root / CACHE_FOLDER
    found = sorted(plugins.glob(f"{TEMP_PREFIX}*.tmp")) if plugins.is_dir() else []
    found += sorted(cache.glob(f"{EXTRACT_PREFIX}*")) if cache.is_dir() else []
    removed = []
    for path in found:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("cannot remove %s, left by an interrupted upload: %s", path, exc, extra={"context": "plugins"})
            continue
        removed.append(path)
    if removed:
        names = ", ".join(p.name for p in removed[:5]) + (", ..." if len(removed) > 5 else "")
        log.info(
            "removed %d file(s) left by interrupted plugin uploads or extractions: %s", len(removed), names,
            extra={"context": "plugins"},
        )  # fmt: skip
    return removed
