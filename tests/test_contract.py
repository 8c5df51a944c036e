"""The plugin contract (xcore.plugins.contract): plugins/README.md documents exactly it, both ways; the code reads
it; and a bundle's code imports only xcore.sdk from xcore.

`contract_problems` reads the README as a reader would: its `##` sections, the plugin.json table, the bullets of
the `xcore.sdk` and entry-module sections (the back-ticked names at the head of each, with the signature where
one is written), the sentences stating the limits, the Pages table of a page's keys (contract.PAGE_KEYS) and the
page SDK's table of exports, against the `export` statements of ui/admin/static/xcore.js. Each difference is one
line naming what and where.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import xcore.sdk as sdk
from conftest import PASSWORDS, create_account, plugin_host, until
from xcore.config.schema import PluginsConfig
from xcore.plugins import contract
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.contract import COMPRESSION_METHODS, xcore_import
from xcore.plugins.loader import PluginLoadError, import_plugin, run_hook, unload_modules
from xcore.plugins.manifest import Manifest, parse_manifest
from xcore.plugins.pack import pack_folder
from xcore.plugins.store import plugins_dir
from xcore.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "plugins" / "README.md"
MB = 1024 * 1024
SDK_SECTION, MANIFEST_SECTION, ENTRY_SECTION, IMPORT_SECTION = (
    "xcore.sdk", "plugin.json", "The entry module", "What a plugin may import",
)  # fmt: skip
# The pages a plugin adds: their keys' table in '## Pages', and the client SDK's exports in its '### The page SDK'.
PAGES_SECTION, PAGE_SDK_SUBSECTION = "Pages", "The page SDK"
PAGE_SDK = ROOT / "ui" / "admin" / "static" / "xcore.js"
JS_EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|const|let|var|class)\s+([A-Za-z_$][\w$]*)", re.M)
JS_EXPORT_LIST = re.compile(r"^export\s*\{([^}]*)\}", re.M)
# How the README states each of contract.BUNDLE_LIMITS, in the plugin.json section: (pattern, unit).
LIMIT_SENTENCES = {
    "MAX_ENTRIES": (r"more than ([\d,]+) entries", 1),
    "MAX_UNCOMPRESSED": (r"more than ([\d,]+) MB uncompressed", MB),
    "MAX_RATIO": (r"a compression ratio over ([\d,]+):1", 1),
    "RATIO_FLOOR": (r"over [\d,]+:1 \(above ([\d,]+) MB\)", MB),
}
HEAD = re.compile(r"`(?P<item>[^`]+)`(?P<sep>,\s+and\s+|,\s+|\s+and\s+)?")
NO_DEFAULT = object()


# --- reading the README ----------------------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """sections maps each `## heading` to its text (its `###` subsections included); code blocks are left out."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            continue
        elif line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        else:
            current.append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


def prose(body: str) -> str:
    """prose is `body` on one line, so that a sentence wrapped over lines still matches a pattern."""
    return " ".join(body.split())


def bullets(body: str) -> list[str]:
    """bullets are the top-level `- ` items of `body`, each with its indented continuation lines, on one line."""
    items: list[list[str]] = []
    for line in body.splitlines():
        if line.startswith("- "):
            items.append([line[2:]])
        elif items and line.startswith("  "):
            items[-1].append(line.strip())
        elif items and not line.strip():
            items.append([])  # a blank line ends the item
    return [" ".join(item) for item in items if item]


def heads(bullet: str) -> list[str]:
    """heads are the back-ticked items a bullet starts with (`a`, `b` and `c`): names, or `name(parameters)`."""
    found, at = [], 0
    while match := HEAD.match(bullet, at):
        found.append(match["item"])
        if not match["sep"]:
            break
        at = match.end()
    return found


def named(section: str, body: str) -> tuple[dict[str, str | None], list[str]]:
    """named maps each name the section's bullets document to its written signature (None when none is written),
    with the problems of bullets that name nothing or a name twice."""
    found: dict[str, str | None] = {}
    problems = []
    for bullet in bullets(body):
        items = heads(bullet)
        if not items:
            problems.append(f"## {section}: a bullet does not start with a back-ticked name: {bullet[:60]!r}")
        for item in items:
            name = item.split("(", 1)[0]
            if name in found:
                problems.append(f"## {section}: {name} is documented twice")
            found[name] = item if "(" in item else None
    return found, problems


def table(body: str) -> list[dict[str, str]]:
    """table is the rows of the first markdown table in `body`, each a mapping of the header's cells."""
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row, strict=False)) for row in cells[2:]]


