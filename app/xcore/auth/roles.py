"""Roles: creating, changing and deleting them, with the rule that stops a lower rank from changing a higher one's.

A role changes the access of every account holding it, so `check_role_changeable` applies the rule for accounts
(`xcore.auth.accounts.check_manageable`) to each of them, and remembers the rank of whoever last changed the role.
Every change is audited; changes that affect access call `AuthService.accounts_changed` after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcore.auth import audit
from xcore.auth.builtin import CUSTOM_RANK
from xcore.auth.errors import Conflict, Forbidden, InvalidInput, NotFound
from xcore.auth.rules import Principal
from xcore.auth.service import AuthService, Client
from xcore.config.schema import PERMISSION_NAME, ROLE_NAME
from xcore.db.models import Permission, Role, User

ROLE_NAME_RULE = "2 to 64 lowercase letters, digits, '_' or '-', starting with a letter"


def create_role(
    svc: AuthService,
    actor: Principal,
    client: Client,
    *,
    name: str,
    description: str = "",
    permissions: Sequence[str] = (),
    require_totp: bool = False,
) -> Role:
    if not ROLE_NAME.match(name):
        raise InvalidInput(f"a role name has {ROLE_NAME_RULE}", field="name")
    with svc.transaction() as session:
        if session.scalar(select(Role).where(Role.name == name)) is not None:
            raise Conflict(f"the role {name!r} exists", field="name")
        role = Role(name=name, description=description, builtin=False, rank=CUSTOM_RANK, require_totp=require_totp)
        role.changed_by_rank = actor.rank
        role.permissions = _grantable_permissions(session, actor, permissions)
        session.add(role)
        audit.record(
            session, "role.created", actor=actor.username, target=name, ip=client.ip, permissions=sorted(permissions)
        )
    return role


def update_role(
    svc: AuthService,
    actor: Principal,
    client: Client,
    name: str,
    *,
    description: str | None = None,
    permissions: Sequence[str] | None = None,
    require_totp: bool | None = None,
) -> Role:
    """update_role changes a role the actor may change (`check_role_changeable`). Built-in roles keep their
    permissions; only `require_totp` changes there."""
    with svc.transaction() as session:
        role = _get_role(session, name)
        if permissions is not None or description is not None or require_totp is not None:
            check_role_changeable(session, actor, role, "change")
        changed: dict[str, Any] = {}
        if permissions is not None:
            if role.builtin:
                raise Forbidden(f"the permissions of the built-in role {name!r} are fixed; create a role instead")
            role.permissions = _grantable_permissions(session, actor, permissions)
            changed["permissions"] = sorted(permissions)
        if description is not None:
            role.description = description
            changed["description"] = description
        if require_totp is not None and require_totp != role.require_totp:
            role.require_totp = require_totp
            changed["require_totp"] = require_totp
        if changed:
            role.changed_by_rank = actor.rank
            audit.record(session, "role.updated", actor=actor.username, target=name, ip=client.ip, **changed)
    svc.accounts_changed()
    return role


def delete_role(svc: AuthService, actor: Principal, client: Client, name: str) -> None:
    with svc.transaction() as session:
        role = _get_role(session, name)
        if role.builtin:
            raise Forbidden(f"the built-in role {name!r} cannot be deleted")
        check_role_changeable(session, actor, role, "delete")
        _grantable_permissions(session, actor, [p.name for p in role.permissions])
        session.delete(role)
        audit.record(session, "role.deleted", actor=actor.username, target=name, ip=client.ip)
    svc.accounts_changed()


def check_role_changeable(session: Session, actor: Principal, role: Role, verb: str) -> None:
    """check_role_changeable applies the rule for accounts to roles: a superadmin changes any role; anyone else only
    a role ranked below their own, held by no account ranked at or above their own (themselves included), and not
    last set by a higher rank (an admin cannot undo what a superadmin set). Raises Forbidden naming the reason."""
    if actor.is_superadmin:
        return
    refused = f"you cannot {verb} the role {role.name!r}"
    if role.rank >= actor.rank:
        raise Forbidden(f"{refused}: it ranks {'above' if role.rank > actor.rank else 'as high as'} your own")
    if role.changed_by_rank > actor.rank:
        raise Forbidden(f"{refused}: an account ranked above yours set it; ask a superadmin")
    holders = select(User).where(User.roles.any(Role.id == role.id))
    if session.scalar(holders.where(User.id == actor.id)) is not None:
        raise Forbidden(f"{refused}: you hold it yourself, and it would change your own access")
    above = session.scalar(holders.where(User.roles.any(Role.rank >= actor.rank)).order_by(User.username).limit(1))
    if above is not None:
        raise Forbidden(f"{refused}: {above.username!r} holds it, and you manage only accounts ranked below yours")


def _get_role(session: Session, name: str) -> Role:
    role = session.scalar(select(Role).where(Role.name == name))
    if role is None:
        raise NotFound(f"there is no role {name!r}")
    return role


def _grantable_permissions(session: Session, actor: Principal, names: Sequence[str]) -> list[Permission]:
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if not PERMISSION_NAME.match(name):
            raise InvalidInput(f"{name!r} is not a permission name such as plugins.read", field="permissions")
    found = {p.name: p for p in session.scalars(select(Permission).where(Permission.name.in_(wanted)))}
    for name in wanted:
        if name not in found:
            raise InvalidInput(f"there is no permission {name!r}; see /api/admin/permissions", field="permissions")
        if not actor.holds(name):
            raise Forbidden(f"you cannot grant the permission {name!r}: you do not hold it")
    return [found[n] for n in sorted(wanted)]
