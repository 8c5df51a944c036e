"""First run: the setup token, POST /api/setup, the real server's setup URL, `xcore user` on the command line,
and no default credentials."""

from __future__ import annotations

import re
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine, text

from conftest import BACKEND, Api, core_database_url, run_xcore
from xcore.auth.service import SETUP_RECHECK
from xcore.auth.setup import SETUP_TOKEN_FILE, SetupToken
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database
from xcore.web.app import build_app

OWNER = {"username": "owner", "password": "first-boss-secret-1"}
SETUP_URL = re.compile(r"/admin/setup\?token=([A-Za-z0-9_\-]+)")


# Helpers


def query(where: Runtime | Path, sql: str) -> list[tuple[Any, ...]]:
    """query reads the core database of a runtime, or of a data directory the CLI wrote to (its SQLite file, or
    its PostgreSQL database with XCORE_TEST_DATABASE=postgresql), past the application's code."""
    if isinstance(where, Runtime):
        with where.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    engine = create_engine(core_database_url(where) if BACKEND == "postgresql" else f"sqlite:///{where / 'xcore.db'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def user_rows(where: Runtime | Path) -> list[tuple[Any, ...]]:
    return query(where, "SELECT username FROM users ORDER BY id")


def audit_actions(where: Runtime | Path) -> list[str]:
    return [a for (a,) in query(where, "SELECT action FROM audit_event ORDER BY id")]


def field_errors(response: Any) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


def xcore_stdin(*args: str, input: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """xcore_stdin runs the real CLI with `input` on its standard input."""
    return run_xcore(*args, input=input, timeout=timeout)


@contextmanager
def app_on(data_dir: Path) -> Iterator[TestClient]:
    """app_on is an in-process app on a data directory the CLI wrote to."""
    runtime = open_runtime(data_dir, environ={})
    try:
        prepare_database(runtime)
        with TestClient(build_app(runtime)) as client:
            yield client
    finally:
        runtime.close()


def login_status(client: Any, username: str, password: str) -> int:
    return client.post("/api/auth/login", json={"username": username, "password": password}).status_code


# 1. POST /api/setup in process


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/me"),
        ("GET", "/api/admin/users"),
        ("POST", "/api/admin/users"),
        ("GET", "/api/admin/audit"),
        ("POST", "/api/me/totp/setup"),
    ],
)
def test_protected_routes_answer_503_until_setup(api: Api, method: str, path: str) -> None:
    response = api.client.request(method, path)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "setup required" in response.json()["detail"]


