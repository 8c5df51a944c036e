"""The catalogues of one worker (`manager.plugins.catalogues`): what they offer, their blocklists and notices.

At start the worker takes the copies kept from the last fetch (no network, so a blocklisted version never loads
even for a moment), then fetches each catalogue afresh in the background; the admin API and `xcore plugin
search|update` fetch again on demand. A catalogue that cannot be used (unreachable with no copy, a signature that
does not hold, a key not trusted) is listed with its error and contributes nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from xcore.plugins.catalogue import Catalogue, CatalogueError, Listed, Release, Rule, as_json, parse, read
from xcore.plugins.errors import PluginNotFound
from xcore.plugins.signing import TrustStore

REFRESH_AFTER = 900.0  # seconds after which the admin API's listing fetches the catalogues again


@dataclass(frozen=True)
class Offer:
    """Offer is one release a catalogue offers for a plugin id, and the catalogue it comes from."""

    catalogue: Catalogue
    listed: Listed
    release: Release


class Catalogues:
    """Catalogues holds the configured catalogues as last read."""

    def __init__(self, sources: list[str], trust: TrustStore, keep: Path, host_version: str) -> None:
        self.sources = list(sources)
        self.trust = trust
        self.keep = keep
        self.host_version = host_version
        self.read: dict[str, Catalogue] = {}
        self.errors: dict[str, str] = {}
        self.refreshed = 0.0

    def load_kept(self) -> None:
        """load_kept takes the copies kept from the last fetch, without the network."""
        for source in self.sources:
            kept = self.keep / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.json"
            if source in self.read or not kept.is_file():
                continue
            try:
                catalogue = parse(source, source, kept.read_bytes(), self.trust)
            except CatalogueError:
                continue
            catalogue.stale, catalogue.fetched = "not fetched yet since the start", kept.stat().st_mtime
            self.read[source] = catalogue

    def refresh(self) -> bool:
        """refresh fetches every catalogue; returns whether their blocklists changed (the manager reconciles)."""
        before = self.blocklist()
        for source in self.sources:
            try:
                self.read[source] = read(source, self.trust, self.keep)
                self.errors.pop(source, None)
            except CatalogueError as exc:
                self.read.pop(source, None)
                self.errors[source] = str(exc)
        self.refreshed = time.time()
        return self.blocklist() != before

    def due(self) -> bool:
        return bool(self.sources) and time.time() - self.refreshed > REFRESH_AFTER

    def blocklist(self) -> list[tuple[str, Rule]]:
        return [(c.name, rule) for c in self.read.values() for rule in c.blocklist]

    def blocked(self, plugin_id: str, version: str) -> str | None:
        """blocked says why a catalogue blocks this version, or None."""
        for name, rule in self.blocklist():
            if rule.covers(plugin_id, version):
                return f"blocked: {rule.text} (the blocklist of catalogue {name!r})"
        return None

    def notices(self, plugin_id: str, version: str | None) -> list[dict[str, str]]:
        """notices are the catalogues' notices on this version of the plugin (any version when None)."""
        found = []
        for catalogue in self.read.values():
            for rule in catalogue.notices:
                if rule.id == plugin_id and (version is None or rule.covers(plugin_id, version)):
                    found.append({"level": rule.level, "message": rule.text, "catalogue": catalogue.name})
        return found

    def offer(self, plugin_id: str, version: str | None = None) -> Offer:
        """offer is the newest release of `plugin_id` that fits this xcore (or exactly `version`), in any
        catalogue; raises PluginNotFound saying what the catalogues have."""
        candidates = [
            Offer(c, listed, r)
            for c in self.read.values() for listed in c.plugins if listed.id == plugin_id for r in listed.releases
        ]  # fmt: skip
        if not candidates:
            raise PluginNotFound(f"no catalogue lists a plugin {plugin_id!r}")
        if version is not None:
            exact = [o for o in candidates if Version(o.release.version) == Version(version)]
            if not exact:
                have = ", ".join(sorted({o.release.version for o in candidates}, key=Version))
                raise PluginNotFound(f"the catalogues list {plugin_id} {have}, not {version}")
            return exact[0]
        fitting = [
            o
            for o in candidates
            if o.release.fits(self.host_version) and not self.blocked(plugin_id, o.release.version)
        ]
        if not fitting:
            raise PluginNotFound(f"no release of {plugin_id} in the catalogues fits xcore {self.host_version}")
        return max(fitting, key=lambda o: Version(o.release.version))

    def listing(self, installed: dict[str, str | None], query: str = "") -> dict[str, Any]:
        """listing is what the admin API's Browse shows: the catalogues and every plugin they list (matching
        `query` in its id, name or description), with the newest release that fits this xcore, the version
        installed here, whether that is an update, notices and a blocklist entry."""
        catalogues = [as_json(c) for c in self.read.values()]
        catalogues += [{"source": s, "name": s, "error": e, "plugins": 0} for s, e in self.errors.items()]
        plugins: dict[str, dict[str, Any]] = {}
        needle = query.strip().lower()
        for catalogue in self.read.values():
            for listed in catalogue.plugins:
                text = f"{listed.id} {listed.name} {listed.description}".lower()
                if listed.id in plugins or (needle and needle not in text):
                    continue
                try:
                    newest: Release | None = self.offer(listed.id).release
                except PluginNotFound:
                    newest = None
                have = installed.get(listed.id)
                plugins[listed.id] = {
                    "id": listed.id, "name": listed.name, "description": listed.description, "author": listed.author,
                    "catalogue": catalogue.name,
                    "latest": None if newest is None else {
                        "version": newest.version, "requires": newest.requires, "signer": newest.signer,
                        "size": newest.size,
                    },
                    "versions": [r.version for r in listed.releases],
                    "installed": have,
                    "update": bool(newest and have and Version(newest.version) > Version(have)),
                    "notices": self.notices(listed.id, have),
                    "blocked": self.blocked(listed.id, have) if have else None,
                }  # fmt: skip
        return {"catalogues": catalogues, "plugins": sorted(plugins.values(), key=lambda p: p["name"].lower())}
