"""What machine a benchmark ran on, for the reports (shared by the benchmark scripts in this folder)."""

from __future__ import annotations

import os
import platform
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
