"""Who is using the core database: the lock each serving process holds, and the one a command that migrates or
replaces the database takes instead.

- **SQLite**: one server per database file. The server holds `<db>.lock` for its whole life; `xcore db restore`,
  `upgrade` and `downgrade` take the same lock, so each refuses while the other runs.
- **PostgreSQL**: several nodes serve one database. Each holds a *shared* session advisory lock for its whole
  life; a command that migrates or replaces the database takes it *exclusively*, so it is refused while any node
  serves, and no node starts while such a command runs. Nodes starting together migrate one after the other under
  a second advisory lock (`migrating`): the first applies the migrations, the others then find nothing to do.

PostgreSQL releases a session's advisory locks when its connection ends, a killed process's included: a lock is
never left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from xcore.errors import DatabaseError

# SQLAlchemy is imported only for a database that is not the SQLite file: a SQLite server's start never needs it.

# Advisory lock keys (64-bit, any value): "xcore" and "xcore" + 1 in ASCII.
SERVING_KEY = 0x78636F7265
MIGRATING_KEY = SERVING_KEY + 1


class ServingLock:
    """ServingLock is the lock on the core database at `url`: `serve()` for a serving process, `exclusive()` for a
    command that must run alone."""

    def __init__(self, url: str, file: Path | None) -> None:
        """`file` is the SQLite file of the database (`Runtime.database_file`), None for another database."""
        self.url = url
        self.file = file
        self._held: Any = None  # the FileLock, or the PostgreSQL connection holding the advisory lock

    def serve(self) -> bool:
        """serve takes the lock as a serving process does: false when it cannot be taken now (SQLite: another
        server; PostgreSQL: a command holding it exclusively)."""
        return self._take(shared=True)

    def release(self) -> None:
        held, self._held = self._held, None
        if isinstance(held, FileLock):
            held.release()
        elif held is not None:
            # Unlocked first: a closed session's locks go only when its server process has ended, a moment later,
            # and a command run right after this would find them still held. Either fails when the server went
            # away, and its locks with the session.
            with contextlib.suppress(Exception):
                _scalar(held, "SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(Exception):
                held.close()
            held.engine.dispose()

    @contextlib.contextmanager
    def exclusive(self, action: str) -> Iterator[None]:
        """exclusive holds the lock alone while `action` runs, or raises DatabaseError when a server holds it."""
        if not self._take(shared=False):
            from xcore.db.engine import mask_url

            where = self.file if self.file is not None else mask_url(self.url)
            raise DatabaseError(
                f"cannot {action}: a server is running against {where}; stop it first (Ctrl+C or SIGTERM)"
                + ("" if self.file is not None else ", on every node")
            )
        try:
            yield
        finally:
            self.release()

    def _take(self, shared: bool) -> bool:
        if self.file is not None:
            lock = FileLock(str(self.file) + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return False
            self._held = lock
            return True
        if not is_postgres(self.url):
            return True  # another database: nothing xcore knows how to lock
        connection = _locking_connection(self.url)
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        if not _scalar(connection, f"SELECT {function}({SERVING_KEY})"):
            connection.close()
            connection.engine.dispose()
            return False
        self._held = connection
        return True


@contextlib.contextmanager
def migrating(url: str) -> Iterator[None]:
    """migrating holds, on PostgreSQL, the lock under which one node at a time checks and applies migrations; it
    waits for a node that holds it. Does nothing on SQLite, where the serving lock already lets one server in."""
    if not is_postgres(url):
        yield
        return
    connection = _locking_connection(url)
    try:
        _scalar(connection, f"SELECT pg_advisory_lock({MIGRATING_KEY})")
        yield
    finally:
        connection.close()
        connection.engine.dispose()


def is_postgres(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "postgresql"


def _locking_connection(url: str) -> Any:
    """A connection of its own (not from a pool) in autocommit mode: session advisory locks live as long as it."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except Exception as exc:
        from xcore.db.engine import mask_url

        engine.dispose()
        raise DatabaseError(f"cannot connect to the database {mask_url(url)}: {exc}") from None


def _scalar(connection: Any, sql: str) -> Any:
    from sqlalchemy import text

    return connection.execute(text(sql)).scalar()
