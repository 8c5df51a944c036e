"""Every error answer is an RFC 9457 problem document (`application/problem+json`) with a clear `detail`.

Validation errors list the fields at fault in `errors`. A client's mistake is never a 500; an unexpected
exception is logged with its traceback and answered with a plain 500 that carries only the request id.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from xcore.auth.errors import AuthError, NotAuthenticated
from xcore.errors import DatabaseError, RequestError
from xcore.plugins.bundle import BundleError
from xcore.web.schemas import ROW_ID_MAX

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
    status: int, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """problem_document is the JSON of one problem: type, title (the HTTP phrase), status, detail, extensions."""
    body: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status, "detail": detail}
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
    if isinstance(exc, AuthError):
        status, document, headers = auth_problem(exc)
        return Response(document, status_code=status, headers=headers, media_type=PROBLEM_JSON)
    if isinstance(exc, ValidationException):
        return _validation_problem(exc)
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, UnicodeDecodeError):  # Litestar lets it through from a body that is not UTF-8
        return problem(400, "the request body is not valid UTF-8 text")
    if isinstance(exc, OverflowError) and "SQLite INTEGER" in str(exc):
        # sqlite3 cannot even bind an integer past 64 bits: a number the client sent (a plugin's `{id:int}` path
        # parameter, a JSON field) that no row can have. The core's own id parameters are bounded already.
        return problem(400, f"a number in the request is out of range (the largest is {ROW_ID_MAX})")
    if isinstance(exc, BundleError):
        errors = [{"field": exc.entry, "message": exc.detail, "rule": exc.rule}]
        return problem(422, str(exc), errors=errors, rule=exc.rule, entry=exc.entry)
    if isinstance(exc, RequestError):
        fields = [{"field": field, "message": message} for field, message in exc.errors]
        return problem(exc.status, str(exc), errors=fields or None)
    if isinstance(exc, DatabaseError):
        log.error("database error in %s %s: %s", request.method, request.url.path, exc)
        return problem(503, str(exc))
    request_id = request.scope.get("state", {}).get("request_id")
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal server error", request_id=request_id)


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


def auth_problem(exc: AuthError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """auth_problem is the status, document and headers answering an AuthError (401s say how to authenticate)."""
    headers = dict(exc.headers)
    if isinstance(exc, NotAuthenticated):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="xcore"')
    errors = [{"field": exc.field, "message": str(exc)}] if exc.field else None
    return exc.status, problem_document(exc.status, str(exc), errors=errors, **exc.extra), headers


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
