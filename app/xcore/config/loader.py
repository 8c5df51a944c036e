"""Load the configuration from its layers and validate it against the schema.

Layers, later winning:

1. the shipped defaults (`config.json` among xcore's resources);
2. the user's `<data>/config.json`;
3. environment variables: `XCORE_<SECTION>__<KEY>` (for example `XCORE_XCORE__DATA__URL`), `DATABASE_URL`
   and `REDIS_URL`;
4. command-line flags.

Sections merge key by key. The `ACCESS_RULES` table merges rule by rule: a layer adds or replaces rules, and
a rule set to null removes the one below it. Any other value replaces the one below it.

Every layer is validated on its own first, then the merged result: a wrong value is refused even when a later
layer overrides it. Every error names the key path, the layer it came from (the file, the environment
variable, the flag) and what was expected. A key that was a setting once (`schema.RETIRED`) is refused with the
reason it is gone and what to do, instead of as an unknown key.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from xcore.config.schema import (
    RETIRED,
    XcoreConfig,
    access_rule_problem,
    describe_type,
    section_fields,
    trusted_proxy_problem,
    type_at,
)
from xcore.errors import ConfigError
from xcore.resources import resource_path

Path_ = tuple[str, ...]

ENV_PREFIX = "XCORE_"
ENV_ALIASES: dict[str, Path_] = {
    "DATABASE_URL": ("xcore", "data", "url"),
    "REDIS_URL": ("redis", "url"),
}
# Environment variables that start with XCORE_ but are not settings.
ENV_PLUGINS_DEV = "XCORE_PLUGINS_DEV"  # `xcore serve --plugins-dev` folders, for the workers
ENV_DEBUG = "XCORE_DEBUG"  # set: an internal error of the CLI shows its traceback
ENV_SAFE_MODE = "XCORE_SAFE_MODE"  # this run's safe mode, for the workers (xcore.plugins.safemode)
ENV_BACKUP_SECRET = "XCORE_BACKUP_SECRET"  # the passphrase or key of encrypted backups (`xcore.db.archive`)
ENV_NOT_SETTINGS = {"XCORE_DATA_DIR", ENV_PLUGINS_DEV, "XCORE_DESKTOP_PROBE", ENV_DEBUG, ENV_SAFE_MODE}
ENV_NOT_SETTINGS.add(ENV_BACKUP_SECRET)


@dataclass(frozen=True)
class Layer:
    """Layer is one source of settings: a label for messages, and the values it sets."""

    label: str
    values: dict[str, Any]
    # For layers built from many places (environment variables), the label of each key path.
    labels: dict[Path_, str] = field(default_factory=dict)

    def label_of(self, path: Path_) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.labels:
                return self.labels[path[:n]]
        return self.label


@dataclass(frozen=True)
class LoadedConfig:
    """LoadedConfig is a validated configuration and, for every key path set by a layer, that layer's label."""

    config: XcoreConfig
    sources: dict[Path_, str]

    def source_of(self, path: Path_) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.sources:
                return self.sources[path[:n]]
        return "default"


def defaults_layer() -> Layer:
    path = resource_path("config.json")
    return Layer("default", read_json_file(path))


def settings_file(data_dir: Path) -> Path:
    """settings_file is the user's settings file of a data directory, `<data>/config.json` (layer 2)."""
    return data_dir / "config.json"


def file_layer(path: Path) -> Layer | None:
    """file_layer reads a user config file, or returns None when there is none."""
    if not path.exists():
        return None
    return Layer(str(path), read_json_file(path))


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


def env_layer(environ: Mapping[str, str]) -> Layer:
    """env_layer turns XCORE_<SECTION>__<KEY>, DATABASE_URL and REDIS_URL into settings."""
    values: dict[str, Any] = {}
    labels: dict[Path_, str] = {}
    for name in sorted(environ):
        raw = environ[name]
        if name in ENV_ALIASES:
            path = ENV_ALIASES[name]
        elif name.startswith(ENV_PREFIX) and name not in ENV_NOT_SETTINGS:
            parts = name[len(ENV_PREFIX) :].split("__")
            if len(parts) < 2 or not all(parts):
                raise ConfigError(
                    f"environment variable {name}: settings are named XCORE_<SECTION>__<KEY>, "
                    "for example XCORE_SERVER__PORT; unset it or fix the name"
                )
            path = resolve_env_path(parts, name)
        else:
            continue
        set_path(values, path, parse_env_value(path, raw))
        labels[path] = f"environment variable {name}"
    return Layer("environment", values, labels)


