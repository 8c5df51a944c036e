"""Request logging and request ids, as a thin ASGI wrapper around whatever app the Switch serves.

It sits outside Litestar so that every request is logged, including 404s for paths no route matches and
requests that arrive while apps are being swapped. Each request gets an id: the client's `X-Request-ID`
when it is sane (1-128 characters of letters, digits, `.`, `_`, `-`), else a new random one. The id is
echoed in the response's `X-Request-ID` header, stored in `scope["state"]["request_id"]`, and logged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

log = logging.getLogger("xcore.api")

_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
_HEADER = b"x-request-id"


def request_id_from(headers: list[tuple[bytes, bytes]]) -> bytes:
    """request_id_from returns the client's request id when it is sane, else a new random one."""
    for name, value in headers:
        if name == _HEADER or (len(name) == 12 and name.lower() == _HEADER):
            if _VALID_ID.match(value):
                return value
            break
    return os.urandom(12).hex().encode()


async def logged(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """logged runs one HTTP request through `app`, adding the request id and logging the outcome."""
    start = time.perf_counter()
    rid = request_id_from(scope.get("headers") or [])
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    state["request_id"] = rid_text = rid.decode()
    status = 500

    async def send_with_id(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), (_HEADER, rid)]
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    finally:
        duration_ms = round((time.perf_counter() - start) * 1000, 2)
        method = scope.get("method", "?")
        path = scope.get("path", "?")
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s %d %.1fms id=%s",
            method,
            path,
            status,
            duration_ms,
            rid_text,
            extra={
                "context": "api",
                "data": {
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "request_id": rid_text,
                },
            },
        )
