"""ACCESS_RULES enforcement and privilege escalation.

- A scenario table: every route of the app (read from `build_app(runtime).routes`) x {anonymous, bob (user),
  ada (admin), root (superadmin)}, each cell with its expected outcome. A route without a row fails with
  "classify this route"; a row for a route the app no longer has fails too.
- Before setup every non-public route answers 503 "setup required".
- Privilege escalation is refused (roles, ranks, permissions, the last superadmin).
- Rules from the settings: permissions, methods, most specific wins, null removes a default, malformed rules stop
  startup (ConfigError, and `xcore serve` exits 2 with one line).
- Path tricks do not bypass rules; the explain tool; a role that requires 2FA.

The scenario cells run on copies of one prepared data directory (accounts, a custom role and real login tokens,
made once per module): every allowed call that may change something (delete, logout, password change...) gets
its own copy; reads and refused calls share one.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from litestar.testing import TestClient

from conftest import (
    PASSWORDS,
    Api,
    Clock,
    copy_data_dir,
    create_account,
    free_port,
    plugin_host,
    prepare_from_template,
    run_xcore,
)
from xcore.db.models import Role
from xcore.errors import ConfigError
from xcore.paths import DataDir
from xcore.runtime import Runtime, open_runtime
from xcore.web.app import build_app

RULES_ENV = "XCORE_XCORE__MIDDLEWARE__ACCESS_RULES"
ROLES = {"root": ["superadmin"], "ada": ["admin"], "bob": ["user"], "cyd": ["user"]}
PERSONAS = ("anonymous", "bob", "ada", "root")
CUSTOM_ROLE = "reporters"
PROBLEM_JSON = "application/problem+json"

# Outcomes of one cell: OK means the guard let the request through (the handler may still refuse the body).
OK = "ok"
#        anonymous  bob  ada  root
PUBLIC = (OK, OK, OK, OK)
LOGIN = (401, OK, OK, OK)
ADMIN = (401, 403, OK, OK)
SUPERADMIN = (401, 403, 403, OK)  # the guard lets admins in; the handler wants a permission only superadmin holds
# The guard itself refuses admins: an ACCESS_RULES rule requires the role superadmin.
SUPERADMIN_RULE = (401, 403, 403, OK)

# The scenario table: every (method, path template) the app serves, with the outcome for each persona.
ACCESS_TABLE: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {
    # System, public.
    ("GET", "/health"): PUBLIC,
    ("GET", "/api/version"): PUBLIC,
    # Documentation: the three pages and the vendored assets are public; Litestar's /schema router is not.
    ("GET", "/docs"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/static/vendor/{file_path:path}"): PUBLIC,
    # The admin UI: the page and its scripts hold no data; the API they call checks the session.
    ("GET", "/admin"): PUBLIC,
    ("GET", "/admin/{path:path}"): PUBLIC,
    ("GET", "/admin/static/{file_path:path}"): PUBLIC,
    ("GET", "/schema"): LOGIN,
    ("GET", "/schema/openapi.json"): LOGIN,
    ("GET", "/schema/{path:str}"): LOGIN,
    # Setup and sessions, public.
    ("GET", "/api/setup"): PUBLIC,
    ("POST", "/api/setup"): PUBLIC,
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/desktop"): PUBLIC,  # no body here: 400; the token rules are in test_desktop
    ("POST", "/api/auth/refresh"): PUBLIC,
    ("POST", "/api/auth/logout"): PUBLIC,
    ("GET", "/api/auth/policy"): PUBLIC,
    # One's own account: any logged-in user.
    ("GET", "/api/me"): LOGIN,
    ("GET", "/api/me/access"): LOGIN,
    ("GET", "/api/me/pages"): LOGIN,
    ("PATCH", "/api/me"): LOGIN,
    ("POST", "/api/me/password"): LOGIN,
    ("POST", "/api/me/totp/setup"): LOGIN,
    ("POST", "/api/me/totp/confirm"): LOGIN,
    ("POST", "/api/me/totp/disable"): LOGIN,
    # Accounts: admins (on users below them) and superadmins.
    ("GET", "/api/admin/users"): ADMIN,
    ("POST", "/api/admin/users"): ADMIN,
    ("GET", "/api/admin/users/{user_id:int}"): ADMIN,
    ("PATCH", "/api/admin/users/{user_id:int}"): ADMIN,
    ("DELETE", "/api/admin/users/{user_id:int}"): ADMIN,
    ("PUT", "/api/admin/users/{user_id:int}/roles"): ADMIN,
    ("POST", "/api/admin/users/{user_id:int}/revoke-sessions"): ADMIN,
    ("POST", "/api/admin/users/{user_id:int}/reset-totp"): ADMIN,
    # Roles: reading and require_totp are admin business; creating and deleting roles needs roles.manage.
    ("GET", "/api/admin/roles"): ADMIN,
    ("POST", "/api/admin/roles"): SUPERADMIN,
    ("PATCH", "/api/admin/roles/{name:str}"): ADMIN,
    ("DELETE", "/api/admin/roles/{name:str}"): SUPERADMIN,
    ("GET", "/api/admin/permissions"): ADMIN,
    ("GET", "/api/admin/access/explain"): ADMIN,
    ("GET", "/api/admin/audit"): ADMIN,
    ("GET", "/api/admin/system"): ADMIN,
    # Plugins: admins read (plugins.read) and get past the rule for changes (ACCESS_RULES /api/admin/plugins* for
    # POST, PUT, PATCH, DELETE wants plugins.manage_sandboxed); the handlers then want plugins.manage, a
    # superadmin's, for a plugin that runs in the server's process (tests/test_sandbox.py, with plugins), and for
    # the rescan of all.
    ("GET", "/api/admin/plugins"): ADMIN,
    ("POST", "/api/admin/plugins"): ADMIN,
    ("POST", "/api/admin/plugins/reload"): SUPERADMIN,
    ("GET", "/api/admin/plugins/{plugin_id:str}"): ADMIN,
    ("POST", "/api/admin/plugins/{plugin_id:str}/reload"): ADMIN,
    ("POST", "/api/admin/plugins/{plugin_id:str}/enable"): ADMIN,
    ("POST", "/api/admin/plugins/{plugin_id:str}/disable"): ADMIN,
    ("DELETE", "/api/admin/plugins/{plugin_id:str}"): ADMIN,
    ("GET", "/api/admin/plugins/{plugin_id:str}/config"): ADMIN,
    ("PUT", "/api/admin/plugins/{plugin_id:str}/config"): ADMIN,
    # Catalogues: admins browse and install (an in-process plugin's install wants plugins.manage, as an upload).
    ("GET", "/api/admin/catalogue"): ADMIN,
    ("POST", "/api/admin/catalogue/refresh"): ADMIN,
    ("POST", "/api/admin/catalogue/install"): ADMIN,
    # The trust store: admins read; changing what the signing policy trusts is a superadmin's (plugins.manage).
    ("GET", "/api/admin/trust"): ADMIN,
    ("POST", "/api/admin/trust"): SUPERADMIN,
    ("DELETE", "/api/admin/trust/{name:str}"): SUPERADMIN,
    ("GET", "/api/admin/plugin-policy"): ADMIN,
    # Tasks: admins (tasks.read, tasks.manage).
    ("GET", "/api/admin/tasks"): ADMIN,
    ("POST", "/api/admin/tasks/{name:str}/run"): ADMIN,
    ("POST", "/api/admin/tasks/{name:str}/pause"): ADMIN,
    ("POST", "/api/admin/tasks/{name:str}/resume"): ADMIN,
    ("GET", "/api/admin/tasks/runs"): ADMIN,
    ("GET", "/api/admin/tasks/runs/{run_id:int}"): ADMIN,
    # Logs: admins (logs.read).
    ("GET", "/api/admin/logs"): ADMIN,
    ("GET", "/api/admin/logs/download"): ADMIN,
    # Backups: superadmins (ACCESS_RULES /api/admin/backups* requires the role; the handlers, backups.manage).
    ("GET", "/api/admin/backups"): SUPERADMIN_RULE,
    ("POST", "/api/admin/backups"): SUPERADMIN_RULE,
    ("GET", "/api/admin/backups/{name:str}"): SUPERADMIN_RULE,
    ("POST", "/api/admin/backups/{name:str}/restore"): SUPERADMIN_RULE,
    ("POST", "/api/admin/backups/restore-upload"): SUPERADMIN_RULE,
    # Metrics: the permission metrics.read, which admins hold (a scraper token: tests/test_metrics.py).
    ("GET", "/metrics"): ADMIN,
    ("GET", "/api/admin/metrics"): ADMIN,
}

# What to send: plausible path parameters, query strings and bodies (a body may depend on the persona).
NEW_PASSWORD = "a-brand-new-secret-77"


def path_values(template: Template) -> dict[str, str]:
    return {
        "user_id": str(template.ids["cyd"]),
        "name": CUSTOM_ROLE,
        "file_path": "swagger-ui/swagger-ui.css",
        "path": "swagger",
        "plugin_id": "absent",
        "run_id": "1",
    }


QUERIES: dict[tuple[str, str], str] = {
    ("GET", "/api/admin/access/explain"): "path=/api/admin/users&method=GET&user=bob",
    ("GET", "/api/me/access"): "path=/api/admin/users&path=/api/admin/backups",
}

Body = Callable[[str, "Template"], Any]
BODIES: dict[tuple[str, str], Body] = {
    ("POST", "/api/admin/trust"): lambda who, t: {"public_key": "xcore-ed25519 AAAA nobody"},
    ("POST", "/api/admin/catalogue/install"): lambda who, t: {"id": "absent"},
    ("POST", "/api/setup"): lambda who, t: {"token": "not-the-token", "username": "eve", "password": NEW_PASSWORD},
    # Anonymous logs in as cyd; the others as themselves.
    ("POST", "/api/auth/login"): lambda who, t: {
        "username": "cyd" if who == "anonymous" else who,
        "password": PASSWORDS["cyd" if who == "anonymous" else who],
    },
    ("POST", "/api/auth/refresh"): lambda who, t: {"refresh_token": t.refresh.get(who)},
    ("PATCH", "/api/me"): lambda who, t: {"email": f"{who}@example.com"},
    ("POST", "/api/me/password"): lambda who, t: {
        "current_password": PASSWORDS.get(who, "x" * 12),
        "new_password": NEW_PASSWORD,
    },
    ("POST", "/api/me/totp/setup"): lambda who, t: {"password": PASSWORDS.get(who, "x" * 12)},
    ("POST", "/api/me/totp/confirm"): lambda who, t: {"code": "123456"},
    ("POST", "/api/me/totp/disable"): lambda who, t: {"password": PASSWORDS.get(who, "x" * 12), "code": "123456"},
    ("POST", "/api/admin/users"): lambda who, t: {"username": "eve", "password": NEW_PASSWORD, "roles": ["user"]},
    ("PATCH", "/api/admin/users/{user_id:int}"): lambda who, t: {"email": "cyd@example.com"},
    ("PUT", "/api/admin/users/{user_id:int}/roles"): lambda who, t: {"roles": ["user", CUSTOM_ROLE]},
    ("POST", "/api/admin/roles"): lambda who, t: {"name": "auditors", "permissions": ["audit.read"]},
    ("PATCH", "/api/admin/roles/{name:str}"): lambda who, t: {"require_totp": True},
}


# Helpers


def routes_of(app: Any) -> list[tuple[str, str]]:
    """routes_of lists (method, path template) of every route of `app`, OPTIONS and HEAD aside."""
    return sorted(
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", {"GET"})
        if method not in ("OPTIONS", "HEAD")
    )


def app_routes() -> list[tuple[str, str]]:
    """app_routes lists (method, path template) of every route of a freshly built app, OPTIONS and HEAD aside."""
    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(Path(tmp) / "data", environ={}, logs=False)
        try:
            return routes_of(build_app(runtime))
        finally:
            runtime.close()


ROUTES = app_routes()


def fill(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            pytest.fail(f"give a value for the path parameter {name!r} of {template} in path_values()")
        return values[name]

    return re.sub(r"\{(\w+)(?::[^}]*)?\}", value, template)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def detail(response: Any) -> str:
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    return str(response.json()["detail"])


def ids_of(api: Api) -> dict[str, int]:
    root = api.login("root")
    users = api.client.get("/api/admin/users", headers=root).json()["items"]
    return {u["username"]: u["id"] for u in users}


@dataclass
class Template:
    """Template is a prepared data directory: the four accounts, a custom role and a session for each account."""

    data_dir: Path
    runtime: Runtime
    ids: dict[str, int]
    access: dict[str, str]
    refresh: dict[str, str]


def add_role(runtime: Runtime, name: str) -> None:
    """add_role creates a custom role (ranked as user, no permissions), as the machine's owner would."""
    with runtime.auth.transaction() as session:
        session.add(Role(name=name, description="a custom role", builtin=False, rank=10, require_totp=False))
    runtime.auth.accounts_changed()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    data_dir = tmp_path_factory.mktemp("access-template") / "data"
    runtime = open_runtime(data_dir, environ={}, logs=False)
    prepare_from_template(runtime)
    ids = {name: create_account(runtime, name, roles) for name, roles in ROLES.items()}
    add_role(runtime, CUSTOM_ROLE)
    access, refresh = {}, {}
    with TestClient(build_app(runtime)) as client:
        for name in ("root", "ada", "bob"):
            response = client.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
            assert response.status_code == 200, response.text
            access[name], refresh[name] = response.json()["access_token"], response.json()["refresh_token"]
    runtime.close()  # the copies must see a complete database file
    yield Template(data_dir, runtime, ids, access, refresh)


