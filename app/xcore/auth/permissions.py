"""The sync of the core permissions and built-in roles (`xcore.auth.builtin`) into the RBAC tables.

Plugins add `<plugin_id>.<name>` permissions from their manifest through `register_plugin_permissions`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from xcore.auth.builtin import BUILTIN_ROLES, PERMISSIONS, RANKS
from xcore.config.schema import PERMISSION_NAME
from xcore.db.models import Permission, Role


def sync_builtin(session: Session) -> None:
    """sync_builtin creates missing core permissions and built-in roles and resets what built-in roles grant.

    It runs after every migration, so a new xcore's permissions exist before anyone logs in. Idempotent.
    """
    existing = {p.name: p for p in session.scalars(select(Permission))}
    for name, description in PERMISSIONS.items():
        if name not in existing:
            existing[name] = Permission(name=name, description=description)
            session.add(existing[name])
        elif existing[name].description != description:
            existing[name].description = description
    roles = {r.name: r for r in session.scalars(select(Role))}
    for name, (description, granted) in BUILTIN_ROLES.items():
        role = roles.get(name)
        if role is None:
            role = Role(name=name, description=description, builtin=True, rank=RANKS[name], require_totp=False)
            session.add(role)
        role.builtin, role.rank, role.description = True, RANKS[name], description
        role.permissions = sorted((existing[p] for p in granted), key=lambda p: p.name)
    session.flush()


def register_plugin_permissions(session: Session, plugin_id: str, names: Iterable[str]) -> list[str]:
    """register_plugin_permissions creates a plugin's `<plugin_id>.<name>` permissions; returns the new ones.

    Raises ValueError naming the first name outside the plugin's namespace. Existing grants are kept, so a
    reload or an upgrade of the plugin does not take rights away from roles.
    """
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if not name.startswith(f"{plugin_id}.") or not PERMISSION_NAME.match(name):
            raise ValueError(f"permission {name!r} must be named {plugin_id}.<name> (lowercase letters, digits, _ -)")
    have = set(session.scalars(select(Permission.name).where(Permission.name.in_(wanted))))
    created = [name for name in wanted if name not in have]
    session.add_all(Permission(name=name, description="", plugin_id=plugin_id) for name in created)
    session.flush()
    return created
