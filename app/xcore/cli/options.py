"""Options shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

data_dir_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Data directory (default: XCORE_DATA_DIR, else the platform's user data folder).",
)
