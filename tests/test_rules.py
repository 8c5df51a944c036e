"""The ACCESS_RULES matcher on its own: which rule decides a request, and what a user lacks."""

from __future__ import annotations

import pytest

from xcore.auth.rules import DEFAULT_RULE, AccessTable, Principal
from xcore.config.schema import AccessRule, default_access_rules
from xcore.errors import ConfigError

TABLE = AccessTable(
    {
        **default_access_rules(),
        "/api/admin/audit": AccessRule(permissions=["audit.read"]),
        "/api/admin/users": AccessRule(roles=["superadmin"], method="DELETE"),
        "/reports*": AccessRule(roles=["analyst"], method=["GET"]),
    }
)


@pytest.mark.parametrize(
    ("method", "path", "pattern"),
    [
        ("GET", "/api/admin/users", "/api/admin/*"),
        ("GET", "/api/admin", "/api/admin/*"),  # /x/* covers /x itself
        ("DELETE", "/api/admin/users", "/api/admin/users"),  # exact path beats a prefix
        ("POST", "/api/admin/users", "/api/admin/*"),  # the exact rule covers DELETE only
        ("GET", "/api/admin/audit", "/api/admin/audit"),
        ("GET", "/api/administrator", None),  # /api/admin/* is not a string prefix of this
        ("GET", "/reports", "/reports*"),
        ("GET", "/reports-2026/q1", "/reports*"),  # a prefix without / matches any continuation
        ("HEAD", "/reports/x", "/reports*"),  # HEAD goes with GET
        ("POST", "/reports/x", None),
        ("GET", "/api/me", "/api/me/*"),
        ("POST", "/api/me/totp/setup", "/api/me/*"),
        ("GET", "/api/plugins/notes", None),  # no rule: the default, login required
        ("GET", "/health", "/health"),
        ("GET", "/healthz", None),
    ],
)
def test_the_most_specific_rule_covering_the_method_decides(method: str, path: str, pattern: str | None) -> None:
    assert TABLE.match(path, method).pattern == pattern


def test_no_rule_means_login_required() -> None:
    rule = TABLE.match("/api/anything", "GET")
    assert rule is DEFAULT_RULE and not rule.public and rule.requirement == "a logged-in user"


def principal(*roles: str, permissions: tuple[str, ...] = ()) -> Principal:
    return Principal(1, "someone", frozenset(roles), frozenset(permissions), 1, False, False)


@pytest.mark.parametrize(
    ("who", "method", "path", "missing"),
    [
        (principal("user"), "GET", "/api/admin/users", ["role admin"]),
        (principal("admin"), "GET", "/api/admin/users", []),
        (principal("superadmin"), "GET", "/api/admin/users", []),  # superadmin implies admin
        (principal("admin"), "DELETE", "/api/admin/users", ["role superadmin"]),
        (principal("admin"), "GET", "/api/admin/audit", ["permission audit.read"]),
        (principal("admin", permissions=("audit.read",)), "GET", "/api/admin/audit", []),
        (principal("superadmin"), "GET", "/reports/x", []),  # superadmin lacks nothing
        (principal("admin"), "GET", "/reports/x", ["role analyst"]),  # custom roles are not implied
        (principal("user", "analyst"), "GET", "/reports/x", []),
        (principal("user"), "GET", "/api/me", []),
    ],
)
def test_all_roles_and_permissions_of_a_rule_are_required(
    who: Principal, method: str, path: str, missing: list[str]
) -> None:
    assert list(who.missing(TABLE.match(path, method))) == missing


@pytest.mark.parametrize(
    ("pattern", "rule", "message"),
    [
        ("api/x", AccessRule(), "['api/x']: the path must start with /"),
        ("/api/*/x", AccessRule(), "* may only end the path"),
        ("/x", AccessRule(method="FETCH"), "['/x'].method: unknown HTTP method 'FETCH'"),
        ("/x", AccessRule(roles=["Admin!"]), "['/x'].roles: 'Admin!' is not a role name"),
        ("/x", AccessRule(permissions=["read"]), "['/x'].permissions: 'read' is not a permission name"),
        ("/x", AccessRule(public=True, roles=["admin"]), "a public rule cannot also require roles"),
    ],
)
def test_a_malformed_rule_is_named(pattern: str, rule: AccessRule, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AccessTable({"/ok": AccessRule(), pattern: rule})
    assert "xcore.middleware.ACCESS_RULES" in str(caught.value) and message in str(caught.value)
