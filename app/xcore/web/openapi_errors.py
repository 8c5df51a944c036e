"""What the OpenAPI document says of errors: what xcore sends, an RFC 9457 problem document.

Litestar describes an error answer as its own `{status_code, detail, extra}` body in `application/json`; xcore
answers every error with `problem_document` (`xcore.web.problems`) as `application/problem+json`.
`describe_problems` rewrites a document to say so: each operation's error responses, and a `default` response
on every operation (any request can be refused by the access guard, or fail), refer to the `ProblemDetails`
schema. tests/test_web.py checks real error answers against it.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar

from xcore.web.problems import PROBLEM_JSON

SCHEMA = "ProblemDetails"
FIELD_SCHEMA = "ProblemFieldError"

PROBLEM_SCHEMAS: dict[str, Any] = {
    SCHEMA: {
        "type": "object",
        "description": "An RFC 9457 problem document: every error answer of xcore and of its plugins' routes.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "description": "The kind of problem; about:blank: the status says it."},
            "title": {"type": "string", "description": "The HTTP status's phrase, e.g. Not Found."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status."},
            "detail": {"type": "string", "description": "What went wrong, naming the thing, and what to do."},
            "errors": {
                "type": "array",
                "items": {"$ref": f"#/components/schemas/{FIELD_SCHEMA}"},
                "description": "The inputs at fault, when the request was not valid.",
            },
            "request_id": {
                "type": ["string", "null"],
                "description": "On a 500: the request's id (X-Request-ID), to find it in the log.",
            },
        },
        "additionalProperties": True,  # RFC 9457 extensions: e.g. totp_required, rule, entry
    },
    FIELD_SCHEMA: {
        "type": "object",
        "required": ["field", "message"],
        "properties": {
            "field": {"type": ["string", "null"], "description": "The input at fault: a field, parameter or entry."},
            "message": {"type": "string", "description": "What is wrong with it."},
            "source": {"type": ["string", "null"], "description": "Where it was: body, query, path, header..."},
            "rule": {"type": "string", "description": "The rule a plugin bundle broke."},
        },
        "additionalProperties": True,
    },
}


def problem_response(description: str) -> dict[str, Any]:
    """problem_response is an OpenAPI response object whose body is a problem document."""
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{SCHEMA}"}}},
    }


DEFAULT = problem_response(
    "An error, as an RFC 9457 problem document; the status says which: 400 a request that is not valid, 401 not "
    "logged in, 403 not allowed (ACCESS_RULES), 404, 409, 422, 429 too many attempts (Retry-After), 503 setup "
    "required or unavailable, 500 an unexpected failure (with request_id)."
)
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def describe_problems(document: dict[str, Any]) -> dict[str, Any]:
    """describe_problems returns `document` (an OpenAPI dict, left unchanged) with every error response of every
    operation described as a problem document, a `default` one added, and the problem schemas in components."""
    paths = {}
    for path, item in document.get("paths", {}).items():
        new_item = dict(item)
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            responses = {}
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    response = problem_response(response.get("description") or "An error")
                responses[status] = response
            responses.setdefault("default", DEFAULT)
            new_item[method] = {**operation, "responses": responses}
        paths[path] = new_item
    components = dict(document.get("components", {}))
    components["schemas"] = {**components.get("schemas", {}), **PROBLEM_SCHEMAS}
    return {**document, "paths": paths, "components": components}


def core_openapi(core: Litestar) -> dict[str, Any]:
    """core_openapi is the core app's OpenAPI document as a dict, computed once per core app, with its errors
    described as the problem documents they are (`describe_problems`)."""
    cached: dict[str, Any] | None = getattr(core.state, "openapi_document", None)
    if cached is None:
        cached = describe_problems(core.openapi_schema.to_schema())
        core.state.openapi_document = cached
    return cached
