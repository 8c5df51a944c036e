"""`xcore desktop`: the server and its admin page in a window of its own."""

from __future__ import annotations

import click

from xcore.cli.options import data_dir_option


@click.command()
@click.option(
    "--safe", is_flag=True, help="Safe mode: every plugin off for this run, to remove one that breaks the start."
)
@data_dir_option
def desktop(safe: bool, data_dir: str | None) -> int:
    """Open xcore in a desktop window, signed in as the owner, on a server of its own (127.0.0.1, a free port).

    Closing the window stops the server. A second launch brings the open window to the front. Needs a display
    and the desktop extra (pip install 'xcore[desktop]'); without them, use `xcore serve` and a browser.
    """
    from xcore.desktop import run_desktop  # the server and the GUI toolkit are imported only here

    return run_desktop(data_dir, safe=safe)
