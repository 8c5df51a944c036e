"""The core routes, in process through litestar.testing: /health, /api/version, errors, request ids, logs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import get
from litestar.testing import TestClient

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
    prepare_database(runtime)
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
    assert body["database"]["backend"] == "sqlite"
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
        assert plugins == {"active": 1, "disabled": 0, "failed": 1, "pending": 0}
    # Without a plugin manager (an app built for a test), there is nothing to count.
    with TestClient(build_app(runtime)) as plain:
        assert plain.get("/health").json()["plugins"] is None