def test_before_setup_a_flood_of_requests_costs_few_database_checks(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = api.runtime.auth
    checks: list[bool] = []
    check = auth.setup_required

    def counted() -> bool:
        checks.append(True)
        return check()

    monkeypatch.setattr(auth, "setup_required", counted)
    start = time.monotonic()
    answers = [api.client.get(path).status_code for path in ("/api/me", "/api/admin/users", "/api/setup") * 60]
    elapsed = time.monotonic() - start
    assert answers == [503, 503, 200] * 60
    # At most one check a SETUP_RECHECK per route that asks, where each request used to make one.
    assert len(checks) <= 2 * (elapsed / SETUP_RECHECK + 1), (len(checks), elapsed)
    # The first account, made through this process, is seen at once; one another process makes, soon after.
    created = api.client.post("/api/setup", json={**OWNER, "token": auth.setup_token.create()})
    assert created.status_code == 201, created.text
    assert api.client.get("/api/me").status_code == 401, "setup done: now a login is what is missing"


def test_an_account_made_by_another_process_ends_setup_within_the_recheck(api: Api) -> None:
    assert api.client.get("/api/me").status_code == 503
    done = xcore_stdin("user", "create", "owner", "--superadmin", "--password-stdin", "--data-dir",
                       str(api.runtime.data.root), input=OWNER["password"] + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    time.sleep(SETUP_RECHECK + 0.1)
    assert api.client.get("/api/me").status_code == 401


def test_public_routes_work_before_setup(api: Api) -> None:
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/api/setup").json() == {"required": True}


def test_setup_flow(api: Api) -> None:
    token_file = api.runtime.data.root / SETUP_TOKEN_FILE
    assert api.client.get("/api/setup").json() == {"required": True}

    # No token file yet: any token is refused.
    response = api.client.post("/api/setup", json={"token": "anything", **OWNER})
    assert response.status_code == 403
    assert field_errors(response) == ["token"]

    token = api.runtime.auth.setup_token.create()
    assert token_file.read_text().strip() == token

    response = api.client.post("/api/setup", json={"token": token + "x", **OWNER})
    assert response.status_code == 403
    assert field_errors(response) == ["token"]

    # A weak password is refused, and the token is put back for another try.
    response = api.client.post("/api/setup", json={"token": token, "username": "owner", "password": "short"})
    assert response.status_code == 400
    assert field_errors(response) == ["password"]
    assert token_file.read_text().strip() == token
    assert sorted(p.name for p in token_file.parent.iterdir() if "setup-token" in p.name) == [SETUP_TOKEN_FILE]

    response = api.client.post("/api/setup", json={"token": token, "username": "x", "password": OWNER["password"]})
    assert response.status_code == 400
    assert field_errors(response) == ["username"]
    assert token_file.exists()

    response = api.client.post("/api/setup", json={"token": token, **OWNER, "email": "owner@example.com"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["username"] == "owner"
    assert body["roles"] == ["superadmin"]
    assert body["email"] == "owner@example.com"
    assert "password" not in response.text
    assert not token_file.exists()
    assert not [p for p in token_file.parent.iterdir() if "setup-token" in p.name]

    again = api.client.post("/api/setup", json={"token": token, "username": "other", "password": "other-secret-pass"})
    assert again.status_code == 409
    assert api.client.get("/api/setup").json() == {"required": False}

    headers = api.login("owner", OWNER["password"])
    me = api.client.get("/api/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["roles"] == ["superadmin"]
    assert api.login("owner@example.com", OWNER["password"])

    events = api.client.get("/api/admin/audit", headers=headers, params={"action": "setup.completed"}).json()
    assert events["total"] == 1
    assert events["items"][0]["target"] == "owner"
    assert "password" not in str(events["items"][0]["detail"])
    assert user_rows(api.runtime) == [("owner",)]


def test_setup_refuses_unknown_fields(api: Api) -> None:
    token = api.runtime.auth.setup_token.create()
    response = api.client.post("/api/setup", json={"token": token, **OWNER, "roles": ["user"]})
    assert response.status_code == 400
    assert api.runtime.auth.setup_token.matches(token)


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_setups_with_one_token_make_one_account(api: Api, attempt: int) -> None:
    token = api.runtime.auth.setup_token.create()
    barrier = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def race(username: str) -> None:
        barrier.wait()
        response = api.client.post(
            "/api/setup", json={"token": token, "username": username, "password": OWNER["password"]}
        )
        statuses[username] = response.status_code

    threads = [threading.Thread(target=race, args=(name,)) for name in ("alpha", "omega")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses.values()) in ([201, 403], [201, 409]), statuses
    winner = next(name for name, status in statuses.items() if status == 201)
    assert user_rows(api.runtime) == [(winner,)]
    assert not (api.runtime.data.root / SETUP_TOKEN_FILE).exists()


# 3. The real server


def test_real_server_prints_a_setup_url_until_setup_is_done(start_server: Any, data_dir: Path) -> None:
    server = start_server(data_dir)
    server.wait_ready()
    found = SETUP_URL.search(server.output)
    assert found, server.output
    token = found.group(1)
    assert f"{server.url}/admin/setup?token={token}" in server.output

    token_file = data_dir / SETUP_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == token

    assert httpx.get(server.url + "/api/admin/users").status_code == 503
    assert httpx.get(server.url + "/api/setup").json() == {"required": True}
    response = httpx.post(server.url + "/api/setup", json={"token": token, **OWNER})
    assert response.status_code == 201, response.text
    assert not token_file.exists()

    response = httpx.post(server.url + "/api/auth/login", json=OWNER)
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    users = httpx.get(server.url + "/api/admin/users", headers=headers)
    assert users.status_code == 200, users.text
    assert httpx.get(server.url + "/api/setup").json() == {"required": False}
    assert server.stop() == 0

    again = start_server(data_dir)
    again.wait_ready()
    assert "setup?token=" not in again.output
    assert "First run" not in again.output
    assert not token_file.exists()
    assert httpx.post(again.url + "/api/auth/login", json=OWNER).status_code == 200
    assert again.stop() == 0


def test_real_server_makes_a_new_token_at_each_start_before_setup(start_server: Any, data_dir: Path) -> None:
    first = start_server(data_dir)
    first.wait_ready()
    old = SETUP_URL.search(first.output)
    assert old, first.output
    assert first.stop() == 0

    second = start_server(data_dir)
    second.wait_ready()
    new = SETUP_URL.search(second.output)
    assert new, second.output
    assert new.group(1) != old.group(1)
    response = httpx.post(second.url + "/api/setup", json={"token": old.group(1), **OWNER})
    assert response.status_code == 403
    assert second.stop() == 0


# 4. The command line


def test_cli_create_superadmin_completes_setup(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    token_file = data_dir / SETUP_TOKEN_FILE
    SetupToken(data_dir).create()

    result = xcore_stdin(
        "user", "create", "root", "--superadmin", "--password-stdin", "--data-dir", str(data_dir),
        input=OWNER["password"] + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "root" in result.stdout and "superadmin" in result.stdout
    assert OWNER["password"] not in result.stdout + result.stderr
    assert not token_file.exists()

    with app_on(data_dir) as client:
        assert client.get("/api/setup").json() == {"required": False}
        assert login_status(client, "root", OWNER["password"]) == 200
    assert "setup.completed" in audit_actions(data_dir)


def test_cli_first_account_must_be_a_superadmin(data_dir: Path) -> None:
    result = xcore_stdin(
        "user", "create", "bob", "--password-stdin", "--data-dir", str(data_dir), input=OWNER["password"] + "\n"
    )
    assert result.returncode == 2
    assert "superadmin" in result.stderr
    assert "Traceback" not in result.stderr
    assert user_rows(data_dir) == []


@pytest.mark.parametrize(
    ("password", "message"),
    [
        pytest.param("short", "at least", id="too-short"),
        pytest.param("root-root-root-1", "username", id="contains-username"),
        pytest.param("aaaaaaaaaaaa", "different characters", id="too-few-characters"),
        pytest.param("password123", "in the list of common passwords", id="common"),
        pytest.param("qwertyuiopasdfgh", "a keyboard pattern", id="keyboard-pattern"),
        pytest.param("", "at least", id="empty-line"),
    ],
)
def test_cli_weak_password_is_one_line_and_exit_2(data_dir: Path, password: str, message: str) -> None:
    result = xcore_stdin(
        "user", "create", "root", "--superadmin", "--password-stdin", "--data-dir", str(data_dir),
        input=password + "\n",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert user_rows(data_dir) == []


def test_cli_empty_stdin_is_a_clear_error(data_dir: Path) -> None:
    result = xcore_stdin(
        "user", "create", "root", "--superadmin", "--password-stdin", "--data-dir", str(data_dir), input=""
    )
    assert result.returncode == 2
    assert "standard input is empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_passwd_changes_the_password(data_dir: Path) -> None:
    created = xcore_stdin(
        "user", "create", "root", "--superadmin", "--password-stdin", "--data-dir", str(data_dir),
        input=OWNER["password"] + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    new_password = "a-brand-new-secret-9"

    changed = xcore_stdin(
        "user", "passwd", "root", "--password-stdin", "--data-dir", str(data_dir), input=new_password + "\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert new_password not in changed.stdout + changed.stderr

    with app_on(data_dir) as client:
        assert login_status(client, "root", OWNER["password"]) == 401
        assert login_status(client, "root", new_password) == 200
    assert "password.changed" in audit_actions(data_dir)


def test_cli_passwd_ends_the_sessions(data_dir: Path) -> None:
    created = xcore_stdin(
        "user", "create", "root", "--superadmin", "--password-stdin", "--data-dir", str(data_dir),
        input=OWNER["password"] + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    with app_on(data_dir) as client:
        response = client.post("/api/auth/login", json={"username": "root", "password": OWNER["password"]})
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        assert client.get("/api/me", headers=headers).status_code == 200

        changed = xcore_stdin(
            "user", "passwd", "root", "--password-stdin", "--data-dir", str(data_dir),
            input="a-brand-new-secret-9\n",
        )  # fmt: skip
        assert changed.returncode == 0, changed.stderr
        assert client.get("/api/me", headers=headers).status_code == 401
        refresh = client.post("/api/auth/refresh", json={"refresh_token": response.json()["refresh_token"]})
        assert refresh.status_code == 401


def test_cli_passwd_of_an_unknown_user(data_dir: Path) -> None:
    result = xcore_stdin(
        "user", "passwd", "nobody", "--password-stdin", "--data-dir", str(data_dir), input="whatever-pass-1\n"
    )
    assert result.returncode == 2
    assert "no user 'nobody'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("user", "passwd", "owner"), id="passwd"),
        pytest.param(("user", "create", "root", "--superadmin"), id="create"),
    ],
)
def test_cli_without_password_stdin_and_no_terminal_is_a_clear_error(data_dir: Path, args: tuple[str, ...]) -> None:
    if args[1] == "passwd":  # passwd names an unknown user before asking for a password; make this one exist
        made = xcore_stdin(
            "user", "create", "owner", "--superadmin", "--password-stdin", "--data-dir", str(data_dir),
            input=OWNER["password"] + "\n",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    before = user_rows(data_dir) if args[1] == "passwd" else []
    result = run_xcore(*args, "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr
    assert "Traceback" not in result.stderr
    assert user_rows(data_dir) == before


def test_cli_user_list_shows_accounts_and_roles(data_dir: Path) -> None:
    empty = run_xcore("user", "list", "--data-dir", str(data_dir))
    assert empty.returncode == 0, empty.stderr
    assert "no accounts" in empty.stdout

    for args in (
        ("root", "--superadmin"),
        ("ada", "--role", "admin"),
        ("bob",),
    ):
        result = xcore_stdin(
            "user", "create", *args, "--password-stdin", "--data-dir", str(data_dir), input=OWNER["password"] + "\n"
        )
        assert result.returncode == 0, result.stderr

    listed = run_xcore("user", "list", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.strip().splitlines()}
    assert rows == {"ada": "admin", "bob": "user", "root": "superadmin"}


# 5. No default credentials

DEFAULT_CREDENTIALS = [
    ("admin", "admin"),
    ("root", "root"),
    ("admin", "password"),
    ("admin", ""),
    ("administrator", "administrator"),
    ("xcore", "xcore"),
    ("superadmin", "superadmin"),
    ("root", "toor"),
]


def test_no_default_credentials(api: Api) -> None:
    for username, password in DEFAULT_CREDENTIALS:
        response = api.client.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 401, (username, password, response.text)
        assert "access_token" not in response.json()
    assert user_rows(api.runtime) == []
    assert api.client.get("/api/setup").json() == {"required": True}


def test_no_default_credentials_on_a_real_first_run(start_server: Any, data_dir: Path) -> None:
    server = start_server(data_dir)
    server.wait_ready()
    for username, password in DEFAULT_CREDENTIALS[:4]:
        response = httpx.post(server.url + "/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 401, (username, password)
    assert server.stop() == 0
    assert user_rows(data_dir) == []
