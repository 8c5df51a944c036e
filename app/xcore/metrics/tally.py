"""What one process counts, in plain Python: requests, task runs, reloads, logins.

prometheus-client's values are cheap in one process but, in its multi-process mode, each change writes to a
memory-mapped file under a lock; a request must not pay that. So a process counts here, in dicts and lists, and
`xcore.metrics.export` moves what changed into prometheus-client's values every few seconds and before each
scrape. The counts only ever grow: the exporter remembers what it sent and sends the difference, so it can read
them from another thread while the event loop goes on counting.

A request's cell is found by what the request log sees (`lookup`: route, method, status) and shared with every
other key that has the same labels (`cells`); a method outside HTTP's usual ones is counted as OTHER and not
remembered by its own name, so no client can grow these tables without bound. Rarer events (`count`,
`observe`) take a lock: task runs come from the consumer's threads.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from typing import Any

from xcore.metrics.families import LATENCY_BUCKETS, Family

UNMATCHED = "<unmatched>"  # a request no route served
REFUSED = "<refused>"  # a request the access guard refused before routing
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
KEYS_KEPT = 10_000  # request-log keys remembered; past that, a new key finds its cell the slow way each time

Cell = list[float]  # a count per histogram bucket (the last: above the largest bound), then the sum of the values

BOUNDS = LATENCY_BUCKETS
bucket = bisect_left  # bucket(BOUNDS, seconds) is the index of the bucket counting `seconds` (bound >= seconds)

# By the request log's key (route template or handler, method, status), and by the labels (route, method, status).
lookup: dict[tuple[Any, str, int], Cell] = {}
cells: dict[tuple[str, str, int], Cell] = {}
# By (family, label values).
counts: dict[tuple[Family, tuple[str, ...]], float] = {}
observed: dict[tuple[Family, tuple[str, ...]], Cell] = {}
_lock = threading.Lock()
# Each plugin's URL prefix: a route under one is labelled with its plugin (`plugin_of`).
_prefixes: dict[str, str] = {}
started = time.time()  # when this process started counting (a forked worker: when it was forked)


def request_cell(key: tuple[Any, str, int], route: str) -> Cell:
    """request_cell is the cell counting the requests of the request log's `key` (its route part labelled
    `route`), made on first use and remembered under `key` unless the method is an unusual one."""
    _, method, status = key
    usual = method in METHODS
    labels = (route, method if usual else OTHER_METHOD, status)
    cell = cells.get(labels)
    if cell is None:
        cell = cells.setdefault(labels, [0.0] * (len(BOUNDS) + 2))
    if usual and len(lookup) < KEYS_KEPT:
        lookup[key] = cell
    return cell


def count(family: Family, *labels: str, amount: float = 1.0) -> None:
    """count adds `amount` to the counter `family` with these label values."""
    key = (family, labels)
    with _lock:
        counts[key] = counts.get(key, 0.0) + amount


def observe(family: Family, seconds: float, *labels: str) -> None:
    """observe counts one value (`seconds`) into the histogram `family` with these label values."""
    key = (family, labels)
    with _lock:
        cell = observed.get(key)
        if cell is None:
            cell = observed[key] = [0.0] * (len(family.buckets) + 2)
        cell[bisect_left(family.buckets, seconds)] += 1
        cell[-1] += seconds


def snapshot() -> tuple[list[tuple[tuple[str, str, int], Cell]], list[tuple[Any, float]], list[tuple[Any, Cell]]]:
    """snapshot copies the counts as they are now: requests, counters, histograms. Safe from any thread."""
    requests = [(labels, list(cell)) for labels, cell in list(cells.items())]
    with _lock:
        return requests, list(counts.items()), [(key, list(cell)) for key, cell in observed.items()]


def serve_prefixes(prefixes: dict[str, str]) -> None:
    """serve_prefixes sets the plugins' URL prefixes (prefix -> plugin id) that requests are labelled by."""
    global _prefixes
    _prefixes = dict(prefixes)


def plugin_of(route: str) -> str:
    """plugin_of is the id of the plugin whose prefix `route` lies under, or "" (a core route)."""
    prefixes = _prefixes
    probe = route
    while probe:
        found = prefixes.get(probe)
        if found is not None:
            return found
        probe = probe[: probe.rfind("/")]
    return ""


def reset() -> None:
    """reset forgets every count (a forked process starts from none of its parent's). The lock is made anew: a
    thread of the parent may have held it at the fork."""
    global started, _lock
    _lock = threading.Lock()
    lookup.clear()
    cells.clear()
    counts.clear()
    observed.clear()
    started = time.time()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset)
