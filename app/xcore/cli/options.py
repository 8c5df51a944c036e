"""Options shared by the commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from xcore.runtime import Runtime, open_runtime

data_dir_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Data directory (default: XCORE_DATA_DIR, else the platform's user data folder).",
)


def migrated_runtime(data_dir: str | None) -> Runtime:
    """migrated_runtime opens the data directory's Runtime with its database migrated (backup first)."""
    from xcore.server import prepare_database

    runtime = open_runtime(data_dir, logs=False)
    prepare_database(runtime)
    return runtime


def echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """echo_table prints rows in columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())
