"""How a log record is written: the console's one line for people and the log file's JSON object, and the
`context` every record carries (api, db, auth, plugins, tasks or system).

`setup` configures logging with these formatters; the request log (`access`) writes its lines with them too.
"""

from __future__ import annotations

import logging
import time
import traceback
from functools import lru_cache
from typing import Any

import msgspec

from xcore.terminal import printable

CONTEXTS = ("api", "db", "auth", "plugins", "tasks", "system")

# Logger-name prefixes and their context; the longest matching prefix wins.
_CONTEXT_OF_LOGGER = {
    "xcore.api": "api",
    "xcore.web": "api",
    "litestar": "api",
    "xcore.db": "db",
    "sqlalchemy": "db",
    "alembic": "db",
    "xcore.auth": "auth",
    "xcore.plugins": "plugins",
    "xcore.tasks": "tasks",
    "huey": "tasks",
}


@lru_cache(maxsize=1024)
def context_for(logger_name: str) -> str:
    """context_for maps a logger name to its context; unknown loggers belong to `system`."""
    name = logger_name
    while name:
        if name in _CONTEXT_OF_LOGGER:
            return _CONTEXT_OF_LOGGER[name]
        name = name.rpartition(".")[0]
    return "system"


def record_context(record: logging.LogRecord) -> str:
    """record_context is the record's explicit `context`, else the one its logger name implies."""
    return getattr(record, "context", None) or context_for(record.name)


class SecondCache:
    """Formats a timestamp once per second: log lines within a second share it (a hot-path saving)."""

    def __init__(self, pattern: str, utc: bool) -> None:
        self.pattern = pattern
        self.convert = time.gmtime if utc else time.localtime
        self.second = -1
        self.text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.pattern, self.convert(second))
        return self.text


class ConsoleFormatter(logging.Formatter):
    """ConsoleFormatter writes `2026-11-26 10:00:00 INFO    api      message`.

    The console is for people: an exception shows as its one-line summary, never as a stack trace. The
    JSON log file keeps the whole traceback for whoever debugs it. Control characters and newlines in the
    message (a username, a URL path) are shown as escapes (`xcore.terminal.printable`), so one record is always
    one line and cannot forge another or drive the terminal.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stamp = SecondCache("%Y-%m-%d %H:%M:%S", utc=False)

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self._stamp(record.created)} {record.levelname:<7} {record_context(record):<8} {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({exception_summary(record.exc_info[1])}; the traceback is in the log file)"
        return printable(line)


def exception_summary(exc: BaseException) -> str:
    """exception_summary is `module.Type: message`, as a traceback's last line says it (`builtins.` left out),
    with the whole message even when it has several lines."""
    kind = type(exc)
    name = (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = str(exc)
    return f"{name}: {text}" if text else name


_json_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """JsonFormatter writes one JSON object per record: ts (UTC), level, context, logger, message, pid, data."""

    def __init__(self) -> None:
        super().__init__()
        self._stamp = SecondCache("%Y-%m-%dT%H:%M:%S", utc=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": f"{self._stamp(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "context": record_context(record),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        data = getattr(record, "data", None)
        if data:
            entry.update(data)
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        try:
            return _json_encode(entry).decode()
        except (TypeError, msgspec.EncodeError):
            entry = {k: (v if isinstance(v, str | int | float | bool | None) else repr(v)) for k, v in entry.items()}
            return _json_encode(entry).decode()
