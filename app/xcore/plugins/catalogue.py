"""Catalogues: signed JSON indexes of plugin bundles, to find, install and update plugins, with the blocklist and
the notices of whoever publishes them.

A catalogue is one file, `index.json`, at an https URL or on the disk (a file, or a folder holding it), so it
works offline and behind firewalls. A team makes one with `xcore catalogue build DIR --sign KEY` (`build`): every
bundle of DIR with its version, sha256, size, the xcore versions it needs and its signer, plus the blocklist and
notices of `DIR/catalogue.json`. The index is signed like a bundle (`xcore.plugins.signing`): a catalogue is used
only when the signature holds and the operator trusts its key, so a catalogue host cannot change what it lists.
Each bundle is still checked on install against its sha256, its own signature and the policy.

`read` fetches one and keeps the last good copy under `<data>/catalogues/`: a catalogue that cannot be reached
is answered from it, marked stale. Nothing here touches the web layer or the plugin manager; `Catalogues`
(`xcore.plugins.catalogues`) holds the configured ones for a worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from xcore.errors import RequestError
from xcore.paths import write_atomically
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.contract import MANIFEST_FILE, MAX_UNCOMPRESSED
from xcore.plugins.index import IndexUnavailable, fetch
from xcore.plugins.signing import Signer, TrustStore, read_private_key, sign

CATALOGUE_FORMAT = 1
INDEX_FILE = "index.json"
SETTINGS_FILE = "catalogue.json"  # in a folder `build` reads: the catalogue's name, blocklist and notices
MAX_INDEX = 16 * 1024 * 1024
MAX_DOWNLOAD = MAX_UNCOMPRESSED  # a bundle's zip is at most what it may hold unpacked
SCHEMES = ("http", "https")
LEVELS = ("info", "warning", "critical")


class CatalogueError(RequestError):
    """CatalogueError is a catalogue that cannot be used, or a download from it that failed, saying why (502: the
    fault is the catalogue's or the network's, not the request's)."""

    status = 502


@dataclass(frozen=True)
class Release:
    """Release is one version of a plugin a catalogue lists."""

    version: str
    url: str  # absolute, or a path on the disk
    sha256: str
    size: int
    requires: str | None  # the xcore versions it needs, as its manifest says
    signer: str | None  # who signed the bundle, as the catalogue says (the bundle's own signature is checked)

    def fits(self, host_version: str) -> bool:
        return not self.requires or Version(host_version) in SpecifierSet(self.requires, prereleases=True)


@dataclass(frozen=True)
class Listed:
    """Listed is one plugin of a catalogue, its releases newest first."""

    id: str
    name: str
    description: str
    author: str
    releases: list[Release]


@dataclass(frozen=True)
class Rule:
    """Rule is a blocklist entry (`reason`) or a notice (`message`, `level`) on versions of a plugin."""

    id: str
    versions: str
    text: str
    level: str = "warning"

    def covers(self, plugin_id: str, version: str) -> bool:
        return plugin_id == self.id and Version(version) in SpecifierSet(self.versions, prereleases=True)


@dataclass
class Catalogue:
    """Catalogue is one catalogue as read: where from, its name, who signed it, what it lists."""

    source: str
    name: str
    signer: Signer
    plugins: list[Listed] = field(default_factory=list)
    blocklist: list[Rule] = field(default_factory=list)
    notices: list[Rule] = field(default_factory=list)
    fetched: float = 0.0
    stale: str | None = None  # why the last good copy is used: the catalogue could not be reached


# --- building --------------------------------------------------------------------------------------------------


def build(folder: Path, key_path: Path, base_url: str | None = None) -> bytes:
    """build makes the signed `index.json` of the bundles (`*.zip`) in `folder`, with the name, blocklist and
    notices of `folder/catalogue.json` when there is one. Each release's URL is `base_url` + the file's name, or
    the name alone (relative to the index). Raises BundleError for a bundle that breaks a rule, CatalogueError for
    a bad catalogue.json, SignatureError for a bad key."""
    key, signer = read_private_key(key_path)
    settings = _settings(folder / SETTINGS_FILE)
    plugins: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.zip")):
        bundle = inspect_bundle(path, None)
        manifest = bundle.manifest
        entry = plugins.setdefault(
            manifest.id,
            {"id": manifest.id, "name": manifest.name or manifest.id, "description": manifest.description or "",
             "author": manifest.author or "", "releases": []},
        )  # fmt: skip
        entry["releases"].append(
            {
                "version": manifest.version,
                "url": (base_url or "") + path.name,
                "sha256": bundle.sha256,
                "size": path.stat().st_size,
                "requires": manifest.requires,
                "signer": bundle.signer.name if bundle.signer else None,
            }
        )
    for entry in plugins.values():
        entry["releases"].sort(key=lambda r: Version(r["version"]), reverse=True)
        newest = entry["releases"][0]
        entry.update(_newest_texts(folder, newest["url"].rsplit("/", 1)[-1], entry))
    body = {
        "format": CATALOGUE_FORMAT, "name": settings.get("name") or folder.name, "generated": int(time.time()),
        "plugins": sorted(plugins.values(), key=lambda p: p["id"]), "blocklist": settings.get("blocklist", []),
        "notices": settings.get("notices", []),
    }  # fmt: skip
    _rules(body, "catalogue.json")  # checked as a reader will check them
    signature = json.loads(sign(key, signer, _canonical(body)))
    return (json.dumps({**body, "signature": signature}, indent=2) + "\n").encode()


def _newest_texts(folder: Path, file: str, entry: dict[str, Any]) -> dict[str, Any]:
    """_newest_texts are the name, description and author of the newest release, from its manifest."""
    try:
        with zipfile.ZipFile(folder / file) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == MANIFEST_FILE]
            data = json.loads(archive.read(min(names, key=len))) if names else {}
    except (OSError, ValueError, zipfile.BadZipFile, KeyError):
        data = {}
    return {k: data.get(k) or entry[k] for k in ("name", "description", "author")}


