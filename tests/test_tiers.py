"""The test tiers: `python3 tasks.py test --fast` runs the unit tier, without the browser, desktop, release and
end-to-end tiers, and installs only what that tier needs; `python3 tasks.py test` runs everything, as CI does."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from conftest import CLEAN_ENV, TIER_OF_FIXTURE, XcoreServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tasks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tasks_runner", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registered_markers() -> set[str]:
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return {line.split(":")[0].strip() for line in pytest_options["markers"]}


def test_every_tier_is_a_registered_marker(tasks: ModuleType) -> None:
    tiers = set(tasks.SLOW_TIERS.split(" or "))
    assert tiers == {"browser", "desktop", "release", "e2e"}
    assert tiers <= registered_markers()
    assert set(TIER_OF_FIXTURE.values()) <= tiers


def test_a_unit_test_that_starts_a_real_server_fails_saying_where_it_belongs(tmp_path: Path) -> None:
    """A test that starts a real `xcore serve` belongs to a slow tier: in the unit tier, which --fast runs, it fails
    before the server starts (three safe-mode tests had slipped in with XcoreServer, not start_server)."""
    with pytest.raises(AssertionError, match=r"::test_a_unit_test_that_starts_a_real.* but is in the unit tier"):
        XcoreServer(tmp_path / "data", 1)
    assert not (tmp_path / "serve-1.out").exists(), "nothing was started"


def test_fast_runs_the_unit_tier_in_a_process_more_than_the_cores_unless_told_otherwise(tasks: ModuleType) -> None:
    """--fast (and the PostgreSQL pass) run the unit tier in a process more than the cores; the whole suite, or what
    the arguments choose, in two more."""
    python = str(tasks.venv_bin("python"))
    processes = str(min(tasks.usable_cores() + 1, 8))
    whole = ["-n", str(min(tasks.usable_cores() + 2, 8)), "--dist", "loadfile", "--no-loadscope-reorder"]
    assert whole == tasks.PARALLEL_WHOLE
    assert tasks.pytest_command([], fast=True) == [
        python,
        "-m",
        "pytest",
        "-m",
        "not (browser or desktop or release or e2e)",
        "-n",
        processes,
        "--dist",
        "loadfile",
        "--no-loadscope-reorder",
    ]
    assert tasks.pytest_command(["tests/test_totp.py"], fast=False) == [
        python,
        "-m",
        "pytest",
        *tasks.PARALLEL_WHOLE,
        "tests/test_totp.py",
    ]
    # The arguments may choose the processes themselves, and a -m of their own wins (pytest takes the last).
    assert tasks.pytest_command(["-n", "0", "-x"], fast=False) == [python, "-m", "pytest", "-n", "0", "-x"]
    assert tasks.pytest_command(["-p", "no:xdist"], fast=False) == [python, "-m", "pytest", "-p", "no:xdist"]
    assert tasks.pytest_command(["-m", "e2e"], fast=True)[-2:] == ["-m", "e2e"]


def test_fast_installs_only_what_the_unit_tier_needs(tasks: ModuleType) -> None:
    assert tasks.APT_FOR_UNIT_TESTS == {
        "redis-server": "redis-server",
        "/usr/lib/postgresql/*/bin/initdb": "postgresql",
    }
    assert tasks.APT_FOR_UNIT_TESTS.items() <= tasks.APT_FOR_TEST.items()
    assert {"chromium", "Xvfb"} <= tasks.APT_FOR_TEST.keys()


def test_a_test_is_put_in_its_tier_by_the_fixtures_it_uses() -> None:
    """tests/conftest.py marks a test by the fixtures it uses, directly or through other fixtures: a browser page,
    an X display, a real server. What uses none of them is in the unit tier."""
    files = ["tests/test_setup.py", "tests/test_desktop.py", "tests/test_ui_accounts.py"]
    slow = collected(files, "browser or desktop or e2e")
    assert "tests/test_setup.py::test_real_server_makes_a_new_token_at_each_start_before_setup" in slow  # start_server
    window = "test_first_run_opens_setup_and_a_second_launch_focuses_the_first_instead_of_serving"
    assert f"tests/test_desktop.py::{window}" in slow  # launch, through display
    assert "tests/test_ui_accounts.py::test_two_factor_login_on_my_account" in slow  # page, through chromium
    # In the unit tier:
    assert "tests/test_setup.py::test_no_default_credentials" not in slow
    assert "tests/test_desktop.py::test_without_a_display_it_says_so_in_one_line_and_exits_2" not in slow


def test_the_slowest_tiers_are_handed_out_first_and_a_files_tests_stay_together() -> None:
    """pytest-xdist hands files to its processes in the order of collection: the release build, then the browser,
    desktop and e2e files, then the unit tier, so no long file starts when the others are done. A file keeps its
    tests in their written order, in one block."""
    files = ["tests/test_access.py", "tests/test_desktop.py", "tests/test_frozen.py", "tests/test_ui_metrics.py"]
    order = list(dict.fromkeys(test.split("::")[0] for test in collected_in_order(files)))
    assert order == [
        "tests/test_frozen.py",
        "tests/test_ui_metrics.py",
        "tests/test_desktop.py",
        "tests/test_access.py",
    ]
    tests = collected_in_order(["tests/test_tiers.py"])
    assert [test.split("::")[1] for test in tests] == [
        name for name, _ in vars(sys.modules[__name__]).items() if name.startswith("test_")
    ]


def pytest_run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """pytest_run runs pytest with `args` in a new process, from the repository, with `env` added to a clean
    environment."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def collected(files: list[str], tiers: str) -> set[str]:
    """collected lists the tests of `files` that pytest selects with `-m tiers`, collecting them in a new process."""
    return set(collected_in_order(files, tiers))


