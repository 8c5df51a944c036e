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
from math import floor
from typing import TextIO

import msgspec

from xcore.logs.formatters import ConsoleFormatter
from xcore.logs.handler import SharedRotatingFileHandler
from xcore.terminal import printable

FLUSH_AFTER = 0.1  # seconds
FLUSH_LINES = 500

TEMPLATES = 512  # line templates kept per process: (method, path, status) triples seen recently
DURATIONS = 1024  # durations a template keeps its lines' parts for, in tenths of a millisecond: up to 102.3 ms
TEMPLATE_BYTES = 4 << 20  # what the templates of a process may hold in all; past it they start again
_ENTRY_BYTES = 250  # what keeping one duration's parts costs beyond their text: objects, the dict entry

_encode = msgspec.json.Encoder().encode
# The console line, as ConsoleFormatter writes it, and the JSON line: the same keys, in the same order, as
# JsonFormatter's lines, plus the request's own. The message is "<method> <path> <status> <ms>ms id=<id>".
# What depends on (method, path, status) and the duration alone is made once (see `Template`); a line is then
# its time, those parts and the request id between them, and a batch is one join of all its lines' parts: no
# formatting of the path, the duration or of fifteen fields per line.
_MS_ID = b"ms id="
_JSON_RID = b',"request_id":"'
_JSON_END = b'"}\n'
_MILLIS = tuple(b"%03d" % n for n in range(1000))  # a timestamp's milliseconds, as JsonFormatter writes them

# What a request leaves in the queue: (perf_counter() at its end, and at its start, status, method, path,
# request id). The request id is checked against [A-Za-z0-9._-] before it gets here, so it needs no JSON escaping.
Pending = tuple[float, float, int, str, str, bytes]
# A line's parts that depend on its template and duration: the console line's text between its time and its
# request id, the JSON line's between its milliseconds and the request id in the message, and between that
# and the request id field.
Parts = tuple[bytes, bytes, bytes]


def line_templates(method: str, path: str, status: int, logger: str, pid: int) -> tuple[bytes, bytes, bytes]:
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


class Templates(dict[tuple[str, str, int], "Template"]):
    """Templates are the line templates of one process by (method, path, status), made when first needed.

    Paths are the client's to choose, so what they keep is bounded: at most TEMPLATES templates and
    TEMPLATE_BYTES of parts in all; past either, they start again from none.
    """

    __slots__ = ("logger", "pid", "size")

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.logger = logger
        self.pid = os.getpid()
        self.size = 0

    def __missing__(self, key: tuple[str, str, int]) -> Template:
        if len(self) >= TEMPLATES:
            self.reset(self.pid)
        method, path, status = key
        template = self[key] = Template(self, *line_templates(method, path, status, self.logger, self.pid))
        return template

    def reset(self, pid: int) -> None:
        """reset forgets every template; the lines of process `pid` are made from now on."""
        self.clear()
        self.pid = pid
        self.size = 0

    def charge(self, size: int) -> None:
        """charge counts `size` more bytes kept, and starts again past TEMPLATE_BYTES."""
        self.size += size
        if self.size > TEMPLATE_BYTES:
            self.reset(self.pid)


class Template(dict[int, Parts]):
    """Template is what the lines of one (method, path, status) share (see `line_templates`), and by duration (in
    tenths of a millisecond) the parts of its lines, made when first needed; it keeps those of DURATIONS durations.
    """

    __slots__ = ("console", "json_head", "json_tail", "owner")

    def __init__(self, owner: Templates, console: bytes, json_head: bytes, json_tail: bytes) -> None:
        super().__init__()
        self.owner = owner
        self.console, self.json_head, self.json_tail = console, json_head, json_tail

    def __missing__(self, tenths: int) -> Parts:
        ms = b"%.1f" % (tenths / 10)
        parts = (self.console + ms + _MS_ID, self.json_head + ms + _MS_ID, self.json_tail + ms + _JSON_RID)
        if len(self) < DURATIONS:
            self[tenths] = parts
            self.owner.charge(len(parts[0]) + len(parts[1]) + len(parts[2]) + _ENTRY_BYTES)
        return parts


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
        self._templates = Templates(logger.name)

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
        """flush formats the queued lines and writes them: one write to the console, one to the file.

        A line is three parts on the console and six in the file (see `Template`): each line's time starts with the
        end of the line before it, the first line's has it cut off, and the batch's last line ends on its own.
        """
        with self._lock:
            self.scheduled = False
            pending, self.pending = self.pending, []
        if not pending:
            return
        templates = self._templates
        pid = os.getpid()
        if pid != templates.pid:  # a forked process: its lines carry its own pid
            templates.reset(pid)
        to_wall = (time.time() - time.perf_counter()) * 1000.0  # milliseconds
        console: list[bytes] = []  # the parts of the console lines, joined once
        lines: list[bytes] = []  # and of the JSON lines
        base = following = 0  # the millisecond the stamps below are of, and that of the next second
        local = utc = b""
        for end, start, status, method, path, rid in pending:
            now = floor(end * 1000.0 + to_wall)  # milliseconds since the epoch (math.floor: int() costs more)
            if not base <= now < following:
                second = now // 1000
                base, following = second * 1000, second * 1000 + 1000
                local = b"\n" + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)).encode()
                utc = _JSON_END + time.strftime('{"ts":"%Y-%m-%dT%H:%M:%S.', time.gmtime(second)).encode()
            to_console, message, fields = templates[method, path, status][floor((end - start) * 10000.0 + 0.5)]
            console += (local, to_console, rid)
            lines += (utc, _MILLIS[now - base], message, rid, fields, rid)  # truncated millis, as JsonFormatter's
        console[0] = console[0][1:]
        console.append(b"\n")
        lines[0] = lines[0][len(_JSON_END) :]
        lines.append(_JSON_END)
        if self.console is not None:
            try:
                self.console.write(b"".join(console).decode())
                self.console.flush()
            except (OSError, ValueError):
                pass  # a closed or broken console must not fail requests
        if self.file is not None:
            try:
                self.file.write_line(b"".join(lines))
            except OSError:
                logging.getLogger("xcore.system").exception("cannot write request lines to %s", self.file.baseFilename)


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
