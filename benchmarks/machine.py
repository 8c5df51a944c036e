"""What machine a benchmark ran on, for the reports, and the processes a server runs as (shared by the benchmark
scripts in this folder)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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


# A fixed set of standard-library modules: a new interpreter importing them does what most of a start does.
IMPORTS = (
    "import argparse, asyncio, decimal, email.mime.multipart, http.client, json, logging.handlers, sqlite3, "
    "unittest, xml.etree.ElementTree, zipfile"
)


def import_seconds(repeats: int = 5) -> float:
    """import_seconds is the least time of `repeats` new interpreters importing IMPORTS: a yardstick of how fast
    this machine starts Python programs right now. Imports are bound by memory and files more than by the CPU,
    and can run 1.5 times slower while the loop above shows a quiet machine, so startup.py reports both."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", IMPORTS], check=True)
        best = min(best, time.perf_counter() - start)
    return round(best, 3)


def yardsticks() -> dict[str, float]:
    """yardsticks are both measures of the machine's speed right now, by name."""
    return {"python_loop_s": python_loop_seconds(), "imports_s": import_seconds()}


def describe(sticks: dict[str, float]) -> str:
    """describe is the one-line form of `yardsticks()` for a report."""
    return (
        f"a Python loop of 10 M additions {sticks['python_loop_s']} s (least of 3), "
        f"a new interpreter importing {len(IMPORTS.split(','))} standard modules {sticks['imports_s']} s (least of 5)"
    )


def children(pid: int) -> list[int]:
    """children are the child processes of `pid`, whichever of its threads started them ([] without /proc, or
    when the process has just ended)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):  # the thread or the process has just ended
            continue
    return sorted(set(found))


def process_tree(pid: int) -> list[int]:
    """process_tree is `pid` and its descendants (Granian's workers, their children), from /proc; [pid] alone
    where there is no /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """tree_cpu_seconds is the CPU time (user and system) used so far by process `pid` and its descendants, from
    /proc (0.0 where there is no /proc). Unlike requests/s it does not depend on how much of the core the server
    got meanwhile, so it is the steadier measure on a shared machine."""
    total, tick = 0, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / tick
