"""What machine a benchmark ran on, for the reports (shared by the benchmark scripts in this folder)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """cpu_model is the CPU's model name and the number of CPUs, e.g. "AMD EPYC (2 CPUs)"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def python_loop_seconds(repeats: int = 3) -> float:
    """python_loop_seconds is the least time of `repeats` runs of a fixed pure-Python loop (10 million additions):
    a yardstick of how fast this machine runs Python right now. Shared machines can be half as fast for minutes
    at a time; a report that gives this next to its absolute times tells a busy run from a quiet one."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        best = min(best, time.perf_counter() - start)
    return round(best, 3)
