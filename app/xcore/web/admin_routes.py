"""The rest of the access admin API: roles, permissions, the access explainer, the audit log, system facts."""

import os
import platform
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote

from litestar import Request, delete, get, patch, post
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from msgspec import UNSET
from sqlalchemy import func, or_, select

from xcore.auth import roles
from xcore.auth.errors import InvalidInput, NotFound
from xcore.auth.login import find_user
from xcore.auth.principals import principal_of
from xcore.auth.rules import MAX_PATH, PathRefused, Rule, request_path
from xcore.config.schema import HTTP_METHODS
from xcore.db.engine import mask_url
from xcore.db.models import AuditEvent, Permission, Role, as_utc
from xcore.runtime import Runtime
from xcore.web.context import actor, client_of, service
from xcore.web.schemas import (
    AuditOut,
    ExplainOut,
    Page,
    PermissionOut,
    RoleIn,
    RoleOut,
    RolePatch,
    RuleOut,
    SystemOut,
)

RoleName = Annotated[str, Parameter(max_length=64, description="The role's name.")]


def role_out(role: Role) -> RoleOut:
    return RoleOut(
        role.name, role.description, role.builtin, role.rank, role.require_totp, [p.name for p in role.permissions]
    )


@get("/api/admin/roles", sync_to_thread=True, tags=["roles"], summary="List roles")
def list_roles(request: Request[Any, Any, Any]) -> list[RoleOut]:
    actor(request, "users.read")
    with service(request).sessions() as session:
        return [role_out(r) for r in session.scalars(select(Role).order_by(Role.rank.desc(), Role.name))]


@post("/api/admin/roles", sync_to_thread=True, tags=["roles"], status_code=HTTP_201_CREATED, summary="Create a role")
def create_role(request: Request[Any, Any, Any], data: JSONBody[RoleIn]) -> RoleOut:
    """Creates a custom role (ranked as `user`) granting permissions you hold yourself."""
    role = roles.create_role(
        service(request),
        actor(request, "roles.manage"),
        client_of(request),
        name=data.name,
        description=data.description,
        permissions=data.permissions,
        require_totp=data.require_totp,
    )
    return role_out(role)


@patch("/api/admin/roles/{name:str}", sync_to_thread=True, tags=["roles"], summary="Change a role")
def update_role(request: Request[Any, Any, Any], name: RoleName, data: JSONBody[RolePatch]) -> RoleOut:
    """Changes a role. `require_totp` makes 2FA mandatory for its members; changing permissions needs roles.manage
    and is not possible on built-in roles. Below superadmin, only a role ranked below you, held by no account
    ranked at or above you (yourself included), and last changed by no higher rank."""
    who = actor(
        request, "roles.manage" if data.permissions is not UNSET or data.description is not UNSET else "users.manage"
    )
    role = roles.update_role(
        service(request),
        who,
        client_of(request),
        name,
        description=None if data.description is UNSET else data.description,
        permissions=None if data.permissions is UNSET else data.permissions,
        require_totp=None if data.require_totp is UNSET else data.require_totp,
    )
    return role_out(role)


@delete("/api/admin/roles/{name:str}", sync_to_thread=True, tags=["roles"], status_code=HTTP_204_NO_CONTENT)
def delete_role(request: Request[Any, Any, Any], name: RoleName) -> None:
    """Deletes a custom role; its members lose what it granted. Below superadmin, the rules of a change apply."""
    roles.delete_role(service(request), actor(request, "roles.manage"), client_of(request), name)


@get("/api/admin/permissions", sync_to_thread=True, tags=["roles"], summary="List permissions")
def list_permissions(request: Request[Any, Any, Any]) -> list[PermissionOut]:
    """Core permissions and those plugins declare, with the roles granting each."""
    actor(request, "users.read")
    with service(request).sessions() as session:
        roles = session.scalars(select(Role)).all()
        granted: dict[str, list[str]] = {}
        for role in roles:
            for p in role.permissions:
                granted.setdefault(p.name, []).append(role.name)
        return [
            PermissionOut(p.name, p.description, p.plugin_id, sorted(granted.get(p.name, [])))
            for p in session.scalars(select(Permission).order_by(Permission.name))
        ]


def rule_out(rule: Rule) -> RuleOut:
    return RuleOut(
        rule.pattern, list(rule.roles), list(rule.permissions), sorted(rule.methods), rule.public, rule.requirement
    )


