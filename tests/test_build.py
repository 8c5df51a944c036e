"""`xcore --version`: the version, the git commit and whether the binary is frozen (app/xcore/build.py); the
bundle command's options."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_xcore
from xcore import __version__, build

ROOT = Path(__file__).resolve().parent.parent


def test_version_names_the_checked_out_commit_of_a_source_checkout() -> None:
    git = shutil.which("git")
    assert git, "git is needed to check the commit (CI clones the repository with it)"
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    result = run_xcore("--version")
    assert result.returncode == 0, result.stderr
    expected = f"xcore {__version__} (commit {head.stdout.strip()[:12]}, from source, Python {sys.version.split()[0]})"
    assert result.stdout.strip() == expected
    assert run_xcore("-V").stdout == result.stdout


def fake_git(root: Path, head: str, loose: dict[str, str] | None = None, packed: str = "") -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, sha in (loose or {}).items():
        (git / ref).write_text(sha + "\n")
    if packed:
        (git / "packed-refs").write_text(packed)
    return root


def test_the_commit_is_read_from_loose_and_packed_refs_and_a_detached_head(tmp_path: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    loose = fake_git(tmp_path / "loose", "ref: refs/heads/main", {"refs/heads/main": sha})
    assert build._git_head(loose) == sha[:12]
    packed = fake_git(tmp_path / "packed", "ref: refs/heads/main", packed=f"# pack-refs\n{sha} refs/heads/main\n")
    assert build._git_head(packed) == sha[:12]
    detached = fake_git(tmp_path / "detached", sha)
    assert build._git_head(detached) == sha[:12]
    assert build._git_head(tmp_path / "nothing-here") is None
    broken = fake_git(tmp_path / "broken", "ref: refs/heads/gone")
    assert build._git_head(broken) is None


def test_a_frozen_build_reports_its_stamped_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = tmp_path / "_build.json"
    stamp.write_text(json.dumps({"commit": "feedc0ffee12"}))
    monkeypatch.setattr(build, "BUILD_FILE", stamp)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert build.frozen()
    assert build.describe().startswith(f"xcore {__version__} (commit feedc0ffee12, frozen build, Python ")
    stamp.write_text("not json")  # a damaged stamp falls back to the checkout (or "unknown")
    assert "commit " in build.describe()


def test_tasks_bundle_builds_one_folder_unless_told_otherwise() -> None:
    spec = importlib.util.spec_from_file_location("tasks_runner", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    default = runner.bundle_options([])
    assert (default.onefile, default.headless, default.check) == (False, False, False)
    assert runner.bundle_options(["--onedir"]).onefile is False
    assert runner.bundle_options(["--onefile", "--headless"]).onefile is True
    assert runner.bundle_options(["--out", "x"]).out.name == "x"
