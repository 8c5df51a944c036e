"""xcore.sdk: the one module plugin authors import (documented field by field in plugins/README.md, "xcore.sdk").

Everything in `__all__` is part of the plugin contract: plugins/README.md documents each name, with the signature
of each function, and tests/test_contract.py fails when the two differ either way. What the host reads from a
bundle (plugin.json, the entry module's `router` and hooks, the limits) is declared in `xcore.plugins.contract`.
A bundle's code imports nothing else from xcore. Grow it on purpose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

from litestar import Request, Router, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody

__all__ = [
    "Ctx",
    "FromPath",
    "FromQuery",
    "JSONBody",
    "PluginContext",
    "Request",
    "Router",
    "TaskSpec",
    "delete",
    "get",
    "patch",
    "periodic",
    "post",
    "put",
    "requires",
    "task",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PluginContext:
    """PluginContext is what the host gives a plugin: its id, version, merged config, data folder, db (this node's
    SQLite file), kv (keys and values shared by every node), cache (entries with a lifetime) and logger.

    Handlers get it by declaring a `ctx: PluginContext` parameter; `on_load(ctx)`, `on_unload(ctx)` and tasks
    that declare `ctx` get it too.
    """

    id: str
    version: str
    data_dir: Path
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    _kv: Any = field(default=None, repr=False, compare=False)  # the host's store of this plugin (`kv`)
    _cache: Any = field(default=None, repr=False, compare=False)  # the host's cache of this plugin (`cache`)

    @property
    def kv(self) -> Any:
        """kv is the plugin's own key-value store in the core database, which every node of several shares:
        `get(key, default=None)`, `set(key, value)`, `delete(key) -> bool`, `keys(prefix="") -> list[str]`.

        Keys are text (1 to 255 characters), values anything JSON holds (at most 1 MiB encoded), at most 10,000
        keys; a wrong one raises ValueError, storing nothing. Each call is a database round trip: keep what a
        request reads often in memory, and large or many rows in `db`. Sandboxed plugins have it too.
        """
        if self._kv is None:
            raise RuntimeError("ctx.kv is there once the plugin is loaded by a server")
        return self._kv

    @property
    def cache(self) -> Any:
        """cache is the plugin's own cache, entries that expire: `get(key, default=None)`, `set(key, value,
        ttl=None)`, `delete(key)`, `get_or_set(key, make, ttl=None)` (calls `make()` on a miss and stores what it
        returns), `clear()` (every entry of this plugin), and their async twins `aget`, `aset`, `adelete`,
        `aget_or_set` (`make` may be async there), `aclear`.

        Keys are text (1 to 255 characters); values are bytes (kept as they are) or anything JSON holds, at most
        1 MiB; `ttl` is whole seconds, 1 to 30 days, 1 hour when None. A wrong one raises ValueError. What is
        stored may go early (a restart of a memory cache, its size limit): a cache, not a store. Where it lives is
        the operator's `manager.plugins.cache`: this process's memory, files shared by this machine's workers, or
        Redis shared by every node. A cache that cannot be reached answers misses and stores nothing (logged).
        Sandboxed plugins have it too.
        """
        if self._cache is None:
            raise RuntimeError("ctx.cache is there once the plugin is loaded by a server")
        return self._cache

    @property
    def db(self) -> Any:
        """db is a sqlite_utils Database on `<data_dir>/plugin.db`, opened at first use in each thread.

        SQLite connections must not cross threads, and sync handlers run in a pool of them: each thread gets its
        own connection, in WAL mode (readers never wait for the writer) with a 5-second busy timeout. Its
        transactions (`ctx.db.atomic()`, and those sqlite-utils opens itself) begin IMMEDIATE: they take the write
        lock at once, waiting for another thread's or process's transaction to end. A plain BEGIN would defer it,
        and in WAL mode a transaction that has read and then writes after another one committed fails at once
        with "database is locked", whatever the timeout. (sqlite-utils' `insert` looks for its table before the
        transaction that creates it: code that may run in two threads at once creates its tables first, with
        `create(..., if_not_exists=True)`.)
        sqlite-utils' own plugins are not loaded: they would be whatever installed package registers the entry
        point, run on every plugin's connection, and finding them scans every installed package's metadata at the
        first connection of a process.
        """
        found = getattr(self._connections, "db", None)
        if found is None:
            import sqlite3

            import sqlite_utils

            self.data_dir.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.data_dir / "plugin.db", timeout=5.0, factory=_immediate_connection())
            found = self._connections.db = sqlite_utils.Database(connection, execute_plugins=False)
            found.enable_wal()
        return found

    @cached_property
    def _connections(self) -> threading.local:
        return threading.local()

    @property
    def logger(self) -> logging.Logger:
        """logger is named `xcore.plugins.<id>`; its records carry the context `plugins`."""
        return logging.getLogger(f"xcore.plugins.{self.id}")


@cache
def _immediate_connection() -> type[Any]:
    """_immediate_connection is a sqlite3.Connection whose `execute("BEGIN")` begins IMMEDIATE (see `db`);
    made at first use, so that importing the SDK does not import sqlite3."""
    import sqlite3

    class ImmediateConnection(sqlite3.Connection):
        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            if len(sql) < 16 and sql.strip().upper() == "BEGIN":  # the length first: no copy of a long statement
                sql = "BEGIN IMMEDIATE"
            return super().execute(sql, parameters)

    return ImmediateConnection


Ctx: TypeAlias = NamedDependency[PluginContext]
"""Ctx is how a handler asks for its PluginContext: `def handler(ctx: Ctx)`. (`ctx: PluginContext` works too, but
Litestar 2 warns that dependencies inferred from a bare type are deprecated.)"""


def requires(permission: str) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """requires(permission) is a Litestar guard: the logged-in user must hold `permission` (superadmins do).

    Use it as `@get("/", guards=[requires("notes.write")])`. It adds to ACCESS_RULES; it does not replace them.
    """

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = connection.scope.get("user")
        if user is None:
            raise NotAuthorizedException(f"log in first: this needs the permission {permission}")
        if not user.holds(permission):
            raise PermissionDeniedException(f"this needs the permission {permission}, which your roles do not grant")

    guard.__name__ = f"requires({permission})"
    return guard


@dataclass(frozen=True)
class TaskSpec:
    """TaskSpec is what `task` and `periodic` record on a function; the scheduler reads it when the plugin loads.

    `cron` is a 5-field crontab, `every` a number of seconds; both None for a one-off task. `requires` are the
    permissions a user needs, besides `tasks.manage`, to run, pause or resume the task (superadmins hold all).
    """

    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    retry_on_crash: bool = True
    cron: str | None = None
    every: float | None = None
    requires: tuple[str, ...] = ()


def task(
    *, retries: int | None = None, retry_delay: float | None = None, timeout: float | None = None,
    retry_on_crash: bool = True, requires: str | Iterable[str] = (),
) -> Callable[[F], F]:  # fmt: skip
    """task() declares a one-off task, registered as `<plugin id>.<function name>` when the plugin loads.

    Once loaded, `fn.enqueue(*args, delay=None, eta=None, **kwargs)` queues it and returns the run's id; before
    that (or in a process without a task host), enqueue raises RuntimeError. `requires` names the permission(s)
    a user must hold to run, pause or resume it through the admin API (the ones guarding what it acts on).
    """
    return _declare(TaskSpec(retries, retry_delay, timeout, retry_on_crash, requires=_permissions(requires)))


def periodic(
    *, cron: str | None = None, every: float | None = None, retries: int | None = None,
    timeout: float | None = None, requires: str | Iterable[str] = (),
) -> Callable[[F], F]:  # fmt: skip
    """periodic(cron="*/5 * * * *") or periodic(every=30) declares a task that runs on a schedule.

    Exactly one of `cron` (5 fields) and `every` (seconds, > 0) is required. `requires` is as for `task`.
    """
    if (cron is None) == (every is None):
        raise ValueError("periodic() takes exactly one of cron='m h dom mon dow' and every=<seconds>")
    if cron is not None and len(cron.split()) != 5:
        raise ValueError(f"periodic(cron={cron!r}): a crontab has 5 fields: minute hour day month weekday")
    if every is not None and every <= 0:
        raise ValueError(f"periodic(every={every!r}): the interval must be a positive number of seconds")
    return _declare(TaskSpec(retries=retries, timeout=timeout, cron=cron, every=every, requires=_permissions(requires)))


def _permissions(requires: str | Iterable[str]) -> tuple[str, ...]:
    found = (requires,) if isinstance(requires, str) else tuple(requires)
    for name in found:
        if not isinstance(name, str) or name.count(".") != 1 or not all(name.split(".")):
            raise ValueError(f"requires={requires!r}: a permission is named <namespace>.<name>, e.g. notes.write")
    return tuple(sorted(set(found)))


def _declare(spec: TaskSpec) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        fn.__xcore_task__ = spec  # type: ignore[attr-defined]

        def enqueue(*args: Any, delay: float | None = None, eta: Any = None, **kwargs: Any) -> int:
            raise RuntimeError(f"{fn.__name__}.enqueue(): the task is registered when its plugin loads in a server")

        fn.enqueue = enqueue  # type: ignore[attr-defined]
        return fn

    return decorate
