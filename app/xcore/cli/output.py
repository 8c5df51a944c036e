"""What the CLI prints. Every command prints through `echo`, never `click.echo` directly (a test checks this)."""

from __future__ import annotations

from typing import Any

import click

from xcore.terminal import printable


def echo(message: Any = "", err: bool = False, lines: bool = False) -> None:
    """echo prints `message` as one line, with its control and format characters escaped (`printable`): a
    username, a file name or a value from the database is shown as stored and cannot start a line of its own
    or drive the terminal.

    `lines=True` is for text made of several lines on purpose (indented JSON, a wrapped paragraph, a table):
    its newlines stay, every other such character is still escaped.
    """
    click.echo(printable(str(message), keep_newlines=lines), err=err)