def resolve_env_path(parts: list[str], env_name: str) -> Path_:
    """Match the upper-case parts of a variable name against the schema's keys, case-insensitively."""
    path: list[str] = []
    for part in parts:
        keys = section_fields(tuple(path))
        if keys is None:
            raise ConfigError(f"environment variable {env_name}: {'.'.join(path)} is a single setting, not a section")
        match = next((k for k in keys if k.lower() == part.lower()), None)
        if match is None:
            retired = next((p for p in RETIRED if p[:-1] == tuple(path) and p[-1].lower() == part.lower()), None)
            if retired is not None:
                raise ConfigError(f"environment variable {env_name}: {retired_key(retired)}; unset the variable")
            raise ConfigError(
                f"environment variable {env_name}: unknown key {'.'.join([*path, part.lower()])!r}"
                + did_you_mean(part.lower(), keys, tuple(path))
            )
        path.append(match)
    return tuple(path)


def parse_env_value(path: Path_, raw: str) -> Any:
    """A string setting takes the text as it is; any other setting reads it as JSON (8000, true, [..]).

    For a setting that may be null, the text `null` means null (`DATABASE_URL=null` is the default database).
    A list of strings also takes plain comma-separated text (`127.0.0.1,::1`; empty text is the empty list),
    which is easier to write in a systemd unit or a `docker run -e` than JSON.
    """
    target = type_at(path)
    if target is not None and _accepts_plain_string(target):
        if raw == "null" and _accepts_null(target):
            return None
        return raw
    if target is not None and _is_string_list(target) and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # validation then reports "expected integer, got string" with the variable's name


def _accepts_null(t: msgspec.inspect.Type) -> bool:
    return isinstance(t, msgspec.inspect.UnionType) and any(isinstance(m, msgspec.inspect.NoneType) for m in t.types)


