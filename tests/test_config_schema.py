"""The schema is the single source of truth: config.json and the README's settings table must match it."""

from __future__ import annotations

import json
from pathlib import Path

from xcore.config.docs import TABLE_END, TABLE_START, settings_table
from xcore.config.schema import RETIRED, defaults_as_builtins, iter_settings

ROOT = Path(__file__).resolve().parent.parent


def test_config_json_holds_exactly_the_schema_defaults() -> None:
    shipped = json.loads((ROOT / "config.json").read_text())
    assert shipped == defaults_as_builtins(), (
        "config.json differs from the schema's defaults; regenerate it from xcore.config.schema.defaults_as_builtins()"
    )


def test_every_setting_has_help_text() -> None:
    missing = [s.key for s in iter_settings() if len(s.help) < 10]
    assert not missing, f"settings without a help text: {missing}"


def test_readme_settings_table_matches_the_schema() -> None:
    readme = (ROOT / "README.md").read_text()
    assert TABLE_START in readme and TABLE_END in readme
    table = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == settings_table(), "README's settings table is stale; paste the output of `xcore config docs`"
    for setting in iter_settings():
        assert f"| `{setting.key}` |" in table


def test_seed_sections_are_kept() -> None:
    keys = {s.key for s in iter_settings()}
    for prefix in (
        "manager.plugins.directory",
        "manager.plugins.interval",
        "manager.plugins.entry_point",
        "manager.tasks.auto_restart",
        "manager.tasks.interval",
        "manager.tasks.max_retries",
        "migration.backup.max_backup_files",
        "xcore.data.url",
        "xcore.middleware.ACCESS_RULES",
        "xcore.logs.console",
        "xcore.logs.file",
        "redis.host",
        "redis.port",
        "redis.db",
        "server.host",
        "server.port",
        "server.workers",
    ):
        assert prefix in keys
    assert any(k.startswith("secure.") for k in keys)


def test_retired_keys_are_not_settings() -> None:
    keys = {s.path for s in iter_settings()}
    for path, reason in RETIRED.items():
        assert path not in keys, f"{'.'.join(path)} is a setting again: take it out of RETIRED"
        assert reason, f"{'.'.join(path)} has no reason"
