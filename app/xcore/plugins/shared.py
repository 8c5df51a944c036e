"""The plugins folder of several nodes kept alike through their shared PostgreSQL database.

Each node keeps its own `plugins/` folder, which its watcher and plugin manager serve as on one machine. When
the core database is PostgreSQL, the bundles are also stored in it (table `plugin_bundles`), and before each
reconcile a worker brings its node's folder and the database in line (`SharedBundles.sync`, one worker of the
node at a time):

1. a zip that is new or changed in this folder since the last sync (an upload through this node, `xcore plugin
   install`, a file dropped here) goes up into the database;
2. a zip removed from this folder since the last sync (`xcore plugin remove`, a file deleted here) is removed from
   the database;
3. what the database holds comes down: a zip missing here, or different, is written (atomically); a zip the
   database no longer holds, which came from it, is deleted.

The node remembers what it last synced in `<data>/plugins-synced.json`, which tells "removed here" from "never
seen here". Whenever the database changed, the other nodes are notified (`xcore.db.notify`), reconcile at once
and fetch it; the periodic safety net catches up with a missed notification. Enabled flags and settings are in
the database already, so they need only the notification.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from pathlib import Path

from filelock import FileLock
from sqlalchemy import delete, select

from xcore.db import notify
from xcore.db.models import PluginBundle
from xcore.paths import write_atomically
from xcore.plugins.leftovers import TEMP_PREFIX
from xcore.plugins.sources import SETTLE
from xcore.plugins.store import bundle_files, plugins_dir, settled
from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")

RECORD = "plugins-synced.json"  # in the data directory, beside plugins/, which holds only what the watcher serves
LOCK = "plugins-sync.lock"
LOCK_TIMEOUT = 60.0  # seconds: a sync that writes a large bundle takes a while


class SharedBundles:
    """SharedBundles syncs one node's plugins folder with the bundles in the shared database."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.folder = plugins_dir(runtime)
        self.record_path = runtime.data.root / RECORD
        self.lock = FileLock(str(runtime.data.root / LOCK))
        self.node = f"{socket.gethostname()}:{runtime.data.root}"
        self._hashes: dict[str, tuple[tuple[int, int], str]] = {}  # name -> ((size, mtime), sha256) of local zips

    def sync(self) -> None:
        """sync brings this folder and the database in line (the scan that follows sees what changed here)."""
        with self.lock.acquire(timeout=LOCK_TIMEOUT):
            local = self._local()
            record = self._record()
            if self._push(local, record):
                notify.publish(self.runtime.engine, notify.PLUGINS)
            self._pull(local, record)

    def _push(self, local: dict[str, tuple[str, Path]], record: dict[str, str]) -> bool:
        """Puts this folder's changes since the last sync into the database; true when it changed it."""
        stored = self._stored()
        changed = False
        with self.runtime.sessions.begin() as session:
            for name, (sha, path) in local.items():
                if record.get(name) != sha and stored.get(name) != sha:
                    content = path.read_bytes()
                    if hashlib.sha256(content).hexdigest() != sha:
                        continue  # replaced while this ran: the next sync takes it
                    session.merge(
                        PluginBundle(name=name, sha256=sha, size=len(content), content=content, stored_by=self.node)
                    )
                    log.info("plugin bundle %s stored for every node", name)
                    changed = True
            for name, sha in record.items():
                if name not in local and stored.get(name) == sha:
                    session.execute(delete(PluginBundle).where(PluginBundle.name == name))
                    log.info("plugin bundle %s removed for every node", name)
                    changed = True
        return changed

    def _pull(self, local: dict[str, tuple[str, Path]], record: dict[str, str]) -> None:
        """Writes what the database holds into this folder, and deletes what it dropped."""
        stored = self._stored()
        for name, sha in stored.items():
            if local.get(name, ("", None))[0] != sha:
                self._fetch(name, sha)
        for name, (sha, path) in local.items():
            if name not in stored and record.get(name) == sha:  # it came from the database, which dropped it
                path.unlink(missing_ok=True)
                log.info("plugin bundle %s deleted here: it was removed on another node", name)
        if stored != record:
            write_atomically(self.record_path, json.dumps(stored, sort_keys=True).encode())

    def _fetch(self, name: str, sha: str) -> None:
        with self.runtime.sessions() as session:
            content = session.scalar(select(PluginBundle.content).where(PluginBundle.name == name))
        if content is None or hashlib.sha256(content).hexdigest() != sha:
            return  # changed or removed meanwhile: the next sync takes it
        target = self.folder / name
        write_atomically(target, content, prefix=TEMP_PREFIX)  # an interrupted write's leftover is removed at start
        settled(target)
        log.info("plugin bundle %s fetched from the shared database", name)

    def _stored(self) -> dict[str, str]:
        with self.runtime.sessions() as session:
            return {name: sha for name, sha in session.execute(select(PluginBundle.name, PluginBundle.sha256))}

    def _local(self) -> dict[str, tuple[str, Path]]:
        """The zips of this folder that are completely written: name -> (sha256, path)."""
        found = {}
        now = time.time()
        for path in bundle_files(self.runtime):
            try:
                info = path.stat()
                if now - info.st_mtime < SETTLE:
                    continue  # still being written: the next sync takes it
                stamp = (info.st_size, info.st_mtime_ns)
                known = self._hashes.get(path.name)
                if known is None or known[0] != stamp:  # each zip is read once, not at every reconcile
                    known = self._hashes[path.name] = (stamp, hashlib.sha256(path.read_bytes()).hexdigest())
                found[path.name] = (known[1], path)
            except FileNotFoundError:
                continue
        return found

    def _record(self) -> dict[str, str]:
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def shared_bundles(runtime: Runtime) -> SharedBundles | None:
    """shared_bundles is the sync of this node's plugins folder when the core database is PostgreSQL, else None."""
    from xcore.db.serving import is_postgres

    if runtime.database_file is not None or not is_postgres(runtime.database_url):
        return None
    return SharedBundles(runtime)
