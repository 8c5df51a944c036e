"""`xcore metrics token new | list | revoke`: the tokens a Prometheus server scrapes /metrics with.

A token is shown once, when it is made, on standard output alone (so `> file` keeps exactly the token, for
Prometheus's `credentials_file`), or written to `--out FILE` (mode 0600). Only its SHA-256 stays in the data
directory (`xcore.auth.scrapers`). A running server sees a new or revoked token at its next scrape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from xcore.cli.options import data_dir_option, echo_table
from xcore.cli.output import echo

if TYPE_CHECKING:
    from xcore.auth.scrapers import ScraperTokens


def _tokens(data_dir: str | None) -> ScraperTokens:
    """_tokens is the scraper tokens' file of the data directory (created with the directory if need be)."""
    from xcore.auth.scrapers import FILE_NAME, ScraperTokens
    from xcore.paths import DataDir, choose_data_dir

    return ScraperTokens(DataDir(choose_data_dir(data_dir)).prepare().root / FILE_NAME)


@click.group()
def metrics() -> None:
    """The metrics: tokens for a Prometheus server to scrape GET /metrics with."""


@metrics.group("token")
def token() -> None:
    """Scraper tokens: long-lived, they read /metrics and nothing else."""


@token.command("new")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the token to this new file (mode 0600) instead of standard output.",
)
@data_dir_option
def token_new(name: str, out: Path | None, data_dir: str | None) -> None:
    """Make the scraper token NAME and show it, once. Give it to Prometheus as the scrape job's
    `authorization: credentials_file:` (README, "Metrics")."""
    tokens = _tokens(data_dir)
    if out is not None and out.exists():
        raise click.BadParameter(f"{out} exists already; choose a new file (a token is never written over one)")
    made = tokens.create(name)
    if out is None:
        echo(made)
        echo(f"scraper token {name!r} made; this is the only time it is shown", err=True)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(made + "\n")
    echo(f"scraper token {name!r} written to {out.absolute()} (mode 0600)")


@token.command("list")
@data_dir_option
def token_list(data_dir: str | None) -> None:
    """List the scraper tokens: their names and when they were made (never the tokens)."""
    tokens = _tokens(data_dir)
    found = tokens.listed()
    if not found:
        echo("no scraper tokens: `xcore metrics token new NAME` makes one")
        return
    echo_table(["NAME", "CREATED"], [[t.name, t.created] for t in found])


@token.command("revoke")
@click.argument("name")
@data_dir_option
def token_revoke(name: str, data_dir: str | None) -> None:
    """Revoke the scraper token NAME: its next scrape is refused (401)."""
    tokens = _tokens(data_dir)
    tokens.revoke(name)
    echo(f"revoked the scraper token {name!r}")
