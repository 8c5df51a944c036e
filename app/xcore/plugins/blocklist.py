"""The local blocklist (`manager.plugins.blocklist`) as one worker holds it: the list it started with, read again
from the settings file (`<data>/config.json`) whenever that file changes, so that a blocked version stops serving
at once and a removed entry lets it load again, without a restart.

The plugin manager's watcher asks `changed()` (one stat of the file) on every look, and `reread()` when it says
yes; the reconcile that follows applies the new list. A file that no longer validates is logged as a warning naming
the key and the reason, and the list held stays as it was. When an environment variable sets the blocklist, a
start would take it from there, not from the file: the list held then stays as it is. Every worker process runs
its own manager, so each one re-reads the file. Other settings still apply at the next start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xcore.config.loader import load_config, settings_file
from xcore.config.schema import BlockedVersions
from xcore.errors import ConfigError
from xcore.plugins.manifest import Manifest
from xcore.plugins.store import blocked_here
from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")
CONTEXT = {"context": "plugins"}
KEY = ("manager", "plugins", "blocklist")
Stamp = tuple[int, int, int] | None  # the file's (inode, size, mtime in ns); None when there is none


class LocalBlocklist:
    """LocalBlocklist is the current `manager.plugins.blocklist` of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.entries: list[BlockedVersions] = list(runtime.config.manager.plugins.blocklist)
        self.file = settings_file(runtime.data.root)
        source = runtime.loaded.source_of(KEY)
        self.from_file = source in ("default", str(self.file))  # else the environment sets it: a file edit cannot
        self._stamp = _stamp(self.file)

    def blocked(self, manifest: Manifest) -> str | None:
        """blocked says why the current list blocks this version, or None."""
        return blocked_here(self.runtime, manifest, self.entries)

    def changed(self) -> bool:
        """changed says whether the settings file was written, created or removed since it was last read."""
        return _stamp(self.file) != self._stamp

    def reread(self) -> bool:
        """reread reads the settings file again (its layers as a start reads them, but for the environment's, which
        did not set the blocklist) and holds its blocklist; returns whether the list changed. A file that does not
        validate keeps the list held, with a warning."""
        self._stamp = _stamp(self.file)
        if not self.from_file:
            return False
        try:
            entries = list(load_config(self.runtime.data.root, environ={}).config.manager.plugins.blocklist)
        except ConfigError as exc:
            log.warning(
                "the settings file changed but does not validate (%s); manager.plugins.blocklist stays as it was",
                exc, extra=CONTEXT,
            )  # fmt: skip
            return False
        if entries == self.entries:
            return False
        self.entries = entries
        listed = ", ".join(f"{e.id} {e.versions}".strip() for e in entries) or "nothing"
        log.info("manager.plugins.blocklist changed in %s: it blocks %s", self.file, listed, extra=CONTEXT)
        return True


def _stamp(path: Path) -> Stamp:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns
