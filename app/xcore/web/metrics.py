"""The metrics of a server worker: its counting switched on or off, its flushes, and what a scrape adds.

What a process counts lives in `xcore.metrics`; this module adds what only a worker knows. At its start
(`start`) the request log counts requests or not, as `server.metrics` says, and a thread flushes the counts
every few seconds; at its stop (`stop`) the last counts are flushed and its own series removed. The plugins'
prefixes label their routes (`serve_plugins`). A scrape adds the state of things read then (`scraped`): the
plugins' states and health, the task queue, the database and the backups, from the worker that answers.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Any

from xcore.db.backup import backup_kind, backup_time, list_backups
from xcore.metrics import export, families, tally
from xcore.plugins.loader import LoadedPlugin
from xcore.runtime import Runtime
from xcore.web.core_routes import PLUGIN_STATES, check_database
from xcore.web.requestlog import count_requests


def start(runtime: Runtime) -> None:
    """start counts requests when `server.metrics` is on, and then flushes the counts every few seconds and
    samples them every `server.metrics_interval` seconds."""
    on = runtime.config.server.metrics
    count_requests(on)
    if on:
        export.start(runtime.config.server.metrics_interval)


def stop() -> None:
    """stop flushes the last counts and removes this worker's own series (its memory and CPU)."""
    export.stop()


def serve_plugins(plugins: Iterable[LoadedPlugin]) -> None:
    """serve_plugins labels the requests under each served plugin's prefix with its id."""
    tally.serve_prefixes({plugin.manifest.prefix: plugin.id for plugin in plugins})


def scraped(runtime: Runtime, manager: Any) -> list[Any]:
    """scraped is the metric families read at scrape time: the build, the plugins' states and health (with a
    plugin `manager`), the task queue (with a task host), the database and the backups. Runs in a thread."""
    from prometheus_client.core import GaugeMetricFamily

    def family(spec: families.Family, samples: Iterable[tuple[tuple[str, ...], float]]) -> Any:
        made = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for labels, value in samples:
            made.add_metric(list(labels), value)
        return made

    found = [family(families.BUILD_INFO, [((runtime.version, platform.python_version()), 1.0)])]
    if manager is not None:
        views = list(manager.views.values())  # a snapshot: the manager runs on the loop
        states = [((view.id, state), float(view.state == state)) for view in views for state in PLUGIN_STATES]
        found.append(family(families.PLUGIN_STATE, states))
        found.append(family(families.PLUGIN_HEALTHY, _health(views)))
        if manager.tasks is not None:
            try:
                report = manager.tasks.health()
            except Exception:  # the task queue's file is unreadable: /health says why; here, no consumer
                report = {"status": "error"}
            found += _tasks(report, family)
    database = check_database(runtime)
    found.append(family(families.DATABASE_UP, [((), float(database.status != "error"))]))
    found.append(family(families.DATABASE_CURRENT, [((), float(database.status == "ok"))]))
    if database.latency_ms is not None:
        found.append(family(families.DATABASE_LATENCY, [((), database.latency_ms / 1000)]))
    backups = list_backups(runtime.backups_dir)
    kinds: dict[str, float] = {}
    for backup in backups:
        kinds[backup_kind(backup.name)] = kinds.get(backup_kind(backup.name), 0.0) + 1
    found.append(family(families.BACKUPS, [((kind,), count) for kind, count in sorted(kinds.items())]))
    times = [made for made in (backup_time(backup.name) for backup in backups) if made is not None]
    found.append(family(families.BACKUP_NEWEST, [((), max(times).timestamp())] if times else []))
    return found


def _health(views: list[Any]) -> list[tuple[tuple[str, ...], float]]:
    """_health is 1 or 0 for each plugin whose view has a health check that says ok or failing (the plugins'
    `health(ctx)`; a view without the attribute, or an unknown answer, has no sample)."""
    samples: list[tuple[tuple[str, ...], float]] = []
    for view in views:
        health = getattr(view, "health", None)
        status = health.get("status") if isinstance(health, dict) else getattr(health, "status", None)
        if status in ("ok", "failing"):
            samples.append(((view.id,), float(status == "ok")))
    return samples


def _tasks(health: dict[str, Any], family: Any) -> list[Any]:
    """_tasks are the task queue's families, from the scheduler's health report (`TaskHost.health`); only
    whether a consumer runs when the report has no numbers (the queue could not be read)."""
    found = [family(families.TASKS_CONSUMER, [((), float(health.get("status") == "ok"))])]
    if "queued" in health:
        oldest = health.get("oldest_queued_seconds")
        found += [
            family(families.TASKS_QUEUED, [((), float(health["queued"]))]),
            family(families.TASKS_SCHEDULED, [((), float(health.get("scheduled", 0)))]),
            family(families.TASKS_OLDEST, [((), float(oldest or 0.0))]),
        ]
    return found
