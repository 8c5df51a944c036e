"""Options shared by the commands."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from xcore.cli.output import echo
from xcore.runtime import Runtime, open_runtime
from xcore.terminal import printable

DATA_DIR_HELP = "Data directory (default: XCORE_DATA_DIR, else the platform's user data folder)."
# Where the global options given so far are kept: Click shares `meta` between a context and its subcommands'.
_GIVEN = "xcore.global_options"


def _global_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """_global_value lets a global option be given before or after the subcommand: a value given to a group
    reaches every command below it, and the same option given twice must agree."""
    given: dict[str, Any] = ctx.meta.setdefault(_GIVEN, {})
    name = param.name or ""
    if value is None:
        return given.get(name)
    earlier = given.get(name)
    if earlier is not None and os.path.abspath(earlier) != os.path.abspath(value):
        raise click.BadParameter(
            f"given twice, as {earlier} and as {value}; give it once (before or after the command)",
            ctx=ctx,
            param=param,
        )
    given[name] = value
    return value


def _passed_down_data_dir(hidden: bool) -> click.Option:
    """--data-dir for a group (handing it down) or a command that does not read it (accepting it)."""
    return click.Option(
        ["--data-dir", "data_dir"],
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        callback=_global_value,
        expose_value=False,
        hidden=hidden,
        help=f"{DATA_DIR_HELP} For every command below; it may also follow the command.",
    )


data_dir_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    callback=_global_value,
    help=DATA_DIR_HELP,
)


def add_global_options(command: click.Command) -> None:
    """add_global_options makes --data-dir work before and after every (sub)command of the tree under `command`.

    A group takes it and hands it down; a command that reads it takes it as its `data_dir` parameter (through
    data_dir_option), and a command that does not need a data directory accepts it and ignores it, hidden from
    its help, so that a global option never turns into a usage error because of where it was typed.
    """
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if "--data-dir" not in names:
        is_group = isinstance(command, click.Group)
        command.params.append(_passed_down_data_dir(hidden=not is_group))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


def migrated_runtime(data_dir: str | None) -> Runtime:
    """migrated_runtime opens the data directory's Runtime with its database migrated (backup first)."""
    from xcore.server import prepare_database

    runtime = open_runtime(data_dir, logs=False)
    prepare_database(runtime)
    return runtime


def echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """echo_table prints rows in columns two spaces apart; the last column is not padded. Each cell is shown
    through `printable` before the columns are measured, so a value with a newline or a control character
    stays in its cell and the columns stay aligned."""
    shown = [[printable(str(cell)) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in shown) for i in range(len(header) - 1)]
    for row in shown:
        echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())
