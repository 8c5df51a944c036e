"""Every error of xcore's own is answered one way: a RequestError, of any family, becomes an RFC 9457 problem
document with its status, title, detail, fields at fault, extension members and headers."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import get
from litestar.testing import create_test_client

from xcore.auth.errors import Busy, Forbidden, NotAuthenticated
from xcore.errors import FieldProblem, RequestError
from xcore.plugins.bundle import BundleError
from xcore.plugins.errors import PluginNotFound
from xcore.web.problems import PROBLEM_JSON, handle_exception


class Teapot(RequestError):
    """Teapot is an error family of its own that sets a status and a title, and nothing else."""

    status, title = 418, "Short and stout"


def document(status: int, title: str, detail: str, **members: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **members}


CASES = [
    pytest.param(
        RequestError("x must be a number", field="x"),
        document(400, "Bad Request", "x must be a number", errors=[{"field": "x", "message": "x must be a number"}]),
        {},
        id="field",
    ),
    pytest.param(
        RequestError("the role is in use", status=409), document(409, "Conflict", "the role is in use"), {}, id="status"
    ),
    pytest.param(
        PluginNotFound("plugin 'todo' is not installed"),
        document(404, "Not Found", "plugin 'todo' is not installed"),
        {},
        id="plugin",
    ),
    pytest.param(
        NotAuthenticated("log in first"),
        document(401, "Unauthorized", "log in first"),
        {"www-authenticate": 'Bearer realm="xcore"'},
        id="challenge",
    ),
    pytest.param(
        Busy("the server is at its limit", retry_after=3),
        document(503, "Service Unavailable", "the server is at its limit"),
        {"retry-after": "3"},
        id="retry-after",
    ),
    pytest.param(
        Forbidden("enroll in 2FA first", extra={"totp_enrollment_required": True}),
        document(403, "Forbidden", "enroll in 2FA first", totp_enrollment_required=True),
        {},
        id="extension",
    ),
    pytest.param(
        BundleError("todo.zip", "symlink", "a symbolic link", "link"),
        document(
            422,
            "Unprocessable Entity",
            "bundle todo.zip: symlink: a symbolic link (entry 'link')",
            errors=[{"field": "link", "message": "a symbolic link", "rule": "symlink"}],
            rule="symlink",
            entry="link",
        ),
        {},
        id="bundle",
    ),
    pytest.param(
        Teapot("no coffee here", fields=[FieldProblem("pot", "holds tea"), FieldProblem(None, "and is short")]),
        document(
            418,
            "Short and stout",
            "no coffee here",
            errors=[{"field": "pot", "message": "holds tea"}, {"field": None, "message": "and is short"}],
        ),
        {},
        id="family",
    ),
]


@pytest.mark.parametrize(("error", "body", "headers"), CASES)
def test_a_request_error_is_answered_as_one_problem_document(
    error: RequestError, body: dict[str, Any], headers: dict[str, str]
) -> None:
    @get("/", sync_to_thread=False)
    def refuse() -> None:
        raise error

    with create_test_client([refuse], exception_handlers={Exception: handle_exception}) as client:
        response = client.get("/")
    assert (response.status_code, response.json()) == (body["status"], body)
    assert response.headers["content-type"] == PROBLEM_JSON
    assert {name: response.headers.get(name) for name in headers} == headers
