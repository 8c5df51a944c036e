"""Schema revisions without Alembic: the revisions this xcore ships and the one a database is at.

Importing Alembic is slow, and a start with nothing to migrate, `/health` and the scheduled backup only need to
compare two strings. The shipped revisions are read from the migration scripts' `revision` and `down_revision`
assignments (parsed, not imported); a database's revision is the row of its `alembic_version` table.
`xcore.db.migrate` brings Alembic in when there is something to migrate. Importing this module imports neither.
"""

from __future__ import annotations

import ast
import contextlib
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from xcore.errors import MigrationError
from xcore.resources import resource_path

if TYPE_CHECKING:
    from sqlalchemy import Engine


def shipped(script_location: Path | None = None) -> dict[str, tuple[str, ...]]:
    """shipped maps each revision in the migration scripts to the revisions it follows (none for the first).
    xcore's own scripts are read once; another folder (a test's copy) is read at every call."""
    return _read_graph(script_location) if script_location is not None else _shipped_here()


@cache
def _shipped_here() -> dict[str, tuple[str, ...]]:
    return _read_graph(resource_path("migrations"))


def _read_graph(script_location: Path) -> dict[str, tuple[str, ...]]:
    versions = script_location / "versions"
    graph: dict[str, tuple[str, ...]] = {}
    for script in sorted(versions.glob("*.py")):
        values = _assignments(script, ("revision", "down_revision"))
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str):
            continue  # not a migration (a helper module, or __init__.py)
        graph[revision] = (down,) if isinstance(down, str) else tuple(down) if isinstance(down, (list, tuple)) else ()
    return graph


def head_revision(script_location: Path | None = None) -> str | None:
    """head_revision is the newest shipped revision, the one no other follows; None when there is none."""
    graph = shipped(script_location)
    followed = {down for downs in graph.values() for down in downs}
    heads = sorted(set(graph) - followed)
    if len(heads) > 1:
        raise MigrationError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them")
    return heads[0] if heads else None


def current_revision(engine: Engine) -> str | None:
    """current_revision reads the database's revision; None for a database never migrated. (For the SQLite
    file alone, `xcore.db.peek.revision` reads it without SQLAlchemy.)"""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with engine.connect() as connection:
        try:
            value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no alembic_version table
            return None
    return str(value) if value is not None else None


# The first top-level function or class of a script: Alembic's template puts the assignments above it.
_FIRST_DEFINITION = re.compile(rb"^(?:async\s+def|def|class)\s", re.MULTILINE)


def _assignments(script: Path, names: tuple[str, ...]) -> dict[str, object]:
    """_assignments are the literal values assigned to `names` at the top of a Python file.

    Only the part above the first function or class is parsed (a start reads every script, and the rest of a
    script is most of it); a script that assigns none of `names` there, or whose cut does not parse, is
    parsed whole.
    """
    source = script.read_bytes()
    first = _FIRST_DEFINITION.search(source)
    found: dict[str, object] = {}
    if first:
        # SyntaxError: the cut fell inside a string that has a line starting with "def ".
        with contextlib.suppress(SyntaxError):
            found = _literal_assignments(source[: first.start()], script, names)
    return found or _literal_assignments(source, script, names)


def _literal_assignments(source: bytes, script: Path, names: tuple[str, ...]) -> dict[str, object]:
    found: dict[str, object] = {}
    for node in ast.parse(source, filename=str(script)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return found