def collected_in_order(files: list[str], tiers: str | None = None) -> list[str]:
    """collected_in_order lists the tests of `files` that pytest selects (with `-m tiers`, if given), in the order it
    would run them, collecting them in a new process."""
    choice = ["-m", tiers] if tiers else []
    done = pytest_run(["--collect-only", *choice, *files])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


NO_DATABASE = "tests/test_tiers.py::test_every_tier_is_a_registered_marker"
# Both on the web app of a module fixture, made during the first: the second uses the database it made.
SPACED = "tests/test_sessions.py::test_login_by_username_or_email_ignores_case[  Bob ]"
THROUGH_THE_APP = "tests/test_sessions.py::test_each_login_gets_a_distinct_token_id"
THROUGH_THE_CLI = "tests/test_cli.py::test_data_dir_given_twice_with_different_values_is_refused"


def test_the_postgresql_pass_runs_the_tests_that_used_the_core_database_on_sqlite(tmp_path: Path) -> None:
    """With XCORE_TEST_CORE_USE, the SQLite pass writes down each test that used the core database (through the web
    app's sessions, a module fixture's too, or an `xcore` process on a data directory), not one that did not; the
    PostgreSQL pass then selects only those, by their whole node id (a parameter's may hold spaces). A record that
    holds nothing is an error, not an empty pass."""
    record = tmp_path / "core-use.txt"
    tests = [NO_DATABASE, THROUGH_THE_APP, THROUGH_THE_CLI, SPACED]
    on_sqlite = pytest_run(tests, {"XCORE_TEST_CORE_USE": str(record)})
    assert on_sqlite.returncode == 0, on_sqlite.stdout[-2000:] + on_sqlite.stderr[-2000:]
    assert "4 passed" in on_sqlite.stdout
    assert sorted(record.read_text().splitlines()) == sorted(tests[1:])

    pg = {"XCORE_TEST_CORE_USE": str(record), "XCORE_TEST_DATABASE": "postgresql"}
    chosen = pytest_run(["--collect-only", *tests], pg)
    assert chosen.returncode == 0, chosen.stdout[-2000:] + chosen.stderr[-2000:]
    assert sorted(line for line in chosen.stdout.splitlines() if "::" in line) == sorted(tests[1:])
    assert "1 deselected" in chosen.stdout

    record.write_text("")
    refused = pytest_run(["--collect-only", THROUGH_THE_APP], pg)
    assert refused.returncode != 0
    assert f"XCORE_TEST_CORE_USE names {record}, where no SQLite pass recorded any test" in refused.stderr


