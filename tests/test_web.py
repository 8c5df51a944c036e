"""The core routes, in process through litestar.testing: /health, /api/version, errors, request ids, logs."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import get
from litestar.response import Redirect
from litestar.testing import TestClient

from conftest import BACKEND, prepare_from_template
from xcore.db import migrate
from xcore.logs import access
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database
from xcore.web.app import build_app
from xcore.web.switch import Switch


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    """A client of the Switch exactly as a Granian worker serves it, with one extra public route that crashes."""

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/boom": {"public": true}}'})
    prepare_from_template(runtime)
    switch = Switch(lambda: build_app(runtime, [boom]))
    with TestClient(switch) as test_client:  # type: ignore[arg-type]
        yield test_client
    runtime.close()


def test_health_reports_database_version_and_uptime(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["uptime_seconds"] >= 0
    assert body["database"]["status"] == "ok"
    assert body["database"]["backend"] == BACKEND  # "sqlite", or "postgresql" with XCORE_TEST_DATABASE=postgresql
    assert body["database"]["revision"] == body["database"]["head"] == migrate.head_revision()


def test_health_is_503_when_the_database_is_gone(runtime: Runtime, tmp_path: Path) -> None:
    from xcore.config.loader import LoadedConfig

    (tmp_path / "dir.db").mkdir()  # a directory where the database file should be
    broken_config = runtime.config.__class__(
        xcore=runtime.config.xcore.__class__(
            data=runtime.config.xcore.data.__class__(url=f"sqlite:///{tmp_path}/dir.db")
        )
    )
    broken = Runtime(LoadedConfig(broken_config, {}), runtime.data)
    with TestClient(build_app(broken)) as test_client:
        response = test_client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["status"] == "error"
    assert "unable to open database file" in body["database"]["error"]


def test_health_is_503_when_migrations_are_missing(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alembic_version")
    with TestClient(build_app(runtime)) as test_client:
        response = test_client.get("/health")
    assert response.status_code == 503
    assert response.json()["database"]["status"] == "outdated"


def test_version(client: TestClient) -> None:
    response = client.get("/api/version")
    assert response.status_code == 200
    assert response.json()["name"] == "xcore"
    assert response.json()["version"] == "0.1.0"


def test_openapi_lists_the_live_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "xcore"
    assert {"/health", "/api/version", "/boom"} <= set(schema["paths"])
    assert "/docs" not in schema["paths"]


def test_unknown_path_under_a_public_rule_is_a_json_404(client: TestClient) -> None:
    response = client.get("/static/vendor/no/such/file.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["type"], body["title"], body["status"]) == ("about:blank", "Not Found", 404) and body["detail"]


def test_unknown_path_elsewhere_is_refused_like_any_path_no_rule_opens(client: TestClient) -> None:
    # The guard runs before routing: whether a route exists is not told to someone who may not see it.
    response = client.get("/no/such/page")
    assert response.status_code == 503  # no account exists yet in this fixture; 401 after setup
    assert response.headers["content-type"] == "application/problem+json"
    assert "setup required" in response.json()["detail"]


def test_wrong_method_is_405(client: TestClient) -> None:
    assert client.post("/api/version").status_code == 405


def test_a_crash_is_a_plain_500_without_internals(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="xcore.api"):
        response = client.get("/boom", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 500
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "Internal server error",
        "request_id": "trace-me-1",
    }
    assert "secret internals" not in response.text and "Traceback" not in response.text
    crash = next(r for r in caplog.records if r.getMessage().startswith("unhandled error in GET /boom"))
    assert crash.exc_info is not None, "the traceback goes to the log, not to the client"


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/api/version", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/api/version").headers["x-request-id"]
    assert len(made) == 24
    assert client.get("/api/version").headers["x-request-id"] != made
    evil = client.get("/api/version", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    assert evil.headers["x-request-id"] != "bad id" and " " not in evil.headers["x-request-id"]


def test_every_request_is_logged(client: TestClient, runtime: Runtime) -> None:
    client.get("/api/version", headers={"X-Request-ID": "log-me"})
    client.get("/static/vendor/missing.js")
    access.flush()
    assert runtime.log_file is not None
    entries = [json.loads(line) for line in runtime.log_file.read_text().splitlines()]
    by_path = {e["path"]: e for e in entries if e.get("context") == "api" and "path" in e}
    version = by_path["/api/version"]
    assert version["method"] == "GET" and version["status"] == 200 and version["request_id"] == "log-me"
    assert version["message"] == f"GET /api/version 200 {version['duration_ms']:.1f}ms id=log-me"
    assert version["level"] == "INFO" and version["logger"] == "xcore.api"
    assert by_path["/static/vendor/missing.js"]["status"] == 404


def test_request_lines_fall_back_to_ordinary_logging(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    access.detach()  # as under someone else's logging setup
    with TestClient(Switch(lambda: build_app(runtime))) as test_client, caplog.at_level(logging.INFO):
        test_client.get("/api/version", headers={"X-Request-ID": "plain-record"})
    record = next(r for r in caplog.records if getattr(r, "data", {}).get("request_id") == "plain-record")
    assert record.context == "api" and record.data["status"] == 200  # type: ignore[attr-defined]


def test_health_counts_the_plugins_by_state(runtime: Runtime, tmp_path: Path) -> None:
    from conftest import plugin_host

    dev = tmp_path / "dev"
    for plugin_id, code in (("fine", "x = 1\n"), ("broken", "broken(\n")):
        (dev / plugin_id).mkdir(parents=True)
        (dev / plugin_id / "plugin.json").write_text(json.dumps({"id": plugin_id, "version": "0.1.0"}))
        (dev / plugin_id / "run.py").write_text(code)
    with plugin_host(runtime, [dev]) as host:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            plugins = host.get("/health").json()["plugins"]
            if plugins["active"] + plugins["failed"] == 2:
                break
            time.sleep(0.1)
        # The broken plugin's one version failed; `failed_versions` would also count a failed upgrade of a plugin
        # that stays active (test_plugin_manager's test_a_broken_new_version_leaves_the_old_one_serving).
        assert plugins == {"active": 1, "disabled": 0, "failed": 1, "pending": 0, "failed_versions": 1}
    # Without a plugin manager (an app built for a test), there is nothing to count.
    with TestClient(build_app(runtime)) as plain:
        assert plain.get("/health").json()["plugins"] is None


# Security headers: one set, on every answer


SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def assert_secured(response: Any, https: bool = False) -> str:
    """assert_secured checks the security headers of one answer and returns its Content-Security-Policy."""
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    for name, value in SECURITY.items():
        assert response.headers.get_list(name) == [value], where
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1 and "frame-ancestors 'none'" in policies[0], where
    assert "default-src 'self'" in policies[0] and "unsafe-eval" not in policies[0], where
    hsts = response.headers.get_list("strict-transport-security")
    assert hsts == (["max-age=31536000"] if https else []), where
    return policies[0]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_every_answer_carries_the_security_headers(data_dir: Path, scheme: str) -> None:
    """Success, refusal (401, 403, 503), 404, 405, a crash, a redirect, static files, the docs pages and a
    plugin's route: every answer the worker sends has the same set, HSTS only over https."""
    from conftest import PASSWORDS, create_account, plugin_host

    @get("/go", sync_to_thread=False)
    def go() -> Redirect:
        return Redirect("/health")

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    rules = '{"/boom": {"public": true}, "/go": {"public": true}}'
    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": rules})
    prepare_database(runtime)
    switch = Switch(lambda: build_app(runtime, [boom, go]))
    with TestClient(switch, base_url=f"{scheme}://testserver.local") as client:  # type: ignore[arg-type]
        https = scheme == "https"
        assert_secured(client.get("/no/such/page"), https)  # 503 before setup
        create_account(runtime, "root", ["superadmin"])
        create_account(runtime, "bob", ["user"])
        token = client.post("/api/auth/login", json={"username": "bob", "password": PASSWORDS["bob"]}).json()
        bob = {"Authorization": f"Bearer {token['access_token']}"}
        answers = [
            client.get("/health"),
            client.get("/api/version"),
            client.post("/api/version"),  # 405
            client.get("/api/admin/users"),  # 401
            client.get("/api/admin/users", headers=bob),  # 403
            client.get("/no/such/page", headers=bob),  # 404
            client.get("/static/vendor/no/such/file.js"),  # 404 under a public rule
            client.get("/health%00"),  # refused by the guard, 400
            client.get("/boom"),  # 500
            client.get("/go", follow_redirects=False),  # 302
            client.get("/openapi.json"),
            client.get("/static/vendor/swagger-ui/swagger-ui.css"),
            client.get("/admin"),
            client.get("/admin/static/app.js"),
            client.post("/api/auth/login", content=b"{not json", headers={"content-type": "application/json"}),
        ]
        statuses = [a.status_code for a in answers]
        assert statuses == [200, 200, 405, 401, 403, 404, 404, 400, 500, 302, 200, 200, 200, 200, 400], statuses
        for answer in answers:
            assert_secured(answer, https)
        # The docs pages: xcore's origin, and the page's own inline script by its hash, nothing else.
        for page in ("/docs", "/redoc"):
            policy = assert_secured(client.get(page), https)
            assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}';", policy), policy
            assert "unsafe-inline" not in policy.split("style-src")[0]  # scripts: only the hashed one
    runtime.close()
    # A plugin's route, served by the plugins' app beside the core's.
    runtime = open_runtime(data_dir, environ={})
    with plugin_host(runtime, [Path(__file__).parent.parent / "plugins"]) as host:
        deadline = time.monotonic() + 15
        while host.get("/app/hello/", headers=bob).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_secured(host.get("/app/hello/", headers=bob))
        assert_secured(host.get("/app/hello/nothing-here", headers=bob))
    runtime.close()


