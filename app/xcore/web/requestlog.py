"""Request logging and request ids, as a thin ASGI wrapper around whatever app the Switch serves.

It sits outside Litestar so that every request is logged, including 404s for paths no route matches and
requests that arrive while apps are being swapped. Each request gets an id: the client's `X-Request-ID`
when it is sane (1-128 characters of letters, digits, `.`, `_`, `-`), else a new one: 24 hex digits, a random
prefix drawn once per process and a counter (a system call for randomness on every request costs measurably).
New ids are made 256 at a time, from a table of their last two digits, so a request takes its id, as bytes and
as text, from a list instead of formatting a 96-bit number. The id is echoed in the response's `X-Request-ID`
header, stored in `scope["state"]["request_id"]`, and logged. Every response also gets the security headers
here (`xcore.web.headers`).

A handler can keep its own successful answers out of the request log with `quiet(request)`: the admin UI's live
log tail polls every two seconds, and would otherwise fill the log it shows with its own requests. Errors are
logged all the same.

Every request is also counted for the metrics (`xcore.metrics.tally`), unless `server.metrics` turned that off
(`count_requests`): by the route template Litestar matched (`scope["path_template"]`; a mount's path; `<unmatched>`
when no route did; `<refused>` when the access guard refused it before routing), method and status, with its
duration in the latency histogram's bucket. That costs a dict lookup and two additions; the counts reach
prometheus-client's values later (`xcore.metrics.export`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from time import perf_counter
from typing import Any

from xcore.logs import access
from xcore.metrics import tally
from xcore.metrics.tally import BOUNDS, Cell, bucket
from xcore.metrics.tally import lookup as _cells
from xcore.web.headers import secure

log = logging.getLogger("xcore.api")

_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}\Z")  # \Z: `$` would let a final newline through
# The ids of this process: 48 random bits (the first set), then a 48-bit count, made in blocks of 256 (`_new_ids`).
_LAST_DIGITS = tuple(b"%02x" % n for n in range(256))
_LAST_DIGITS_TEXT = tuple(digits.decode() for digits in _LAST_DIGITS)
_prefix = 0
_blocks = itertools.count()
_ids: Iterator[tuple[bytes, str]] = iter(())


QUIET = "xcore_quiet"
_counting = True  # see `count_requests`


def count_requests(on: bool) -> None:
    """count_requests turns the counting of every request for the metrics on or off (`server.metrics`)."""
    global _counting
    _counting = on


def _new_cell(key: tuple[Any, str, int], scope: dict[str, Any]) -> Cell:
    """_new_cell is the metrics cell of a request key not seen before: its route part is the template Litestar
    matched, a mount's route handler (labelled with the mount's path), or None (no route matched)."""
    route = key[0]
    if route is None:
        label = tally.UNMATCHED
    elif isinstance(route, str):
        label = route
    else:
        app = scope.get("app")
        found = (r.path for r in getattr(app, "routes", ()) if getattr(r, "route_handler", None) is route)
        label = next(found, tally.UNMATCHED)
    return tally.request_cell(key, label)


def quiet(request: Any) -> None:
    """quiet keeps this request out of the request log unless it fails (status 400 or more)."""
    request.scope.setdefault("state", {})[QUIET] = True


def _reseed() -> None:
    """Each process (Granian forks its workers) draws its own prefix, so ids never repeat across workers."""
    global _prefix, _blocks, _ids
    _prefix = int.from_bytes(os.urandom(6), "big") | 1 << 47
    _blocks = itertools.count()
    _ids = iter(())


def _new_ids() -> tuple[bytes, str]:
    """_new_ids makes the next block of 256 ids (`_ids`) and returns its first, as bytes and as text.

    A block is one number of the count: its ids share their first 22 digits and end in 00 to ff. Two threads that
    both find the block used up take different blocks (`next` on a count is atomic), so ids never repeat.
    """
    global _ids
    head = b"%012x%010x" % (_prefix, next(_blocks))  # the prefix, then the count's first 10 of 12 digits
    head_text = head.decode()
    _ids = ids = zip(map(head.__add__, _LAST_DIGITS), map(head_text.__add__, _LAST_DIGITS_TEXT), strict=True)
    return next(ids)


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


async def logged(generation: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """logged serves one HTTP request on `generation` (the Switch's current app: `serve` calls it, and it counts
    the requests in flight, which a retiring generation waits on), adding the request id and logging the outcome.

    This is the hot path of every request, and the only coroutine xcore adds to it: the in-flight count, the
    id lookup and the request line are inline, and the line is a tuple appended to the access sink's queue (see
    `xcore.logs.access`).
    """
    start = perf_counter()
    rid = b""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _VALID_ID.match(value):
                rid = value
            break
    if rid:
        rid_text = rid.decode()
    else:
        try:
            rid, rid_text = next(_ids)
        except StopIteration:
            rid, rid_text = _new_ids()
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    state["request_id"] = rid_text
    status = 0  # until the response starts

    def send_with_id(message: dict[str, Any]) -> Any:
        # A plain function returning the server's awaitable: no extra coroutine per message.
        if message["type"] == "http.response.start":
            nonlocal status
            status = message["status"]
            headers = message.get("headers")
            if type(headers) is not list:
                message["headers"] = headers = [*(headers or ())]
            headers.append((b"x-request-id", rid))
            secure(headers, scope.get("scheme") == "https")  # the one place every response gets them
        return send(message)

    generation.inflight += 1
    try:
        await generation.serve(scope, receive, send_with_id)
    except Exception as exc:
        if generation.recover is None:
            raise
        await generation.recover(scope, receive, send_with_id, exc, status != 0)
    finally:
        generation.inflight -= 1
        if generation.retiring and generation.inflight == 0:
            generation.drained.set()
        if not status:
            status = 500  # no response: the server answers 500
        end = perf_counter()
        if _counting:
            key = (scope.get("path_template") or scope.get("route_handler"), scope["method"], status)
            cell = _cells.get(key)
            if cell is None:
                cell = _new_cell(key, scope)
            cell[bucket(BOUNDS, end - start)] += 1
            cell[-1] += end - start
        sink = access.SINK
        if status < 400 and QUIET in state:
            pass
        elif sink is not None:
            if sink.info or (status >= 500 and sink.error):
                pending = sink.pending
                pending.append((end, start, status, scope["method"], scope["path"], rid))
                if status >= 500 or len(pending) >= access.FLUSH_LINES:
                    sink.flush()
                elif not sink.scheduled:
                    sink.schedule()
        else:
            level = logging.ERROR if status >= 500 else logging.INFO
            if log.isEnabledFor(level):
                # makeRecord + handle rather than log.info: the caller's file and line mean nothing here.
                duration_ms = round((perf_counter() - start) * 1000, 2)
                method, path = scope.get("method", "?"), scope.get("path", "?")
                data = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
                extra = {"context": "api", "data": {**data, "request_id": rid_text}}
                message = f"{method} {path} {status} {duration_ms:.1f}ms id={rid_text}"
                record = log.makeRecord(log.name, level, __file__, 0, message, (), None, extra=extra)
                log.handle(record)
