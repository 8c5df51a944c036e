"""prometheus-client's side: the metric objects, the flush of each process's counts into them, the exposition.

prometheus-client is imported here only, when a process first flushes or is scraped: it is a large import, and
neither a server's start nor a request waits for it.

With PROMETHEUS_MULTIPROC_DIR set before prometheus-client is imported (`xcore serve` sets it for its workers,
see `prepare_directory`), every value lives in a memory-mapped file of its process under that folder, and a
scrape reads them all (its multi-process mode): counters and histograms add up over the workers, live and
stopped; each worker's memory and CPU are its own series (a `pid` label), gone when it stops
(`stop`: `mark_process_dead`). Without it, one process keeps its values in memory: `xcore desktop`, the tests.

A worker's counts reach the files when it flushes: every FLUSH_EVERY seconds (`start`), and at once in the worker
that answers a scrape. So a scrape sees the other workers' counts as of a few seconds ago.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xcore.metrics import history, tally
from xcore.metrics.families import (
    COUNTED,
    HTTP_DURATION,
    HTTP_REQUESTS,
    PER_PROCESS,
    PROCESS_CPU,
    PROCESS_MEMORY,
    PROCESS_START,
    Family,
)

log = logging.getLogger("xcore.system")

ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_EVERY = 5.0  # seconds between a worker's flushes
CONTENT_TYPE = "text/plain; version=0.0.4"  # the text format every Prometheus reads (Litestar adds the charset)


def prepare_directory(path: Path) -> Path:
    """prepare_directory makes `path` the empty folder (mode 0700) of a server's metric files and returns it.
    `xcore serve` calls it before its workers start: an earlier run's counts would otherwise add to this one's."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


class Exporter:
    """Exporter holds one process's prometheus-client metrics and what it has flushed into them."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics, values

        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series are not written in multi-process mode: none, alike
        self.multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
        self.directory = os.environ.get(ENV) if self.multiprocess else None
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.metrics: dict[Family, Any] = {family: self._make(family) for family in (*COUNTED, *PER_PROCESS)}
        self.sent: dict[Any, Any] = {}  # what was flushed of each count: a float, or a histogram's cell
        self.lock = threading.Lock()
        self.history = history.History()
        self.sampling = threading.Lock()

    def _make(self, family: Family) -> Any:
        from prometheus_client import Counter, Gauge, Histogram

        if family.kind == "counter":
            return Counter(family.base, family.help, family.labels, registry=self.registry)
        if family.kind == "histogram":
            return Histogram(family.base, family.help, family.labels, registry=self.registry, buckets=family.buckets)
        mode: Any = family.mode or "all"
        return Gauge(family.base, family.help, family.labels, registry=self.registry, multiprocess_mode=mode)

    def _child(self, family: Family, values: tuple[str, ...]) -> Any:
        metric = self.metrics[family]
        return metric.labels(*values) if family.labels else metric

    def flush(self) -> None:
        """flush adds what this process counted since the last flush to its prometheus-client values, and sets
        its memory and CPU gauges."""
        requests, counters, histograms = tally.snapshot()
        with self.lock:
            for (route, method, status), cell in requests:
                self._requests(route, method, status, cell)
            for key, total in counters:
                delta = total - self.sent.get(key, 0.0)
                if delta:
                    self._child(*key).inc(delta)
                    self.sent[key] = total
            for key, cell in histograms:
                self._histogram(self._child(*key), key, cell)
            self._process()

    def _requests(self, route: str, method: str, status: int, cell: tally.Cell) -> None:
        key = ("request", route, method, status)
        before = self.sent.get(key)
        if before == cell:
            return
        plugin = tally.plugin_of(route) if route.startswith("/") else ""
        counted = sum(cell[:-1]) - (sum(before[:-1]) if before else 0.0)
        if counted:
            self._child(HTTP_REQUESTS, (route, method, str(status), plugin)).inc(counted)
        self._histogram(self._child(HTTP_DURATION, (route, method, plugin)), key, cell)

    def _histogram(self, child: Any, key: Any, cell: tally.Cell) -> None:
        """_histogram adds a cell's growth to a histogram's buckets and sum: prometheus-client's `observe` takes
        one value at a time, and each is a write to a file in multi-process mode."""
        before = self.sent.get(key) or [0.0] * len(cell)
        if before == cell:
            return
        for i, (now, then) in enumerate(zip(cell[:-1], before[:-1], strict=True)):
            if now != then:
                child._buckets[i].inc(now - then)
        child._sum.inc(cell[-1] - before[-1])
        self.sent[key] = cell

    def _process(self) -> None:
        memory = resident_bytes()
        if memory is not None:
            self.metrics[PROCESS_MEMORY].set(memory)
        used = os.times()
        self.metrics[PROCESS_CPU].set(used.user + used.system)
        self.metrics[PROCESS_START].set(tally.started)

    def collect(self) -> list[Any]:
        """collect is every process's metrics as prometheus-client collects them (its Metric objects)."""
        if self.directory is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            return list(MultiProcessCollector(None, self.directory).collect())  # type: ignore[no-untyped-call]
        assert self.registry is not None
        return list(self.registry.collect())

    def exposition(self, extra: Iterable[Any] = ()) -> bytes:
        """exposition is the text format of every process's metrics, this one's flushed first, and of `extra`
        (metric families made at scrape time)."""
        from prometheus_client import generate_latest

        self.flush()
        return generate_latest(_Collected([*self.collect(), *extra]))

    def tick(self, now: float | None = None) -> None:
        """tick flushes, and takes a sample of the history when one is due."""
        self.flush()
        moment = time.time() if now is None else now
        with self.sampling:
            if self.history.due(moment):
                self.history.add(moment, history.totals(self.collect()))


class _Collected:
    """_Collected is a collector of metrics already collected, for `generate_latest`."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics


def resident_bytes() -> float | None:
    """resident_bytes is this process's resident memory: the current size where /proc tells it (Linux), else the
    peak (getrusage), else None (Windows)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


_exporter: Exporter | None = None
_exporter_lock = threading.Lock()
_flusher: tuple[threading.Thread, threading.Event] | None = None


def exporter() -> Exporter:
    """exporter is this process's Exporter, made at the first call."""
    global _exporter
    if _exporter is None:
        with _exporter_lock:
            if _exporter is None:
                _exporter = Exporter()
    return _exporter


def start(interval: float = history.INTERVAL) -> None:
    """start flushes this process's counts every FLUSH_EVERY seconds, or every half `interval` when that is
    sooner, and samples the history every `interval` seconds, in a thread of its own, until `stop`."""
    global _flusher
    if _flusher is not None:
        return
    current = exporter()
    if current.history.interval != interval:
        with current.sampling:
            current.history = history.History(interval)
    every = min(FLUSH_EVERY, interval / 2)  # a tick a little early for a sample waits a half interval, no more
    stopping = threading.Event()

    def run() -> None:
        while not stopping.wait(every):
            try:
                exporter().tick()
            except Exception:  # a full disk, say: the next flush tries again
                log.exception("could not flush the metrics")

    thread = threading.Thread(target=run, name="xcore-metrics", daemon=True)
    _flusher = (thread, stopping)
    thread.start()


def stop() -> None:
    """stop ends the flushes, flushes a last time, and (with several processes) removes this process's own
    series, its memory and CPU, from what a scrape reads."""
    global _flusher
    if _flusher is None:
        return
    thread, stopping = _flusher
    _flusher = None
    stopping.set()
    thread.join()
    current = exporter()
    current.flush()
    if current.directory is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), current.directory)  # type: ignore[no-untyped-call]
