"""plugin.json, the manifest of a bundle (DESIGN.md, "The plugin contract (version 1)"), and its checks."""

import re
from typing import Annotated

import msgspec
from msgspec import Meta
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from xcore.config.schema import PERMISSION_NAME

DEFAULT_ENTRY = "run"
PLUGIN_ID = r"^[a-z][a-z0-9_]{1,39}$"
MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The core's URL prefixes: no plugin may take them, or anything under them.
CORE_PREFIXES = ("/api", "/admin", "/docs", "/redoc", "/openapi.json", "/schema", "/static", "/health")


class Manifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Manifest is a bundle's plugin.json. Unknown keys are refused, so a typo is an error, not a silent default."""

    id: Annotated[str, Meta(pattern=PLUGIN_ID)]
    version: str
    name: str | None = None
    author: str | None = None
    description: str | None = None
    api_prefix: str | None = None
    tags: list[str] | None = None
    entry: Annotated[str, Meta(pattern=MODULE_NAME)] | None = None  # None: the host's manager.plugins.entry_point
    requires: str | None = None
    dependencies: dict[str, str] = msgspec.field(default_factory=dict)
    permissions: list[str] = msgspec.field(default_factory=list)
    sandbox: bool = False

    @property
    def prefix(self) -> str:
        """prefix is the URL prefix of the plugin's routes: `api_prefix`, or /app/<id>."""
        return self.api_prefix or f"/app/{self.id}"


def parse_manifest(raw: bytes, default_entry: str = DEFAULT_ENTRY) -> tuple[Manifest | None, str]:
    """parse_manifest returns (manifest, "") or (None, what is wrong, naming the key).

    A manifest that names no `entry` gets `default_entry` (the host's `manager.plugins.entry_point`).
    """
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
        if manifest.entry is None:
            manifest = msgspec.structs.replace(manifest, entry=default_entry)
    except msgspec.ValidationError as exc:
        return None, str(exc).replace("`", "").replace("$.", "")
    except msgspec.DecodeError as exc:
        return None, f"not valid JSON: {exc}"
    try:
        Version(manifest.version)
    except InvalidVersion:
        return None, f"version {manifest.version!r} is not a PEP 440 version such as 1.2.0"
    for field, spec in [
        ("requires", manifest.requires),
        *((f"dependencies.{k}", v) for k, v in manifest.dependencies.items()),
    ]:
        if spec is not None:
            try:
                SpecifierSet(spec)
            except InvalidSpecifier:
                return None, f"{field}: {spec!r} is not a PEP 440 specifier such as >=0.1"
    for dependency in manifest.dependencies:
        if not re.match(PLUGIN_ID, dependency):
            return None, f"dependencies: {dependency!r} is not a plugin id"
    for permission in manifest.permissions:
        if not permission.startswith(f"{manifest.id}.") or not PERMISSION_NAME.match(permission):
            return None, f"permissions: {permission!r} must be named {manifest.id}.<name>"
    if manifest.api_prefix is not None:
        prefix = manifest.api_prefix
        if not re.match(r"^(/[a-z0-9][a-z0-9_.-]*)+$", prefix):
            return None, f"api_prefix: {prefix!r} must be a path such as /app/notes (lowercase, no trailing /)"
    return manifest, ""


def overlaps(a: str, b: str) -> bool:
    """overlaps is true when one URL prefix is the other or lies under it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
