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
import time
from typing import TextIO

import msgspec

from xcore.logs.handler import SharedRotatingFileHandler
from xcore.logs.setup import ConsoleFormatter

FLUSH_AFTER = 0.1  # seconds
FLUSH_LINES = 500

TEMPLATES = 512  # line templates kept per process: (method, path, status) triples seen recently

_encode = msgspec.json.Encoder().encode
# The console line, as ConsoleFormatter writes it, and the JSON line: the same keys, in the same order, as
# JsonFormatter's lines, plus the request's own. The message is "<method> <path> <status> <ms>ms id=<id>".
# Both are made once per (method, path, status) into templates that leave only the times and the request id
# open, so a line costs two %-formats, not an encoding of the path and two formats of fifteen fields.
_CONSOLE_LINE = "%%s %-7s api      %s %s %d %%sms id=%%s\n"
_JSON_LINE = (
    b'{"ts":"%%s.%%03dZ","level":"%s","context":"api","logger":%s,"message":"%s %s %d %%sms id=%%s","pid":%d,'
    b'"method":%s,"path":%s,"status":%d,"duration_ms":%%s,"request_id":"%%s"}\n'
)

# What a request leaves in the queue: (perf_counter() at its end, status, method, path, seconds taken, request id).
# The request id is checked against [A-Za-z0-9._-] before it gets here, so it needs no JSON escaping.
Pending = tuple[float, int, str, str, float, bytes]


def line_templates(method: str, path: str, status: int, logger: str, pid: int) -> tuple[bytes, bytes]:
    """line_templates returns the console and JSON line templates of one (method, path, status), UTF-8 encoded.

    The console template takes (local time, milliseconds, request id); the JSON one (UTC time, its
    milliseconds part, the duration's milliseconds, the request id, the same two again). The method and path
    are the client's: their `%` signs are doubled, and the path is JSON-escaped in the JSON line.
    """
    level = "ERROR" if status >= 500 else "INFO"
    console = _CONSOLE_LINE % (level, method.replace("%", "%%"), path.replace("%", "%%"), status)
    method_json, path_json = (_encode(text).replace(b"%", b"%%") for text in (method, path))
    json_line = _JSON_LINE % (
        level.encode(), _encode(logger).replace(b"%", b"%%"), method_json[1:-1], path_json[1:-1], status, pid,
        method_json, path_json, status,
    )  # fmt: skip
    return console.encode("utf-8", "backslashreplace"), json_line


class AccessSink:
    """AccessSink queues request lines and writes them to xcore's console stream and shared log file.

    `requestlog.logged` appends to `pending` itself and calls `schedule` or `flush`: on the hot path every
    Python call counts. `info` and `error` say whether request lines at those levels are logged at all;
    they are read from the logger when the sink is attached, which happens after every logging setup.
    """

    def __init__(self, logger: logging.Logger, console: TextIO | None, file: SharedRotatingFileHandler | None):
        self.logger = logger
        self.console = console
        self.file = file
        self.info = logger.isEnabledFor(logging.INFO)
        self.error = logger.isEnabledFor(logging.ERROR)
        self.pending: list[Pending] = []
        self.scheduled = False
        self._lock = threading.Lock()
        self._templates: dict[tuple[str, str, int], tuple[bytes, bytes]] = {}
        self._pid = os.getpid()

    def schedule(self) -> None:
        """schedule makes the event loop flush the queue FLUSH_AFTER seconds from now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread: nothing would flush later
            self.flush()
            return
        self.scheduled = True
        loop.call_later(FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        """flush formats the queued lines and writes them: one write to the console, one to the file."""
        with self._lock:
            self.scheduled = False
            pending, self.pending = self.pending, []
        if not pending:
            return
        to_wall = time.time() - time.perf_counter()
        stream, file = self.console, self.file
        console: list[bytes] | None = [] if stream is not None else None
        lines: list[bytes] | None = [] if file is not None else None
        templates, pid = self._templates, os.getpid()
        if pid != self._pid:  # a forked process: its lines carry its own pid
            templates.clear()
            self._pid = pid
        base, following = 0, 0.0  # the second the stamps below are of, and the next one
        local_stamp = utc_stamp = b""
        for end, status, method, path, seconds, rid in pending:
            created = to_wall + end
            if not base <= created < following:
                base = int(created)
                following = base + 1.0
                local_stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base)).encode()
                utc_stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base)).encode()
            try:
                to_console, to_file = templates[method, path, status]
            except KeyError:
                if len(templates) >= TEMPLATES:  # paths are the client's to choose: keep the recent ones
                    templates.clear()
                to_console, to_file = templates[method, path, status] = line_templates(
                    method, path, status, self.logger.name, pid
                )
            ms = b"%.1f" % (seconds * 1000)
            if console is not None:
                console.append(to_console % (local_stamp, ms, rid))
            if lines is not None:
                lines.append(to_file % (utc_stamp, (created - base) * 1000, ms, rid, ms, rid))  # %03d truncates
        if stream is not None and console is not None:
            try:
                stream.write(b"".join(console).decode())
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken console must not fail requests
        if file is not None and lines is not None:
            try:
                file.write_line(b"".join(lines))
            except OSError:
                logging.getLogger("xcore.system").exception("cannot write request lines to %s", file.baseFilename)


SINK: AccessSink | None = None
"""SINK is the fast path for request lines, or None when requests go through ordinary logging."""


def sink() -> AccessSink | None:
    """sink returns SINK."""
    return SINK


def attach(logger_name: str = "xcore.api") -> None:
    """attach looks for xcore's console and file handlers on the root logger and sets up the fast path."""
    global SINK
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
    SINK = AccessSink(logger, stream, file)


def flush() -> None:
    """flush writes any queued request lines now (the server calls it at shutdown)."""
    if SINK is not None:
        SINK.flush()


def detach() -> None:
    """detach writes what is queued and turns the fast path off; requests go through ordinary logging again."""
    global SINK
    if SINK is not None:
        SINK.flush()
    SINK = None


atexit.register(flush)
