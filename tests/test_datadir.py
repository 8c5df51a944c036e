"""The data directory: chosen by flag, variable or platform; created 0700; the signing key 0600 and stable."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PASSWORDS, run_xcore
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


def test_a_data_directory_made_beforehand_with_mode_0755_is_made_private_and_every_file_is_0600(
    tmp_path: Path, start_server: Any
) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    (data_dir / "config.json").write_text("{}")
    os.chmod(data_dir / "config.json", 0o644)
    previous = os.umask(0o022)  # the usual umask of a shell: the server must not rely on its parent's
    try:
        server = start_server(data_dir)
        server.wait_ready()
    finally:
        os.umask(previous)
    token = (data_dir / "setup-token").read_text().strip()
    setup = httpx.post(
        f"{server.url}/api/setup", json={"token": token, "username": "root", "password": PASSWORDS["root"]}
    )
    assert setup.status_code == 201, setup.text
    login = httpx.post(f"{server.url}/api/auth/login", json={"username": "root", "password": PASSWORDS["root"]})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert httpx.post(f"{server.url}/api/admin/backups", headers=headers).status_code == 201
    assert server.stop() == 0

    assert mode(data_dir) == 0o700
    assert "other users could read the database and secrets in it (mode 0755); it is now 0700" in server.output
    written = [p for p in data_dir.rglob("*") if p.is_file() and p.name != "config.json"]
    names = {p.name for p in written}
    assert {"xcore.db", "tasks.db", "secret.key"} <= names and any(p.parent.name == "backups" for p in written)
    assert [f"{p.relative_to(data_dir)} {mode(p):04o}" for p in written if mode(p) & 0o077] == []
    folders = [p for p in data_dir.rglob("*") if p.is_dir()]
    assert [f"{p.relative_to(data_dir)} {mode(p):04o}" for p in folders if mode(p) & 0o077] == []


def test_a_data_directory_that_cannot_be_made_private_is_a_warning(tmp_path: Path, monkeypatch: Any) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    os.chmod(data_dir, 0o750)

    def refuse(path: Any, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    warnings = DataDir(data_dir).prepare().tighten()
    assert warnings == [
        f"data directory {data_dir}: other users may read the database and secrets in it (mode 0750) and it "
        f"cannot be made private: Operation not permitted; run `chmod 700 {data_dir}`"
    ]
    monkeypatch.undo()
    assert DataDir(data_dir).tighten() == [
        f"data directory {data_dir}: other users could read the database and secrets in it (mode 0750); it is now 0700"
    ]
    assert DataDir(data_dir).tighten() == []
