"""The metric families xcore exposes, as plain data: their names, kinds, help texts and labels.

The names are the exposed ones, `_total` included for counters; a histogram `NAME` is exposed as `NAME_bucket`,
`NAME_sum` and `NAME_count` (`exposed_names`). packaging/grafana-dashboard.json queries only these names
(tests/test_metrics.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Seconds: the bounds of the request latency histogram, and of the slower things (task runs, plugin reloads).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


@dataclass(frozen=True)
class Family:
    """Family is one metric family: its exposed name, kind, help text and label names. A gauge has the
    multi-process `mode` prometheus-client combines the workers' values with; a histogram has its `buckets`."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    mode: str = ""

    @property
    def base(self) -> str:
        """base is the name prometheus-client is given: a counter's without its `_total`."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def exposed_names(self) -> tuple[str, ...]:
        """exposed_names are the sample names of the family in an exposition."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


# Counted by each process (`tally`), flushed into prometheus-client (`export`).
HTTP_REQUESTS = Family(
    "xcore_http_requests_total",
    "counter",
    "HTTP requests answered, by route template (<unmatched>: no route; <refused>: refused by the access guard "
    "before routing), method, status and plugin (empty for the core's routes).",
    ("route", "method", "status", "plugin"),
)
HTTP_DURATION = Family(
    "xcore_http_request_duration_seconds",
    "histogram",
    "Time from a request's arrival to the end of its answer, by route template, method and plugin.",
    ("route", "method", "plugin"),
    buckets=LATENCY_BUCKETS,
)
TASK_RUNS = Family(
    "xcore_task_runs_total",
    "counter",
    "Task attempts by task name, plugin (empty for the core's) and outcome: succeeded, failed (no retry left), "
    "retrying (failed, retried later) or dropped (not registered).",
    ("task", "plugin", "outcome"),
)
TASK_DURATION = Family(
    "xcore_task_duration_seconds",
    "histogram",
    "Time one task attempt ran, by task name and plugin.",
    ("task", "plugin"),
    buckets=DURATION_BUCKETS,
)
PLUGIN_RELOADS = Family(
    "xcore_plugin_reloads_total",
    "counter",
    "Sets of plugin versions swapped in (a start, an install, an upgrade, a reload, an enable or disable), "
    "counted in every worker that swapped them.",
)
PLUGIN_RELOAD_DURATION = Family(
    "xcore_plugin_reload_duration_seconds",
    "histogram",
    "Time a reconcile that swapped plugins in took, from its scan to the new versions serving.",
    buckets=DURATION_BUCKETS,
)
LOGIN_FAILURES = Family(
    "xcore_login_failures_total",
    "counter",
    "Failed logins by what was wrong: password (or an unknown or inactive account), totp or recovery_code.",
    ("reason",),
)
LOGIN_LOCKOUTS = Family(
    "xcore_login_lockouts_total",
    "counter",
    "Lockouts started: an account name or a client address that reached its limit of failed attempts.",
    ("key",),
)
LOGIN_REFUSED = Family(
    "xcore_login_locked_refusals_total",
    "counter",
    "Login attempts refused because the account or the address was locked.",
)
# Each worker's own, set as it flushes; a worker's series go when it stops.
PROCESS_MEMORY = Family(
    "xcore_process_resident_memory_bytes",
    "gauge",
    "Resident memory of each server worker, by pid (the peak where the current size cannot be read).",
    mode="liveall",
)
PROCESS_CPU = Family(
    "xcore_process_cpu_seconds",
    "gauge",
    "CPU time (user and system) each server worker has used since it started, by pid.",
    mode="liveall",
)
PROCESS_START = Family(
    "xcore_process_start_time_seconds", "gauge", "When each server worker started (Unix time), by pid.", mode="liveall"
)
# Read when scraped, by the worker that answers (`xcore.web.metrics`).
BUILD_INFO = Family(
    "xcore_build_info", "gauge", "Always 1, labelled with xcore's and Python's versions.", ("version", "python")
)
PLUGIN_STATE = Family(
    "xcore_plugin_state",
    "gauge",
    "1 for the state each plugin is in (active, disabled, failed, pending), 0 for the others.",
    ("plugin", "state"),
)
PLUGIN_HEALTHY = Family(
    "xcore_plugin_healthy",
    "gauge",
    "1 when a plugin's health check says ok, 0 when it says failing; absent when it has none or it is unknown.",
    ("plugin",),
)
TASKS_QUEUED = Family("xcore_tasks_queued", "gauge", "Task runs waiting in the queue.")
TASKS_SCHEDULED = Family("xcore_tasks_scheduled", "gauge", "Task runs waiting for their time (delays, retries).")
TASKS_OLDEST = Family(
    "xcore_tasks_oldest_queued_age_seconds", "gauge", "How long the oldest queued task run has waited (0: none waits)."
)
TASKS_CONSUMER = Family("xcore_tasks_consumer_up", "gauge", "1 while some process runs the task consumer, else 0.")
DATABASE_UP = Family("xcore_database_up", "gauge", "1 when the core database answers, else 0.")
DATABASE_CURRENT = Family(
    "xcore_database_revision_current", "gauge", "1 when the core database is at this xcore's schema revision, else 0."
)
DATABASE_LATENCY = Family(
    "xcore_database_latency_seconds", "gauge", "Time the scrape's query of the core database took."
)
BACKUP_NEWEST = Family(
    "xcore_backup_newest_timestamp_seconds", "gauge", "When the newest backup was made (Unix time); absent: none."
)
BACKUPS = Family(
    "xcore_backups", "gauge", "Backups in the backup folder by kind: manual, scheduled, migration, safety.", ("kind",)
)

COUNTED = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    TASK_RUNS,
    TASK_DURATION,
    PLUGIN_RELOADS,
    PLUGIN_RELOAD_DURATION,
    LOGIN_FAILURES,
    LOGIN_LOCKOUTS,
    LOGIN_REFUSED,
)
PER_PROCESS = (PROCESS_MEMORY, PROCESS_CPU, PROCESS_START)
SCRAPED = (
    BUILD_INFO,
    PLUGIN_STATE,
    PLUGIN_HEALTHY,
    TASKS_QUEUED,
    TASKS_SCHEDULED,
    TASKS_OLDEST,
    TASKS_CONSUMER,
    DATABASE_UP,
    DATABASE_CURRENT,
    DATABASE_LATENCY,
    BACKUP_NEWEST,
    BACKUPS,
)
FAMILIES = (*COUNTED, *PER_PROCESS, *SCRAPED)
