"""The data directory: chosen by flag, variable or platform; created 0700; the signing key 0600 and stable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import run_xcore
from xcore.errors import DataDirError
from xcore.paths import DataDir, choose_data_dir, default_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_precedence_flag_then_variable_then_platform(tmp_path: Path) -> None:
    assert choose_data_dir(tmp_path / "flag", {"XCORE_DATA_DIR": str(tmp_path / "env")}) == tmp_path / "flag"
    assert choose_data_dir(None, {"XCORE_DATA_DIR": str(tmp_path / "env")}) == tmp_path / "env"
    assert choose_data_dir(None, {}) == default_data_dir()
    assert default_data_dir().name == "xcore"


def test_created_with_mode_0700(data_dir: Path) -> None:
    DataDir(data_dir).prepare()
    assert data_dir.is_dir()
    assert mode(data_dir) == 0o700


def test_signing_key_is_generated_once_with_mode_0600(data_dir: Path) -> None:
    data = DataDir(data_dir).prepare()
    first = data.signing_key()
    assert len(first) >= 32
    assert mode(data.secret_file) == 0o600
    assert data.signing_key() == first
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".secret-")], "temporary key files are cleaned up"


def test_loose_key_permissions_are_tightened(data_dir: Path) -> None:
    data = DataDir(data_dir).prepare()
    key = data.signing_key()
    os.chmod(data.secret_file, 0o644)
    assert data.signing_key() == key
    assert mode(data.secret_file) == 0o600


def test_truncated_key_is_an_error(data_dir: Path) -> None:
    data = DataDir(data_dir).prepare()
    data.secret_file.write_text("short")
    with pytest.raises(DataDirError, match="fewer than 32 characters; delete it"):
        data.signing_key()


def test_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(DataDirError, match="exists but is not a directory"):
        DataDir(blocker).prepare()
    with pytest.raises(DataDirError, match="cannot be created"):
        DataDir(blocker / "data").prepare()


def test_unwritable_directory_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores permission bits, so simulate what an unprivileged user meets: a failed access check.
    target = tmp_path / "locked"
    target.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == target else real_access(p, m))
    with pytest.raises(DataDirError, match="is not readable and writable by this user"):
        DataDir(target).prepare()


def test_cli_reports_data_dir_errors_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run_xcore("config", "check", "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert result.stderr.startswith("xcore: error: data directory ")
    assert "Traceback" not in result.stderr


def test_data_dir_from_environment_variable(tmp_path: Path) -> None:
    chosen = tmp_path / "from-env"
    result = run_xcore("config", "show", env={"XCORE_DATA_DIR": str(chosen)})
    assert result.returncode == 0, result.stderr
    assert f"data directory: {chosen}" in result.stdout
    assert mode(chosen) == 0o700