def signature_problems(where: str, written: str, real: Callable[..., Any]) -> list[str]:
    """signature_problems compares a written `name(a, b=1, *args, **kwargs)` with the real object's signature:
    the parameters' names, in order, and their defaults."""
    try:
        node = ast.parse(f"def {written}: pass").body[0]
    except SyntaxError:
        return [f"{where}: `{written}` is not a signature"]
    assert isinstance(node, ast.FunctionDef)
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + [*args.defaults]
    wrote = [(a.arg, d) for a, d in zip(positional, defaults, strict=True)]
    wrote += [(f"*{args.vararg.arg}", None)] if args.vararg else []
    wrote += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    wrote += [(f"**{args.kwarg.arg}", None)] if args.kwarg else []
    stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    params = inspect.signature(real).parameters.values()
    actual = [(stars.get(p.kind, "") + p.name, p.default) for p in params]
    if [name for name, _ in wrote] != [name for name, _ in actual]:
        return [
            f"{where}: written ({', '.join(n for n, _ in wrote)}), but it takes ({', '.join(n for n, _ in actual)})"
        ]
    problems = []
    for (name, node_default), (_, default) in zip(wrote, actual, strict=True):
        value = NO_DEFAULT if node_default is None else _literal(node_default)
        expected = NO_DEFAULT if default is inspect.Parameter.empty else default
        if value is not expected and (type(value), value) != (type(expected), expected):
            problems.append(f"{where}: {name} is written with default {_shown(value)}; it is {_shown(expected)}")
    return problems


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def _shown(value: object) -> str:
    return "none" if value is NO_DEFAULT else repr(value)


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


# --- the checker -----------------------------------------------------------------------------------------------


def contract_problems(text: str, page_sdk: str | None = None) -> list[str]:
    """contract_problems lists every difference between the README `text` and the contract, both ways; the page
    SDK's exports are read from `page_sdk`, the source of xcore.js (the file's, by default)."""
    found = sections(text)
    headings = (MANIFEST_SECTION, SDK_SECTION, ENTRY_SECTION, IMPORT_SECTION, PAGES_SECTION)
    problems = [f"no section '## {heading}'" for heading in headings if heading not in found]
    problems += page_key_problems(found.get(PAGES_SECTION, ""))
    source = PAGE_SDK.read_text(encoding="utf-8") if page_sdk is None else page_sdk
    problems += page_sdk_problems(subsection(found.get(PAGES_SECTION, ""), PAGE_SDK_SUBSECTION), source)
    problems += manifest_problems(found.get(MANIFEST_SECTION, ""))
    problems += limit_problems(found.get(MANIFEST_SECTION, ""))
    problems += sdk_problems(found.get(SDK_SECTION, ""))
    problems += entry_problems(found.get(ENTRY_SECTION, ""))
    if f"a plugin imports only `{contract.SDK}`" not in prose(found.get(IMPORT_SECTION, "")):
        problems.append(f"## {IMPORT_SECTION}: does not state the rule 'a plugin imports only `{contract.SDK}`'")
    return problems


def manifest_problems(body: str) -> list[str]:
    """manifest_problems compares the plugin.json table (key, type, required) with contract.MANIFEST_KEYS."""
    documented: dict[str, tuple[str, str, str]] = {}
    for row in table(body):
        for key in backticked(row.get("key", "")):
            documented[key] = (row.get("type", ""), row.get("required", ""), row.get("meaning", ""))
    problems = []
    for key in contract.MANIFEST_KEYS:
        if key.name not in documented:
            problems.append(f"plugin.json key {key.name} is not in the README's plugin.json table")
            continue
        kind, required, meaning = documented.pop(key.name)
        if required != ("yes" if key.required else "no"):
            problems.append(f"plugin.json key {key.name}: the table says required {required!r}; it is {key.required}")
        if kind != key.type:
            problems.append(f"plugin.json key {key.name}: the table says type {kind!r}; it is {key.type}")
        stated = {"id": f"`{contract.PLUGIN_ID}`", "entry": f"default `{contract.DEFAULT_ENTRY}`"}
        stated["contract"] = f"default `{contract.CONTRACT}`"
        if key.name in stated and stated[key.name] not in meaning:
            problems.append(f"plugin.json key {key.name}: the table does not say {stated[key.name]}")
    problems += [f"the plugin.json table documents {key}, which is not a plugin.json key" for key in documented]
    text = prose(body)
    loads = re.search(r"This xcore loads contracts? (.+?)\.", text)
    if not loads or [int(v) for v in backticked(loads[1])] != list(contract.CONTRACTS):
        problems.append(f"'Contract version' does not say 'This xcore loads contract' {contract.CONTRACTS}")
    current = re.search(r"a manifest without it means contract `(\d+)`", text)
    if not current or int(current[1]) != contract.CONTRACT:
        problems.append(f"'Contract version' does not say a manifest without it means contract `{contract.CONTRACT}`")
    return problems


def tables(body: str) -> list[list[dict[str, str]]]:
    """tables are the rows of every markdown table in `body`, in order (see `table`)."""
    found: list[list[str]] = []
    previous = False
    for line in body.splitlines():
        row = line.strip().startswith("|")
        if row and not previous:
            found.append([])
        if row:
            found[-1].append(line)
        previous = row
    return [table("\n".join(lines)) for lines in found]