def _settings(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogueError(f"{path}: cannot be read as JSON ({exc})", status=422) from None
    if not isinstance(data, dict) or set(data) - {"name", "blocklist", "notices"}:
        raise CatalogueError(f"{path}: must be an object with name, blocklist and notices", status=422)
    return data


# --- reading -----------------------------------------------------------------------------------------------------


def read(source: str, trust: TrustStore, keep: Path, *, timeout: float = 30.0) -> Catalogue:
    """read fetches the catalogue at `source` (an http(s) URL of index.json or of its folder, or a path), checks
    its signature against the trust store and its content, and keeps it in `keep` for when it cannot be reached
    (then the copy is answered, `stale` saying why). Raises CatalogueError saying what is wrong."""
    location = index_location(source)
    kept = keep / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.json"
    try:
        raw = _fetch(location, MAX_INDEX, timeout)
    except CatalogueError as exc:
        if not kept.is_file():
            raise
        catalogue = parse(source, location, kept.read_bytes(), trust)
        catalogue.stale = str(exc)
        catalogue.fetched = kept.stat().st_mtime
        return catalogue
    catalogue = parse(source, location, raw, trust)
    write_atomically(kept, raw)
    catalogue.fetched = time.time()
    return catalogue


def index_location(source: str) -> str:
    """index_location is where a catalogue's index.json is: the URL or path given, or index.json in that
    folder."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() in SCHEMES:
        return source if not source.endswith("/") else source + INDEX_FILE
    if parts.scheme and len(parts.scheme) > 1:
        raise CatalogueError(f"catalogue {source!r}: only https://, http:// URLs and paths are catalogues", status=422)
    path = Path(source).expanduser()
    return str(path / INDEX_FILE if path.is_dir() else path)


def parse(source: str, location: str, raw: bytes, trust: TrustStore) -> Catalogue:
    """parse checks an index's signature (a key the operator trusts) and content; raises CatalogueError."""
    where = f"catalogue {source}"
    try:
        document = json.loads(raw)
        signature = document.pop("signature")
    except (UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError):
        raise CatalogueError(
            f"{where}: not a catalogue (JSON with a signature), as `xcore catalogue build` makes"
        ) from None
    signer = _verify(where, signature, _canonical(document))
    trusted = trust.trusted(signer)
    if trusted is None:
        raise CatalogueError(
            f"{where}: signed by {signer.name!r} ({signer.key_id}), a key this host does not trust; "
            "`xcore trust add` their .pub to use it"
        )
    if document.get("format") != CATALOGUE_FORMAT:
        raise CatalogueError(f"{where}: format {document.get('format')!r}; this xcore reads format {CATALOGUE_FORMAT}")
    try:
        plugins = [_listed(p, location) for p in document.get("plugins", [])]
        blocklist, notices = _rules(document, where)
    except (KeyError, TypeError, ValueError, InvalidVersion, InvalidSpecifier) as exc:
        raise CatalogueError(f"{where}: an entry cannot be read ({type(exc).__name__}: {exc})") from None
    return Catalogue(source, str(document.get("name") or source), signer, plugins, blocklist, notices)


def _verify(where: str, signature: Any, manifest: bytes) -> Signer:
    try:
        raw = base64.b64decode(signature["public_key"], validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(
            base64.b64decode(signature["signature"], validate=True), manifest
        )
        return Signer(str(signature["signer"]), raw)
    except InvalidSignature:
        raise CatalogueError(
            f"{where}: the signature does not match its content: it changed after it was signed"
        ) from None
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise CatalogueError(f"{where}: its signature cannot be read ({exc})") from None


def _listed(item: dict[str, Any], location: str) -> Listed:
    releases = []
    for r in item["releases"]:
        Version(r["version"])
        if r.get("requires"):
            SpecifierSet(r["requires"])
        if len(str(r["sha256"])) != 64:
            raise ValueError(f"{item['id']} {r['version']}: sha256 {r['sha256']!r}")
        url = _resolved(location, str(r["url"]))
        releases.append(
            Release(r["version"], url, str(r["sha256"]).lower(), int(r["size"]), r.get("requires"), r.get("signer"))
        )
    releases.sort(key=lambda r: Version(r.version), reverse=True)
    name, description, author = (str(item.get(k) or "") for k in ("name", "description", "author"))
    return Listed(str(item["id"]), name or str(item["id"]), description, author, releases)


def _rules(document: dict[str, Any], where: str) -> tuple[list[Rule], list[Rule]]:
    blocklist = [
        Rule(str(b["id"]), str(b.get("versions", "")), str(b["reason"])) for b in document.get("blocklist", [])
    ]
    notices = [
        Rule(str(n["id"]), str(n.get("versions", "")), str(n["message"]), str(n.get("level", "warning")))
        for n in document.get("notices", [])
    ]
    for rule in [*blocklist, *notices]:
        SpecifierSet(rule.versions)
        if rule.level not in LEVELS:
            raise ValueError(f"{where}: notice level {rule.level!r}; one of {', '.join(LEVELS)}")
    return blocklist, notices


def _resolved(location: str, url: str) -> str:
    """_resolved is a release's URL or path, relative ones taken from the index's location."""
    if urllib.parse.urlsplit(url).scheme.lower() in SCHEMES:
        return url
    if urllib.parse.urlsplit(location).scheme.lower() in SCHEMES:
        return urllib.parse.urljoin(location, url)
    return str(Path(location).parent / url)


# --- downloading ---------------------------------------------------------------------------------------------------


def download(release: Release, target: Path, *, timeout: float = 60.0) -> Path:
    """download writes the release's bundle to `target`, held to the catalogue's sha256; raises CatalogueError."""
    # A byte past the size the catalogue gives, and never more than a bundle may be: a catalogue may not make this
    # read 10 GB.
    limit = min(release.size + 1, MAX_DOWNLOAD) if release.size > 0 else MAX_DOWNLOAD
    data = _fetch(release.url, limit, timeout)
    if release.size > 0 and len(data) != release.size:
        detail = (
            f"it has {len(data):,}{'+' if len(data) == limit else ''} bytes, and the catalogue lists {release.size:,}"
        )
        raise CatalogueError(f"{release.url}: {detail}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != release.sha256:
        raise CatalogueError(f"{release.url}: its sha256 is {digest}, and the catalogue lists {release.sha256}")
    write_atomically(target, data)
    return target


def check_signer(name: str, release: Release, catalogue: str, signer: Signer | None) -> None:
    """check_signer raises BundleError (rule `signer`, naming the bundle `name`) when the bundle's own signer is
    not the one the catalogue lists for the release: it says both."""
    if (signer.name if signer else None) == release.signer:
        return
    listed = f"signed by {release.signer!r}" if release.signer else "unsigned"
    found = f"signed by {signer.name!r} ({signer.key_id})" if signer else "unsigned"
    raise BundleError(name, "signer", f"catalogue {catalogue!r} lists it as {listed}, but the bundle is {found}")


def _fetch(location: str, limit: int, timeout: float) -> bytes:
    """_fetch reads at most `limit` bytes from an http(s) URL or a path; raises CatalogueError saying why not."""
    if urllib.parse.urlsplit(location).scheme.lower() in SCHEMES:
        try:
            return fetch(location, limit, timeout)
        except IndexUnavailable as exc:
            raise CatalogueError(f"{location}: {exc.reason}") from None
    try:
        with open(location, "rb") as source:
            data = source.read(limit + 1)
    except OSError as exc:
        raise CatalogueError(f"{location}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise CatalogueError(f"{location}: over {limit:,} bytes")
    return data


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def as_json(catalogue: Catalogue) -> dict[str, Any]:
    """as_json is what the admin API shows of one catalogue."""
    return {
        "source": catalogue.source, "name": catalogue.name, "signer": catalogue.signer.name,
        "key_id": catalogue.signer.key_id, "plugins": len(catalogue.plugins), "fetched": catalogue.fetched,
        "stale": catalogue.stale, "error": None,
    }  # fmt: skip
