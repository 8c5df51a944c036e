"""The logs admin API: a filtered window on the JSON-lines log, a cursor for a live tail, counts, and a download.

Reading is bounded (see `xcore.logs.window`): a request reads at most a few megabytes of the current log file,
or of the one just rotated away, never the whole rotated history, and runs in a worker thread.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Stream
from msgspec import Struct

from xcore.auth import audit
from xcore.auth.errors import InvalidInput, NotFound
from xcore.logs.reader import LEVELS, LogFilter
from xcore.logs.window import Cursor, Tally, latest, since
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of, service
from xcore.web.download import attachment
from xcore.web.requestlog import quiet

TAGS = ["logs"]
MAX_LIMIT = 1000

# One per process: each poll counts only the lines added since the previous one.
_tally = Tally()


class LogCounts(Struct):
    levels: dict[str, int]
    contexts: dict[str, int]


class LogWindow(Struct):
    items: list[dict[str, Any]]
    cursor: str
    counts: LogCounts
    file: str
    truncated: bool  # entries were left out: more matched than `limit`, or more was written than one read takes


def log_file_of(request: Request[Any, Any, Any]) -> Path:
    runtime: Runtime = request.app.state.runtime
    path = runtime.log_file
    if path is None:
        raise NotFound("xcore writes no log file: the setting xcore.logs.file is empty; set it to read logs here")
    return path


@get("/api/admin/logs", sync_to_thread=True, tags=TAGS, summary="Read the log")
def read_logs(
    request: Request[Any, Any, Any],
    level: Annotated[
        str | None, Parameter(max_length=10, description="Lowest level shown: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    ] = None,
    context: Annotated[
        str | None, Parameter(max_length=100, description="Only this context: api, auth, db, plugins, tasks, system...")
    ] = None,
    q: Annotated[
        str | None, Parameter(max_length=200, description="Text the entry contains (message or any field), any case.")
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description="Most entries returned.")] = 200,
    after: Annotated[
        str | None, Parameter(max_length=60, description="A `cursor` from an earlier answer: only newer entries.")
    ] = None,
) -> LogWindow:
    """Without `after`: the newest `limit` entries that match, oldest first, read backwards from the end of the
    current log file, then of the rotated ones while too few matched (8 MB read at most). With `after`: the entries
    written since that cursor, oldest first, following the log through a rotation; poll with each answer's
    `cursor` for a live tail (such polls that succeed are not written to the request log). When more matched
    than `limit` the newest are returned and `truncated` is true.

    `counts` are per level and per context over the whole current log file (its last 32 MB if it is larger),
    without the level, context and text filters, so they can label the filters. Each entry is the JSON line as
    written: ts, level, context, logger, message, pid, and the record's structured fields."""
    actor(request, "logs.read")
    path = log_file_of(request)
    keep = LogFilter(level=_level(level), context=context or None, search=q or None)
    if after:
        quiet(request)  # a live tail polls every few seconds: its own requests would fill the log it shows
        try:
            cursor = Cursor.decode(after)
        except ValueError:
            raise InvalidInput(
                "after must be a cursor from an earlier answer of GET /api/admin/logs", field="after"
            ) from None
        items, cursor, truncated = since(path, cursor, keep, limit)
    else:
        items, cursor = latest(path, keep, limit)
        truncated = False
    levels, contexts = _tally.counts(path)
    return LogWindow(items, cursor.encode(), LogCounts(levels, contexts), str(path), truncated)


def _level(level: str | None) -> str | None:
    if not level:
        return None
    if level.upper() not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}, not {level!r}", field="level")
    return level.upper()


@get("/api/admin/logs/download", sync_to_thread=True, tags=TAGS, summary="Download the current log file")
def download_log(request: Request[Any, Any, Any]) -> Stream:
    """The current log file as it is now, as an attachment (JSON lines). Rotated files are not included."""
    who = actor(request, "logs.read")
    path = log_file_of(request)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = attachment(path, f"{path.stem}-{stamp}{path.suffix}", "application/x-ndjson")
    with service(request).transaction() as session:
        audit.record(session, "logs.download", actor=who.username, target=path.name, ip=client_of(request).ip)
    return response


def log_handlers() -> list[Any]:
    return [read_logs, download_log]