def subsection(body: str, heading: str) -> str:
    """subsection is the text of the `### heading` subsection of a section's `body` (empty when there is none)."""
    lines = body.splitlines()
    if f"### {heading}" not in lines:
        return ""
    rest = lines[lines.index(f"### {heading}") + 1 :]
    end = next((i for i, line in enumerate(rest) if line.startswith("### ")), len(rest))
    return "\n".join(rest[:end])


def page_key_problems(body: str) -> list[str]:
    """page_key_problems compares the Pages section's table of a page's keys (key, type, required) with
    contract.PAGE_KEYS, both ways."""
    documented: dict[str, tuple[str, str]] = {}
    for row in next((rows for rows in tables(body) if rows and "required" in rows[0]), []):
        for key in backticked(row.get("key", "")):
            documented[key] = (row.get("type", ""), row.get("required", ""))
    problems = []
    for key in contract.PAGE_KEYS:
        if key.name not in documented:
            problems.append(f"page key {key.name} (contract.PAGE_KEYS) is not in the README's Pages table")
            continue
        kind, required = documented.pop(key.name)
        if required != ("yes" if key.required else "no"):
            problems.append(f"page key {key.name}: the Pages table says required {required!r}; it is {key.required}")
        if kind != key.type:
            problems.append(f"page key {key.name}: the Pages table says type {kind!r}; it is {key.type}")
    problems += [f"the Pages table documents {key}, which is not a page key (contract.PAGE_KEYS)" for key in documented]
    return problems


def js_exports(source: str) -> set[str]:
    """js_exports are the names an ES module's `export` statements give it: `export function/const/class name`
    and `export { a, b as c } [from ...]`."""
    names = set(JS_EXPORT.findall(source))
    for listed in JS_EXPORT_LIST.findall(source):
        names |= {item.split(" as ")[-1].strip() for item in listed.split(",") if item.strip()}
    return names


def js_api_methods(source: str) -> set[str]:
    """js_api_methods are the keys of the object xcore.js exports as `api` (`export const api = ...({ get: ...`)."""
    block = re.search(r"^export const api = [\w.]*\(?\{(.*?)^\}", source, re.M | re.S)
    return set(re.findall(r"^\s+(\w+):", block[1], re.M)) if block else set()


def page_sdk_problems(body: str, source: str) -> list[str]:
    """page_sdk_problems compares the page SDK's table of exports (its `export` column: `name`, `name(...)` or
    `api.method(...)`) with what xcore.js's `source` exports, both ways, and the `api.` methods with the keys of
    its `api` object."""
    table_rows = next((rows for rows in tables(body) if rows and "export" in rows[0]), [])
    if not table_rows:
        return [f"'### {PAGE_SDK_SUBSECTION}' has no table of exports (a column `export`)"]
    documented: set[str] = set()
    methods: set[str] = set()
    for row in table_rows:
        for item in backticked(row["export"]):
            name = re.split(r"[.(]", item, maxsplit=1)[0]
            documented.add(name)
            if item.startswith(f"{name}."):
                methods.add(re.split(r"[.(]", item)[1])
    exported = js_exports(source)
    problems = [
        f"xcore.js exports {name}, which '### {PAGE_SDK_SUBSECTION}' does not document"
        for name in sorted(exported - documented)
    ]
    problems += [
        f"'### {PAGE_SDK_SUBSECTION}' documents {name}, which xcore.js does not export"
        for name in sorted(documented - exported)
    ]
    has = js_api_methods(source)
    problems += [f"xcore.js's api has {m}, which '### {PAGE_SDK_SUBSECTION}' does not document" for m in has - methods]
    problems += [f"'### {PAGE_SDK_SUBSECTION}' documents api.{m}, which xcore.js's api lacks" for m in methods - has]
    if not has:
        problems.append("xcore.js: no `export const api = ...({ method: ... })` object was found")
    return problems


def limit_problems(body: str) -> list[str]:
    """limit_problems compares the bundle limits the README states with contract.BUNDLE_LIMITS."""
    problems = [f"no sentence is known to state {name}" for name in contract.BUNDLE_LIMITS.keys() - LIMIT_SENTENCES]
    text = prose(body)
    for name, (pattern, unit) in LIMIT_SENTENCES.items():
        match = re.search(pattern, text)
        stated = int(match[1].replace(",", "")) * unit if match else None
        if stated != contract.BUNDLE_LIMITS.get(name):
            problems.append(
                f"bundle limit {name}: the README says {stated}, the contract {contract.BUNDLE_LIMITS.get(name)}"
            )
    methods = re.search(r"a compression method other than (.+?);", text)
    stated_methods, methods_are = re.split(r", | or ", methods[1]) if methods else [], [*COMPRESSION_METHODS.values()]
    if stated_methods != methods_are:
        problems.append(f"compression methods: the README says {stated_methods}; they are {methods_are}")
    return problems


