"""The benchmark scripts that reach into xcore's request path still run against the code as it is.

benchmarks/layers.py drives the worker's layers one by one (the Switch, the Dispatch, a plugin's app as the
Dispatch enters it); a change to those layers must not leave it measuring something else, or failing, unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLEAN_ENV

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.sqlite  # the script makes its own SQLite data directory


def test_layers_times_every_stack_of_the_request_path() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "layers.py"), "--requests", "30", "--rounds", "1"],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r"^  ([a-z-]+)\s+([\d.]+)\s+[+-][\d.]+\s+[\d.]+$", done.stdout, re.M))
    stacks = ("bare", "plugin-app", "entered", "dispatch", "logged", "logged-nolog", "logged-nometrics", "xcore")
    assert set(rows) == {*stacks, "version", "admin"}, done.stdout
    assert all(float(us) > 0 for us in rows.values())
    assert re.search(r"authenticated admin GET vs /api/version \(version / admin\) = \d\.\d{3}$", done.stdout, re.M)