def test_the_whole_suite_runs_again_on_postgresql_and_fails_when_either_run_fails(
    tasks: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tasks.py test` runs the whole suite on SQLite, then the unit tier with XCORE_TEST_DATABASE=postgresql; its
    exit code is a failure when either failed. With arguments, or --fast, pytest runs once, on SQLite unless
    --postgres is given. Every run writes bytecode caches, whatever PYTHONDONTWRITEBYTECODE says outside."""
    runs: list[tuple[list[str], dict[str, str], bool]] = []
    codes: list[int] = []

    def run(argv: list[str], extra_env: dict[str, str] | None = None, replace: bool = True) -> int:
        runs.append((argv[3:], extra_env or {}, replace))
        return codes.pop(0)

    for name in ("ensure_venv", "ensure_apt", "ensure_test_wheels"):
        monkeypatch.setattr(tasks, name, lambda *a: None)
    monkeypatch.setattr(tasks, "run_in_venv", run)
    monkeypatch.setattr(tasks, "temporary_folder", lambda: {"TMPDIR": "/in/ram"})
    unit = ["-m", f"not ({tasks.SLOW_TIERS})", *tasks.PARALLEL]
    for first, second in ((0, 0), (1, 0), (0, 1)):
        runs.clear()
        codes[:] = [first, second]
        assert tasks.cmd_test([]) == (first or second)
        record = runs[0][1]["XCORE_TEST_CORE_USE"]  # a file of the run's own: which tests used the core database
        assert record.endswith("core-use.txt") and not Path(record).parent.exists(), "removed after the run"
        on_sqlite = {"PYTHONDONTWRITEBYTECODE": "", "TMPDIR": "/in/ram", "XCORE_TEST_CORE_USE": record}
        on_postgresql = {**on_sqlite, "XCORE_TEST_DATABASE": "postgresql"}
        assert runs == [(tasks.PARALLEL_WHOLE, on_sqlite, False), (unit, on_postgresql, False)]
    runs.clear()
    codes[:] = [0, 0, 0]
    tasks.cmd_test(["--fast"])
    tasks.cmd_test(["tests/test_totp.py"])
    tasks.cmd_test(["--postgres", "tests/test_totp.py"])
    assert [env.get("XCORE_TEST_DATABASE") for _, env, _ in runs] == [None, None, "postgresql"]
    assert not any("XCORE_TEST_CORE_USE" in env for _, env, _ in runs), "a run of its own is not cut down"
    assert all(env["PYTHONDONTWRITEBYTECODE"] == "" and env["TMPDIR"] == "/in/ram" for _, env, _ in runs)


def test_the_tests_temporary_files_go_to_a_folder_of_ours_on_a_tmpfs_with_room(
    tasks: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """temporary_folder gives TMPDIR a folder of this user's in RAM_FOLDER, made if missing and open to others'
    traversal only (the PostgreSQL clusters run as postgres under root); nothing when TMPDIR is set, when RAM_FOLDER
    is no tmpfs or has less than RAM_ROOM free, or when the folder is not this user's own (a link, a file)."""
    ram = tmp_path / "shm"
    ram.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\ntmpfs {ram} tmpfs rw,size=1024k 0 0\n")
    assert tasks.ram_backed(ram, mounts) and not tasks.ram_backed(tmp_path, mounts)
    assert not tasks.ram_backed(ram, tmp_path / "no-such-file")
    monkeypatch.setattr(tasks, "RAM_FOLDER", ram)
    monkeypatch.setattr(tasks, "ram_backed", lambda folder: folder == ram)
    monkeypatch.delenv("TMPDIR", raising=False)
    ours = ram / f"xcore-tests-{os.getuid()}"

    assert tasks.temporary_folder() == {"TMPDIR": str(ours)}
    assert ours.is_dir() and stat.S_IMODE(ours.stat().st_mode) == 0o711
    assert tasks.temporary_folder() == {"TMPDIR": str(ours)}, "the same folder, run after run"

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert tasks.temporary_folder() == {}, "TMPDIR chose"
    monkeypatch.delenv("TMPDIR")
    monkeypatch.setattr(tasks, "RAM_ROOM", shutil.disk_usage(ram).free + (1 << 40))
    assert tasks.temporary_folder() == {}, "no room"
    monkeypatch.setattr(tasks, "RAM_ROOM", 0)
    monkeypatch.setattr(tasks, "ram_backed", lambda folder: False)
    assert tasks.temporary_folder() == {}, "not in RAM"
    monkeypatch.setattr(tasks, "ram_backed", lambda folder: folder == ram)
    ours.rmdir()
    ours.symlink_to(tmp_path)
    assert tasks.temporary_folder() == {}, "a link is not a folder of ours"
    ours.unlink()
    ours.write_text("")
    assert tasks.temporary_folder() == {}, "nor is a file"
