"""The request log's fast path: one line per HTTP request, to the same console and file as every other record.

A request line through `logging` costs a LogRecord, a caller lookup, two formatters and two system calls: on
the hot path that is more than the whole Litestar request, and under Granian every microsecond of Python per
request costs several microseconds of CPU (its I/O threads wait for the GIL meanwhile). So when the process's
logging is xcore's own setup (handlers named "console" and "file" on the root logger), a request only appends
a tuple to a queue; the lines are formatted and written in batches, with one system call per output, at most
FLUSH_AFTER seconds later (as nginx's `access_log ... buffer=`). They honour the same level, console switch
and rotated file as other records. A 5xx line flushes at once, and so do the server's shutdown and the
process's exit; a crash (SIGKILL) can lose the last FLUSH_AFTER seconds of request lines, never other records.

When the logging is not xcore's own (a test's or an embedding application's), `sink()` is None and requests
are logged as ordinary records instead.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from datetime import UTC, datetime
from typing import TextIO

import msgspec

from xcore.logs.handler import SharedRotatingFileHandler
from xcore.logs.setup import ConsoleFormatter, SecondCache

FLUSH_AFTER = 0.1  # seconds
FLUSH_LINES = 500


_LEVEL_NAMES = {logging.INFO: "INFO", logging.ERROR: "ERROR", logging.WARNING: "WARNING"}


class AccessEntry(msgspec.Struct, kw_only=True, gc=False):
    """AccessEntry is one JSON line of the request log: the keys of every record, then the request's."""

    ts: datetime
    level: str
    context: str = "api"
    logger: str
    message: str
    pid: int
    method: str
    path: str
    status: int
    duration_ms: float
    request_id: str


_encode_lines = msgspec.json.Encoder().encode_lines


# (time.time(), level, method, path, status, duration in ms, request id)
Pending = tuple[float, int, str, str, int, float, str]


class AccessSink:
    """AccessSink queues request lines and writes them to xcore's console stream and shared log file."""

    def __init__(self, logger: logging.Logger, console: TextIO | None, file: SharedRotatingFileHandler | None):
        self.logger = logger
        self.console = console
        self.file = file
        self._console_stamp = SecondCache("%Y-%m-%d %H:%M:%S", utc=False)
        self._json_stamp = SecondCache("%Y-%m-%dT%H:%M:%S", utc=True)
        self._lock = threading.Lock()
        self._pending: list[Pending] = []
        self._scheduled = False

    def write(
        self, created: float, level: int, method: str, path: str, status: int, duration_ms: float, rid: str
    ) -> None:
        """write queues one request line at `level` (checked by the caller with logger.isEnabledFor).

        It is called from the event loop's thread, like `flush`, so appending needs no lock.
        """
        pending = self._pending
        pending.append((created, level, method, path, status, duration_ms, rid))
        if level >= logging.ERROR or len(pending) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread: nothing would flush later
            self.flush()
            return
        self._scheduled = True
        loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """flush formats the queued lines and writes them: one write to the console, one to the file."""
        with self._lock:
            self._scheduled = False
            pending, self._pending = self._pending, []
        if not pending:
            return
        messages = [f"{method} {path} {status} {ms:.1f}ms id={rid}" for _, _, method, path, status, ms, rid in pending]
        if self.console is not None:
            stamp = self._console_stamp
            text = "".join(
                f"{stamp(p[0])} {_LEVEL_NAMES.get(p[1], p[1])!s:<7} api      {message}\n"
                for p, message in zip(pending, messages, strict=True)
            )
            try:
                self.console.write(text)
                self.console.flush()
            except (OSError, ValueError):
                pass  # a closed or broken console must not fail requests
        if self.file is not None:
            pid, name = os.getpid(), self.logger.name
            entries = [
                AccessEntry(
                    ts=datetime.fromtimestamp(created, UTC),
                    level=_LEVEL_NAMES.get(level, "INFO"),
                    logger=name,
                    message=message,
                    pid=pid,
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=ms,
                    request_id=rid,
                )
                for (created, level, method, path, status, ms, rid), message in zip(pending, messages, strict=True)
            ]
            try:
                self.file.write_line(_encode_lines(entries))
            except OSError:
                logging.getLogger("xcore.system").exception("cannot write request lines to %s", self.file.baseFilename)


_sink: AccessSink | None = None


def sink() -> AccessSink | None:
    """sink is the fast path for request lines, or None when requests go through ordinary logging."""
    return _sink


def attach(logger_name: str = "xcore.api") -> None:
    """attach looks for xcore's console and file handlers on the root logger and sets up the fast path."""
    global _sink
    detach()
    logger = logging.getLogger(logger_name)
    handlers = {h.name: h for h in logging.getLogger().handlers}
    if not handlers or set(handlers) - {"console", "file"} or logger.handlers or not logger.propagate:
        return  # somebody else's logging: stay out of its way
    console = handlers.get("console")
    file = handlers.get("file")
    if console is not None and not (
        isinstance(console, logging.StreamHandler) and isinstance(console.formatter, ConsoleFormatter)
    ):
        return
    if file is not None and not isinstance(file, SharedRotatingFileHandler):
        return
    stream = console.stream if isinstance(console, logging.StreamHandler) else None
    _sink = AccessSink(logger, stream, file)


def flush() -> None:
    """flush writes any queued request lines now (the server calls it at shutdown)."""
    if _sink is not None:
        _sink.flush()


def detach() -> None:
    """detach writes what is queued and turns the fast path off; requests go through ordinary logging again."""
    global _sink
    if _sink is not None:
        _sink.flush()
    _sink = None


atexit.register(flush)