@contextmanager
def copy_of(template: Template, data_dir: Path) -> Iterator[TestClient]:
    """copy_of is a TestClient on a copy of the template's data directory, with the same settings."""
    copy_data_dir(template.data_dir, data_dir)
    runtime = Runtime(template.runtime.loaded, DataDir(data_dir).prepare())
    try:
        with plugin_host(runtime, tasks=True) as client:
            yield client
    finally:
        runtime.close()


@pytest.fixture
def cell(template: Template, tmp_path: Path) -> Iterator[TestClient]:
    """cell is a copy of the template for one test: what it changes, no other test sees."""
    with copy_of(template, tmp_path / "data") as client:
        yield client


@pytest.fixture(scope="module")
def shared_cell(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """shared_cell is one copy of the template for requests that change nothing: reads, and refused requests."""
    with copy_of(template, tmp_path_factory.mktemp("access-shared") / "data") as client:
        yield client


@contextmanager
def configured_api(data_dir: Path, rules: dict[str, Any] | None = None, **environ: str) -> Iterator[Api]:
    """configured_api is an app with these ACCESS_RULES layered over the defaults and the four accounts."""
    env = dict(environ)
    if rules is not None:
        env[RULES_ENV] = json.dumps(rules)
    runtime = open_runtime(data_dir, environ=env)
    try:
        prepare_from_template(runtime)
        for name, roles in ROLES.items():
            create_account(runtime, name, roles)
        with TestClient(build_app(runtime)) as client:
            yield Api(client, runtime)
    finally:
        runtime.close()


# 1. The scenario table


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_answers_each_persona_as_the_access_table_says(
    template: Template, shared_cell: TestClient, tmp_path: Path, method: str, route: str, persona: str
) -> None:
    key = (method, route)
    if key not in ACCESS_TABLE:
        pytest.fail(
            f"classify this route: {method} {route} is served by the app but has no row in ACCESS_TABLE "
            "(say who may call it: PUBLIC, LOGIN, ADMIN, SUPERADMIN or SUPERADMIN_RULE)"
        )
    expected = ACCESS_TABLE[key][PERSONAS.index(persona)]
    url = fill(route, path_values(template))
    if key in QUERIES:
        url += "?" + QUERIES[key]
    headers = bearer(template.access[persona]) if persona in template.access else {}
    body = BODIES[key](persona, template) if key in BODIES else None
    if method == "GET" or expected != OK:
        # Reads and refused requests change nothing: they share one copy of the template.
        response = shared_cell.request(method, url, headers=headers, json=body)
    else:
        with copy_of(template, tmp_path / "data") as cell:
            response = cell.request(method, url, headers=headers, json=body)

    if expected == OK:
        assert response.status_code not in (401, 403, 503) and response.status_code < 500, (
            f"{persona}: {method} {url} should get past the guard, got {response.status_code}: {response.text[:300]}"
        )
    else:
        assert response.status_code == expected, (
            f"{persona}: {method} {url} should answer {expected}, got {response.status_code}: {response.text[:300]}"
        )
        assert response.headers["content-type"].startswith(PROBLEM_JSON)


def test_the_access_table_lists_only_routes_the_app_has() -> None:
    stale = sorted(set(ACCESS_TABLE) - set(ROUTES))
    assert not stale, f"ACCESS_TABLE lists routes the app no longer has; remove them: {stale}"


def test_the_scenario_cells_really_ran_the_allowed_calls(template: Template, cell: TestClient) -> None:
    """A sample of allowed cells, checked for the handler's real answer (so "ok" is not a 404 everywhere)."""
    root = bearer(template.access["root"])
    cyd = template.ids["cyd"]
    assert cell.get(f"/api/admin/users/{cyd}", headers=root).json()["username"] == "cyd"
    assert cell.put(f"/api/admin/users/{cyd}/roles", headers=root, json={"roles": [CUSTOM_ROLE]}).status_code == 200
    assert cell.patch(f"/api/admin/roles/{CUSTOM_ROLE}", headers=root, json={"require_totp": True}).status_code == 200
    assert cell.get("/static/vendor/swagger-ui/swagger-ui.css").status_code == 200
    assert cell.post("/api/auth/refresh", json={"refresh_token": template.refresh["bob"]}).status_code == 200
    assert cell.delete(f"/api/admin/users/{cyd}", headers=root).status_code == 204
    assert cell.delete(f"/api/admin/roles/{CUSTOM_ROLE}", headers=root).status_code == 204


# 2. Before setup


def test_before_setup_every_protected_route_answers_503_and_public_ones_do_not(api: Api) -> None:
    routes = routes_of(api.client.app)
    values = {
        "user_id": "1",
        "name": "user",
        "file_path": "swagger-ui/swagger-ui.css",
        "path": "swagger",
        "plugin_id": "absent",
        "run_id": "1",
    }
    wrong = []
    for method, route in routes:
        key = (method, route)
        assert key in ACCESS_TABLE, f"classify this route: {method} {route}"
        public = ACCESS_TABLE[key][0] == OK
        response = api.client.request(method, fill(route, values), json={} if method != "GET" else None)
        if public and response.status_code == 503:
            wrong.append(f"{method} {route} is public but answers 503: {response.text[:200]}")
        if not public and (response.status_code != 503 or "setup required" not in response.json().get("detail", "")):
            wrong.append(f"{method} {route} should answer 503 setup required, got {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/api/setup").json() == {"required": True}


def test_before_setup_a_bearer_token_does_not_get_in_either(api: Api) -> None:
    response = api.client.get("/api/me", headers={"Authorization": "Bearer whatever"})
    assert response.status_code == 503
    assert "setup required" in detail(response)
    assert "/api/setup" in detail(response)


# 3. Privilege escalation


def test_a_user_cannot_reach_admin_routes_or_give_himself_roles(accounts_api: Api) -> None:
    bob = accounts_api.login("bob")
    ids = ids_of(accounts_api)
    response = accounts_api.client.get("/api/admin/users", headers=bob)
    assert response.status_code == 403
    assert "role admin" in detail(response) and "/api/admin/*" in detail(response)
    for roles in (["admin"], ["superadmin"], ["user", "admin"]):
        response = accounts_api.client.put(f"/api/admin/users/{ids['bob']}/roles", headers=bob, json={"roles": roles})
        assert response.status_code == 403, response.text
        assert "role admin" in detail(response)
    response = accounts_api.client.post(
        "/api/admin/users", headers=bob, json={"username": "bobs-friend", "password": NEW_PASSWORD, "roles": ["admin"]}
    )
    assert response.status_code == 403
    response = accounts_api.client.patch("/api/admin/roles/user", headers=bob, json={"require_totp": False})
    assert response.status_code == 403
    me = accounts_api.client.get("/api/me", headers=bob).json()
    assert me["roles"] == ["user"] and me["permissions"] == []


def test_an_admin_cannot_create_a_superadmin_or_another_admin_above_her(accounts_api: Api) -> None:
    ada = accounts_api.login("ada")
    for roles in (["superadmin"], ["user", "superadmin"]):
        response = accounts_api.client.post(
            "/api/admin/users", headers=ada, json={"username": "mallory", "password": NEW_PASSWORD, "roles": roles}
        )
        assert response.status_code == 403, response.text
        assert "cannot grant the role 'superadmin'" in detail(response)
        assert "ranks above your own" in detail(response)
    root = accounts_api.login("root")
    names = [u["username"] for u in accounts_api.client.get("/api/admin/users", headers=root).json()["items"]]
    assert "mallory" not in names


def test_an_admin_cannot_grant_herself_superadmin_or_change_her_own_roles(accounts_api: Api) -> None:
    ada = accounts_api.login("ada")
    ada_id = ids_of(accounts_api)["ada"]
    for roles in (["superadmin"], ["admin", "superadmin"], ["admin"]):
        response = accounts_api.client.put(f"/api/admin/users/{ada_id}/roles", headers=ada, json={"roles": roles})
        assert response.status_code == 403, response.text
        assert "ranked below your own" in detail(response)
        assert "use /api/me for your own account" in detail(response)
    assert accounts_api.client.get("/api/me", headers=ada).json()["roles"] == ["admin"]


def test_an_admin_cannot_grant_a_custom_role_carrying_permissions_she_lacks(accounts_api: Api) -> None:
    root, ada = accounts_api.login("root"), accounts_api.login("ada")
    created = accounts_api.client.post(
        "/api/admin/roles", headers=root, json={"name": "settings-keepers", "permissions": ["settings.manage"]}
    )
    assert created.status_code == 201, created.text
    cyd = ids_of(accounts_api)["cyd"]
    response = accounts_api.client.put(
        f"/api/admin/users/{cyd}/roles", headers=ada, json={"roles": ["user", "settings-keepers"]}
    )
    assert response.status_code == 403
    assert "carries permissions you lack (settings.manage)" in detail(response)
    response = accounts_api.client.post(
        "/api/admin/users",
        headers=ada,
        json={"username": "mallory", "password": NEW_PASSWORD, "roles": ["settings-keepers"]},
    )
    assert response.status_code == 403
    assert "settings.manage" in detail(response)


@pytest.mark.parametrize("target", ["root", "ada2"])
def test_an_admin_cannot_change_delete_or_deactivate_a_superadmin_or_another_admin(
    accounts_api: Api, target: str
) -> None:
    create_account(accounts_api.runtime, "ada2", ["admin"], password=PASSWORDS["ada"] + "x")
    ada = accounts_api.login("ada")
    target_id = ids_of(accounts_api)[target]
    attempts = [
        ("PATCH", f"/api/admin/users/{target_id}", {"is_active": False}),
        ("PATCH", f"/api/admin/users/{target_id}", {"password": NEW_PASSWORD}),
        ("PATCH", f"/api/admin/users/{target_id}", {"email": "owned@example.com"}),
        ("PUT", f"/api/admin/users/{target_id}/roles", {"roles": ["user"]}),
        ("POST", f"/api/admin/users/{target_id}/revoke-sessions", None),
        ("POST", f"/api/admin/users/{target_id}/reset-totp", None),
        ("DELETE", f"/api/admin/users/{target_id}", None),
    ]
    for method, url, body in attempts:
        response = accounts_api.client.request(method, url, headers=ada, json=body)
        assert response.status_code == 403, f"{method} {url} {body}: {response.status_code} {response.text}"
        assert f"can only manage accounts ranked below your own; {target!r} is not" in detail(response)
    # Nothing changed: the target still logs in with its password and keeps its roles.
    password = PASSWORDS["ada"] + "x" if target == "ada2" else PASSWORDS["root"]
    headers = accounts_api.login(target, password)
    me = accounts_api.client.get("/api/me", headers=headers).json()
    assert me["roles"] == ROLES.get(target, ["admin"]) and me["is_active"] and me["email"] is None


def test_an_admin_cannot_create_roles_or_change_what_roles_grant(accounts_api: Api) -> None:
    ada = accounts_api.login("ada")
    for permissions in (["settings.manage"], ["audit.read"], []):
        response = accounts_api.client.post(
            "/api/admin/roles", headers=ada, json={"name": "escalators", "permissions": permissions}
        )
        assert response.status_code == 403, response.text
        assert "roles.manage" in detail(response)
    response = accounts_api.client.patch(
        "/api/admin/roles/user", headers=ada, json={"permissions": ["settings.manage"]}
    )
    assert response.status_code == 403
    assert "roles.manage" in detail(response)
    response = accounts_api.client.patch("/api/admin/roles/superadmin", headers=ada, json={"require_totp": True})
    assert response.status_code == 403
    assert "ranks above your own" in detail(response)
    roles = {r["name"] for r in accounts_api.client.get("/api/admin/roles", headers=ada).json()}
    assert "escalators" not in roles


def test_an_admin_cannot_change_a_role_held_above_them_or_undo_what_a_superadmin_set(accounts_api: Api) -> None:
    """Roles follow the rule for accounts: a role's require_totp, permissions or existence change the access of every
    account holding it, so an admin changes only roles held by accounts below them, and not what a superadmin set."""
    api = accounts_api
    add_role(api.runtime, CUSTOM_ROLE)  # made by the machine's owner: nobody ranked has set it yet
    root, ada = api.login("root"), api.login("ada")
    ids = ids_of(api)

    def require_totp(headers: dict[str, str], role: str, value: bool) -> Any:
        return api.client.patch(f"/api/admin/roles/{role}", headers=headers, json={"require_totp": value})

    def role(name: str) -> dict[str, Any]:
        return next(r for r in api.client.get("/api/admin/roles", headers=root).json() if r["name"] == name)

    # Held by users only and set by nobody above her: the admin's business, both ways.
    assert api.client.put(f"/api/admin/users/{ids['bob']}/roles", headers=root, json={"roles": ["user", CUSTOM_ROLE]})
    assert require_totp(ada, CUSTOM_ROLE, True).status_code == 200
    assert require_totp(ada, CUSTOM_ROLE, False).status_code == 200
    assert require_totp(ada, "user", True).status_code == 200
    assert require_totp(ada, "user", False).status_code == 200

    # Held by the superadmin, by the admin herself, or by another admin: refused, and nothing changes.
    holders = {"root": "'root' holds it", "ada": "you hold it yourself", "ada2": "'ada2' holds it"}
    create_account(api.runtime, "ada2", ["admin"], password=PASSWORDS["ada"] + "x")
    ids = ids_of(api)
    for holder, reason in holders.items():
        before = api.client.get(f"/api/admin/users/{ids[holder]}", headers=root).json()["roles"]
        response = api.client.put(
            f"/api/admin/users/{ids[holder]}/roles", headers=root, json={"roles": [*before, "user"]}
        )
        assert response.status_code == 200, response.text
        response = require_totp(ada, "user", True)
        assert response.status_code == 403, response.text
        assert reason in detail(response)
        assert role("user")["require_totp"] is False
        api.client.put(f"/api/admin/users/{ids[holder]}/roles", headers=root, json={"roles": before})

    # What a superadmin set, an admin cannot undo (nor change otherwise) even on a role held by users only.
    assert require_totp(root, CUSTOM_ROLE, True).status_code == 200
    response = require_totp(ada, CUSTOM_ROLE, False)
    assert response.status_code == 403 and "an account ranked above yours set it" in detail(response)
    assert role(CUSTOM_ROLE)["require_totp"] is True
    assert api.client.get("/api/me", headers=api.login("bob")).json()["totp_required"] is True

    # The same for an admin given roles.manage: no permissions changed, no deletion, of a role set above her.
    keepers = api.client.post(
        "/api/admin/roles", headers=root, json={"name": "keepers", "permissions": ["roles.manage"]}
    )
    assert keepers.status_code == 201, keepers.text
    api.client.put(f"/api/admin/users/{ids['ada']}/roles", headers=root, json={"roles": ["admin", "keepers"]})
    ada = api.login("ada")
    response = api.client.patch(f"/api/admin/roles/{CUSTOM_ROLE}", headers=ada, json={"permissions": ["users.read"]})
    assert response.status_code == 403 and "ranked above yours set it" in detail(response)
    response = api.client.delete(f"/api/admin/roles/{CUSTOM_ROLE}", headers=ada)
    assert response.status_code == 403 and "ranked above yours set it" in detail(response)
    response = api.client.delete("/api/admin/roles/keepers", headers=ada)
    assert response.status_code == 403 and "ranked above yours set it" in detail(response)
    response = require_totp(ada, "admin", True)
    assert response.status_code == 403 and "ranks as high as your own" in detail(response)
    assert role(CUSTOM_ROLE)["permissions"] == [] and role("keepers")["permissions"] == ["roles.manage"]
    # A role she made herself, held by users only, stays hers to change and delete.
    assert api.client.post("/api/admin/roles", headers=ada, json={"name": "helpers"}).status_code == 201
    assert require_totp(ada, "helpers", True).status_code == 200
    assert api.client.delete("/api/admin/roles/helpers", headers=ada).status_code == 204


def test_a_superadmin_can_do_what_admins_cannot(accounts_api: Api) -> None:
    create_account(accounts_api.runtime, "ada2", ["admin"], password=PASSWORDS["ada"] + "x")
    root = accounts_api.login("root")
    ids = ids_of(accounts_api)
    response = accounts_api.client.post(
        "/api/admin/users", headers=root, json={"username": "sue", "password": NEW_PASSWORD, "roles": ["superadmin"]}
    )
    assert response.status_code == 201, response.text
    assert response.json()["roles"] == ["superadmin"]
    response = accounts_api.client.put(f"/api/admin/users/{ids['ada']}/roles", headers=root, json={"roles": ["user"]})
    assert response.status_code == 200 and response.json()["roles"] == ["user"]
    response = accounts_api.client.patch(f"/api/admin/users/{ids['ada2']}", headers=root, json={"is_active": False})
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert accounts_api.client.delete(f"/api/admin/users/{ids['ada2']}", headers=root).status_code == 204
    response = accounts_api.client.post(
        "/api/admin/roles", headers=root, json={"name": "settings-keepers", "permissions": ["settings.manage"]}
    )
    assert response.status_code == 201 and response.json()["permissions"] == ["settings.manage"]


def test_the_last_active_superadmin_cannot_be_deleted_deactivated_or_demoted(accounts_api: Api) -> None:
    root = accounts_api.login("root")
    root_id = ids_of(accounts_api)["root"]
    for method, body, what in (
        ("DELETE", None, "deleted"),
        ("PATCH", {"is_active": False}, "deactivated"),
    ):
        response = accounts_api.client.request(method, f"/api/admin/users/{root_id}", headers=root, json=body)
        assert response.status_code == 409, response.text
        assert f"'root' is the last active superadmin and cannot be {what}" in detail(response)
    response = accounts_api.client.put(f"/api/admin/users/{root_id}/roles", headers=root, json={"roles": ["admin"]})
    assert response.status_code == 409
    assert "last active superadmin and cannot be demoted" in detail(response)
    assert accounts_api.client.get("/api/me", headers=root).json()["roles"] == ["superadmin"]


def test_with_a_second_superadmin_one_may_be_demoted_but_not_the_last(accounts_api: Api) -> None:
    root, ada = accounts_api.login("root"), accounts_api.login("ada")
    ids = ids_of(accounts_api)
    promoted = accounts_api.client.put(
        f"/api/admin/users/{ids['ada']}/roles", headers=root, json={"roles": ["superadmin"]}
    )
    assert promoted.status_code == 200, promoted.text
    demoted = accounts_api.client.put(f"/api/admin/users/{ids['root']}/roles", headers=root, json={"roles": ["admin"]})
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["roles"] == ["admin"]
    # ada is now the only superadmin: she cannot demote, deactivate or delete herself.
    response = accounts_api.client.put(f"/api/admin/users/{ids['ada']}/roles", headers=ada, json={"roles": ["user"]})
    assert response.status_code == 409
    assert "'ada' is the last active superadmin" in detail(response)
    response = accounts_api.client.patch(f"/api/admin/users/{ids['ada']}", headers=ada, json={"is_active": False})
    assert response.status_code == 409
    # And root, now an admin, can no longer touch her.
    response = accounts_api.client.delete(f"/api/admin/users/{ids['ada']}", headers=root)
    assert response.status_code == 403


def test_a_deactivated_superadmin_does_not_count_as_the_other_one(accounts_api: Api) -> None:
    root = accounts_api.login("root")
    ids = ids_of(accounts_api)
    accounts_api.client.put(f"/api/admin/users/{ids['ada']}/roles", headers=root, json={"roles": ["superadmin"]})
    response = accounts_api.client.patch(f"/api/admin/users/{ids['ada']}", headers=root, json={"is_active": False})
    assert response.status_code == 200, response.text
    response = accounts_api.client.delete(f"/api/admin/users/{ids['root']}", headers=root)
    assert response.status_code == 409
    assert "last active superadmin" in detail(response)


# 4. Access rules from the settings


def test_a_rule_with_a_permission_replaces_the_admin_prefix_for_its_path(data_dir: Path) -> None:
    rules = {
        "/api/admin/audit": {"permissions": ["audit.read"]},
        "/api/admin/system": {"permissions": ["settings.manage"]},
    }
    with configured_api(data_dir, rules) as api:
        root = api.login("root")
        created = api.client.post(
            "/api/admin/roles", headers=root, json={"name": "auditors", "permissions": ["audit.read"]}
        )
        assert created.status_code == 201, created.text
        cyd_id = ids_of(api)["cyd"]
        assert api.client.put(f"/api/admin/users/{cyd_id}/roles", headers=root, json={"roles": ["auditors"]}).is_success
        cyd, bob, ada = api.login("cyd"), api.login("bob"), api.login("ada")
        # The exact rule wins over /api/admin/*: a non-admin with audit.read reads the audit log...
        assert api.client.get("/api/admin/audit", headers=cyd).status_code == 200
        # ...but not the rest of /api/admin.
        response = api.client.get("/api/admin/users", headers=cyd)
        assert response.status_code == 403 and "role admin" in detail(response)
        response = api.client.get("/api/admin/audit", headers=bob)
        assert response.status_code == 403
        assert "permission audit.read" in detail(response) and "/api/admin/audit" in detail(response)
        # A rule can also be stricter than the prefix: admins lack settings.manage.
        response = api.client.get("/api/admin/system", headers=ada)
        assert response.status_code == 403
        assert "you lack permission settings.manage" in detail(response)
        assert api.client.get("/api/admin/system", headers=root).status_code == 200
        assert api.client.get("/api/admin/audit").status_code == 401


def test_a_method_specific_rule_covers_only_its_method(data_dir: Path) -> None:
    rules = {"/api/admin/users": {"roles": ["superadmin"], "method": "POST"}}
    with configured_api(data_dir, rules) as api:
        ada, root = api.login("ada"), api.login("root")
        body = {"username": "eve", "password": NEW_PASSWORD}
        response = api.client.post("/api/admin/users", headers=ada, json=body)
        assert response.status_code == 403
        assert "role superadmin" in detail(response) and "access rule /api/admin/users" in detail(response)
        # GET is not covered by the POST rule, so /api/admin/* decides.
        assert api.client.get("/api/admin/users", headers=ada).status_code == 200
        assert api.client.get("/api/admin/users", headers=api.login("bob")).status_code == 403
        assert api.client.post("/api/admin/users", headers=root, json=body).status_code == 201


PLUGIN_CHANGES = [
    ("POST", "/api/admin/plugins", None),
    ("POST", "/api/admin/plugins/reload", None),
    ("POST", "/api/admin/plugins/demo/reload", None),
    ("POST", "/api/admin/plugins/demo/enable", None),
    ("POST", "/api/admin/plugins/demo/disable", None),
    ("DELETE", "/api/admin/plugins/demo?purge=true", None),
    ("PUT", "/api/admin/plugins/demo/config", {"overrides": {}}),
]


def test_changing_plugins_needs_the_right_to_change_sandboxed_ones_by_rule_and_by_permission(data_dir: Path) -> None:
    """The default rule lets in those who may change sandboxed plugins (admins); a user is refused by the rule,
    naming the permission. plugins.manage, what changes a plugin in the server's process, stays a superadmin's:
    an admin cannot hand it out. (Which permission a change needs is tests/test_sandbox.py's, with plugins.)"""
    with configured_api(data_dir) as api:
        ada, bob, root = api.login("ada"), api.login("bob"), api.login("root")
        for method, url, body in PLUGIN_CHANGES:
            response = api.client.request(method, url, headers=bob, json=body)
            assert response.status_code == 403, (method, url, response.text)
            assert "plugins.manage_sandboxed" in detail(response) and "/api/admin/plugins*" in detail(response)
            # Admins and superadmins get past the rule (to a 503: this app runs no plugin manager; to a 400 for an
            # upload without a file), but for the rescan of all, which wants plugins.manage.
            expected = (403,) if url == "/api/admin/plugins/reload" else (400, 503)
            assert api.client.request(method, url, headers=ada, json=body).status_code in expected, (method, url)
            assert api.client.request(method, url, headers=root, json=body).status_code in (400, 503), (method, url)
        me = api.client.get("/api/me", headers=ada).json()
        assert "plugins.manage_sandboxed" in me["permissions"] and "plugins.manage" not in me["permissions"]
        assert "plugins.manage" in api.client.get("/api/me", headers=root).json()["permissions"]
        # A superadmin who created a role carrying plugins.manage is the only one who can hand it out.
        made = api.client.post(
            "/api/admin/roles", headers=root, json={"name": "plugin-managers", "permissions": ["plugins.manage"]}
        )
        assert made.status_code == 201, made.text
        cyd = ids_of(api)["cyd"]
        response = api.client.put(f"/api/admin/users/{cyd}/roles", headers=ada, json={"roles": ["plugin-managers"]})
        assert response.status_code == 403 and "plugins.manage" in detail(response)


def test_the_longest_prefix_wins(data_dir: Path) -> None:
    rules = {"/api/me/totp/*": {"roles": ["admin"]}, "/api/admin/sys*": {"public": True}}
    with configured_api(data_dir, rules) as api:
        bob = api.login("bob")
        assert api.client.get("/api/me", headers=bob).status_code == 200
        response = api.client.post("/api/me/totp/setup", headers=bob, json={"password": PASSWORDS["bob"]})
        assert response.status_code == 403 and "/api/me/totp/*" in detail(response)
        ada_setup = api.client.post("/api/me/totp/setup", headers=api.login("ada"), json={"password": PASSWORDS["ada"]})
        assert ada_setup.status_code == 200
        # /api/admin/sys* is longer than /api/admin/*: the system facts are public now, the rest is not.
        assert api.client.get("/api/admin/system").status_code == 200
        assert api.client.get("/api/admin/users").status_code == 401


def test_a_null_rule_removes_a_default_one(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "config.json").write_text(json.dumps({"xcore": {"middleware": {"ACCESS_RULES": {"/docs": None}}}}))
    with configured_api(data_dir) as api:
        assert "/docs" not in api.runtime.config.xcore.middleware.ACCESS_RULES
        response = api.client.get("/docs")
        assert response.status_code == 401
        assert "log in first" in detail(response)
        assert api.client.get("/docs", headers=api.login("bob")).status_code == 200
        assert api.client.get("/redoc").status_code == 200  # the other defaults stay


def test_a_null_rule_from_the_environment_removes_a_default_one(data_dir: Path) -> None:
    with configured_api(data_dir, {"/api/version": None}) as api:
        assert api.client.get("/api/version").status_code == 401
        assert api.client.get("/api/version", headers=api.login("bob")).status_code == 200


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO) ")
MALFORMED_RULES = {
    "no leading slash": ("api/reports", {"roles": ["admin"]}, "must start with /"),
    "star in the middle": ("/api/*/reports", {}, "* may only end the path"),
    "unknown method": ("/api/reports", {"method": "FETCH"}, "unknown HTTP method 'FETCH'"),
    "public with roles": ("/api/reports", {"public": True, "roles": ["admin"]}, "public rule cannot also require"),
}


