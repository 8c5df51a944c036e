"""`xcore serve`: run the server."""

from __future__ import annotations

import os

import click

from xcore.cli.options import data_dir_option
from xcore.runtime import open_runtime


@click.command()
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1, or server.host]")
@click.option("--port", type=int, default=None, help="TCP port  [default: 8000, or server.port]")
@click.option("--workers", type=int, default=None, help="Worker processes  [default: 1, or server.workers]")
@click.option(
    "--plugins-dev",
    "plugins_dev",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    help="A folder of unzipped plugin folders (or one plugin folder) to load and reload on every save. Repeatable.",
)
@click.option(
    "--safe", is_flag=True,
    help="Safe mode: every plugin off for this run (their settings untouched), to remove one that breaks the start.",
)  # fmt: skip
@data_dir_option
def serve(
    host: str | None, port: int | None, workers: int | None, plugins_dev: tuple[str, ...], safe: bool,
    data_dir: str | None,
) -> int:  # fmt: skip
    """Run xcore: apply pending migrations (after a backup), then serve HTTP until Ctrl+C or SIGTERM."""
    # Granian is imported only when serving. The web stack (Litestar) is not imported here at all: the workers
    # import it, so this process, which only watches over them, stays small.
    from xcore.config.loader import ENV_PLUGINS_DEV
    from xcore.server import serve as run_server

    if plugins_dev:
        os.environ[ENV_PLUGINS_DEV] = os.pathsep.join(plugins_dev)

    runtime = open_runtime(
        data_dir,
        cli={
            ("server", "host"): ("--host", host),
            ("server", "port"): ("--port", port),
            ("server", "workers"): ("--workers", workers),
        },
    )
    return run_server(runtime, safe=safe)
