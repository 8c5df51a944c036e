"""plugin.json, the manifest of a bundle (plugins/README.md, "plugin.json"), and its checks.

Its keys, which are required, their types and the contract versions are `xcore.plugins.contract`'s; `Manifest`
adds the formats (patterns, versions, specifiers) and the defaults the host fills in.
"""

import re
import unicodedata
from typing import Annotated

import msgspec
from msgspec import Meta
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from xcore.auth.builtin import PERMISSIONS
from xcore.config.schema import PERMISSION_NAME
from xcore.plugins.contract import (
    CONTRACT,
    CONTRACTS,
    DEFAULT_ENTRY,
    MANIFEST_FILE,
    MANIFEST_KEYS,
    MAX_PAGES,
    PAGE_ICON_SUFFIXES,
    PAGE_MODULE_SUFFIXES,
    PAGE_PATH,
    PLUGIN_ID,
    STATIC_FOLDER,
)

KEYS = {key.name: key for key in MANIFEST_KEYS}
MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# The core's URL prefixes: no plugin may take them, or anything under them.
CORE_PREFIXES = ("/api", "/admin", "/docs", "/redoc", "/openapi.json", "/schema", "/static", "/health", "/metrics")
# Names a plugin id may not take, with why: a plugin's permissions are `<id>.<name>` and its tasks `<id>.<name>`,
# so an id equal to a core namespace would pass its names off as the core's (a `users.export` beside the core's
# `users.manage`). Derived from the core's own permissions and URL prefixes; the admin API's other sections and
# the plugins' URL root are listed here (tests/test_plugin_manager.py checks them against the core app's routes).
RESERVED_IDS: dict[str, str] = {
    **{
        section: f"xcore's admin API has /api/admin/{section}"
        for section in ("access", "permissions", "system", "catalogue", "trust")
    },
    **{section: f"xcore's own API has /api/{section}" for section in ("auth", "me", "setup", "version")},
    **{prefix.strip("/").split(".")[0]: f"xcore serves {prefix}" for prefix in CORE_PREFIXES},
    "app": "plugins' routes live under /app",
    "xcore": "xcore's own tasks and logs are named xcore.*",
    **{name.split(".")[0]: f"xcore's own permissions are named {name.split('.')[0]}.*" for name in PERMISSIONS},
}
# Characters that make no sense in a manifest's text: control characters (a newline in a version ends up in a
# file name and a log line), line and paragraph separators, and the bidirectional overrides that make text
# display other than it reads.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# The words for a key's JSON Schema type in a message: "tags takes a list".
TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object (a mapping)",
}


