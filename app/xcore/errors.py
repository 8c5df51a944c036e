"""Error types that reach users. Each message names the thing that is wrong and what to do about it.

The CLI prints `XcoreError` messages on one line and exits with `exit_code`; it never shows a traceback
for them. Anything else is a bug and is reported as such. A `RequestError` is also a web answer: the web layer
(`xcore.web.problems`) turns any one into an RFC 9457 problem document with its status, title, detail and fields.
This module imports nothing from xcore and no web framework: every layer may raise these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar


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


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """FieldProblem is one input at fault: `field` says where (a field, a JSON path, a zip entry; None when no one
    input is), `message` what is wrong with it, and `rule`, when there is one, the rule it breaks."""

    field: str | None
    message: str
    rule: str | None = None


class RequestError(XcoreError):
    """RequestError is a refused request, answered as an RFC 9457 problem document; every error a route answers
    derives from it, and a subclass only sets defaults.

    - `status` is the HTTP status (a class default; the constructor may set it per error).
    - `title` is the document's title; None (the default) gives the HTTP status's phrase.
    - `detail` is the message: it names what is wrong and what to do.
    - `fields` are the inputs at fault; given `field` alone, it is that input with `detail` as its message.
    - `headers` go with the answer: `default_headers`, then those given. `extra` are members added to the document.
    """

    status: int = 400
    title: str | None = None
    default_headers: ClassVar[Mapping[str, str]] = MappingProxyType({})
    exit_code = 2

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        field: str | None = None,
        fields: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        if status is not None:
            self.status = status
        self.detail = detail
        self.field = field
        self.fields = list(fields) or ([FieldProblem(field, detail)] if field else [])
        self.headers = {**self.default_headers, **(headers or {})}
        self.extra = dict(extra or {})
