"""The ACCESS_RULES table: compiled once per app, matched per request, explained on demand.

A rule's pattern is an exact path (`/api/setup`) or a prefix ending in `*` (`/api/admin/*`, `/reports*`).
`/x/*` covers `/x` itself too. For a request, the rules whose pattern matches the path and whose methods
include the request's method are candidates; the most specific wins (an exact path, else the longest prefix).
No candidate means the default: a logged-in user is required. Deny by default.

Rules judge the *request path*: the path as the server decoded it (percent-escapes, `%2F` included, are decoded
once, by the server), in the one form `request_path` gives it, which is the form Litestar's router serves. A
path that cannot be judged safely (a control character, a `.` or `..` segment, over `MAX_PATH` characters) is
refused with `PathRefused` before any rule is looked up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from xcore.auth.builtin import RANKS, SUPERADMIN
from xcore.auth.errors import InvalidInput
from xcore.config.schema import AccessRule, access_rule_problem
from xcore.errors import ConfigError

SETTING = "xcore.middleware.ACCESS_RULES"
MAX_PATH = 4096  # characters of a request path, decoded
CACHED_PATH = 512  # longer paths are judged each time: the cache of decisions is bounded in entries, not bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(InvalidInput):
    """PathRefused is a request path the guard will not judge: `status` is 400, or 414 for an overlong path."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status, field="path")


def request_path(path: str) -> str:
    """request_path is the one form in which a request path is judged, cached and explained.

    `path` is decoded, as in the ASGI scope. The answer starts with one `/`, has no empty segment and no
    trailing `/` (exactly Litestar's `normalize_path`, so the path judged is the path the router serves); case
    and every other character are kept, as the router keeps them. Raises PathRefused for a path holding a
    control character (NUL included) or a `.` or `..` segment (a browser resolves those before sending; the
    router would not, and a proxy might), or longer than MAX_PATH characters. Idempotent.
    """
    if len(path) > MAX_PATH:
        raise PathRefused(f"the request path is {len(path)} characters long; at most {MAX_PATH} are served", 414)
    if path[:1] != "/" or "//" in path or (path[-1:] == "/" and path != "/"):
        path = "/" + "/".join(part for part in path.split("/") if part)
    if "/." in path:
        for part in path.split("/"):
            if part in (".", ".."):
                raise PathRefused(f"the request path has a {part!r} segment: send the path with it resolved")
    control = _CONTROL.search(path)
    if control is not None:
        raise PathRefused(
            f"the request path has a control character (U+{ord(control.group()):04X}) at position {control.start()}"
        )
    return path


@dataclass(frozen=True, slots=True)
class Rule:
    """Rule is one compiled access rule; `pattern` is None for the built-in default (login required)."""

    pattern: str | None
    methods: frozenset[str]
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    public: bool

    @property
    def requirement(self) -> str:
        """requirement says in words what the rule asks for."""
        if self.public:
            return "anyone, logged in or not"
        needs = [f"role {r}" for r in self.roles] + [f"permission {p}" for p in self.permissions]
        return "a logged-in user" + (f" with {' and '.join(needs)}" if needs else "")


DEFAULT_RULE = Rule(None, frozenset(), (), (), False)


