"""The `xcore` command line. --data-dir works before or after any command; errors are one line, never a traceback.

A usage error (unknown option or command, missing or extra argument, a value of the wrong type) is one line,
`xcore: error: COMMAND: what is wrong (see `xcore COMMAND --help`)`, exit code 2.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from xcore.cli.catalogue_cmd import catalogue, search, update
from xcore.cli.config_cmd import config
from xcore.cli.db_cmd import db
from xcore.cli.desktop_cmd import desktop
from xcore.cli.keys_cmd import keys, trust
from xcore.cli.logs_cmd import logs
from xcore.cli.metrics_cmd import metrics
from xcore.cli.options import add_global_options
from xcore.cli.output import echo
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

    echo(describe(), lines=True)
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
cli.add_command(keys)
cli.add_command(trust)
cli.add_command(catalogue)
cli.add_command(metrics)
plugin.add_command(search)
plugin.add_command(update)
add_global_options(cli)


def usage_error_line(exc: click.ClickException, argv: list[str]) -> str:
    """usage_error_line turns a Click error into the one line xcore prints: what was wrong, naming the option or
    argument (Click's own words, on one line), and for a usage error the help command of the command at fault."""
    text = " ".join(exc.format_message().split()).replace(". (Did", " (did").replace(". Did you", "; did you")
    text = text[:1].lower() + text[1:] if text[1:2].islower() else text
    text = text.removesuffix(".")
    if not isinstance(exc, click.UsageError):
        return f"xcore: error: {text}"
    # Click leaves the context out of some errors ("option '--x' requires an argument"): find the command in argv.
    path = exc.ctx.command_path if exc.ctx is not None else " ".join(("xcore", *_command_words(argv)))
    where = path.split(" ", 1)[1] + ": " if " " in path else ""
    return f"xcore: error: {where}{text} (see `{path} --help`)"


def _command_words(argv: list[str]) -> list[str]:
    """_command_words are the words of argv that name (sub)commands, skipping the groups' options and values."""
    command: click.Command = cli
    words: list[str] = []
    args = list(argv)
    while isinstance(command, click.Group) and args:
        arg = args.pop(0)
        if arg.startswith("-"):
            option = next((p for p in command.params if isinstance(p, click.Option) and arg in p.opts), None)
            if option is not None and not option.is_flag and not option.count:
                args = args[1:]
            continue
        sub = command.commands.get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return words


ZYGOTE_COMMAND = "plugin-zygote"  # the sandbox's fork server, a hidden command (see xcore.plugins.zygote)


def main(argv: list[str] | None = None) -> None:
    """main runs the CLI and turns every error a user can cause into one line and an exit code.

    A frozen build started without arguments (double-clicked) opens the desktop window when it can, and acts
    as `xcore serve` when it cannot (no display, or a headless build), printing the setup URL on a first run.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [ZYGOTE_COMMAND]:  # the sandbox's fork server (hidden): xcore.plugins.zygote starts it
        from xcore.plugin_zygote import main as zygote_main

        sys.exit(zygote_main(args[1:]))
    if argv is None and len(sys.argv) == 1 and getattr(sys, "frozen", False):
        from xcore.desktop import gui_problem

        argv = ["desktop"] if gui_problem() is None else ["serve"]
    try:
        result = cli.main(args=argv, prog_name="xcore", standalone_mode=False)
    except XcoreError as exc:
        echo(f"xcore: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        echo("xcore: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # `xcore` or `xcore plugin` alone: the help is the answer
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        echo(usage_error_line(exc, sys.argv[1:] if argv is None else argv), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        logging.getLogger("xcore.system").exception("internal error")
        if os.environ.get(ENV_DEBUG):
            raise
        echo(
            f"xcore: internal error: {type(exc).__name__}: {exc} (this is a bug; run again with {ENV_DEBUG}=1 "
            "for the details, or see the log file)",
            err=True,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
