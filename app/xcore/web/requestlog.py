"""Request logging and request ids, as a thin ASGI wrapper around whatever app the Switch serves.

It sits outside Litestar so that every request is logged, including 404s for paths no route matches and
requests that arrive while apps are being swapped. Each request gets an id: the client's `X-Request-ID`
when it is sane (1-128 characters of letters, digits, `.`, `_`, `-`), else a new one: a random prefix
drawn once per process plus a counter (a system call for randomness on every request costs measurably). The id is
echoed in the response's `X-Request-ID` header, stored in `scope["state"]["request_id"]`, and logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from xcore.logs import access

log = logging.getLogger("xcore.api")

_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
_HEADER = b"x-request-id"
_PREFIX = b""
_counter = itertools.count(1)


def _reseed() -> None:
    """Each process (Granian forks its workers) draws its own prefix, so ids never repeat across workers."""
    global _PREFIX, _counter
    _PREFIX = os.urandom(6).hex().encode()
    _counter = itertools.count(1)


_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> bytes:
    """request_id_from returns the client's request id when it is sane, else a new random one."""
    for name, value in headers:
        if name == _HEADER or (len(name) == 12 and name.lower() == _HEADER):
            if _VALID_ID.match(value):
                return value
            break
    return b"%s%012x" % (_PREFIX, next(_counter))


async def logged(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """logged runs one HTTP request through `app`, adding the request id and logging the outcome."""
    start = time.perf_counter()
    rid = request_id_from(scope.get("headers") or [])
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    state["request_id"] = rid_text = rid.decode()
    status = 500

    def send_with_id(message: dict[str, Any]) -> Any:
        # A plain function returning the server's awaitable: no extra coroutine per message.
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = message.get("headers")
            if type(headers) is list:
                headers.append((_HEADER, rid))
            else:
                message["headers"] = [*(headers or ()), (_HEADER, rid)]
        return send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        level = logging.ERROR if status >= 500 else logging.INFO
        if log.isEnabledFor(level):
            duration_ms = round((time.perf_counter() - start) * 1000, 2)
            method = scope.get("method", "?")
            path = scope.get("path", "?")
            fast = access.sink()
            if fast is not None:
                fast.write(time.time(), level, method, path, status, duration_ms, rid_text)
            else:
                # makeRecord + handle rather than log.info: the caller's file and line mean nothing here.
                data = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
                extra = {"context": "api", "data": {**data, "request_id": rid_text}}
                message = f"{method} {path} {status} {duration_ms:.1f}ms id={rid_text}"
                record = log.makeRecord(log.name, level, __file__, 0, message, (), None, extra=extra)
                log.handle(record)
