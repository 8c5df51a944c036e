"""The embedded task scheduler: enqueue and execution rates, enqueue-to-start latency, periodic drift.

Everything runs in this process on a fresh data directory, through xcore's real TaskHost: the SQLite queue in
`<data>/tasks.db`, the run journal in `xcore.db`, and the embedded Huey consumer threads.

- enqueue rate: `--tasks` runs of a no-op task queued back to back (each is a journal row and a queue entry);
- execution rate: the same number queued first, then a consumer with 1, 2 and 4 threads runs them all;
- latency: from `enqueue()` to the task's first line, while tasks keep coming (one every 50 ms), and for
  runs queued after the consumer sat idle for `--idle` seconds;
- periodic drift: an `every=0.5` task's actual starts against its planned ones (p95).

    python benchmarks/tasks.py [--tasks 2000] [--idle 30]

Targets (issue 5): above 1,000 enqueues/s; p50 latency below 20 ms after idle; periodic drift p95 below 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/http.py would shadow the standard `http` package: drop this folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import msgspec  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from xcore.db.models import TaskRun  # noqa: E402
from xcore.runtime import Runtime, open_runtime  # noqa: E402
from xcore.sdk import periodic, task  # noqa: E402
from xcore.server import prepare_database  # noqa: E402
from xcore.tasks.host import TaskHost  # noqa: E402

STARTS: dict[int, float] = {}  # sample number -> time.perf_counter() when the task began
TICKS: list[float] = []


@task(retries=0)
def noop() -> None:
    """noop does nothing: what is measured is the queue."""


@task(retries=0)
def mark(sample: int) -> None:
    STARTS[sample] = time.perf_counter()


@periodic(every=0.5, retries=0)
def tick() -> None:
    TICKS.append(time.time())


def host_with(runtime: Runtime, workers: int) -> TaskHost:
    host = TaskHost(runtime)
    host.settings = msgspec.structs.replace(runtime.config.manager.tasks, workers=workers)
    for name, fn in (("bench.noop", noop), ("bench.mark", mark)):
        host.register(name, fn)
    return host


def succeeded(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).where(TaskRun.status == "succeeded")) or 0


def wait_done(runtime: Runtime, total: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while succeeded(runtime) < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {succeeded(runtime)} of {total} runs finished in {timeout:.0f} s")
        time.sleep(0.02)


def measure_rates(data: Path, count: int) -> tuple[float, dict[int, float]]:
    enqueue_rate = 0.0
    execution: dict[int, float] = {}
    for workers in (1, 2, 4):
        folder = data / f"rates-{workers}"
        runtime = open_runtime(folder, environ={}, logs=False)
        prepare_database(runtime)
        host = host_with(runtime, workers)
        started = time.perf_counter()
        for _ in range(count):
            host.enqueue("bench.noop")
        rate = count / (time.perf_counter() - started)
        enqueue_rate = max(enqueue_rate, rate) if workers == 1 else enqueue_rate
        started = time.perf_counter()
        host.start()
        wait_done(runtime, count)
        execution[workers] = count / (time.perf_counter() - started)
        host.stop()
        runtime.close()
        print(f"  {workers} thread(s): enqueue {rate:,.0f}/s, execute {execution[workers]:,.0f}/s", file=sys.stderr)
    return enqueue_rate, execution


def measure_latency(data: Path, idle: float) -> tuple[list[float], list[float]]:
    runtime = open_runtime(data / "latency", environ={}, logs=False)
    prepare_database(runtime)
    host = host_with(runtime, 2)
    host.start()
    busy: list[float] = []
    for sample in range(60):
        queued = time.perf_counter()
        host.enqueue("bench.mark", [sample])
        while sample not in STARTS:
            time.sleep(0.0005)
        busy.append((STARTS[sample] - queued) * 1000)
        time.sleep(0.05)
    print(f"  idle for {idle:g} s ...", file=sys.stderr)
    time.sleep(idle)
    after_idle: list[float] = []
    for sample in range(1000, 1010):
        queued = time.perf_counter()
        host.enqueue("bench.mark", [sample])
        while sample not in STARTS:
            time.sleep(0.0005)
        after_idle.append((STARTS[sample] - queued) * 1000)
        time.sleep(1.0)  # each one after a second of idleness again
    host.stop()
    runtime.close()
    return busy, after_idle


def measure_drift(data: Path, seconds: float = 12.0) -> list[float]:
    runtime = open_runtime(data / "drift", environ={}, logs=False)
    prepare_database(runtime)
    host = host_with(runtime, 2)
    host.register("bench.tick", tick)
    host.start()
    time.sleep(seconds)
    host.stop()
    runtime.close()
    first = TICKS[0]
    return [abs(actual - (first + 0.5 * k)) * 1000 for k, actual in enumerate(TICKS)]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcore-tasks-") as tmp:
        data = Path(tmp)
        print("rates ...", file=sys.stderr)
        enqueue_rate, execution = measure_rates(data, args.tasks)
        print("latency ...", file=sys.stderr)
        busy, idle = measure_latency(data, args.idle)
        print("periodic drift ...", file=sys.stderr)
        drift = measure_drift(data)
    rows = [
        ("enqueue rate", f"{enqueue_rate:,.0f} tasks/s", "> 1,000/s"),
        *((f"execution rate, {n} thread(s)", f"{rate:,.0f} tasks/s", "") for n, rate in execution.items()),
        ("latency while busy, p50 / p95", f"{statistics.median(busy):.1f} / {p(busy, 0.95):.1f} ms", ""),
        (
            f"latency after {args.idle:g} s idle, p50 / p95",
            f"{statistics.median(idle):.1f} / {p(idle, 0.95):.1f} ms",
            "p50 < 20 ms",
        ),
        (f"periodic drift (every=0.5, {len(drift)} runs), p95", f"{p(drift, 0.95):.1f} ms", "< 1,000 ms"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'result':<22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<22}  {target}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