class Page(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Page is one entry of plugin.json's `pages` (the keys of `contract.PAGE_KEYS`)."""

    path: str
    title: str
    module: str
    icon: str | None = None
    permission: str | None = None


class Manifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Manifest is a bundle's plugin.json: one field per key of `MANIFEST_KEYS`, with its default. Unknown keys are
    refused, so a typo is an error, not a silent default."""

    id: Annotated[str, Meta(pattern=PLUGIN_ID)]
    version: str
    contract: int = CONTRACT
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
    network: bool = False
    requirements: list[str] = msgspec.field(default_factory=list)
    pages: list[Page] = msgspec.field(default_factory=list)

    @property
    def prefix(self) -> str:
        """prefix is the URL prefix of the plugin's routes: `api_prefix`, or /app/<id>."""
        return self.api_prefix or f"/app/{self.id}"


def parse_manifest(raw: bytes, default_entry: str = DEFAULT_ENTRY) -> tuple[Manifest | None, str]:
    """parse_manifest returns (manifest, "") or (None, what is wrong, naming the key).

    A manifest that names no `entry` gets `default_entry` (the host's `manager.plugins.entry_point`). The
    `contract` is checked first: a later contract may have keys this xcore does not know.
    """
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return None, f"not valid JSON: {exc}"
    problem = _keys_problem(data) if isinstance(data, dict) else None
    if problem:
        return None, problem
    try:
        manifest = msgspec.convert(data, Manifest)
    except msgspec.ValidationError as exc:
        return None, _type_problem(exc)
    if manifest.entry is None:
        manifest = msgspec.structs.replace(manifest, entry=default_entry)
    problem = _text_problem(manifest)
    if problem:
        return None, problem
    if manifest.id in RESERVED_IDS:
        return None, f"id: {manifest.id!r} is reserved ({RESERVED_IDS[manifest.id]}); choose another id"
    try:
        version = Version(manifest.version)
    except InvalidVersion:
        return None, f"version {manifest.version!r} is not a PEP 440 version such as 1.2.0"
    # One spelling per version: v1.0.0 is 1.0.0, and so are the file name and what the admin sees.
    manifest = msgspec.structs.replace(manifest, version=str(version))
    for field, spec in [
        ("requires", manifest.requires),
        *((f"dependencies.{k}", v) for k, v in manifest.dependencies.items()),
    ]:
        if spec is not None:
            try:
                SpecifierSet(spec)
            except InvalidSpecifier:
                return None, f"{field}: {spec!r} is not a PEP 440 specifier such as >=0.1"
    for text in manifest.requirements:
        problem = requirement_syntax_problem(text)
        if problem:
            return None, f"requirements: {problem}"
    for dependency in manifest.dependencies:
        if not re.match(PLUGIN_ID, dependency):
            return None, f"dependencies: {dependency!r} is not a plugin id"
    for permission in manifest.permissions:
        if not permission.startswith(f"{manifest.id}.") or not PERMISSION_NAME.match(permission):
            return None, f"permissions: {permission!r} must be named {manifest.id}.<name>"
    problem = _pages_problem(manifest)
    if problem:
        return None, problem
    if manifest.api_prefix is not None:
        prefix = manifest.api_prefix
        if not re.match(r"^(/[a-z0-9][a-z0-9_.-]*)+$", prefix):
            return None, f"api_prefix: {prefix!r} must be a path such as /app/notes (lowercase, no trailing /)"
    return manifest, ""


def _keys_problem(data: dict[str, object]) -> str | None:
    """_keys_problem names a contract this xcore does not support, an unknown key or a missing required one."""
    contract = data.get("contract", CONTRACT)
    supported = ", ".join(str(c) for c in CONTRACTS)
    if not isinstance(contract, int) or isinstance(contract, bool):
        return f"contract: {contract!r} is not a contract version; write an integer such as {CONTRACT}"
    if contract not in CONTRACTS:
        return f"contract: {contract} is not a contract this xcore supports (it supports {supported}); upgrade xcore"
    for name in data:
        if name not in KEYS:
            return f"unknown field {name}; the keys of {MANIFEST_FILE} are {', '.join(KEYS)}"
    for key in MANIFEST_KEYS:
        if key.required and key.name not in data:
            return f"missing required field {key.name}"
    return None


def _type_problem(exc: msgspec.ValidationError) -> str:
    """_type_problem is msgspec's message, with the key it names and the type that key takes."""
    text = str(exc)
    found = re.search(r"at `\$\.(\w+)`$", text)  # the key itself, not an item inside it
    text = text.replace("`", "").replace("$.", "")
    key = KEYS.get(found.group(1)) if found else None
    return f"{text}; {key.name} takes {TYPE_WORDS[key.type]}" if key and text.startswith("Expected") else text


def _pages_problem(manifest: Manifest) -> str | None:
    """_pages_problem says what is wrong with the first page that breaks a rule of `contract.PAGE_KEYS`."""
    if len(manifest.pages) > MAX_PAGES:
        return f"pages: {len(manifest.pages)} pages; at most {MAX_PAGES}"
    seen: set[str] = set()
    for i, page in enumerate(manifest.pages):
        where = f"pages[{i}]"
        if not re.match(PAGE_PATH, page.path):
            return f"{where}.path: {page.path!r} must be lowercase letters, digits and dashes, such as notes or my-list"
        if page.path in seen:
            return f"{where}.path: two pages have the path {page.path!r}"
        seen.add(page.path)
        if not page.title.strip() or len(page.title) > 60:
            return f"{where}.title: must be 1 to 60 characters"
        for key, value, suffixes in (
            ("module", page.module, PAGE_MODULE_SUFFIXES),
            ("icon", page.icon, PAGE_ICON_SUFFIXES),
        ):
            if value is not None and not _static_file(value, suffixes):
                return f"{where}.{key}: {value!r} must be a file in {STATIC_FOLDER}/ ending in {' or '.join(suffixes)}"
        known = page.permission is None or page.permission in PERMISSIONS or page.permission in manifest.permissions
        if not known:
            return (
                f"{where}.permission: {page.permission!r} is neither a core permission nor one in the manifest's "
                "`permissions`"
            )
    return None


def _static_file(path: str, suffixes: tuple[str, ...]) -> bool:
    parts = path.split("/")
    return (
        len(parts) >= 2 and parts[0] == STATIC_FOLDER and all(p and p not in (".", "..") for p in parts)
        and "\\" not in path and path.lower().endswith(suffixes)
    )  # fmt: skip


def _text_problem(manifest: Manifest) -> str | None:
    """_text_problem names the first manifest string holding a character it has no use for: whitespace in a
    word (id, version, entry, a permission, a dependency's id), a control character anywhere but a newline or
    tab in `description`."""
    words = [("id", manifest.id), ("version", manifest.version), ("entry", manifest.entry or "")]
    words += [(f"permissions[{i}]", p) for i, p in enumerate(manifest.permissions)]
    words += [(f"dependencies.{name}", name) for name in manifest.dependencies]
    for where, value in words:
        if any(c.isspace() for c in value):
            return f"{where}: {value!r} holds whitespace; write it without spaces or line breaks"
    texts: list[tuple[str, str | None]] = [*words, ("name", manifest.name), ("author", manifest.author)]
    texts += [(f"pages[{i}].title", p.title) for i, p in enumerate(manifest.pages)]
    texts += [("api_prefix", manifest.api_prefix), ("requires", manifest.requires)]
    texts += [(f"dependencies.{k}", v) for k, v in manifest.dependencies.items()]
    texts += [(f"tags[{i}]", tag) for i, tag in enumerate(manifest.tags or [])]
    for key, text in [*texts, ("description", manifest.description)]:
        allowed = "\n\t" if key == "description" else ""
        bad = next((c for c in text or "" if c not in allowed and _unwanted(c)), None)
        if bad is not None:
            return f"{key}: {text!r} holds the control character U+{ord(bad):04X}; remove it"
    return None


def _unwanted(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS


def overlaps(a: str, b: str) -> bool:
    """overlaps is true when one URL prefix is the other or lies under it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def requirement_syntax_problem(text: str) -> str | None:
    """requirement_syntax_problem says what is wrong with one requirement string, or None when it is PEP 508."""
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        return f"{text!r} is not a PEP 508 requirement such as httpx>=0.27 ({exc})"
    return None
