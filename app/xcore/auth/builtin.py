"""The core permissions and the built-in roles, in one place, as plain data.

`xcore.auth.permissions` writes them into the RBAC tables (`sync_builtin`); `in_sync` tells, from rows read
with the standard library, whether a database already holds them, so a server start with nothing to change
never imports SQLAlchemy (see `xcore.server.prepare_database`).
"""

from __future__ import annotations

from collections.abc import Mapping

# Every core permission, with what it allows. Routes are guarded by ACCESS_RULES; handlers check these for
# the finer decisions (who may change whom).
PERMISSIONS: dict[str, str] = {
    "plugins.read": "See plugins, their state and errors.",
    "plugins.manage": (
        "Upload, enable, disable, reload, configure and delete plugins. A plugin runs in the server's process with "
        "its rights (it can read every secret and act as anyone), so this is a superadmin power."
    ),
    "plugins.manage_sandboxed": (
        "Upload, enable, disable, reload, configure and delete plugins that run sandboxed, each in a confined "
        "worker process of its own, never one that runs in the server's process."
    ),
    "tasks.read": "See scheduled tasks and their run history.",
    "tasks.manage": "Run, pause and resume tasks.",
    "users.read": "See user accounts.",
    "users.manage": "Create, change, deactivate and delete accounts below one's own rank.",
    "roles.manage": "Create and change roles and what they grant.",
    "logs.read": "Read the logs.",
    "audit.read": "Read the audit log.",
    "backups.manage": "Create, download and restore database backups.",
    "settings.manage": "Change xcore's settings.",
    "metrics.read": "Read the metrics: GET /metrics (Prometheus) and the admin dashboard's numbers.",
}

SUPERADMIN, ADMIN, USER = "superadmin", "admin", "user"

# Ranks order the built-in roles: a role implies every role of lower rank, and nobody may grant a role ranked
# above their own. Custom roles rank as `user`.
RANKS: dict[str, int] = {SUPERADMIN: 100, ADMIN: 50, USER: 10}
CUSTOM_RANK = RANKS[USER]

BUILTIN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    SUPERADMIN: ("Everything, including roles, settings and backups.", frozenset(PERMISSIONS)),
    ADMIN: (
        "Sees plugins and manages sandboxed ones; manages tasks, logs and the users below admin; reads the metrics.",
        frozenset(
            {
                "plugins.read",
                "plugins.manage_sandboxed",
                "tasks.read",
                "tasks.manage",
                "users.read",
                "users.manage",
                "logs.read",
                "audit.read",
                "metrics.read",
            }
        ),
    ),
    USER: ("Own account only.", frozenset()),
}


# Installing or changing a plugin that runs in the server's process makes its author as powerful as the server:
# the plugin can read secret.key, the password hashes and the 2FA secrets, and mint a superadmin token. So only a
# superadmin holds `plugins.manage`. A plugin that runs sandboxed (its manifest's `sandbox`, or the operator's
# `manager.plugins.sandbox = "require"`) sees none of that, so admins hold `plugins.manage_sandboxed`.
IN_PROCESS_PLUGINS = "plugins.manage"
SANDBOXED_PLUGINS = "plugins.manage_sandboxed"


def manage_permission(sandboxed: bool = False) -> str:
    """manage_permission is the permission needed to install, enable, disable, reload, configure or remove a
    plugin: `plugins.manage_sandboxed` when every version of it involved runs sandboxed, else `plugins.manage`."""
    return SANDBOXED_PLUGINS if sandboxed else IN_PROCESS_PLUGINS


def in_sync(permissions: Mapping[str, str], roles: Mapping[str, tuple[bool, int, str, frozenset[str]]]) -> bool:
    """in_sync says whether a database needs nothing from `sync_builtin`: every core permission exists with its
    description, and every built-in role exists, marked built-in, with its rank, its description and exactly its
    grants. `permissions` maps the database's permission names to their descriptions; `roles` maps role names to
    (builtin, rank, description, granted permission names). Other rows (custom roles, plugins' permissions) do
    not matter."""
    if any(permissions.get(name) != description for name, description in PERMISSIONS.items()):
        return False
    return all(
        roles.get(name) == (True, RANKS[name], description, granted)
        for name, (description, granted) in BUILTIN_ROLES.items()
    )
