"""The accounts epoch: a change made by one process reaches every other process's cache at its next request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from xcore.auth.principals import Epoch


def test_a_bump_is_seen_once_by_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "auth-epoch"
    first, second = Epoch(path), Epoch(path)
    first.changed(), second.changed()  # the first look always counts as a change
    assert not first.changed() and not second.changed()
    first.bump()
    assert second.changed() and first.changed()
    assert not second.changed() and not first.changed()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_bump_in_another_process_is_seen_at_once(tmp_path: Path) -> None:
    path = tmp_path / "auth-epoch"
    reader = Epoch(path)
    reader.changed()
    assert not reader.changed()
    bump = f"from xcore.auth.principals import Epoch; from pathlib import Path; Epoch(Path({str(path)!r})).bump()"
    subprocess.run([sys.executable, "-c", bump], check=True, timeout=60)
    assert reader.changed(), "the other process's bump is visible without reopening the file"
    assert not reader.changed()
