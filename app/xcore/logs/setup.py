"""Logging, configured once per process from `xcore.logs`.

- The console gets human-readable lines; `<data>/logs/xcore.log` gets one JSON object per line.
- Every record carries a `context`: api, db, auth, plugins, tasks or system. It comes from
  `extra={"context": ...}` when given, else from the logger's name (`xcore.plugins.foo` -> plugins,
  `sqlalchemy.engine` -> db, ...).
- Structured fields go in `extra={"data": {...}}`; the JSON line carries them at the top level.

The same dictConfig is handed to Granian, which applies it in its own process and in each worker, so its
messages ("Listening at ...") come out in the same two places, with context `system`.
"""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path
from typing import Any

from xcore.config.schema import LogsConfig
from xcore.logs import access
from xcore.logs.formatters import (
    CONTEXTS,
    ConsoleFormatter,
    JsonFormatter,
    SecondCache,
    context_for,
    exception_summary,
    record_context,
)

__all__ = [
    "CONTEXTS",
    "ConsoleFormatter",
    "JsonFormatter",
    "SecondCache",
    "build_logging_config",
    "configure_logging",
    "context_for",
    "exception_summary",
    "forget_configuration",
    "record_context",
]


def build_logging_config(logs: LogsConfig, log_file: Path | None, echo_sql: bool = False) -> dict[str, Any]:
    """build_logging_config returns the dictConfig for the console and the JSON file (None: no file)."""
    handlers: dict[str, Any] = {}
    if logs.console:
        handlers["console"] = {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "console",
        }
    if log_file is not None:
        handlers["file"] = {
            "()": "xcore.logs.handler.SharedRotatingFileHandler",
            "filename": str(log_file),
            "max_bytes": logs.max_bytes,
            "backup_count": logs.backup_count,
            "formatter": "json",
        }
    loggers: dict[str, Any] = {
        # Granian's own logger and access log: ours replace its handlers; xcore logs requests itself.
        "_granian": {"level": logs.level, "handlers": [], "propagate": True},
        "granian.access": {"level": "WARNING", "handlers": [], "propagate": False},
        "sqlalchemy.engine": {"level": "INFO" if echo_sql else "WARNING"},
        "alembic": {"level": "WARNING"},  # xcore logs each migration step itself
        "watchfiles": {"level": "WARNING"},
        "huey": {"level": "WARNING"},  # a line per task run; xcore journals runs and logs their failures itself
        "httpx": {"level": "WARNING"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "console": {"()": "xcore.logs.formatters.ConsoleFormatter"},
            "json": {"()": "xcore.logs.formatters.JsonFormatter"},
        },
        "handlers": handlers,
        "loggers": loggers,
        "root": {"level": logs.level, "handlers": list(handlers)},
    }


_applied: dict[str, Any] | None = None


def configure_logging(config: dict[str, Any]) -> None:
    """configure_logging applies a config from build_logging_config, once per process (again only if it changed)."""
    global _applied
    if _applied == config:
        return
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    logging.logMultiprocessing = False  # processName is in no xcore line; it costs a lookup per record
    _applied = config
    access.attach()


def forget_configuration() -> None:
    """forget_configuration makes the next configure_logging apply again (Granian reapplies it in workers)."""
    global _applied
    _applied = None
    access.detach()
