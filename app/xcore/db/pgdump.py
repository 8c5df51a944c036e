"""Backups of a PostgreSQL core database, with PostgreSQL's own tools: pg_dump writes them, pg_restore and psql
read them back.

A backup is pg_dump's custom format, named like a SQLite one but ending in `.dump`
(`xcore-<UTC time>-<revision>-<kind>.dump`), so listing, pruning and downloading treat both alike. The tools come
with the PostgreSQL client (Debian: `apt install postgresql-client`; the container image has them); when one is
missing the error says so and gives the exact command to run instead. The password never goes on a command line,
where other users of the machine could read it: the tools get it as PGPASSWORD in their environment.

A restore (`restore_dump`, for `xcore db restore` with every node stopped) runs in one transaction: the tables of
the database are dropped and the backup's are created and filled, or nothing changes. The caller then migrates
it when it is older, and brings the built-in roles up to date.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from xcore.db.engine import libpq_url, mask_url
from xcore.errors import DatabaseError

TIMEOUT = 3600.0  # seconds: a large database takes a while, a hung server must not hang the command forever
CLIENT_PACKAGE = "the PostgreSQL client (Debian and Ubuntu: apt install postgresql-client)"


def connection(url: str) -> tuple[list[str], dict[str, str]]:
    """connection is the libpq arguments (`--dbname=<URI without the password>`) and environment (PGPASSWORD)
    that reach the database at the SQLAlchemy `url`."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    return [f"--dbname={uri}"], env


def tool(name: str, instead: str) -> str:
    """tool is the path of PostgreSQL's `name` tool; raises DatabaseError saying how to get it, and `instead`."""
    found = shutil.which(name)
    if found is None:
        raise DatabaseError(f"{name} is not installed here: install {CLIENT_PACKAGE}, or run it yourself: {instead}")
    return found


def _run(args: list[str], env: dict[str, str], what: str, given: str | None = None) -> str:
    """_run runs a PostgreSQL tool, with `given` on its standard input; raises DatabaseError saying `what` failed."""
    try:
        done = subprocess.run(
            args,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            **({"input": given} if given is not None else {"stdin": subprocess.DEVNULL}),
        )
    except subprocess.TimeoutExpired:
        raise DatabaseError(f"{what} did not finish within {TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split())[:2000] or f"exit code {done.returncode}"
        raise DatabaseError(f"{what} failed: {message}")
    return done.stdout


def dump(url: str, target: Path) -> None:
    """dump writes a backup of the database at `url` to `target` (pg_dump's custom format, compressed). It reads
    one consistent snapshot, while the servers go on using the database. Raises DatabaseError."""
    args, env = connection(url)
    shown = f"pg_dump --format=custom --no-owner --file={shlex.quote(str(target))} '{mask_url(libpq_url(url))}'"
    pg_dump = tool("pg_dump", shown)
    _run([pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={target}", *args], env,
         f"pg_dump of {mask_url(url)}")  # fmt: skip


def dump_revision(path: Path) -> str | None:
    """dump_revision reads the schema revision (the `alembic_version` row) out of a pg_dump archive: None when it
    has none. Raises DatabaseError when `path` is not an archive pg_restore reads."""
    pg_restore = tool("pg_restore", f"pg_restore --list {shlex.quote(str(path))}")
    script = _run([pg_restore, "--data-only", "--table=alembic_version", "--file=-", str(path)], {},
                  f"backup file {path}: pg_restore")  # fmt: skip
    lines = script.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line and number + 1 < len(lines):
            value = lines[number + 1].strip()
            return None if value in ("", "\\.") else value
    return None


def dump_tables(path: Path) -> set[str]:
    """dump_tables is the names of the tables a pg_dump archive creates."""
    pg_restore = tool("pg_restore", f"pg_restore --list {shlex.quote(str(path))}")
    listing = _run([pg_restore, "--list", str(path)], {}, f"backup file {path}: pg_restore --list")
    tables = set()
    for line in listing.splitlines():
        # "215; 1259 16390 TABLE public users postgres": the name follows the schema.
        words = line.split()
        if not line.startswith(";") and "TABLE" in words and words.index("TABLE") + 2 < len(words):
            at = words.index("TABLE")
            if words[at - 1] != "DATA" and words[at + 1] == "public":
                tables.add(words[at + 2])
    return tables


def restore_dump(url: str, source: Path, tables: list[str]) -> None:
    """restore_dump replaces the database's `tables` (those of its public schema) with the backup's, in one
    transaction: on any error nothing has changed. Raises DatabaseError."""
    args, env = connection(url)
    target = mask_url(libpq_url(url))
    instead = f"pg_restore --clean --if-exists --no-owner --single-transaction --dbname='{target}' {source}"
    pg_restore = tool("pg_restore", instead)
    psql = tool("psql", instead)
    script = _run([pg_restore, "--no-owner", "--no-privileges", "--file=-", str(source)], {},
                  f"backup file {source}: pg_restore")  # fmt: skip
    drop = "".join(f'DROP TABLE IF EXISTS public."{name}" CASCADE;\n' for name in tables)
    psql_args = [psql, "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1", "--file=-", *args]
    _run(psql_args, env, f"restoring {source.name} into {mask_url(url)} (nothing was changed)", drop + script)