def sdk_problems(body: str) -> list[str]:
    """sdk_problems compares the `xcore.sdk` section's names and signatures with xcore.sdk.__all__."""
    documented, problems = named(SDK_SECTION, body)
    for name in sdk.__all__:
        obj = getattr(sdk, name)
        if name not in documented:
            problems.append(f"xcore.sdk.{name} is exported (__all__) but not documented in '## {SDK_SECTION}'")
        elif documented[name] is not None:
            problems += signature_problems(f"xcore.sdk.{name}", documented[name] or "", obj)
        elif inspect.isfunction(obj) and obj.__module__ == sdk.__name__:
            problems.append(f"xcore.sdk.{name} is a function of xcore.sdk: its bullet must write its signature")
    problems += [
        f"'## {SDK_SECTION}' documents xcore.sdk.{name}, which xcore.sdk does not export"
        for name in documented
        if name not in sdk.__all__
    ]
    context = next((b for b in bullets(body) if heads(b) == ["PluginContext"]), "")
    attributes = [f.name for f in sdk.PluginContext.__dataclass_fields__.values() if not f.name.startswith("_")]
    attributes += [n for n, v in vars(sdk.PluginContext).items() if isinstance(v, property) and not n.startswith("_")]
    problems += [f"PluginContext.{a} is not named in its bullet" for a in attributes if f"`{a}`" not in context]
    return problems


def entry_problems(body: str) -> list[str]:
    """entry_problems compares the entry-module section with the contract: its names and the hooks' signatures,
    the default entry module, the hook timeout, the config files and the static folder."""
    documented, problems = named(ENTRY_SECTION, body)
    for name in contract.ENTRY_NAMES:
        if name not in documented:
            problems.append(
                f"entry-module name {name} (contract.ENTRY_NAMES) is not documented in '## {ENTRY_SECTION}'"
            )
        elif name in contract.HOOK_NAMES:
            written = documented[name]
            if written is None:
                problems.append(f"hook {name}: its bullet must write its signature")
            else:
                problems += signature_problems(f"hook {name}", written, getattr(contract, name))
        elif documented[name] is not None:
            problems.append(f"{name} is not a function; its bullet writes {documented[name]}")
    problems += [
        f"'## {ENTRY_SECTION}' documents {name}, which is not in contract.ENTRY_NAMES"
        for name in documented
        if name not in contract.ENTRY_NAMES
    ]
    text = prose(body)
    if not text.startswith(f"`{contract.DEFAULT_ENTRY}.py` (or the module `entry` names)"):
        problems.append(f"'## {ENTRY_SECTION}' does not start with `{contract.DEFAULT_ENTRY}.py`, the default entry")
    timeouts = [float(t) for t in re.findall(r"within (\d+(?:\.\d+)?) s\b", text)]
    if not timeouts or set(timeouts) != {contract.HOOK_TIMEOUT}:
        problems.append(f"hook timeout: the README says {timeouts} s; it is {contract.HOOK_TIMEOUT} s")
    settings = re.search(r"Default settings go in (.+?) \(the first found\)", text)
    stated = backticked(settings[1]) if settings else []
    if stated != list(contract.CONFIG_FILES):
        problems.append(f"config files: the README says {stated}; they are {list(contract.CONFIG_FILES)}")
    static = re.search(r"A `([^`/]+)/` folder is served under `<api_prefix>/([^`/]+)/`", text)
    if not static or {static[1], static[2]} != {contract.STATIC_FOLDER}:
        problems.append(f"static folder: the README does not say `{contract.STATIC_FOLDER}/` is served")
    return problems


# --- the README against the contract ---------------------------------------------------------------------------


def test_the_readme_documents_exactly_the_contract() -> None:
    problems = contract_problems(README.read_text(encoding="utf-8"))
    assert problems == [], "plugins/README.md and xcore.plugins.contract differ:\n" + "\n".join(problems)


