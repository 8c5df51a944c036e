"""The plugin contract: everything a bundle declares and everything the host reads from it or calls, in one place.

A bundle is a zip holding `plugin.json` (the keys of `MANIFEST_KEYS`), an entry module (`ROUTER` and the hooks
below) and, optionally, a config file and a static folder; its code imports only `SDK` from xcore. The validator
(`manifest`, `bundle`) and the loader read every name and number from here, and plugins/README.md documents each
of them: tests/test_contract.py fails when the two differ, either way.

Grow the contract on purpose. A change that a bundle written for an earlier contract would not survive needs a
new contract version in `CONTRACTS`, so that existing bundles keep loading under the version they name.

This module imports nothing from xcore, so every layer may read it.
"""

from __future__ import annotations

import ast
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# --- the contract's version -----------------------------------------------------------------------------------

CONTRACT = 1
"""CONTRACT is the version of the contract this module declares; a manifest without `contract` means this one."""

CONTRACTS = (1,)
"""CONTRACTS are the contract versions this xcore loads; a bundle naming another one is refused."""

# --- the files of a bundle ------------------------------------------------------------------------------------

MANIFEST_FILE = "plugin.json"
"""MANIFEST_FILE is the manifest, at the top of the zip or of its one top folder."""

DEFAULT_ENTRY = "run"
"""DEFAULT_ENTRY is the entry module of a manifest that names none (the default of manager.plugins.entry_point)."""

CONFIG_FILES = ("config.yaml", "config.yml", "config.json")
"""CONFIG_FILES are where a bundle's default settings may be, in the order they are looked for; the first wins."""

STATIC_FOLDER = "static"
"""STATIC_FOLDER is the folder of a bundle served as files under `<prefix>/static/`."""

# --- plugin.json ----------------------------------------------------------------------------------------------

PLUGIN_ID = r"^[a-z][a-z0-9_]{1,39}$"
"""PLUGIN_ID is the pattern of a plugin's `id`."""


@dataclass(frozen=True)
class ManifestKey:
    """ManifestKey is one key of plugin.json: its name, whether a manifest must have it, its JSON type (as JSON
    Schema names it), the value a manifest without it holds, and what it means."""

    name: str
    required: bool
    type: str
    default: Any
    meaning: str


MANIFEST_KEYS = (
    ManifestKey("id", True, "string", None, "the plugin's id, unique on the host; its routes, tasks and permissions"),
    ManifestKey("version", True, "string", None, "a PEP 440 version"),
    ManifestKey("contract", False, "integer", CONTRACT, "the contract version the bundle is written for"),
    ManifestKey("name", False, "string", None, "a name shown in the admin UI"),
    ManifestKey("author", False, "string", None, "shown in the admin UI"),
    ManifestKey("description", False, "string", None, "shown in the admin UI"),
    ManifestKey("api_prefix", False, "string", None, "the URL prefix of the routes; absent, /app/<id>"),
    ManifestKey("tags", False, "array", None, "OpenAPI tags of the routes; absent, [id]"),
    ManifestKey("entry", False, "string", None, "the entry module; absent, the host's default (DEFAULT_ENTRY)"),
    ManifestKey("requires", False, "string", None, "a PEP 440 specifier the xcore version must meet"),
    ManifestKey("dependencies", False, "object", {}, "plugin ids, each with a specifier its version must meet"),
    ManifestKey("permissions", False, "array", [], "the permissions the plugin defines, each <id>.<name>"),
    ManifestKey("sandbox", False, "boolean", False, "true runs the plugin in a confined worker process of its own"),
    ManifestKey("network", False, "boolean", False, "true asks for network access when sandboxed (the host decides)"),
    ManifestKey("requirements", False, "array", [], "PEP 508 requirements on packages the plugin's code imports"),
    ManifestKey("pages", False, "array", [], "screens the plugin adds to the app (PAGE_KEYS), listed on the home page"),
)
"""MANIFEST_KEYS are the keys of plugin.json, every one of them: any other key is refused."""

# --- the limits of a bundle -----------------------------------------------------------------------------------

MAX_ENTRIES = 5_000
"""MAX_ENTRIES is the most entries (files and folders) a bundle's zip may hold."""

MAX_UNCOMPRESSED = 200 * 1024 * 1024
"""MAX_UNCOMPRESSED is the most bytes a bundle's entries may hold once extracted."""

