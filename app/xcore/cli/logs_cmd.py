"""`xcore logs`: read the JSON log file (replaces the seed's makefile log targets)."""

from __future__ import annotations

import click

from xcore.cli.options import data_dir_option
from xcore.cli.output import echo
from xcore.errors import XcoreError
from xcore.logs.reader import LEVELS, LogFilter, follow, format_entry, last_entries, read_entries, stats
from xcore.logs.setup import CONTEXTS
from xcore.runtime import open_runtime


@click.command()
@click.option("-n", "lines", type=click.IntRange(min=0), default=50, show_default=True, help="Show the last N entries.")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new entries as they come.")
@click.option("--level", type=click.Choice(LEVELS, case_sensitive=False), help="Only this level and above.")
@click.option("--context", type=click.Choice(CONTEXTS), help="Only this context.")
@click.option("--search", metavar="TERM", help="Only entries containing TERM (any case).")
@click.option("--stats", "show_stats", is_flag=True, help="Count entries per level and per context.")
@data_dir_option
def logs(
    lines: int,
    follow_: bool,
    level: str | None,
    context: str | None,
    search: str | None,
    show_stats: bool,
    data_dir: str | None,
) -> None:
    """Show, filter, follow or count the log entries in <data>/logs/xcore.log."""
    runtime = open_runtime(data_dir, logs=False)
    log_file = runtime.log_file
    if log_file is None:
        raise XcoreError("the log file is turned off (xcore.logs.file is empty); there is nothing to read")
    keep = LogFilter(level=level, context=context, search=search)
    if show_stats:
        levels, contexts, total = stats(e for e in read_entries(log_file) if keep(e))
        echo(f"{total} entries in {log_file}")
        echo("by level:   " + ", ".join(f"{k} {levels[k]}" for k in LEVELS if levels[k]))
        echo("by context: " + ", ".join(f"{k} {contexts[k]}" for k in sorted(contexts)))
        return
    if not log_file.exists() and not follow_:
        echo(f"no log file yet at {log_file}", err=True)
        return
    for entry in last_entries(log_file, keep, lines):
        echo(format_entry(entry), lines=True)
    if follow_:
        try:
            for entry in follow(log_file, keep):
                echo(format_entry(entry), lines=True)
        except KeyboardInterrupt:
            pass
