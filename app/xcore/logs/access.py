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
from xcore.terminal import printable

FLUSH_AFTER = 0.1  # seconds
FLUSH_LINES = 500

TEMPLATES = 512  # line templates kept per process: (method, path, status) triples seen recently
DURATIONS = 4096  # durations kept as text, in tenths of a millisecond: most requests take a few milliseconds

_encode = msgspec.json.Encoder().encode
# The console line, as ConsoleFormatter writes it, and the JSON line: the same keys, in the same order, as
# JsonFormatter's lines, plus the request's own. The message is "<method> <path> <status> <ms>ms id=<id>".
# What depends on (method, path, status) alone is made once into a template (see `line_templates`); a line is
# its template's parts with the times and the request id between them, and a batch is one join of all its
# lines' parts: no formatting of the path or of fifteen fields per line.
_MS_ID = b"ms id="
_NEWLINE = b"\n"
_JSON_RID = b',"request_id":"'
_JSON_END = b'"}\n'
_MILLIS = tuple(b"%03d" % n for n in range(1000))  # a timestamp's milliseconds, as JsonFormatter writes them

# What a request leaves in the queue: (perf_counter() at its end, status, method, path, seconds taken, request id).
# The request id is checked against [A-Za-z0-9._-] before it gets here, so it needs no JSON escaping.
Pending = tuple[float, int, str, str, float, bytes]


Template = tuple[bytes, bytes, bytes]


def line_templates(method: str, path: str, status: int, logger: str, pid: int) -> Template:
    """line_templates returns what the lines of one (method, path, status) share, UTF-8 encoded: the console
    line's text between its time and its duration, and the JSON line's between its timestamp and its duration
    in the message, and between the request id and the duration field. The method and path are the client's;
    the console line has their control characters escaped (`printable`), the JSON line has them JSON-escaped.
    A console line is then

        <local time> + console + <ms> + b"ms id=" + <request id> + b"\\n"

    and a JSON line

        b'{"ts":"' <UTC time> b"." <millis> + json_head + <ms> + b"ms id=" + <request id> + json_tail + <ms>
        + b',"request_id":"' + <request id> + b'"}\\n'
    """
    level = "ERROR" if status >= 500 else "INFO"
    # The console shows the client's method and path with their control characters escaped, as ConsoleFormatter
    # does for every other record: a decoded `%0a` or `%1b` must not start a line or drive the terminal.
    shown = printable(f"{method} {path}")
    console = f" {level:<7} api      {shown} {status} ".encode("utf-8", "backslashreplace")
    method_json, path_json = _encode(method), _encode(path)
    json_head = b'Z","level":"%s","context":"api","logger":%s,"message":"%s %s %d ' % (
        level.encode(), _encode(logger), method_json[1:-1], path_json[1:-1], status,
    )  # fmt: skip
    json_tail = b'","pid":%d,"method":%s,"path":%s,"status":%d,"duration_ms":' % (pid, method_json, path_json, status)
    return console, json_head, json_tail


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
        self._templates: dict[tuple[str, str, int], Template] = {}
        self._durations: dict[int, bytes] = {}  # tenths of a millisecond: their text
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
        console: list[bytes] = []  # the parts of the console lines, joined once
        lines: list[bytes] = []  # and of the JSON lines
        templates, pid = self._templates, os.getpid()
        if pid != self._pid:  # a forked process: its lines carry its own pid
            templates.clear()
            self._pid = pid
        base = following = 0.0  # the second the stamps below are of, and the next one (floats: compared to floats)
        durations = self._durations
        local_stamp = utc_stamp = b""
        for end, status, method, path, seconds, rid in pending:
            created = to_wall + end
            if not base <= created < following:
                base = float(int(created))
                following = base + 1.0
                local_stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base)).encode()
                utc_stamp = time.strftime('{"ts":"%Y-%m-%dT%H:%M:%S.', time.gmtime(base)).encode()
            try:
                to_console, json_head, json_tail = templates[method, path, status]
            except KeyError:
                if len(templates) >= TEMPLATES:  # paths are the client's to choose: keep the recent ones
                    templates.clear()
                to_console, json_head, json_tail = templates[method, path, status] = line_templates(
                    method, path, status, self.logger.name, pid
                )
            tenths = int(seconds * 10000.0 + 0.5)  # of a millisecond
            ms = durations.get(tenths)
            if ms is None:
                if len(durations) >= DURATIONS:
                    durations.clear()
                ms = durations[tenths] = b"%.1f" % (tenths / 10)
            if stream is not None:
                console += (local_stamp, to_console, ms, _MS_ID, rid, _NEWLINE)
            if file is not None:
                millis = _MILLIS[int((created - base) * 1000)]  # truncated, as JsonFormatter's %03d
                lines += (utc_stamp, millis, json_head, ms, _MS_ID, rid, json_tail, ms, _JSON_RID, rid, _JSON_END)
        if stream is not None:
            try:
                stream.write(b"".join(console).decode())
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken console must not fail requests
        if file is not None:
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