def _is_string_list(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    if not isinstance(t, msgspec.inspect.ListType):
        return False
    item = t.item_type.type if isinstance(t.item_type, msgspec.inspect.Metadata) else t.item_type
    return isinstance(item, msgspec.inspect.StrType)


def _accepts_plain_string(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    if isinstance(t, msgspec.inspect.StrType):
        return True
    if isinstance(t, msgspec.inspect.UnionType):  # `str | None`
        kinds = {type(m.type if isinstance(m, msgspec.inspect.Metadata) else m) for m in t.types}
        return kinds <= {msgspec.inspect.StrType, msgspec.inspect.NoneType}
    return False


def set_path(target: dict[str, Any], path: Path_, value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def cli_layer(overrides: Mapping[Path_, tuple[str, Any]]) -> Layer:
    """cli_layer holds command-line flags: key path -> (flag name, value). Unset flags are left out."""
    values: dict[str, Any] = {}
    labels: dict[Path_, str] = {}
    for path, (flag, value) in overrides.items():
        if value is not None:
            set_path(values, path, value)
            labels[path] = f"command-line flag {flag}"
    return Layer("command line", values, labels)


# Tables whose entries merge one by one across layers (null removes an entry), instead of being replaced whole.
MERGED_TABLES: frozenset[Path_] = frozenset({("xcore", "middleware", "ACCESS_RULES")})


def merge_layers(layers: list[Layer]) -> tuple[dict[str, Any], dict[Path_, str]]:
    """Merge layers into one document, checking every key against the schema on the way."""
    merged: dict[str, Any] = {}
    sources: dict[Path_, str] = {}
    for layer in layers:
        _merge_into(merged, layer.values, (), layer, sources)
    return merged, sources


def _merge_into(target: dict[str, Any], values: Any, path: Path_, layer: Layer, sources: dict[Path_, str]) -> None:
    keys = section_fields(path)
    assert keys is not None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{layer.label_of(path)}: {'.'.join(path) or 'the top level'} must be an object (a section), "
            f"got {json.dumps(values)}"
        )
    for key, value in values.items():
        sub = (*path, key)
        if key.startswith("$"):  # "$schema" and friends are for editors, not for xcore
            continue
        if key not in keys and sub in RETIRED:
            raise ConfigError(f"{layer.label_of(sub)}: {retired_key(sub)}; delete the key")
        if key not in keys:
            raise ConfigError(f"{layer.label_of(sub)}: unknown key {'.'.join(sub)!r}" + did_you_mean(key, keys, path))
        if section_fields(sub) is not None:
            _merge_into(target.setdefault(key, {}), value, sub, layer, sources)
        elif sub in MERGED_TABLES and isinstance(value, dict):
            table = target.setdefault(key, {})
            for name, entry in value.items():
                if entry is None:
                    table.pop(name, None)
                else:
                    table[name] = entry
                sources[(*sub, repr(name))] = layer.label_of(sub)
            sources[sub] = layer.label_of(sub)
        else:
            target[key] = value
            for old in [p for p in sources if p[: len(sub)] == sub]:
                del sources[old]
            sources[sub] = layer.label_of(sub)


def retired_key(path: Path_) -> str:
    """retired_key says that the key at `path`, one of `RETIRED`, is no longer a setting, and why."""
    return f"{'.'.join(path)!r} is no longer a setting: {RETIRED[path]}"


def did_you_mean(key: str, keys: Mapping[str, Any], path: Path_) -> str:
    close = difflib.get_close_matches(key, list(keys), n=1)
    where = f"in {'.'.join(path)}" if path else "at the top level"
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (known keys {where}: {', '.join(keys)})"


_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<where>.*)`$")
_TOKEN = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def validate(merged: dict[str, Any], sources: dict[Path_, str]) -> XcoreConfig:
    """Convert the merged document to the schema; a failure names the key, its layer and the expectation."""
    return _convert(merged, lambda path: _source_for(path, sources))


def validate_layer(layer: Layer) -> None:
    """validate_layer checks one layer on its own against the schema, as if it were the only one.

    A wrong value is refused even when a later layer sets the same key (a typo in config.json must not wait
    for the day the environment variable that hides it is unset). Raises ConfigError naming the layer's label
    for the key (the file, or the environment variable) and the key path.
    """
    _convert(_as_document(layer.values), layer.label_of)


def _as_document(values: Any, path: Path_ = ()) -> Any:
    """A layer's values as the schema reads them, alone: without the keys for editors (`$schema`), and without
    the null entries of merged tables (null removes a rule of the layer below; it is not a rule to check)."""
    if not isinstance(values, dict):
        return values
    if path in MERGED_TABLES:
        return {name: entry for name, entry in values.items() if entry is not None}
    if section_fields(path) is None:
        return values
    return {key: _as_document(value, (*path, key)) for key, value in values.items() if not key.startswith("$")}


def _convert(merged: dict[str, Any], source_of: Callable[[Path_], str]) -> XcoreConfig:
    try:
        config = msgspec.convert(merged, XcoreConfig)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT.match(message)
        if not match:
            raise ConfigError(f"invalid configuration: {message}") from None
        path = tuple(m.group(1) or m.group(2) for m in _TOKEN.finditer(match.group("where")))
        path = _name_mapping_key(merged, path)
        dotted = "".join(
            f"[{p}]" if p.isdigit() or p == "..." or p.startswith("'") else (f".{p}" if i else p)
            for i, p in enumerate(path)
        )
        source = source_of(path)
        expected = _expected(path)
        what = match.group("what").replace("`", "")
        raise ConfigError(f"{source}: {dotted}: {what}{expected}") from None
    for pattern, rule in config.xcore.middleware.ACCESS_RULES.items():
        problem = access_rule_problem(pattern, rule)
        if problem is not None:
            where = ("xcore", "middleware", "ACCESS_RULES", repr(pattern))
            source = source_of(where)
            raise ConfigError(f"{source}: xcore.middleware.ACCESS_RULES[{pattern!r}]{problem[0]}: {problem[1]}")
    for index, entry in enumerate(config.server.trusted_proxies):
        reason = trusted_proxy_problem(entry)
        if reason is not None:
            source = source_of(("server", "trusted_proxies"))
            raise ConfigError(f"{source}: server.trusted_proxies[{index}]: {reason}")
    return config


def _name_mapping_key(merged: dict[str, Any], path: Path_) -> Path_:
    """msgspec writes `[...]` for the key of a mapping; find the entry that fails, so the message names it."""
    if "..." not in path:
        return path
    at = path.index("...")
    mapping: Any = merged
    for key in path[:at]:
        mapping = mapping.get(key, {}) if isinstance(mapping, dict) else {}
    value_type = type_at((*path[:at], "..."))
    if not isinstance(mapping, dict) or value_type is None:
        return path
    target = value_type.cls if isinstance(value_type, msgspec.inspect.StructType) else None
    for key, value in mapping.items():
        try:
            if target is not None:
                msgspec.convert(value, target)
        except msgspec.ValidationError:
            return (*path[:at], repr(key), *path[at + 1 :])
    return path


def _source_for(path: Path_, sources: dict[Path_, str]) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in sources:
            return sources[path[:n]]
    return "configuration"


def _expected(path: Path_) -> str:
    found = type_at(path)
    return f"; it takes {describe_type(found)}" if found is not None else ""


def load_config(
    data_dir: Path,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[Path_, tuple[str, Any]] | None = None,
) -> LoadedConfig:
    """load_config merges and validates all layers. Raises ConfigError, naming key, layer and expectation."""
    layers = [defaults_layer()]
    user = file_layer(settings_file(data_dir))
    if user is not None:
        layers.append(user)
    layers.append(env_layer(os.environ if environ is None else environ))
    layers.append(cli_layer(cli or {}))
    merged, sources = merge_layers(layers)
    for layer in layers:
        validate_layer(layer)
    return LoadedConfig(validate(merged, sources), sources)