MAX_RATIO = 100
"""MAX_RATIO is the highest compression ratio of a bundle (uncompressed to compressed bytes)."""

RATIO_FLOOR = 1024 * 1024
"""RATIO_FLOOR is the uncompressed size below which the ratio is not checked: a few kB of blank lines compress
1000:1."""

BUNDLE_LIMITS = {
    "MAX_ENTRIES": MAX_ENTRIES,
    "MAX_UNCOMPRESSED": MAX_UNCOMPRESSED,
    "MAX_RATIO": MAX_RATIO,
    "RATIO_FLOOR": RATIO_FLOOR,
}
"""BUNDLE_LIMITS are the limits above by name."""

# --- the pages a plugin adds to the app --------------------------------------------------------------------------

PAGE_KEYS = (
    ManifestKey("path", True, "string", None, "the page's segment of its address, /admin/apps/<id>/<path> (PAGE_PATH)"),
    ManifestKey("title", True, "string", None, "its title, in the navigation and on the home page"),
    ManifestKey("module", True, "string", None, "the ES module in static/ that renders it (`render(ctx)`)"),
    ManifestKey("icon", False, "string", None, "an .svg or .png in static/ shown beside the title"),
    ManifestKey("permission", False, "string", None, "the permission needed to see it; absent, any logged-in user"),
)
"""PAGE_KEYS are the keys of each entry of plugin.json's `pages`, every one of them."""

PAGE_PATH = r"^[a-z0-9][a-z0-9-]{0,39}$"
"""PAGE_PATH is the form of a page's `path`: lowercase letters, digits and dashes."""

PAGE_MODULE_SUFFIXES = (".js", ".mjs")
"""PAGE_MODULE_SUFFIXES are the file suffixes a page's `module` may have."""

PAGE_ICON_SUFFIXES = (".svg", ".png")
"""PAGE_ICON_SUFFIXES are the file suffixes a page's `icon` may have."""

MAX_PAGES = 20
"""MAX_PAGES is the most pages one plugin may add."""

# --- a bundle's signature ---------------------------------------------------------------------------------------

SIGNATURE_FILE = "xcore-signature.json"
"""SIGNATURE_FILE, at the top of a bundle, is its signature (`xcore.plugins.signing`): the signer's name and
public key and an Ed25519 signature over every other entry; `xcore plugin pack --sign` writes it."""

# --- the wheels a bundle carries ------------------------------------------------------------------------------

WHEELS_FOLDER = "wheels"
"""WHEELS_FOLDER is the bundle's folder of wheels (`*.whl`) for its requirements, with WHEELS_LOCK beside them;
nothing else may be in it, and its wheels are not extracted with the plugin's code."""

WHEELS_LOCK = f"{WHEELS_FOLDER}/lock.json"
"""WHEELS_LOCK lists every wheel of WHEELS_FOLDER with its sha256 and size (`xcore plugin pack` writes it)."""

MAX_WHEEL_ENTRIES = 20_000
"""MAX_WHEEL_ENTRIES is the most entries one wheel may hold."""

MAX_LIBRARIES = 1024 * 1024 * 1024
"""MAX_LIBRARIES is the most bytes the wheels one plugin version uses may hold once unpacked, together."""

COMPRESSION_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
"""COMPRESSION_METHODS are the zip compression methods a bundle's entries may use, by number."""

# --- the entry module -----------------------------------------------------------------------------------------

ROUTER = "router"
"""router, in the entry module, is a Router or a list of route handlers, mounted under the plugin's prefix."""


def on_load(ctx: Any) -> None:
    """on_load(ctx), in the entry module, runs once the version is imported and before it serves; `ctx` is its
    PluginContext. Sync (run in a worker thread) or async. An exception, or a run longer than HOOK_TIMEOUT,
    fails the version: the one that served before keeps serving."""


def on_unload(ctx: Any) -> None:
    """on_unload(ctx), in the entry module, runs once the version no longer serves (replaced, disabled, removed,
    or the host stopping); `ctx` is its PluginContext. Sync or async, within HOOK_TIMEOUT; a failure is logged."""