@pytest.mark.parametrize(("pattern", "rule", "why"), MALFORMED_RULES.values(), ids=MALFORMED_RULES.keys())
def test_a_malformed_rule_stops_loading_the_settings(
    data_dir: Path, pattern: str, rule: dict[str, Any], why: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        open_runtime(data_dir, environ={RULES_ENV: json.dumps({pattern: rule})}, logs=False)
    assert str(raised.value).startswith(f"environment variable {RULES_ENV}: ")
    assert f"xcore.middleware.ACCESS_RULES[{pattern!r}]" in str(raised.value)
    assert why in str(raised.value)


def test_the_access_table_refuses_a_malformed_rule_on_its_own_too() -> None:
    from xcore.auth.rules import AccessTable
    from xcore.config.schema import AccessRule

    with pytest.raises(ConfigError, match=re.escape("ACCESS_RULES['/a/*/b']: * may only end the path")):
        AccessTable({"/a/*/b": AccessRule()})


@pytest.mark.parametrize(("pattern", "rule", "why"), MALFORMED_RULES.values(), ids=MALFORMED_RULES.keys())
def test_xcore_serve_refuses_a_malformed_rule_with_one_line_and_exit_2(
    data_dir: Path, pattern: str, rule: dict[str, Any], why: str
) -> None:
    data_dir.mkdir(parents=True)
    config = {"xcore": {"middleware": {"ACCESS_RULES": {pattern: rule}}}}
    (data_dir / "config.json").write_text(json.dumps(config))
    result = run_xcore("serve", "--data-dir", str(data_dir), "--port", str(free_port()))
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("xcore: error: ")]
    assert len(errors) == 1, result.stderr
    assert f"ACCESS_RULES[{pattern!r}]" in errors[0] and why in errors[0]
    others = [line for line in result.stderr.splitlines() if line.strip() and line not in errors]
    assert all(LOG_LINE.match(line) for line in others), result.stderr  # only log records besides the error
    assert "Traceback" not in result.stderr + result.stdout
    assert "serving at" not in result.stdout


