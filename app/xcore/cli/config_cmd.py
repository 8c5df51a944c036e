"""`xcore config show | check | schema`."""

from __future__ import annotations

import json
from typing import Any

import click
import msgspec

from xcore.cli.options import data_dir_option
from xcore.cli.output import echo
from xcore.config.docs import settings_table
from xcore.config.schema import XcoreConfig, iter_settings
from xcore.runtime import open_runtime

MASK = "********"


def _effective(config: XcoreConfig) -> dict[str, Any]:
    effective: dict[str, Any] = msgspec.to_builtins(config)
    return effective


def _lookup(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def shown_value(value: Any, secret: bool) -> Any:
    """shown_value masks a secret: URLs keep everything but the password, other secrets become ********."""
    if not secret or value is None:
        return value
    if isinstance(value, str) and "://" in value:
        from xcore.db.engine import mask_url

        return mask_url(value)
    return MASK


@click.group()
def config() -> None:
    """Inspect and validate the settings."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: key -> {value, source}.")
@data_dir_option
def show(as_json: bool, data_dir: str | None) -> None:
    """Print the effective value of every setting and where it came from. Secrets are masked."""
    runtime = open_runtime(data_dir, logs=False)
    document = _effective(runtime.config)
    rows = []
    for setting in iter_settings():
        value = shown_value(_lookup(document, setting.path), setting.secret)
        rows.append((setting.key, value, runtime.loaded.source_of(setting.path)))
    if as_json:
        echo(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2), lines=True)
        return
    echo(f"data directory: {runtime.data.root}")
    echo(f"database: {shown_value(runtime.database_url, secret=True)}")
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        echo(f"{key:<{width}}  {json.dumps(value)}  ({source})")


@config.command()
@data_dir_option
def check(data_dir: str | None) -> None:
    """Validate the settings without starting anything. Exit code 0 when valid, 2 when not."""
    runtime = open_runtime(data_dir, logs=False)
    user_file = runtime.data.config_file
    layers = ["defaults"] + ([str(user_file)] if user_file.exists() else [])
    echo(f"configuration is valid ({', '.join(layers)}, environment, flags)")


@config.command()
def schema() -> None:
    """Print the JSON Schema of config.json (for editors)."""
    echo(json.dumps(msgspec.json.schema(XcoreConfig), indent=2), lines=True)


@config.command()
def docs() -> None:
    """Print the settings table of the README (Markdown), generated from the schema."""
    echo(settings_table(), lines=True)