def health(ctx: Any) -> Any:
    """health(ctx), in the entry module, says whether the serving version works: the host calls it every
    HEALTH_EVERY seconds and right after a load, off the request path; `ctx` is its PluginContext. Sync (run in a
    worker thread) or async. True or None: ok; False: failing; a str: ok, with that text as its detail; a dict:
    its `ok` (true or false) says which, and the rest is its detail; an exception, another answer or a run
    longer than HEALTH_TIMEOUT: failing, with the reason. A failing plugin is flagged, never unloaded."""


HOOKS = (on_load, on_unload, health)
"""HOOKS are the functions the host calls in the entry module when it defines them; each above is their spec."""

HOOK_NAMES = tuple(hook.__name__ for hook in HOOKS)
"""HOOK_NAMES are the names of HOOKS."""

ENTRY_NAMES = (ROUTER, *HOOK_NAMES)
"""ENTRY_NAMES are every name the host reads in the entry module (tasks are found by their mark, not a name)."""

CTX = "ctx"
"""CTX is the parameter through which a route handler or a task gets its PluginContext (hooks get it first)."""

HOOK_TIMEOUT = 30.0
"""HOOK_TIMEOUT is how many seconds the import of the entry module and each hook may take; the version fails then
(a sync hook's thread is abandoned)."""

HEALTH_EVERY = 30.0
"""HEALTH_EVERY is how many seconds apart the host calls a serving version's `health`, in each server process."""

HEALTH_TIMEOUT = 10.0
"""HEALTH_TIMEOUT is how many seconds one call of `health` may take; past it, the plugin is failing (a sync
health's thread is abandoned)."""

HEALTH_DETAIL = 200
"""HEALTH_DETAIL is the most characters of a health answer's detail that are kept (on one line)."""

# --- ctx.cache --------------------------------------------------------------------------------------------------

CACHE_KEY_MAX = 255
"""CACHE_KEY_MAX is the most characters of a `ctx.cache` key (text, at least one character, no NUL)."""

CACHE_VALUE_MAX = 1024 * 1024
"""CACHE_VALUE_MAX is the most bytes of a `ctx.cache` value: bytes as they are, anything else as JSON."""

CACHE_TTL = 3600
"""CACHE_TTL is how many seconds a `ctx.cache` entry lives when `set` is given no `ttl`."""

CACHE_TTL_MAX = 30 * 24 * 3600
"""CACHE_TTL_MAX is the longest `ttl` of a `ctx.cache` entry, in seconds (30 days)."""

# --- what a bundle's code imports -----------------------------------------------------------------------------

SDK = "xcore.sdk"
"""SDK is the one module of xcore a bundle's code imports. A bundle whose Python source imports another (`import
xcore`, `from xcore import runtime`, `from xcore.auth import tokens`) is refused before any of its code runs."""

HOST_PACKAGE = SDK.split(".")[0]

SOURCE_SUFFIXES = (".py", ".pyw")
"""SOURCE_SUFFIXES are the Python source files of a bundle (in any letter case) whose imports are checked."""


def xcore_import(source: bytes, file: str) -> str | None:
    """xcore_import is the refusal for the first import in `source` (the Python file `file`) of an xcore module
    other than SDK, naming the file, the line and the module; None when there is none.

    Imports anywhere count (in a function, under `if TYPE_CHECKING:`); relative imports are the bundle's own. A
    file that does not parse is left to the import, which reports its syntax error; calls such as
    `importlib.import_module` are not seen.
    """
    try:
        tree = ast.parse(source, file)
    except (SyntaxError, ValueError):
        return None
    except RecursionError:  # compile() may still take what the ast cannot hold: refuse what cannot be checked
        return f"{file}: nested too deeply to be checked for imports; split its expressions"
    for line, module in sorted(_host_imports(tree)):
        return f"{file}, line {line}: imports {module}; a plugin imports only {SDK} from {HOST_PACKAGE}"
    return None


def _host_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """_host_imports yields (line, module) for each import of xcore but SDK; `from xcore import sdk` is SDK."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            modules = [f"{base}.{alias.name}" if base == HOST_PACKAGE else base for alias in node.names]
        else:
            continue
        for module in modules:
            if _in_host(module) and not _in_sdk(module):
                yield node.lineno, module.removesuffix(".*")


def _in_host(module: str) -> bool:
    return module == HOST_PACKAGE or module.startswith(f"{HOST_PACKAGE}.")


def _in_sdk(module: str) -> bool:
    return module == SDK or module.startswith(f"{SDK}.")
