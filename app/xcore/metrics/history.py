"""The last hour of the few numbers the admin UI's dashboard charts, one sample every `server.metrics_interval`
seconds (INTERVAL by default).

A sample is the difference between two readings of the totals, over every label and (with several workers)
every worker's files: the same numbers /metrics exposes, so the dashboard and a Prometheus server agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from xcore.metrics.families import HTTP_DURATION, HTTP_REQUESTS, LATENCY_BUCKETS, PLUGIN_RELOADS, TASK_RUNS

INTERVAL = 10.0  # seconds between samples: server.metrics_interval's default
WINDOW = 3600.0  # seconds of samples kept


@dataclass(frozen=True)
class Totals:
    """Totals are the counts since the server started, summed over every label and worker."""

    requests: float = 0.0
    errors: float = 0.0  # answers with a 5xx status
    buckets: tuple[float, ...] = (0.0,) * (len(LATENCY_BUCKETS) + 1)  # cumulative, per bound, then +Inf
    tasks_succeeded: float = 0.0
    tasks_failed: float = 0.0
    reloads: float = 0.0


_BUCKET_SAMPLE = f"{HTTP_DURATION.name}_bucket"
_LE = {float(bound): i for i, bound in enumerate(LATENCY_BUCKETS)}


def totals(metrics: Iterable[Any]) -> Totals:
    """totals adds up the samples of prometheus-client's collected `metrics` (objects with `samples`, each with
    `name`, `labels` and `value`) into Totals."""
    requests = errors = succeeded = failed = reloads = 0.0
    buckets = [0.0] * (len(LATENCY_BUCKETS) + 1)
    for metric in metrics:
        for sample in metric.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == HTTP_REQUESTS.name:
                requests += value
                if labels.get("status", "").startswith("5"):
                    errors += value
            elif name == _BUCKET_SAMPLE:
                bound = float(labels.get("le", "+Inf"))
                buckets[_LE.get(bound, len(LATENCY_BUCKETS))] += value
            elif name == TASK_RUNS.name:
                outcome = labels.get("outcome")
                if outcome == "succeeded":
                    succeeded += value
                elif outcome == "failed":
                    failed += value
            elif name == PLUGIN_RELOADS.name:
                reloads += value
    return Totals(requests, errors, tuple(buckets), succeeded, failed, reloads)


def quantile(q: float, bounds: tuple[float, ...], cumulative: list[float]) -> float | None:
    """quantile estimates the `q` quantile from cumulative bucket counts (one per bound, then +Inf), as
    Prometheus's histogram_quantile does: linearly within the bucket it falls in, the largest finite bound when
    it falls above them all. None without any count."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return bounds[-1]


def sample(before: Totals, after: Totals, seconds: float, at: float) -> dict[str, Any]:
    """sample is what happened between two readings `seconds` apart, the later one taken at `at` (Unix time)."""

    def grew(now: float, then: float) -> float:
        return max(now - then, 0.0)  # a restarted server starts its counts again

    buckets = [grew(now, then) for now, then in zip(after.buckets, before.buckets, strict=True)]
    p95 = quantile(0.95, LATENCY_BUCKETS, buckets)
    return {
        "t": round(at),
        "requests_per_second": round(grew(after.requests, before.requests) / seconds, 3),
        "errors_per_second": round(grew(after.errors, before.errors) / seconds, 3),
        "latency_p95_ms": round(p95 * 1000, 2) if p95 is not None else None,
        "tasks_succeeded": round(grew(after.tasks_succeeded, before.tasks_succeeded)),
        "tasks_failed": round(grew(after.tasks_failed, before.tasks_failed)),
        "reloads": round(grew(after.reloads, before.reloads)),
    }


class History:
    """History keeps the samples of the last `window` seconds, taken every `interval` seconds."""

    def __init__(self, interval: float = INTERVAL, window: float = WINDOW) -> None:
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=max(1, int(window // interval)))
        self.last: tuple[float, Totals] | None = None

    def due(self, now: float) -> bool:
        """due says whether a sample is due at `now` (Unix time)."""
        return self.last is None or now - self.last[0] >= self.interval

    def add(self, now: float, current: Totals) -> None:
        """add takes the reading `current` at `now`: a sample of what changed since the last reading."""
        if self.last is not None and now > self.last[0]:
            self.samples.append(sample(self.last[1], current, now - self.last[0], now))
        self.last = (now, current)

    def window(self) -> list[dict[str, Any]]:
        """window lists the samples kept, oldest first."""
        return list(self.samples)