def _without_section(heading: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        start = text.index(f"\n## {heading}\n")
        return text[:start] + text[text.index("\n## ", start + 1) :]

    return change


def _replace(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, f"the README no longer holds {old!r}: update this test's change"
        return text.replace(old, new, 1)

    return change


def _insert_after(anchor: str, line: str) -> Callable[[str], str]:
    return _replace(anchor, f"{anchor}\n{line}")


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        pytest.param(
            _without_section(SDK_SECTION),
            ["no section '## xcore.sdk'", *(f"xcore.sdk.{name} is exported" for name in sdk.__all__)],
            id="sdk-section-deleted",
        ),
        pytest.param(
            _insert_after("## xcore.sdk\n", "- `shout(text)`: shouts the text."),
            ["documents xcore.sdk.shout, which xcore.sdk does not export"],
            id="sdk-name-that-does-not-exist",
        ),
        pytest.param(
            _replace("- `Router`, `get`,", "- `get`,"),
            ["xcore.sdk.Router is exported (__all__) but not documented"],
            id="sdk-name-undocumented",
        ),
        pytest.param(
            _replace("retry_on_crash=True, requires=()", "retry_on_crash=False, requires=()"),
            ["xcore.sdk.task: retry_on_crash is written with default False; it is True"],
            id="sdk-wrong-default",
        ),
        pytest.param(
            _replace("- `requires(permission)`", "- `requires(permission, method)`"),
            ["xcore.sdk.requires: written (permission, method), but it takes (permission)"],
            id="sdk-extra-parameter",
        ),
        pytest.param(
            _replace("- `requires(permission)`", "- `requires`"),
            ["xcore.sdk.requires is a function of xcore.sdk: its bullet must write its signature"],
            id="sdk-signature-left-out",
        ),
        pytest.param(
            _replace("`data_dir` (`<data>", "the data folder (`<data>"),
            ["PluginContext.data_dir is not named in its bullet"],
            id="context-attribute-undocumented",
        ),
        pytest.param(
            _insert_after("## xcore.sdk\n", "- all of Litestar, re-exported."),
            ["## xcore.sdk: a bullet does not start with a back-ticked name"],
            id="sdk-bullet-without-a-name",
        ),
        pytest.param(
            _replace("| `sandbox` | boolean | no |", "| `sandbx` | boolean | no |"),
            ["plugin.json key sandbox is not in the README", "documents sandbx, which is not a plugin.json key"],
            id="manifest-key-misspelt",
        ),
        pytest.param(
            _replace("| `version` | string | yes |", "| `version` | string | no |"),
            ["plugin.json key version: the table says required 'no'; it is True"],
            id="manifest-required-wrong",
        ),
        pytest.param(
            _replace("| `tags` | array | no |", "| `tags` | string | no |"),
            ["plugin.json key tags: the table says type 'string'; it is array"],
            id="manifest-type-wrong",
        ),
        pytest.param(
            _replace("default `run` (`run.py`", "default `main` (`run.py`"),
            ["plugin.json key entry: the table does not say default `run`"],
            id="default-entry-wrong",
        ),
        pytest.param(
            _replace("This xcore loads contract `1`.", "This xcore loads contracts `1` and `2`."),
            ["'Contract version' does not say 'This xcore loads contract' (1,)"],
            id="contract-versions-wrong",
        ),
        pytest.param(
            _replace("more than 5,000 entries", "more than 6,000 entries"),
            ["bundle limit MAX_ENTRIES: the README says 6000, the contract 5000"],
            id="limit-entries",
        ),
        pytest.param(
            _replace("more than 200 MB uncompressed", "more than 2 MB uncompressed"),
            [f"bundle limit MAX_UNCOMPRESSED: the README says {2 * MB}"],
            id="limit-size",
        ),
        pytest.param(
            _replace("ratio over 100:1 (above 1 MB)", "ratio over 10:1 (above 5 MB)"),
            ["bundle limit MAX_RATIO: the README says 10,", f"bundle limit RATIO_FLOOR: the README says {5 * MB},"],
            id="limit-ratio",
        ),
        pytest.param(
            _replace("deflate, bzip2 or lzma", "deflate or lzma"),
            ["compression methods: the README says ['stored', 'deflate', 'lzma']"],
            id="compression-methods",
        ),
        pytest.param(
            _replace("or not finishing within\n  30 s", "or not finishing within\n  60 s"),
            ["hook timeout: the README says [60.0, "],
            id="hook-timeout",
        ),
        pytest.param(
            _replace(
                "`config.yaml`, `config.yml` or `config.json` (the first found)", "`config.yaml` (or `config.json`)"
            ),
            ["config files: the README says []"],
            id="config-files-as-they-were",
        ),
        pytest.param(
            _replace("`config.yaml`, `config.yml` or `config.json`", "`config.yaml` or `config.json`"),
            ["config files: the README says ['config.yaml', 'config.json']"],
            id="config-file-left-out",
        ),
        pytest.param(
            _replace("- `on_unload(ctx)`:", "- `on_stop(ctx)`:"),
            ["entry-module name on_unload (contract.ENTRY_NAMES) is not documented", "documents on_stop, which is not"],
            id="hook-renamed",
        ),
        pytest.param(
            _replace("- `on_load(ctx)`:", "- `on_load(ctx, app)`:"),
            ["hook on_load: written (ctx, app), but it takes (ctx)"],
            id="hook-signature",
        ),
        pytest.param(
            _replace("A `static/` folder is served", "A `public/` folder is served"),
            ["static folder: the README does not say `static/` is served"],
            id="static-folder",
        ),
        pytest.param(
            _without_section(IMPORT_SECTION),
            ["no section '## What a plugin may import'", "does not state the rule"],
            id="import-rule-deleted",
        ),
        pytest.param(
            _replace("| `icon` | string | no |", "| `icn` | string | no |"),
            ["page key icon (contract.PAGE_KEYS) is not in the README's Pages table", "documents icn, which is not"],
            id="page-key-misspelt",
        ),
        pytest.param(
            _replace("| `title` | string | yes |", "| `title` | string | no |"),
            ["page key title: the Pages table says required 'no'; it is True"],
            id="page-key-required-wrong",
        ),
        pytest.param(
            _replace("| `permission` | string | no |", "| `permission` | array | no |"),
            ["page key permission: the Pages table says type 'array'; it is string"],
            id="page-key-type-wrong",
        ),
        pytest.param(
            _insert_after(
                "| `icon` | string | no | an `.svg` or `.png` in `static/`, shown beside the title |",
                "| `colour` | string | no | a colour |",
            ),
            ["the Pages table documents colour, which is not a page key"],
            id="page-key-that-does-not-exist",
        ),
        pytest.param(
            _replace("| `clear(el)` | empties `el` and returns it |\n", ""),
            ["xcore.js exports clear, which '### The page SDK' does not document"],
            id="page-sdk-export-undocumented",
        ),
        pytest.param(
            _insert_after("| `text(value)` | a text node holding `value` |", "| `shout(text)` | shouts |"),
            ["'### The page SDK' documents shout, which xcore.js does not export"],
            id="page-sdk-name-that-does-not-exist",
        ),
        pytest.param(
            _replace(", `api.patch(path, json)`", ""),
            ["xcore.js's api has patch, which '### The page SDK' does not document"],
            id="page-sdk-api-method-undocumented",
        ),
        pytest.param(
            _replace("### The page SDK\n", "### The client\n"),
            ["'### The page SDK' has no table of exports"],
            id="page-sdk-subsection-renamed",
        ),
    ],
)
def test_the_checker_reports_each_difference(change: Callable[[str], str], reported: list[str]) -> None:
    # The substring search this replaces passed four of the xcore.sdk names with their whole section deleted.
    problems = contract_problems(change(README.read_text(encoding="utf-8")))
    for fragment in reported:
        assert any(fragment in problem for problem in problems), f"{fragment!r} not reported in {problems}"


