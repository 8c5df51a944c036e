"""A plugin's settings: the defaults its bundle ships (the first of `contract.CONFIG_FILES` it has, read by the
loader) with an admin's overrides merged on top.

Overrides are checked against the defaults: a key the defaults do not have is refused, and so is a value whose
type differs (an integer is accepted where the default is a float; a null default accepts any JSON value).
They are stored per top-level key in `setting_override` with the plugin id as the scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from xcore.db.models import SettingOverride

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def override_problems(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], path: str = ""
) -> list[tuple[str, str]]:
    """override_problems lists (key path, what is wrong) for every override the defaults do not allow."""
    problems: list[tuple[str, str]] = []
    for key, value in overrides.items():
        where = f"{path}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            problems.append((where, f"unknown setting; this plugin's settings are: {known}"))
            continue
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                problems.append((where, "must be a mapping of settings"))
            else:
                problems += override_problems(default, value, f"{where}.")
        elif default is not None and not _same_type(default, value):
            problems.append((where, f"must be {_TYPE_NAMES.get(type(default), type(default).__name__)}"))
    return problems


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def merged(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """merged is the defaults with the overrides on top; nested mappings merge key by key."""
    result = dict(defaults)
    for key, value in overrides.items():
        base = result.get(key)
        result[key] = merged(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
    return result


def read_overrides(session: Session) -> dict[str, dict[str, Any]]:
    """read_overrides returns every plugin's overrides by plugin id (the core's own scope is left out)."""
    found: dict[str, dict[str, Any]] = {}
    for row in session.scalars(select(SettingOverride).where(SettingOverride.scope != "core")):
        found.setdefault(row.scope, {})[row.key] = row.value
    return found


def replace_overrides(session: Session, plugin_id: str, overrides: Mapping[str, Any], actor: str | None) -> None:
    """replace_overrides stores `overrides` as the plugin's complete set (an empty mapping clears them)."""
    session.execute(delete(SettingOverride).where(SettingOverride.scope == plugin_id))
    session.add_all(
        SettingOverride(scope=plugin_id, key=key, value=value, updated_by=actor) for key, value in overrides.items()
    )
