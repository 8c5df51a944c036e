"""The core routes every xcore serves: /health and /api/version."""

import platform
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from xcore.db.revisions import head_revision
from xcore.runtime import Runtime

HEALTHY, UNHEALTHY = 200, 503

# The migrations shipped with this xcore do not change while it runs.


class DatabaseHealth(msgspec.Struct):
    status: str
    backend: str
    revision: str | None = None
    head: str | None = None
    latency_ms: float | None = None
    error: str | None = None


class SchedulerHealth(msgspec.Struct):
    status: str  # ok | stopped
    consumer: str  # running here | running in another process | stopped
    queued: int  # runs waiting in the queue now
    scheduled: int  # runs waiting for their time (delays, retries)
    oldest_queued_seconds: float | None  # how long the oldest run still marked queued has waited


class Health(msgspec.Struct):
    status: str
    version: str
    uptime_seconds: float
    database: DatabaseHealth
    scheduler: SchedulerHealth | None = None  # None in a process without a task host
    # Plugins by state, and `failed_versions`: versions that failed (a plugin may serve an older version meanwhile,
    # so `failed` alone would hide a failed upgrade). None in a process without a plugin manager.
    plugins: dict[str, int] | None = None
    # The active plugins by their last health check (ok, failing, unknown: not checked yet or no health()).
    # Counts only: which plugin fails is in the admin API (`GET /api/admin/plugins`, `health`).
    plugin_health: dict[str, int] | None = None
    # Set when this run has every plugin off (`xcore serve --safe`, or after repeated failed starts): why, and the
    # plugin suspected of breaking the start.
    safe_mode: dict[str, str | None] | None = None


class VersionInfo(msgspec.Struct):
    name: str
    version: str
    python: str
    api: int


def check_database(runtime: Runtime) -> DatabaseHealth:
    """check_database reads the schema revision (one query, which also proves the database answers); never raises."""
    backend = runtime.database_url.split(":", 1)[0].split("+", 1)[0]
    start = time.perf_counter()
    try:
        with runtime.engine.connect() as connection:
            try:
                revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:  # no alembic_version table: a database never migrated
                connection.rollback()
                connection.execute(text("SELECT 1"))
                revision = None
        latency = round((time.perf_counter() - start) * 1000, 2)
    except Exception as exc:
        return DatabaseHealth("error", backend, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    head = head_revision()
    status = "ok" if revision == head else "outdated"
    return DatabaseHealth(status, backend, revision, head, latency)


@get("/health", sync_to_thread=True, tags=["system"], summary="Health of this xcore process")
def health(state: State) -> Response[Health]:
    """Reports the database, the task scheduler, the plugins by state (active, disabled, failed, pending) and the
    number of failed versions (`failed_versions`, a failed upgrade included), the active plugins by health
    (`plugin_health`: ok, failing, unknown), version and uptime. 200 when the database answers and is up to date,
    else 503. A stopped task consumer, a failed plugin or a failing health() is reported, not a failure of this
    process."""
    runtime: Runtime = state.runtime
    database = check_database(runtime)
    ok = database.status == "ok"
    body = Health("ok" if ok else "unavailable", runtime.version, round(runtime.uptime(), 3), database)
    manager = state.get("plugins")
    if manager is not None:
        views = list(manager.views.values())  # a snapshot: the manager runs on the loop
        body.plugins = plugin_counts(views)
        body.plugin_health = health_counts(views)
        if manager.safe_mode is not None:
            body.safe_mode = {"reason": manager.safe_mode.reason, "suspect": manager.safe_mode.suspect}
    if ok and manager is not None and manager.tasks is not None:
        try:
            body.scheduler = SchedulerHealth(**manager.tasks.health())
        except Exception as exc:  # the task queue's file is unreadable: say so, do not fail the health check
            body.scheduler = SchedulerHealth("error", f"{type(exc).__name__}: {exc}", 0, 0, None)
    return Response(body, status_code=HEALTHY if ok else UNHEALTHY)


PLUGIN_STATES = ("active", "disabled", "failed", "pending")


def plugin_counts(views: Iterable[Any]) -> dict[str, int]:
    """plugin_counts counts plugins by state, and their failed versions as `failed_versions`: a plugin whose
    upgrade failed is `active` (the old version serves) and has one. The usual states are always there, zero or
    not. Which versions failed is in the admin API (`GET /api/admin/plugins`, `summary`), not in this public
    answer: it would tell anyone which plugins and versions run here."""
    counts = dict.fromkeys(PLUGIN_STATES, 0)
    counts["failed_versions"] = 0
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
        counts["failed_versions"] += len(view.failed_versions)
    return counts


def health_counts(views: Iterable[Any]) -> dict[str, int]:
    """health_counts counts the active plugins by the status of their last health check: ok, failing and
    unknown (not checked yet, or no health() defined), each always there. A failing plugin still serves."""
    counts = {"ok": 0, "failing": 0, "unknown": 0}
    for view in views:
        if view.state == "active":
            status = getattr(view.health, "status", "unknown")
            counts[status] = counts.get(status, 0) + 1
    return counts


def version_handler(runtime: Runtime) -> Any:
    """version_handler builds /api/version; the answer is computed once, the route is on the hot path."""
    info = VersionInfo("xcore", runtime.version, platform.python_version(), api=1)

    @get("/api/version", sync_to_thread=False, tags=["system"], summary="Version of xcore")
    def version() -> VersionInfo:
        """The xcore version, the Python version and the API generation."""
        return info

    return version
