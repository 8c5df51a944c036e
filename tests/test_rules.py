"""The ACCESS_RULES matcher on its own: which rule decides a request, and what a user lacks."""

from __future__ import annotations

import pytest
from litestar.utils import normalize_path

from xcore.auth.rules import (
    CACHED_PATH,
    DEFAULT_RULE,
    MAX_PATH,
    AccessTable,
    PathRefused,
    Principal,
    request_path,
)
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
    ("who", "held"),
    [
        (principal("superadmin"), True),  # a superadmin holds every permission, granted or not
        (principal("admin", permissions=("audit.read",)), True),
        (principal("admin"), False),  # a rank grants roles, not permissions
        (principal("user", permissions=("notes.read",)), False),
    ],
)
def test_a_permission_is_held_when_a_role_grants_it_and_always_by_a_superadmin(who: Principal, held: bool) -> None:
    assert who.holds("audit.read") is held


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


# The request path: one form, judged, cached and explained alike


PATHS = [
    "/api/admin/audit",
    "/api/admin/audit/",
    "//api/admin/audit",
    "/api//admin///audit//",
    "api/admin/audit",
    "/",
    "//",
    "",
    "/API/Admin/Audit",  # case is kept: the router is case-sensitive too
    "/health/",
    "/a%2Fb",  # a double-encoded slash, once decoded by the server, is a literal "%2F"
    "/.well-known/x",
    "/x/..y/z.",
    "/é/ü",
]


@pytest.mark.parametrize("path", PATHS)
def test_the_request_path_is_the_path_litestars_router_serves(path: str) -> None:
    judged = request_path(path)
    assert judged == normalize_path(path)
    assert request_path(judged) == judged


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/api/admin/../health", 400, "'..' segment"),
        ("/api/admin/./audit", 400, "'.' segment"),
        ("/api/admin/audit/..", 400, "'..' segment"),
        ("/..", 400, "'..' segment"),
        ("/health\x00", 400, "control character (U+0000) at position 7"),
        ("/api/admin/audit\n", 400, "U+000A"),
        ("/x\x7f", 400, "U+007F"),
        ("/" + "a" * MAX_PATH, 414, f"at most {MAX_PATH}"),
    ],
)
def test_a_path_that_cannot_be_judged_safely_is_refused(path: str, status: int, words: str) -> None:
    with pytest.raises(PathRefused) as caught:
        request_path(path)
    assert caught.value.status == status and words in str(caught.value) and caught.value.field == "path"
    with pytest.raises(PathRefused):
        AccessTable(default_access_rules()).match(path, "GET")


def test_a_path_in_another_form_never_leaves_a_decision_for_the_normal_form() -> None:
    """The issue-21 poisoning: matching `/api/admin/audit/` cached its prefix rule under the raw key, which the
    guard's fast path then read for the next request of that raw path."""
    table = AccessTable({**default_access_rules(), "/api/admin/audit": AccessRule(roles=["superadmin"])})
    for path in ("/api/admin/audit/", "//api/admin/audit", "/api//admin/audit", "/health/", "//health"):
        expected = "/health" if "health" in path else "/api/admin/audit"
        assert table.match(path, "GET").pattern == expected
    assert set(table.decided) == {("/api/admin/audit", "GET"), ("/health", "GET")}
    assert table.match("/api/admin/audit", "GET").roles == ("superadmin",)
    long_path = "/api/admin/" + "x" * CACHED_PATH
    assert table.match(long_path, "GET").pattern == "/api/admin/*"
    assert (long_path, "GET") not in table.decided  # the cache is bounded in entries; long paths stay out of it
