"""Runtime: what one xcore process works with, opened once from the data directory and the settings.

The CLI opens it for each command, and each Granian worker opens its own (engines never cross a fork).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xcore import __version__
from xcore.config import LoadedConfig, XcoreConfig, load_config
from xcore.logs.setup import build_logging_config, configure_logging
from xcore.paths import DataDir, choose_data_dir, private_files

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from xcore.auth.service import AuthService

# SQLAlchemy is imported when a command first touches the database, so `xcore --help`, `xcore logs` and
# `xcore config ...` start quickly.


@dataclass
class Runtime:
    """Runtime bundles the settings, the data directory and the database of one process."""

    loaded: LoadedConfig
    data: DataDir
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    version: str = __version__
    # Set by `xcore desktop`: its window is pywebview's, whose evaluate_js runs scripts through eval().
    desktop: bool = False

    @property
    def config(self) -> XcoreConfig:
        return self.loaded.config

    @property
    def database_url(self) -> str:
        """database_url is `xcore.data.url`, or the SQLite file in the data directory when it is null."""
        return self.config.xcore.data.url or f"sqlite:///{self.data.database}"

    @property
    def database_file(self) -> Path | None:
        """database_file is the SQLite file of the core database, or None for other databases."""
        if not self.config.xcore.data.url:
            return self.data.database.absolute()
        from xcore.db.engine import sqlite_path  # SQLAlchemy's URL parser

        return sqlite_path(self.database_url)

    @cached_property
    def engine(self) -> Engine:
        from xcore.db.engine import make_engine

        return make_engine(self.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """sessions makes ORM sessions on the core database; loaded objects stay usable after a commit."""
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def secret(self) -> str:
        """secret signs tokens and derives the key that encrypts TOTP secrets: `secure.secret_key`, else
        `<data>/secret.key`."""
        return self.config.secure.secret_key or self.data.signing_key()

    @cached_property
    def auth(self) -> AuthService:
        """auth is this process's accounts and security service. Raises ConfigError for a malformed access rule."""
        from xcore.auth.service import AuthService

        config = self.config
        return AuthService(
            config.secure, config.xcore.middleware.ACCESS_RULES, self.sessions, self.secret, self.data.root
        )

    @property
    def log_file(self) -> Path | None:
        return self.data.resolve(self.config.xcore.logs.file) if self.config.xcore.logs.file else None

    @property
    def backups_dir(self) -> Path:
        return self.data.resolve(self.config.migration.backup.backup_directory)

    def logging_config(self) -> dict[str, Any]:
        return build_logging_config(self.config.xcore.logs, self.log_file, self.config.xcore.data.echo)

    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def open_runtime(
    data_dir: str | os.PathLike[str] | None = None,
    cli: Mapping[tuple[str, ...], tuple[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    logs: bool = True,
) -> Runtime:
    """open_runtime prepares the data directory, loads and validates the settings, and sets up logging.

    Raises DataDirError or ConfigError, whose messages say what is wrong and where.
    """
    env = os.environ if environ is None else environ
    private_files()  # before the first file is written: the log file, the databases
    data = DataDir(choose_data_dir(data_dir, dict(env))).prepare()
    loaded = load_config(data.root, env, cli)
    runtime = Runtime(loaded, data)
    if logs:
        configure_logging(runtime.logging_config())
    for warning in data.tighten():  # logged once configured, so it reaches the log file too
        logging.getLogger("xcore.system").warning("%s", warning)
    return runtime
