"""Limits on the shape of a JSON request body, checked before any handler, the core's or a plugin's, decodes it.

The body's size is bounded already (Litestar's `request_max_body_size`, 10 MB), but ten megabytes can hold a
hundred thousand nested `[` (the decoder runs out of stack: a RecursionError, which was a 500) or a list of a
million items that a handler then loops over or binds into one SQL statement ("too many SQL variables", a 500
after seconds of work). Every JSON body is therefore decoded once here, generically, and refused when it nests
deeper than MAX_DEPTH or has an array or object of more than MAX_ITEMS entries: 400 for the depth, 413 for the
size, as a problem document naming the limit and where in the body it was passed (`$.roles`).

A body is checked whatever its Content-Type says when it starts as a JSON array or object: Litestar decodes a
route's `data` as JSON whatever the header, and a plugin may decode the bytes itself. A body that is not valid
JSON is left to the handler, whose own validation says what is wrong with it. The check rides on the request's
`receive` (`shape_checked`, which the access guard applies to every request with a body), so it adds no layer
to the routes: a Litestar middleware would put a second error layer in front of every route, GETs included,
which measurably slows the cheapest routes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.types import Receive, ReceiveMessage

from xcore.errors import RequestError

MAX_DEPTH = 32
"""MAX_DEPTH is how deeply arrays and objects may nest in a JSON request body (`[[1]]` is 2 deep)."""
MAX_ITEMS = 10_000
"""MAX_ITEMS is how many entries one array or object of a JSON request body may have."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""BODY_METHODS are the methods whose requests have their body checked."""
_decode = msgspec.json.Decoder().decode


class BodyShapeError(RequestError):
    """BodyShapeError is a JSON body past MAX_DEPTH (status 400) or MAX_ITEMS (status 413)."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message, status=status, field=field)


def check_shape(value: Any, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> None:
    """check_shape raises BodyShapeError when `value` (decoded JSON) nests deeper than `max_depth` or has an array
    or object of more than `max_items` entries; the error names the JSON path (`$.roles`, `$[0].a`). It visits
    each array and object once, without recursion; one past `max_items` is refused by its length alone."""
    if not isinstance(value, list | dict):
        return
    stack: list[tuple[Any, int, str]] = [(value, 1, "$")]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise BodyShapeError(
                400, f"the JSON body nests arrays and objects deeper than {max_depth} levels (at {path})", path
            )
        if len(node) > max_items:
            kind = "array" if isinstance(node, list) else "object"
            raise BodyShapeError(
                413, f"the JSON {kind} at {path} has {len(node)} entries; the limit is {max_items}", path
            )
        items = enumerate(node) if isinstance(node, list) else node.items()
        for key, child in items:
            if isinstance(child, list | dict):
                stack.append((child, depth + 1, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"))


def check_json_body(body: bytes) -> None:
    """check_json_body raises BodyShapeError when `body` is JSON past the limits; any other body passes."""
    start = body.lstrip()[:1]
    if start not in (b"[", b"{"):
        return  # a scalar or no JSON at all: nothing nests
    try:
        value = _decode(body)
    except RecursionError:  # deeper than the decoder's stack: far past MAX_DEPTH
        raise BodyShapeError(
            400, f"the JSON body nests arrays and objects deeper than {MAX_DEPTH} levels", "$"
        ) from None
    except msgspec.DecodeError:
        return  # not JSON: the handler's own validation says what is wrong
    check_shape(value)


def shape_checked(receive: Receive) -> Receive:
    """shape_checked wraps a request's `receive` so that a body that starts as a JSON array or object is checked
    by check_json_body once its last chunk has arrived, before the handler that reads it sees that chunk. A body
    past the limits raises BodyShapeError from the handler's own read, which the app's error handling answers
    as a problem document. Any other body (a form, a multipart upload, bytes) passes untouched and unbuffered.
    """
    chunks: list[bytes] = []
    looks_like_json: bool | None = None  # undecided until the first byte that is not whitespace

    async def receive_checked() -> ReceiveMessage:
        nonlocal looks_like_json
        message = await receive()
        if message["type"] != "http.request" or looks_like_json is False:
            return message
        body: bytes = message.get("body", b"")
        if looks_like_json is None and (start := body.lstrip()[:1]):
            looks_like_json = start in (b"[", b"{")
            if not looks_like_json:
                chunks.clear()
        if looks_like_json is not False:
            chunks.append(body)
            if not message.get("more_body", False) and looks_like_json:
                check_json_body(b"".join(chunks))
        return message

    return receive_checked
