"""The metrics routes: GET /metrics for Prometheus, and GET /api/admin/metrics for the admin UI's dashboard.

Both read the same numbers (`xcore.metrics`): every worker's counts, through prometheus-client's multi-process
files when several workers serve. ACCESS_RULES guard them with the permission `metrics.read`; on /metrics the
guard also takes a scraper token (`xcore metrics token new`, `xcore.auth.scrapers`). With `server.metrics` off,
nothing is counted and both answer 404.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from xcore.auth.errors import NotFound
from xcore.metrics import export, history
from xcore.runtime import Runtime
from xcore.web.context import actor
from xcore.web.metrics import scraped
from xcore.web.requestlog import quiet

OFF = "metrics are off on this server (the setting server.metrics is false); set it to true to collect them"


class MetricsSample(msgspec.Struct):
    t: int  # the end of the sample's interval, Unix time (seconds)
    requests_per_second: float
    errors_per_second: float  # answers with a 5xx status
    latency_p95_ms: float | None  # None when no request was answered in the interval
    tasks_succeeded: int
    tasks_failed: int
    reloads: int


class MetricsWindow(msgspec.Struct):
    interval_seconds: float
    window_seconds: float
    samples: list[MetricsSample]


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    if not runtime.config.server.metrics:
        raise NotFound(OFF)
    return runtime


@get("/metrics", sync_to_thread=True, tags=["system"], summary="Metrics in the Prometheus text format")
def prometheus_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every metric family xcore exposes, in the Prometheus text format (version 0.0.4), for a Prometheus server
    to scrape: HTTP requests by route template, method, status and plugin with a latency histogram
    (`xcore_http_*`), task runs by task, plugin and outcome (`xcore_task_*`) and the queue (`xcore_tasks_*`),
    plugin states, health and reloads (`xcore_plugin_*`), login failures and lockouts (`xcore_login_*`), the
    database (`xcore_database_*`), the backups (`xcore_backup*`) and each worker's memory and CPU
    (`xcore_process_*`, by pid). Counts add up over every worker since the server started. Needs
    `metrics.read`, or a scraper token (`xcore metrics token new NAME`) as `Authorization: Bearer <token>`."""
    runtime = _runtime(request)
    body = export.exporter().exposition(scraped(runtime, request.app.state.get("plugins")))
    return Response(body, media_type=export.CONTENT_TYPE)


@get("/api/admin/metrics", sync_to_thread=True, tags=["system"], summary="The last hour of the dashboard's numbers")
def dashboard_metrics(request: Request[Any, Any, Any]) -> MetricsWindow:
    """The numbers the admin dashboard charts, one sample every `interval_seconds` (`server.metrics_interval`,
    10 by default) over the last `window_seconds` (3600), oldest first, drawn from the same counts as /metrics
    (every worker's):

        {"interval_seconds": 10, "window_seconds": 3600,
         "samples": [{"t": 1767225600, "requests_per_second": 12.4, "errors_per_second": 0.0,
                      "latency_p95_ms": 8.7, "tasks_succeeded": 3, "tasks_failed": 0, "reloads": 0}, ...]}

    Each sample covers the interval that ends at `t` (Unix time): requests and 5xx answers per second, the 95th
    percentile of the request latency (estimated from the histogram's buckets, as Prometheus's
    histogram_quantile does; null when no request was answered), and the task runs that succeeded or failed
    for good and the plugin reloads in that interval. The window is this worker's: it starts when the worker
    started (a fresh server has none yet). Polls that succeed are kept out of the request log. Needs
    `metrics.read`."""
    actor(request, "metrics.read")
    _runtime(request)
    quiet(request)
    current = export.exporter()
    current.tick()
    samples = msgspec.convert(current.history.window(), list[MetricsSample])
    return MetricsWindow(current.history.interval, history.WINDOW, samples)


def metrics_handlers() -> list[Any]:
    return [prometheus_metrics, dashboard_metrics]
