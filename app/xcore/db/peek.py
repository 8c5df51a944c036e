"""A few rows of a SQLite core database, read with the standard library's sqlite3.

`xcore serve`'s process checks the database before it starts the workers: its revision, the built-in roles,
whether an account exists. When nothing needs doing, those reads are all it does with the database, and
SQLAlchemy (a large import) stays out of that process: the workers import it.
`xcore.server.prepare_database` takes the full path, with SQLAlchemy and Alembic, whenever these say anything
but "up to date".

Each function opens the file without creating it (`mode=rw`), reads and closes. A missing file, a missing
table or a locked or damaged database raises sqlite3.Error.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from xcore.db import BUSY_TIMEOUT_MS

RoleRow = tuple[bool, int, str, frozenset[str]]  # builtin, rank, description, the names of its permissions


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        yield connection
    finally:
        connection.close()


def revision(path: Path) -> str | None:
    """revision is the database's Alembic revision; None for a database never migrated."""
    with _reading(path) as db:
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
    return str(row[0]) if row is not None and row[0] is not None else None


def has_accounts(path: Path) -> bool:
    """has_accounts says whether any account exists."""
    with _reading(path) as db:
        found: int = db.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]
        return found == 1


def permissions_and_roles(path: Path) -> tuple[dict[str, str], dict[str, RoleRow]]:
    """permissions_and_roles returns every permission's description by name, and every role by name, as
    `xcore.auth.builtin.in_sync` compares them."""
    with _reading(path) as db:
        permissions = dict(db.execute("SELECT name, description FROM permissions"))
        roles: dict[str, tuple[bool, int, str, set[str]]] = {}
        rows = db.execute(
            "SELECT r.name, r.builtin, r.rank, r.description, p.name FROM roles AS r"
            " LEFT JOIN role_permissions AS rp ON rp.role_id = r.id"
            " LEFT JOIN permissions AS p ON p.id = rp.permission_id"
        )
        for name, builtin, rank, description, permission in rows:
            role = roles.setdefault(name, (bool(builtin), rank, description, set()))
            if permission is not None:
                role[3].add(permission)
    return permissions, {name: (b, r, d, frozenset(p)) for name, (b, r, d, p) in roles.items()}
