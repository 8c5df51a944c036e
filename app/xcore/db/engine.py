"""SQLAlchemy engines for the core database, with SQLite tuned for a server: WAL, foreign keys, busy timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from xcore.db import BUSY_TIMEOUT_MS


def sqlite_path(url: str) -> Path | None:
    """sqlite_path returns the file of a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).absolute()


def mask_url(url: str) -> str:
    """mask_url hides the password of a database or Redis URL, for logs and `config show`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: show nothing of it
        return "***"


def libpq_url(url: str) -> str:
    """libpq_url is a SQLAlchemy PostgreSQL URL as libpq (psycopg, pg_dump, psql) takes it: postgresql://..."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, echo: bool = False) -> Engine:
    """make_engine creates the engine; for SQLite every connection gets WAL, foreign keys and a busy timeout.

    `echo` is left to the logging setup (logger `sqlalchemy.engine`), so SQL lines carry context `db`.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    path = sqlite_path(url)
    if make_url(url).get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if make_url(url).get_backend_name() == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
