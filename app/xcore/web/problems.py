"""Every error answer is an RFC 9457 problem document (`application/problem+json`) with a clear `detail`.

Every error of xcore's own that a request can meet is a `RequestError` (`xcore.errors`), answered one way: its
status, title, detail, fields at fault (in `errors`) and extension members. Litestar's own exceptions are answered
in the same shape, validation errors listing the fields at fault. A client's mistake is never a 500; an unexpected
exception is logged with its traceback and answered with a plain 500 that carries only the request id.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from xcore.errors import DatabaseError, FieldProblem, RequestError

SQLITE_INTEGER_MAX = 2**63 - 1
# What PostgreSQL refuses in a value that SQLite stores as it comes (its SQLSTATE), said as the client's mistake.
POSTGRES_DATA_ERRORS = {
    "22003": "a number in the request is out of range for the database",
    "22001": "a text in the request is longer than the database takes",
    "22P05": "a text in the request holds a character the database cannot store",
    "22021": "a text in the request holds a character the database cannot store",
}
NUL_IN_TEXT = "a text in the request holds a NUL character (\\u0000), which the database cannot store"

log = logging.getLogger("xcore.api")

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """problem builds one problem response; `extra` members are added to the document (RFC 9457 extensions)."""
    body = problem_document(status, detail, errors=errors, **extra)
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_document(
    status: int, detail: str, *, errors: list[dict[str, Any]] | None = None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """problem_document is the JSON of one problem: type, title (by default the HTTP phrase), status, detail,
    extensions."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """handle_exception turns any exception into a problem response; only unexpected ones are logged as errors."""
    exc = client_mistake(exc) or exc
    if isinstance(exc, RequestError):
        status, document, headers = error_problem(exc)
        return Response(document, status_code=status, headers=headers, media_type=PROBLEM_JSON)
    if isinstance(exc, ValidationException):
        return _validation_problem(exc)
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, DatabaseError):  # the server's own trouble, not the request's: logged, without a traceback
        log.error("database error in %s %s: %s", request.method, request.url.path, exc)
        return problem(503, str(exc))
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal server error", request_id=request_id)


def error_problem(exc: RequestError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """error_problem is the status, problem document and headers that answer `exc`: its detail, its title (the
    HTTP phrase unless it sets one), its fields at fault as `errors`, and its `extra` members."""
    errors = [field_document(problem) for problem in exc.fields]
    document = problem_document(exc.status, exc.detail, errors=errors, title=exc.title, **exc.extra)
    return exc.status, document, dict(exc.headers)


def field_document(problem: FieldProblem) -> dict[str, Any]:
    """field_document is one entry of a problem document's `errors`: field and message, and rule when it has one."""
    found: dict[str, Any] = {"field": problem.field, "message": problem.message}
    if problem.rule is not None:
        found["rule"] = problem.rule
    return found


def client_mistake(exc: Exception) -> RequestError | None:
    """client_mistake is the RequestError for an exception of Python's own that a client's input caused, else None."""
    if isinstance(exc, UnicodeDecodeError):  # Litestar lets it through from a body that is not UTF-8
        return RequestError("the request body is not valid UTF-8 text")
    if isinstance(exc, OverflowError) and "SQLite INTEGER" in str(exc):
        # sqlite3 cannot even bind an integer past 64 bits: a number the client sent (a plugin's `{id:int}` path
        # parameter, a JSON field) that no row can have. The core's own id parameters are bounded already.
        return RequestError(f"a number in the request is out of range (the largest is {SQLITE_INTEGER_MAX})")
    return _refused_value(exc)


def _refused_value(exc: Exception) -> RequestError | None:
    """_refused_value is the RequestError for a value PostgreSQL refused (a number past a column's range, a NUL
    character in a text) where SQLite would have stored it: the client's value, not the server's fault."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None  # and SQLAlchemy stays out of a sandbox worker, which answers its errors with this module
    from sqlalchemy.exc import DataError

    if not isinstance(exc, DataError):
        return None
    if "NUL (0x00)" in str(exc.orig):  # psycopg's own check, before the value is sent
        return RequestError(NUL_IN_TEXT)
    detail = POSTGRES_DATA_ERRORS.get(getattr(exc.orig, "sqlstate", None) or "")
    return RequestError(detail) if detail else None


# msgspec names the failing field as "... - at `$.roles[0]`", or "unknown field `rolez`".
_MSGSPEC_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]*)`")
# msgspec's words when a form field that must be a file (the only non-JSON type in xcore's forms) is not one.
_UNSUPPORTED = {
    "Unsupported type: <class 'str'>": "expected a file, got text",
    "Unsupported type: <class 'list'>": "expected one file, got several",
}


def _field_of(message: str) -> str | None:
    found = _MSGSPEC_PATH.search(message) or _UNKNOWN_FIELD.search(message) or _MISSING_FIELD.search(message)
    return found.group(1) or None if found else None


def _validation_problem(exc: ValidationException) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            field = _field_of(message) or item.get("key") or None
            text = _MSGSPEC_PATH.sub("", message)
            errors.append({"field": field, "message": _UNSUPPORTED.get(text, text), "source": item.get("source")})
    if errors:
        first = errors[0]
        where = f" (field {first['field']!r})" if first["field"] else ""
        detail = f"the request is not valid: {first['message']}{where}"
    else:
        detail = f"the request is not valid: {exc.detail}"
    return problem(400, detail, errors=errors or None)