# 5. Path tricks


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/users/",
        "/api//admin/users",
        "/api/admin/users?x=1",
        "/api/admin//users",
        "/api/%61dmin/users",
        "/api/x/../admin/users",
    ],
)
def test_path_tricks_do_not_bypass_the_admin_rule(template: Template, shared_cell: TestClient, path: str) -> None:
    cell = shared_cell
    response = cell.get(path, headers=bearer(template.access["bob"]))
    assert response.status_code == 403, response.text
    assert "role admin" in detail(response)
    assert cell.get(path).status_code == 401
    assert cell.get(path, headers=bearer(template.access["ada"])).status_code == 200


# 6. The explain tool


def test_explain_says_why_a_user_is_refused_or_let_in(accounts_api: Api) -> None:
    ada = accounts_api.login("ada")
    url = "/api/admin/access/explain"
    query = {"path": "/api/admin/users", "method": "GET"}
    response = accounts_api.client.get(url, headers=ada, params={**query, "user": "bob"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allowed"] is False
    assert body["rule"]["pattern"] == "/api/admin/*" and body["rule"]["roles"] == ["admin"]
    assert "'/api/admin/*'" in body["reason"] and "role admin" in body["reason"]
    assert body["user"] == "bob" and body["user_roles"] == ["user"]

    body = accounts_api.client.get(url, headers=ada, params={**query, "user": "ada"}).json()
    assert body["allowed"] is True and "ada gets in" in body["reason"]

    body = accounts_api.client.get(url, headers=ada, params={"path": "/health"}).json()
    assert body["allowed"] is True and body["user"] is None and body["rule"]["public"] is True

    body = accounts_api.client.get(url, headers=ada, params={"path": "/api/admin/users"}).json()
    assert body["allowed"] is False and "401" in body["reason"]

    body = accounts_api.client.get(url, headers=ada, params={"path": "/nowhere", "user": "bob"}).json()
    assert body["rule"]["pattern"] is None and "default" in body["reason"] and body["allowed"] is True


def test_explain_refuses_an_unknown_user_and_a_bad_method(accounts_api: Api) -> None:
    ada = accounts_api.login("ada")
    url = "/api/admin/access/explain"
    response = accounts_api.client.get(url, headers=ada, params={"path": "/api/admin/users", "user": "nobody"})
    assert response.status_code == 404
    assert [e["field"] for e in response.json()["errors"]] == ["user"]
    assert "'nobody'" in detail(response)
    response = accounts_api.client.get(url, headers=ada, params={"path": "/api/admin/users", "method": "FETCH"})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["method"]
    response = accounts_api.client.get(url, headers=ada, params={"path": "api/admin/users"})
    assert response.status_code == 400
    assert accounts_api.client.get(url, headers=accounts_api.login("bob"), params={"path": "/"}).status_code == 403


def test_explain_agrees_with_the_guard_for_every_route(template: Template, shared_cell: TestClient) -> None:
    """For each route and account, the explain tool's verdict matches the access table's guard decision."""
    root = bearer(template.access["root"])
    values = path_values(template)
    disagreements = []
    for method, route in ROUTES:
        outcomes = ACCESS_TABLE.get((method, route))
        if outcomes is None:
            continue  # the scenario test reports it
        for persona, expected in zip(PERSONAS, outcomes, strict=True):
            params = {"path": fill(route, values), "method": method}
            if persona != "anonymous":
                params["user"] = persona
            body = shared_cell.get("/api/admin/access/explain", headers=root, params=params).json()
            # SUPERADMIN rows pass the guard for admins; the handler refuses them.
            guard_allows = expected == OK or (outcomes is SUPERADMIN and persona == "ada")
            if body["allowed"] != guard_allows:
                disagreements.append(f"{persona} {method} {route}: explain says {body['allowed']}: {body['reason']}")
    assert not disagreements, "\n".join(disagreements)


def test_my_access_agrees_with_the_guard_for_every_get_route(template: Template, shared_cell: TestClient) -> None:
    """GET /api/me/access, which the admin UI asks which pages to offer, says what the guard does for each GET route
    and each account, so the UI needs no copy of ACCESS_RULES."""
    values = path_values(template)
    gets = [(route, ACCESS_TABLE[("GET", route)]) for method, route in ROUTES if method == "GET"]
    paths = [fill(route, values) for route, _ in gets]
    disagreements = []
    for persona in ("bob", "ada", "root"):
        headers = bearer(template.access[persona])
        answer: dict[str, Any] = {}
        for start in range(0, len(paths), 50):
            response = shared_cell.get("/api/me/access", headers=headers, params={"path": paths[start : start + 50]})
            assert response.status_code == 200, response.text
            answer.update(response.json())
        for (route, outcomes), path in zip(gets, paths, strict=True):
            guard_allows = outcomes[PERSONAS.index(persona)] == OK or (outcomes is SUPERADMIN and persona == "ada")
            if answer[path]["allowed"] != guard_allows:
                disagreements.append(f"{persona} GET {route}: says {answer[path]}")
    assert not disagreements, "\n".join(disagreements)
    backups = shared_cell.get(
        "/api/me/access", headers=bearer(template.access["ada"]), params={"path": "/api/admin/backups"}
    ).json()["/api/admin/backups"]
    assert backups == {"allowed": False, "requirement": "a logged-in user with role superadmin"}
    response = shared_cell.get("/api/me/access", headers=bearer(template.access["ada"]), params={"path": "/a/../b"})
    assert response.status_code == 400 and "segment" in detail(response)
    assert shared_cell.get("/api/me/access", params={"path": "/api/me"}).status_code == 401


# The same path set, judged by the explainer and by the guard, in both orders: what a form of a path makes the
# guard decide is what the explainer says, and is what the guard decides for the path the router serves.
# (Sent through Litestar's TestClient, which decodes a path twice, so no "%25" here: tests/test_rules.py has those.)
PATH_SET = [
    "/api/admin/audit",
    "/api/admin/audit/",
    "/api/admin/audit//",
    "//api/admin/audit",
    "/api//admin/audit",
    "/api/admin/%61udit",
    "/api/admin%2Faudit",  # an encoded slash: the server decodes it, so router and guard see /api/admin/audit
    "/api%2Fadmin%2Faudit%2F",
    "/api/admin/x/%2e%2e/audit",  # encoded dots: decoded, a ".." segment, refused
    "/api/admin/%2E/audit",
    "/api/admin/audit/%2e%2e",
    "/API/admin/audit",  # case is kept, as the router keeps it: no rule, no route
    "/api/admin/AUDIT",
    "/api/admin/audit%00",
    "/health%00",
    "/api/admin/audit%0a",
    "/health",
    "/health/",
    "//health",
    "/Health",
    "/api/admin/users/",
    "/api/me/",
    "/docs/",
    "/static/vendor/swagger-ui/swagger-ui.css/",
    "/api/admin/" + "a" * 5000,
]


def guard_outcome(response: Any) -> str:
    """guard_outcome is what the guard did: let the request in, or refused it with its status."""
    if response.status_code in (401, 403, 414):
        return str(response.status_code)
    if response.status_code == 400 and [e["field"] for e in response.json().get("errors", [])] == ["path"]:
        return "400"
    return OK


def test_explain_and_the_guard_agree_on_every_form_of_a_path_and_never_poison_each_other(data_dir: Path) -> None:
    with configured_api(data_dir, {"/api/admin/audit": {"roles": ["superadmin"]}}) as api:
        root = api.login("root")
        headers = {"anonymous": {}, "bob": api.login("bob"), "ada": api.login("ada"), "root": root}
        explained: dict[tuple[str, str], str] = {}
        judged: dict[str, str] = {}
        for path in PATH_SET:  # the explainer first: it must not leave a decision the guard then finds
            for persona in PERSONAS:
                params = {"path": path} | ({} if persona == "anonymous" else {"user": persona})
                response = api.client.get("/api/admin/access/explain", headers=root, params=params)
                if response.status_code == 400:
                    status = re.search(r"access guard answers this path (\d+)", detail(response))
                    assert status is not None, response.text
                    explained[path, persona] = status.group(1)
                    continue
                assert response.status_code == 200, response.text
                body = response.json()
                judged[path] = body["path"]
                refused = "401" if persona == "anonymous" else "403"
                explained[path, persona] = OK if body["allowed"] else refused
        disagreements = []
        for path in PATH_SET:
            for persona in PERSONAS:
                # An absolute URL: httpx reads "//api/..." relative to the base URL as a host name.
                outcome = guard_outcome(api.client.get(f"http://testserver{path}", headers=headers[persona]))
                if outcome != explained[path, persona]:
                    disagreements.append(f"{persona} {path[:60]}: explain {explained[path, persona]}, guard {outcome}")
                if path in judged:  # the form the router serves gets the same answer
                    normal = guard_outcome(api.client.get(judged[path], headers=headers[persona]))
                    if normal != outcome:
                        disagreements.append(f"{persona} {path[:60]}: {outcome}, but {judged[path]}: {normal}")
        assert not disagreements, "\n".join(disagreements)
        # The reproduction of issue 21: the explainer asked about the un-normalized forms first.
        assert judged["/api/admin/audit/"] == "/api/admin/audit" and judged["/health/"] == "/health"
        assert api.client.get("/api/admin/audit/", headers=headers["ada"]).status_code == 403
        assert api.client.get("/api/admin/audit/", headers=root).status_code == 200
        assert api.client.get("/health/").status_code == 200
        response = api.client.get("/health%00")
        assert response.status_code == 400 and "control character (U+0000)" in detail(response)
        explained_url = api.client.get("/api/admin/access/explain", headers=root, params={"path": "/health/?a=1#b"})
        assert explained_url.json()["path"] == "/health" and explained_url.json()["allowed"] is True
        response = api.client.get("/api/admin/" + "a" * 5000)
        assert response.status_code == 414 and "at most 4096" in detail(response)


# 7. A role that requires 2FA


def test_a_role_requiring_2fa_blocks_its_unenrolled_members_until_they_enroll(data_dir: Path, clock: Clock) -> None:
    with configured_api(data_dir, {"/api/admin/system": {"roles": ["user"]}}) as api:
        root, ada, bob = api.login("root"), api.login("ada"), api.login("bob")
        # Without the 2FA requirement bob reaches the system facts (the rule lets users in).
        assert api.client.get("/api/admin/system", headers=bob).status_code == 200
        response = api.client.patch("/api/admin/roles/user", headers=root, json={"require_totp": True})
        assert response.status_code == 200 and response.json()["require_totp"] is True

        response = api.client.get("/api/admin/system", headers=bob)
        assert response.status_code == 403
        assert response.json()["totp_enrollment_required"] is True
        assert "two-factor" in detail(response)
        password_change = {"current_password": PASSWORDS["bob"], "new_password": NEW_PASSWORD}
        for method, url, body in (
            ("GET", "/schema", None),
            ("POST", "/api/me/password", password_change),
            ("GET", "/api/admin/users", None),
        ):
            response = api.client.request(method, url, headers=bob, json=body)
            assert response.status_code == 403, f"{method} {url}: {response.text}"
            assert response.json().get("totp_enrollment_required") is True, f"{method} {url}: {response.text}"
        # The enrollment routes stay open.
        me = api.client.get("/api/me", headers=bob)
        assert me.status_code == 200 and me.json()["totp_required"] is True
        explained = api.client.get(
            "/api/admin/access/explain", headers=root, params={"path": "/api/admin/system", "user": "bob"}
        ).json()
        assert explained["allowed"] is False and "2FA" in explained["reason"]
        # Accounts without the role are not affected; public routes stay public.
        assert api.client.get("/api/admin/system", headers=ada).status_code == 200
        assert api.client.get("/health").status_code == 200
        assert api.client.get("/api/admin/system").status_code == 401

        setup = api.client.post("/api/me/totp/setup", headers=bob, json={"password": PASSWORDS["bob"]})
        assert setup.status_code == 200, setup.text
        assert api.client.get("/api/admin/system", headers=bob).status_code == 403  # not confirmed yet
        confirmed = api.client.post(
            "/api/me/totp/confirm", headers=bob, json={"code": pyotp.TOTP(setup.json()["secret"]).at(clock())}
        )
        assert confirmed.status_code == 200, confirmed.text
        # Enrolled: bob's same session gets in again; it was only the 2FA requirement that blocked him.
        assert api.client.get("/api/admin/system", headers=bob).status_code == 200
        assert api.client.get("/api/admin/users", headers=bob).status_code == 403  # and the role rule still holds


def test_a_remembered_bearer_token_is_judged_again_on_every_request(accounts_api: Api) -> None:
    """The guard remembers a Bearer token it let in and admits its next requests sooner (`AccessGuard.remember`),
    but every request still meets its rule, the token's expiry by the signer's clock, and the account as it is
    now: a change made by another process (another worker on the same data directory) counts from its very next
    request."""
    import time

    from xcore.auth import accounts
    from xcore.auth.service import Client

    api, client = accounts_api, accounts_api.client
    clock = Clock(time.time()).drive(api.runtime)
    root, ada, bob, cyd = (api.login(name) for name in ("root", "ada", "bob", "cyd"))
    for _ in range(2):  # the second time from memory
        assert client.get("/api/admin/system", headers=ada).status_code == 200
        assert client.get("/api/me", headers=bob).status_code == 200
        assert client.get("/api/admin/system", headers=bob).status_code == 403, "the rule decides every time"
        assert client.get("/api/me", headers=cyd).status_code == 200
    remembered = {header.decode() for header in client.app.asgi_handler.bearers}
    assert remembered == {ada["Authorization"], bob["Authorization"], cyd["Authorization"]}

    ids = {
        name: client.get("/api/me", headers=h).json()["id"] for name, h in (("root", root), ("ada", ada), ("bob", bob))
    }
    other = open_runtime(api.runtime.data.root, environ={}, logs=False)
    try:
        owner = other.auth.principals.get(ids["root"])
        assert owner is not None
        accounts.set_roles(other.auth, None, Client(ip="test"), ids["ada"], ["user"])
        accounts.revoke_sessions(other.auth, owner, Client(ip="test"), ids["bob"])
    finally:
        other.close()
    response = client.get("/api/admin/system", headers=ada)
    assert response.status_code == 403 and "role admin" in detail(response), "demoted in another process"
    assert client.get("/api/me", headers=ada).status_code == 200
    response = client.get("/api/me", headers=bob)
    assert response.status_code == 401 and "session has ended" in detail(response), "revoked in another process"
    assert client.get("/api/me", headers=cyd).status_code == 200
    clock.advance(api.runtime.auth.signer.access_ttl)
    response = client.get("/api/me", headers=cyd)
    assert response.status_code == 401 and "expired" in detail(response), "expired by the signer's clock"


@pytest.mark.parametrize(
    "header",
    [
        b"xcore_access=abc.def; xcore_csrf=tok",
        b'a="quoted \\" value"; b=2',
        b"xcore_access=\xff\xfe; other",
        b"=; ;;; xcore_access",
        b'xcore_access="unterminated',
        b"",
    ],
)
def test_parsed_cookie_headers_are_remembered_exactly_and_boundedly(
    header: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Cookie header's parse is remembered (`parse_cookies`), so it must say what `http.cookies` says of the
    header, the second time too, and hostile headers must stay unparsed; the headers remembered are bounded."""
    from http.cookies import SimpleCookie

    from xcore.web import guard

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header.decode("latin-1"))
        expected: dict[str, str] | None = {name: morsel.value for name, morsel in jar.items()}
    except Exception:
        expected = None
    assert guard.parse_cookies(header) == expected
    assert guard.parse_cookies(header) == expected, "remembered"
    monkeypatch.setattr(guard, "COOKIE_HEADERS_KEPT", 2)
    for n in range(5):
        guard.parse_cookies(b"n=%d" % n)
        assert len(guard._parsed_cookies) <= 2
    assert guard.parse_cookies(header) == expected