def _js_replace(old: str, new: str) -> Callable[[str], str]:
    def change(source: str) -> str:
        assert old in source, f"xcore.js no longer holds {old!r}: update this test's change"
        return source.replace(old, new, 1)

    return change


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        pytest.param(
            _js_replace(
                "export const clear = dom.clear;", "export const clear = dom.clear;\nexport function shout() {}"
            ),
            ["xcore.js exports shout, which '### The page SDK' does not document"],
            id="export-added",
        ),
        pytest.param(
            _js_replace("export const text = dom.text;", "const text = dom.text;"),
            ["'### The page SDK' documents text, which xcore.js does not export"],
            id="export-removed",
        ),
        pytest.param(
            _js_replace("export { ApiError } from", "export { ApiError as Failure } from"),
            ["xcore.js exports Failure, which", "documents ApiError, which xcore.js does not export"],
            id="export-renamed",
        ),
        pytest.param(
            _js_replace("  patch: (path, json) => http.patch(path, json),\n", ""),
            ["'### The page SDK' documents api.patch, which xcore.js's api lacks"],
            id="api-method-removed",
        ),
        pytest.param(
            _js_replace(
                "  delete: (path) => http.del(path),", "  delete: (path) => http.del(path),\n  head: (p) => p,"
            ),
            ["xcore.js's api has head, which '### The page SDK' does not document"],
            id="api-method-added",
        ),
    ],
)
def test_the_checker_reports_each_page_sdk_difference(change: Callable[[str], str], reported: list[str]) -> None:
    problems = contract_problems(README.read_text(encoding="utf-8"), change(PAGE_SDK.read_text(encoding="utf-8")))
    for fragment in reported:
        assert any(fragment in problem for problem in problems), f"{fragment!r} not reported in {problems}"


def test_the_checker_reports_a_page_key_the_readme_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    added = contract.ManifestKey("colour", False, "string", None, "a colour")
    monkeypatch.setattr(contract, "PAGE_KEYS", (*contract.PAGE_KEYS, added))
    problems = contract_problems(README.read_text(encoding="utf-8"))
    assert "page key colour (contract.PAGE_KEYS) is not in the README's Pages table" in problems, problems


def test_the_page_sdk_exports_are_read_from_its_export_statements() -> None:
    source = PAGE_SDK.read_text(encoding="utf-8")
    assert js_exports(source) == {"ApiError", "api", "user", "can", "navigate", "notice", "h", "text", "clear"}
    assert js_api_methods(source) == {"get", "post", "put", "patch", "delete"}


# --- the contract against the code ----------------------------------------------------------------------------