def test_a_route_that_sets_a_security_header_keeps_its_value() -> None:
    from xcore.web.headers import POLICY, secure

    headers = [(b"content-security-policy", b"default-src 'none'"), (b"content-type", b"text/html")]
    secure(headers, https=False)
    names = [name for name, _ in headers]
    assert names.count(b"content-security-policy") == 1 and headers[0][1] == b"default-src 'none'"
    assert b"x-content-type-options" in names and b"strict-transport-security" not in names
    # A name in another case than ASGI's lower case gets xcore's policy too: browsers enforce both, never less.
    odd = [(b"Content-Security-Policy", b"default-src 'none'")]
    secure(odd, https=False)
    assert odd[0] == (b"Content-Security-Policy", b"default-src 'none'")
    assert (b"content-security-policy", POLICY.encode()) in odd
    plain: list[tuple[bytes, bytes]] = []
    secure(plain, https=True)
    assert dict(plain)[b"content-security-policy"] == POLICY.encode()
    assert dict(plain)[b"strict-transport-security"] == b"max-age=31536000"


# The OpenAPI document describes the errors that are sent

JSON_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def schema_violations(value: Any, schema: dict[str, Any], components: dict[str, Any], where: str = "$") -> list[str]:
    """schema_violations checks `value` against the JSON-schema keywords the documented error schemas use:
    $ref, type, required, properties, additionalProperties, items, minimum, maximum."""
    if "$ref" in schema:
        return schema_violations(value, components[schema["$ref"].rsplit("/", 1)[-1]], components, where)
    found: list[str] = []
    types = schema.get("type")
    if types is not None:
        allowed = tuple(JSON_TYPES[t] for t in ([types] if isinstance(types, str) else types))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            return [f"{where}: {value!r} is not of type {types}"]
    if isinstance(value, dict):
        found += [f"{where}: {name!r} is missing" for name in schema.get("required", []) if name not in value]
        properties = schema.get("properties", {})
        for name, member in value.items():
            if name in properties:
                found += schema_violations(member, properties[name], components, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: {name!r} is not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += schema_violations(item, schema["items"], components, f"{where}[{i}]")
    if isinstance(value, int) and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        found.append(f"{where}: {value} is out of range")
    return found


def test_the_openapi_document_describes_the_problem_documents_that_are_sent(data_dir: Path) -> None:
    """Every operation's error responses are RFC 9457 problem documents (application/problem+json, the
    ProblemDetails schema), and real error answers of every kind match that schema."""
    from conftest import PASSWORDS, create_account

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/boom": {"public": true}}'})
    prepare_database(runtime)
    with TestClient(Switch(lambda: build_app(runtime, [boom]))) as client:  # type: ignore[arg-type]
        answers = [client.get("/api/admin/users")]  # 503: setup required
        document = client.get("/openapi.json").json()
        create_account(runtime, "root", ["superadmin"])
        create_account(runtime, "bob", ["user"])
        bob = client.post("/api/auth/login", json={"username": "bob", "password": PASSWORDS["bob"]}).json()
        headers = {"Authorization": f"Bearer {bob['access_token']}"}
        answers += [
            client.post("/api/auth/login", json={"username": "bob", "password": "wrong-password-1"}),  # 401
            client.post("/api/auth/login", json={"username": 7}),  # 400, errors
            client.get("/api/admin/users"),  # 401
            client.get("/api/admin/users", headers=headers),  # 403
            client.get("/no/such/page", headers=headers),  # 404
            client.post("/api/version"),  # 405
            client.get("/health%00"),  # 400 from the guard
            client.get("/api/admin/" + "a" * 5000),  # 414
            client.post("/api/setup", json={"token": "x" * 20, "username": "eve", "password": "x" * 20}),  # 409
            client.get("/boom"),  # 500
        ]
        assert {a.status_code for a in answers} == {400, 401, 403, 404, 405, 409, 414, 500, 503}
        litestars = client.get("/schema/openapi.json", headers=headers).json()  # Litestar's own copy says the same
        assert "ProblemDetails" in litestars["components"]["schemas"]
        assert '"status_code"' not in json.dumps(litestars["paths"])
    runtime.close()

    components = document["components"]["schemas"]
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]
    assert len(operations) > 40
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for name, operation in operations:
        errors = {s: r for s, r in operation["responses"].items() if s == "default" or s[:1] in "45"}
        assert "default" in errors, name
        for status, response in errors.items():
            assert response["content"] == problem, f"{name} {status}"
    assert '"status_code"' not in json.dumps(document["paths"])  # Litestar's own error body is described nowhere

    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path[:40]} -> {answer.status_code}"
        assert answer.headers["content-type"] == "application/problem+json", where
        body = answer.json()
        assert body["status"] == answer.status_code, where
        assert schema_violations(body, {"$ref": "#/components/schemas/ProblemDetails"}, components) == [], where
    # The schema checker is not vacuous: Litestar's body, which the document used to describe, fails it.
    litestar_body = {"status_code": 400, "detail": "Bad Request", "extra": {}}
    assert schema_violations(litestar_body, components["ProblemDetails"], components)


def test_a_plugins_operations_describe_their_errors_as_problem_documents(runtime: Runtime) -> None:
    from conftest import plugin_host

    with plugin_host(runtime, [Path(__file__).parent.parent / "plugins"]) as host:
        deadline = time.monotonic() + 15
        while not any(p.startswith("/app/hello") for p in host.get("/openapi.json").json()["paths"]):
            assert time.monotonic() < deadline, "the hello plugin did not load"
            time.sleep(0.1)
        document = host.get("/openapi.json").json()
    hello = next(item for path, item in document["paths"].items() if path.startswith("/app/hello"))
    ref = hello["get"]["responses"]["default"]["content"]["application/problem+json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ProblemDetails" and "ProblemDetails" in document["components"]["schemas"]
