"""The `xcore` command line. Every command takes --data-dir; errors are one line, never a traceback."""

from __future__ import annotations

import logging
import os
import sys

import click

from xcore.cli.config_cmd import config
from xcore.cli.db_cmd import db
from xcore.cli.desktop_cmd import desktop
from xcore.cli.logs_cmd import logs
from xcore.cli.plugin_cmd import plugin
from xcore.cli.serve_cmd import serve
from xcore.cli.tasks_cmd import tasks
from xcore.cli.user_cmd import user
from xcore.config.loader import ENV_DEBUG
from xcore.errors import XcoreError


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from xcore.build import describe

    click.echo(describe())
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, the git commit and whether this is a frozen build, then exit.",
)
def cli() -> None:
    """xcore: a plugin host. Start it with `xcore serve`."""


cli.add_command(serve)
cli.add_command(desktop)
cli.add_command(config)
cli.add_command(db)
cli.add_command(logs)
cli.add_command(user)
cli.add_command(plugin)
cli.add_command(tasks)


def main(argv: list[str] | None = None) -> None:
    """main runs the CLI and turns every error a user can cause into one line and an exit code.

    A frozen build started without arguments (double-clicked) opens the desktop window when it can, and acts
    as `xcore serve` when it cannot (no display, or a headless build), printing the setup URL on a first run.
    """
    if argv is None and len(sys.argv) == 1 and getattr(sys, "frozen", False):
        from xcore.desktop import gui_problem

        argv = ["desktop"] if gui_problem() is None else ["serve"]
    try:
        result = cli.main(args=argv, prog_name="xcore", standalone_mode=False)
    except XcoreError as exc:
        click.echo(f"xcore: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("xcore: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        logging.getLogger("xcore.system").exception("internal error")
        if os.environ.get(ENV_DEBUG):
            raise
        click.echo(
            f"xcore: internal error: {type(exc).__name__}: {exc} (this is a bug; run again with {ENV_DEBUG}=1 "
            "for the details, or see the log file)",
            err=True,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