def test_the_manifest_struct_holds_exactly_the_contracts_keys() -> None:
    fields = {f.name: f for f in msgspec.structs.fields(Manifest)}
    properties = msgspec.json.schema(Manifest)["$defs"]["Manifest"]["properties"]
    assert list(fields) == [key.name for key in contract.MANIFEST_KEYS]
    for key in contract.MANIFEST_KEYS:
        field = fields[key.name]
        default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
        assert (field.required, None if default is msgspec.NODEFAULT else default) == (key.required, key.default)
        types = [t["type"] for t in properties[key.name].get("anyOf", [properties[key.name]])]
        assert [t for t in types if t != "null"] == [key.type], key.name


def test_every_hook_of_the_contract_says_what_it_does() -> None:
    for hook in contract.HOOKS:
        assert (hook.__doc__ or "").startswith(f"{hook.__name__}(ctx)"), hook.__name__


def test_the_hosts_default_entry_is_the_contracts() -> None:
    assert PluginsConfig().entry_point == contract.DEFAULT_ENTRY


def test_the_contract_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(contract.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"id": "notes", "version": "1.0"}, None),
        ({"id": "notes", "version": "1.0", "contract": 1}, None),
        (
            {"id": "notes", "version": "1.0", "contract": 2, "pages": ["a"]},
            "contract: 2 is not a contract this xcore supports (it supports 1); upgrade xcore",
        ),
        ({"id": "notes", "version": "1.0", "contract": "1"}, "contract: '1' is not a contract version"),
        ({"id": "notes", "version": "1.0", "contract": True}, "contract: True is not a contract version"),
        ({"id": "notes", "version": "1.0", "colour": "red"}, "unknown field colour; the keys of plugin.json are id,"),
        ({"version": "1.0"}, "missing required field id"),
        ({"id": "notes", "version": "1.0", "tags": "a"}, "Expected array | null, got str - at tags; tags takes a list"),
    ],
)
def test_the_manifest_names_its_contract_and_the_contract_keys(raw: dict[str, Any], problem: str | None) -> None:
    manifest, found = parse_manifest(json.dumps(raw).encode())
    if problem is None:
        assert manifest is not None and manifest.contract == contract.CONTRACT and found == ""
    else:
        assert manifest is None and found.startswith(problem), found


def test_the_loader_reads_the_entry_modules_names_from_the_contract(tmp_path: Path) -> None:
    folder = tmp_path / "hooked"
    folder.mkdir()
    (folder / f"{contract.DEFAULT_ENTRY}.py").write_text(
        "from pathlib import Path\n\n"
        "from xcore.sdk import Router\n\n"
        "router = Router('/', route_handlers=[])\n\n\n"
        "def on_load(ctx):\n    (ctx.data_dir / 'loaded').write_text(ctx.id)\n\n\n"
        "async def on_unload(ctx):\n    (ctx.data_dir / 'unloaded').write_text(ctx.version)\n"
    )
    manifest, _ = parse_manifest(b'{"id": "hooked", "version": "1.0.0"}')
    assert manifest is not None
    data = tmp_path / "data"
    data.mkdir()
    plugin = import_plugin(manifest, folder, source=folder, fingerprint="f", data_dir=data, config={})
    try:
        anyio.run(run_hook, plugin, contract.on_load)
        anyio.run(run_hook, plugin, contract.on_unload.__name__)
        with pytest.raises(ValueError, match="'on_start' is not a hook of the plugin contract"):
            anyio.run(run_hook, plugin, "on_start")
    finally:
        unload_modules(plugin.package)
    assert ((data / "loaded").read_text(), (data / "unloaded").read_text()) == ("hooked", "1.0.0")


# --- a bundle's code imports only xcore.sdk from xcore ---------------------------------------------------------

RULE = "a plugin imports only xcore.sdk from xcore"


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("import json\nimport xcore.web\n", "line 2: imports xcore.web"),
        ("from xcore import runtime\n", "line 1: imports xcore.runtime"),
        ("from xcore.auth import tokens\n", "line 1: imports xcore.auth"),
        ("import xcore\n", "line 1: imports xcore;"),
        ("from xcore import *\n", "line 1: imports xcore;"),
        ("from xcore import sdk, runtime\n", "line 1: imports xcore.runtime"),
        ("def later():\n    import xcore.plugins.manager\n", "line 2: imports xcore.plugins.manager"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import xcore.runtime\n", "line 3: imports xcore."),
        ("import \uff58core.web\n", "line 1: imports xcore.web"),  # a full-width x is an x to Python
        ("from xcore.sdk import get\nfrom xcore import sdk\nimport xcore.sdk as s\n", None),
        ("from . import models\nfrom .xcore import helper\nimport xcoreutils\n", None),
        ("x = 1\ndef broken(:\n", None),  # the import reports the syntax error, with its line
    ],
)
def test_xcore_import_names_the_first_import_of_xcore_but_the_sdk(source: str, refused: str | None) -> None:
    found = xcore_import(source.encode(), "run.py")
    if refused is None:
        assert found is None
    else:
        assert found is not None and found.startswith(f"run.py, {refused}") and found.endswith(f"; {RULE}"), found


