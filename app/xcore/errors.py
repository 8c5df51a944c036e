"""Error types that reach users. Each message names the thing that is wrong and what to do about it.

The CLI prints `XcoreError` messages on one line and exits with `exit_code`; it never shows a traceback
for them. Anything else is a bug and is reported as such.
"""

from __future__ import annotations


class XcoreError(Exception):
    """XcoreError is the base of every error that is the user's or the environment's, not a bug."""

    exit_code = 1


class ConfigError(XcoreError):
    """ConfigError is a bad setting: an unknown key, a wrong type, bad JSON. Startup stops with exit 2."""

    exit_code = 2


class DataDirError(XcoreError):
    """DataDirError is a data directory that cannot be created, read or written."""

    exit_code = 2


class DatabaseError(XcoreError):
    """DatabaseError is a database that cannot be reached, migrated, backed up or restored."""

    exit_code = 1


class MigrationError(DatabaseError):
    """MigrationError is a migration that failed; the message says whether the backup was restored."""


class ServerError(XcoreError):
    """ServerError is a server that cannot start, for example because its port is taken."""

    exit_code = 2


class RequestError(XcoreError):
    """RequestError is a refused operation a web route answers with `status`; `field` names the input at fault.

    `errors` lists (field, message) pairs when there are several.
    """

    status = 400
    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.errors = errors or ([(field, message)] if field else [])