class Principal:
    """Principal is who a request acts as: an active user with their roles, rank and permissions.

    Every permission check asks `holds`, where the rule that a superadmin holds every permission lives."""

    __slots__ = (
        "_missing",
        "id",
        "is_superadmin",
        "permissions",
        "rank",
        "revoked_families",
        "roles",
        "token_version",
        "totp_enabled",
        "totp_required",
        "username",
    )

    def __init__(
        self,
        id: int,
        username: str,
        roles: frozenset[str],
        permissions: frozenset[str],
        token_version: int,
        totp_enabled: bool,
        totp_required: bool,
        revoked_families: frozenset[str] = frozenset(),
    ) -> None:
        self.id = id
        self.username = username
        self.roles = roles
        self.rank = max((RANKS.get(r, RANKS["user"]) for r in roles), default=0)
        self.is_superadmin = SUPERADMIN in roles
        self.permissions = permissions
        self.token_version = token_version
        self.totp_enabled = totp_enabled
        self.totp_required = totp_required
        # Logins ended on their own (a reused refresh token), whose access tokens may not have expired yet.
        self.revoked_families = revoked_families
        self._missing: dict[int, tuple[str, ...]] = {}  # by id() of the rules of the process's AccessTable

    @property
    def needs_totp_enrollment(self) -> bool:
        """needs_totp_enrollment is true when one of the user's roles requires 2FA and they have not set it up."""
        return self.totp_required and not self.totp_enabled

    def holds(self, permission: str) -> bool:
        """holds is true when one of the user's roles grants `permission`; a superadmin holds every permission."""
        return self.is_superadmin or permission in self.permissions

    def has_role(self, role: str) -> bool:
        """has_role is true for a role the user holds, or a built-in role ranked at or below theirs."""
        return role in self.roles or (role in RANKS and self.rank >= RANKS[role])

    def missing(self, rule: Rule) -> tuple[str, ...]:
        """missing lists what `rule` requires that this user lacks; empty when allowed. Superadmin lacks nothing.

        The answer is remembered per rule: a Principal lives until its account changes, rules for the process.
        """
        found = self._missing.get(id(rule))
        if found is None:
            found = self._missing[id(rule)] = self._lacking(rule)
        return found

    def _lacking(self, rule: Rule) -> tuple[str, ...]:
        if self.is_superadmin:
            return ()
        roles = [f"role {r}" for r in rule.roles if not self.has_role(r)]
        return (*roles, *(f"permission {p}" for p in rule.permissions if not self.holds(p)))


class AccessTable:
    """AccessTable holds the compiled rules. Raises ConfigError naming a malformed rule when built."""

    def __init__(self, rules: Mapping[str, AccessRule]) -> None:
        self.exact: dict[str, Rule] = {}
        prefixes: list[tuple[str, Rule]] = []
        for pattern, raw in rules.items():
            rule = compile_rule(pattern, raw)
            if pattern.endswith("*"):
                prefixes.append((pattern[:-1], rule))
            else:
                self.exact[pattern] = rule
        # Longest prefix first: the first matching one is the most specific.
        self.prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
        # The rule deciding each (path, method) seen so far; the guard reads it directly on its fast path.
        self.decided: dict[tuple[str, str], Rule] = {}

    def match(self, path: str, method: str) -> Rule:
        """match returns the rule that decides `method path`, or DEFAULT_RULE; raises PathRefused (see
        `request_path`). `path` is a decoded request path, in any form: it is judged as `request_path(path)`.

        `decided` is only ever written under the key it is read with, `(request_path(path), method)`, so a path in
        another form (`/x/`, `//x`) can never leave a decision that its normalized form, or the guard's fast path
        (which looks the raw path up), would then find.
        """
        found = self.decided.get((path, method))
        if found is None:
            path = request_path(path)
            found = self._find(path, method)
            if len(path) <= CACHED_PATH:
                if len(self.decided) > 4096:  # paths with ids in them would grow it without end
                    self.decided.clear()
                self.decided[(path, method)] = found
        return found

    def _find(self, path: str, method: str) -> Rule:
        exact = self.exact.get(path)
        if exact is not None and covers(exact, method):
            return exact
        for prefix, rule in self.prefixes:
            if (path.startswith(prefix) or (prefix.endswith("/") and path == prefix[:-1])) and covers(rule, method):
                return rule
        return DEFAULT_RULE


def covers(rule: Rule, method: str) -> bool:
    return not rule.methods or method in rule.methods or (method == "HEAD" and "GET" in rule.methods)


def compile_rule(pattern: str, raw: AccessRule) -> Rule:
    """compile_rule checks one rule and compiles it; a ConfigError names the rule and what is wrong with it."""
    problem = access_rule_problem(pattern, raw)
    if problem is not None:
        raise ConfigError(f"{SETTING}[{pattern!r}]{problem[0]}: {problem[1]}")
    methods = [raw.method] if isinstance(raw.method, str) else list(raw.method)
    return Rule(pattern, frozenset(m.upper() for m in methods), tuple(raw.roles), tuple(raw.permissions), raw.public)