def _zip(path: Path, files: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def _answer(says: str) -> str:
    return (
        "from xcore.sdk import get\n\n\n"
        f"@get('/hello', sync_to_thread=False)\ndef hello() -> str:\n    return {says!r}\n\n\nrouter = [hello]\n"
    )


SNEAKY = "from xcore.sdk import get\n\nimport xcore.auth.tokens\n"


@pytest.mark.parametrize("top", ["", "demo-2.0.0/"])
def test_a_bundle_whose_code_imports_xcore_is_refused_naming_file_line_and_module(tmp_path: Path, top: str) -> None:
    files = {"plugin.json": '{"id": "demo", "version": "2.0.0"}', "run.py": _answer("two"), "lib/util.py": SNEAKY}
    path = _zip(tmp_path / "demo-2.0.0.zip", {f"{top}{name}": text for name, text in files.items()})
    with pytest.raises(BundleError) as caught:
        inspect_bundle(path, "0.1.0")
    assert caught.value.rule == "imports-xcore"
    assert (
        str(caught.value)
        == f"bundle demo-2.0.0.zip: imports-xcore: lib/util.py, line 3: imports xcore.auth.tokens; {RULE}"
    )


def test_pack_refuses_a_folder_whose_code_imports_xcore(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "plugin.json").write_text('{"id": "demo", "version": "1.0.0"}')
    (folder / "run.py").write_text(SNEAKY)
    with pytest.raises(BundleError) as caught:
        pack_folder(folder, tmp_path / "out", "0.1.0")
    assert (caught.value.rule, caught.value.reason) == (
        "imports-xcore",
        f"run.py, line 3: imports xcore.auth.tokens; {RULE}",
    )
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_dev_folder_whose_code_imports_xcore_is_refused_before_any_of_it_runs(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    (folder / "tools").mkdir(parents=True)
    ran = tmp_path / "ran"
    (folder / "run.py").write_text(f"from pathlib import Path\nPath({str(ran)!r}).write_text('ran')\n")
    (folder / "tools" / "admin.py").write_text("import json\nfrom xcore import runtime\n")
    (folder / ".venv" / "lib").mkdir(parents=True)  # what packing leaves out is not the bundle's code
    (folder / ".venv" / "lib" / "xcore_shim.py").write_text("import xcore.web\n")
    manifest, _ = parse_manifest(b'{"id": "demo", "version": "1.0.0"}')
    assert manifest is not None
    with pytest.raises(PluginLoadError) as caught:
        import_plugin(manifest, folder, source=folder, fingerprint="dev", data_dir=tmp_path, config={}, dev=True)
    assert str(caught.value) == f"tools/admin.py, line 2: imports xcore.runtime; {RULE}"
    assert not ran.exists(), "no code of the plugin ran"
    assert not [name for name in sys.modules if name.startswith("xcore_plugin_demo_")]


@pytest.fixture
def served(runtime: Runtime) -> Iterator[Any]:
    create_account(runtime, "root", ["superadmin"])
    with plugin_host(runtime) as client:
        response = client.post("/api/auth/login", json={"username": "root", "password": PASSWORDS["root"]})
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


def test_a_new_version_that_imports_xcore_fails_and_the_previous_one_keeps_serving(
    served: Any, runtime: Runtime, tmp_path: Path
) -> None:
    folder = plugins_dir(runtime)
    _zip(folder / "demo-1.0.0.zip", {"plugin.json": '{"id": "demo", "version": "1.0.0"}', "run.py": _answer("one")})
    until(lambda: served.get("/app/demo/hello").text == "one", "1.0.0 serves")

    sneaky = _answer("two") + "\n\ndef on_load(ctx):\n    from xcore.runtime import Runtime\n"
    line = len(sneaky.splitlines())
    _zip(tmp_path / "demo-2.0.0.zip", {"plugin.json": '{"id": "demo", "version": "2.0.0"}', "run.py": sneaky})
    (tmp_path / "demo-2.0.0.zip").rename(folder / "demo-2.0.0.zip")

    def refused() -> dict[str, Any]:
        view: dict[str, Any] = served.get("/api/admin/plugins/demo").json()
        files = {v["file"]: v for v in view["versions"]}
        return view if files.get("demo-2.0.0.zip", {}).get("state") == "failed" else {}

    view = until(refused, "2.0.0 is refused")
    failed = next(v for v in view["versions"] if v["file"] == "demo-2.0.0.zip")
    reason = f"run.py, line {line}: imports xcore.runtime; {RULE}"
    assert failed["error"] == f"bundle demo-2.0.0.zip: imports-xcore: {reason}", failed
    assert (view["state"], view["serving"]) == ("active", "1.0.0"), view
    assert served.get("/app/demo/hello").text == "one"