@get("/api/admin/access/explain", sync_to_thread=True, tags=["roles"], summary="Explain an access decision")
def explain(
    request: Request[Any, Any, Any],
    path: Annotated[
        str,
        Parameter(
            min_length=1,
            max_length=3 * MAX_PATH,
            description="Request path as in a URL, e.g. /api/admin/users (percent-escapes are decoded once, as the "
            "server decodes them; a query string is ignored)",
        ),
    ],
    method: Annotated[str, Parameter(max_length=10)] = "GET",
    user: Annotated[str | None, Parameter(max_length=254, description="Username; none means anonymous")] = None,
) -> ExplainOut:
    """Which ACCESS_RULES entry decides `method path`, what it requires, and whether `user` gets in.

    The path is judged exactly as the access guard judges a request for it (`path` in the answer is that form);
    a path the guard refuses outright is answered 400, saying the guard's status and why."""
    actor(request, "users.read")
    method = method.upper()
    if method not in HTTP_METHODS:
        raise InvalidInput(f"unknown HTTP method {method!r}", field="method")
    if not path.startswith("/"):
        raise InvalidInput("the path must start with /", field="path")
    auth = service(request)
    try:
        path = request_path(unquote(path.partition("?")[0].partition("#")[0], errors="replace"))
        rule = auth.rules.match(path, method)
    except PathRefused as exc:
        raise InvalidInput(f"the access guard answers this path {exc.status}: {exc}", field="path") from None
    which = f"rule {rule.pattern!r}" if rule.pattern else "no rule matches, so the default applies"
    if user is None:
        allowed = rule.public
        reason = f"{which}: {rule.requirement}; " + (
            "anonymous requests get in" if allowed else "anonymous requests get 401"
        )
        return ExplainOut(path, method, rule_out(rule), None, [], allowed, reason)
    with auth.sessions() as session:
        found = find_user(session, user)
        if found is None:
            raise NotFound(f"there is no user {user!r}", field="user")
        principal = principal_of(found)
        active = found.is_active
    missing = [] if rule.public else principal.missing(rule)
    if not active:
        allowed, verdict = rule.public, "the account is deactivated, so only public paths are open"
    elif missing:
        allowed, verdict = False, f"{found.username} lacks {', '.join(missing)} (403)"
    elif principal.needs_totp_enrollment and not rule.public:
        allowed, verdict = False, "a role requires 2FA and the user has not enrolled, so only /api/me is open"
    else:
        allowed, verdict = True, f"{found.username} gets in"
    return ExplainOut(
        path,
        method,
        rule_out(rule),
        found.username,
        sorted(principal.roles),
        allowed,
        f"{which}: {rule.requirement}; {verdict}",
    )


@get("/api/admin/audit", sync_to_thread=True, tags=["audit"], summary="The audit log")
def audit_log(
    request: Request[Any, Any, Any],
    user: Annotated[str | None, Parameter(max_length=254, description="Events by or about this user")] = None,
    action: Annotated[str | None, Parameter(max_length=100, description="Action, or a prefix ending in *")] = None,
    since: FromQuery[datetime | None] = None,
    until: FromQuery[datetime | None] = None,
    page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> Page:
    """Security events, newest first, filtered by user, action and time (ISO 8601)."""
    actor(request, "audit.read")
    query = select(AuditEvent)
    if user:
        query = query.where(or_(AuditEvent.actor == user, AuditEvent.target == user))
    if action:
        query = query.where(
            AuditEvent.action.startswith(action[:-1]) if action.endswith("*") else AuditEvent.action == action
        )
    if since:
        query = query.where(AuditEvent.at >= as_utc(since))
    if until:
        query = query.where(AuditEvent.at <= as_utc(until))
    with service(request).sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        events = session.scalars(
            query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).offset((page - 1) * per_page).limit(per_page)
        )
        items = [AuditOut(e.id, as_utc(e.at), e.actor, e.action, e.target, e.ip, e.detail or {}) for e in events]
    return Page(items, total, page, per_page)


def system_handler(runtime: Runtime) -> Any:
    """system_handler builds /api/admin/system: facts about this process, no database work. What cannot change
    while the process runs is read once; the process id is read per request (the app may be built before a fork)."""
    version, python, data_dir = runtime.version, platform.python_version(), str(runtime.data.root)
    database = mask_url(runtime.database_url)
    workers = runtime.config.server.workers
    started = datetime.fromtimestamp(runtime.started_at, UTC)
    uptime = runtime.uptime

    @get("/api/admin/system", sync_to_thread=False, tags=["system"], summary="This xcore process")
    def system() -> SystemOut:
        """Version, data directory, database (password hidden), process id, workers and uptime."""
        return SystemOut(version, python, data_dir, database, os.getpid(), workers, started, round(uptime(), 3))

    return system


def admin_handlers(runtime: Runtime) -> list[Any]:
    return [
        list_roles,
        create_role,
        update_role,
        delete_role,
        list_permissions,
        explain,
        audit_log,
        system_handler(runtime),
    ]
