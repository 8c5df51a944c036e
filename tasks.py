#!/usr/bin/env python3
"""The developer runner. Standard library only, so it works before anything is installed.

    python3 tasks.py run [ARGS]          set up .venv, then run `xcore ARGS` (default: serve)
    python3 tasks.py test [--fast] [--postgres] [PYTEST ARGS]
                                         set up .venv with the test extras, then run pytest: the whole suite, then
                                         the unit tier again with the core database on PostgreSQL (a throwaway
                                         server, from apt), the tests of it that used the core database on SQLite
                                         (XCORE_TEST_CORE_USE, tests/conftest.py); with --fast the unit tier
                                         alone, on SQLite (no browser, desktop window, real server or release
                                         build: pytest -m "not (browser or desktop or release or e2e)"); with
                                         --postgres, what PYTEST ARGS choose on PostgreSQL (both download, once,
                                         the real wheels the plugin-requirements tests pack into bundles, into
                                         .venv/test-wheels); last, it says where the test artefacts are (the
                                         browser tests' screenshots: build/test-artefacts, or XCORE_TEST_ARTEFACTS)
    python3 tasks.py lint                ruff (lint + format check) and mypy
    python3 tasks.py pack [OUTDIR]       pack every example plugin in plugins/ into OUTDIR (default dist/plugins)
    python3 tasks.py bundle [--onedir|--onefile] [--headless] [--out DIR] [--check]
                                         build the single binary with PyInstaller (packaging/xcore.spec):
                                         DIR/xcore/ (one folder, the default) or DIR/xcore (one file), DIR
                                         defaulting to dist; --headless leaves the desktop window (Qt) out;
                                         --check then runs the release check on it (packaging/release_check.py)
    python3 tasks.py bench [http|instructions|startup|start_ab] [ARGS]
                                         set up the benchmark extras, then run benchmarks/http.py
                                         (or benchmarks/instructions.py, startup.py, start_ab.py)

The virtual environment is (re)installed only when it is missing, when pyproject.toml changed, or when a
command needs extras the last install did not include. With nothing changed, the setup only hashes
pyproject.toml and compares it with a stamp in .venv.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "xcore-install.json"
MIN_PYTHON = (3, 11)

# Debian packages each command needs, keyed by what proves the package is there: an executable on PATH, a
# shared library (a name holding ".so") in the dynamic linker's cache (`ldconfig -p`), or a file matching a glob
# (a key starting with "/").
APT_FOR_UNIT_TESTS: dict[str, str] = {
    "redis-server": "redis-server",  # the Redis queue tests run a real one
    # The PostgreSQL tests run a real server (Debian keeps initdb off PATH); pg_dump, pg_restore and psql come
    # with it, for the backups.
    "/usr/lib/postgresql/*/bin/initdb": "postgresql",
}
APT_FOR_TEST: dict[str, str] = {
    **APT_FOR_UNIT_TESTS,
    "chromium": "chromium",  # the admin UI tests drive it headless through Playwright
    "/usr/sbin/nginx": "nginx-light",  # the load balancer in front of the three nodes of tests/test_cluster_e2e.py
    "/usr/bin/prometheus": "prometheus",  # the real Prometheus server that scrapes xcore in tests/test_metrics_e2e.py
    # The desktop test: `xcore desktop` under Xvfb; xdotool finds its window, xwd takes the screenshot.
    "Xvfb": "xvfb",
    "xdotool": "xdotool",
    "xwd": "x11-apps",
    # What PyQt6's xcb platform plugin and Qt WebEngine link against (from `ldd`) beyond a base system.
    **{
        f"{lib}.so.{major}": package
        for lib, major, package in (
            ("libxcb-icccm", 4, "libxcb-icccm4"),
            ("libxcb-keysyms", 1, "libxcb-keysyms1"),
            ("libxcb-image", 0, "libxcb-image0"),
            ("libxcb-render-util", 0, "libxcb-render-util0"),
            ("libxcb-randr", 0, "libxcb-randr0"),
            ("libxcb-shape", 0, "libxcb-shape0"),
            ("libxcb-cursor", 0, "libxcb-cursor0"),
            ("libxcb-xkb", 1, "libxcb-xkb1"),
            ("libxkbcommon-x11", 0, "libxkbcommon-x11-0"),
            ("libX11-xcb", 1, "libx11-xcb1"),
            ("libXcomposite", 1, "libxcomposite1"),
            ("libXdamage", 1, "libxdamage1"),
            ("libXrandr", 2, "libxrandr2"),
            ("libXtst", 6, "libxtst6"),
            ("libxkbfile", 1, "libxkbfile1"),
            ("libfontconfig", 1, "libfontconfig1"),
            ("libglib-2.0", 0, "libglib2.0-0"),
            ("libEGL", 1, "libegl1"),
            ("libGL", 1, "libgl1"),
            ("libgbm", 1, "libgbm1"),
            ("libasound", 2, "libasound2"),
        )
    },
    "libnss3.so": "libnss3",
}
# Real wheels from PyPI for the plugin-requirements tests (tests/test_plugin_wheels.py), downloaded once into
# .venv: two versions of a pure-Python package, a compiled one for this machine, and that one for another platform.
TEST_WHEELS = VENV / "test-wheels"
TEST_WHEEL_DOWNLOADS: tuple[tuple[str, str | None], ...] = (
    ("humanize==4.9.0", None),
    ("humanize==4.10.0", None),
    ("mmh3==4.1.0", None),
    ("mmh3==4.1.0", "win_amd64"),
)
APT_FOR_BENCH: dict[str, str] = {"wrk": "wrk", "taskset": "util-linux", "valgrind": "valgrind"}


def say(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr, flush=True)


def venv_bin(name: str) -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / (name + (".exe" if not name.endswith(".exe") else ""))
    return VENV / "bin" / name


def pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def read_stamp() -> dict:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}


def ensure_venv(extras: set[str]) -> None:
    """Create or refresh .venv so that it holds the project (editable) with `extras`."""
    if sys.version_info < MIN_PYTHON:
        sys.exit(
            f"tasks.py: xcore needs Python {'.'.join(map(str, MIN_PYTHON))} or newer, this is {sys.version.split()[0]}"
        )
    digest = pyproject_hash()
    stamp = read_stamp()
    python = venv_bin("python")
    if python.exists() and stamp.get("pyproject") == digest and extras <= set(stamp.get("extras", [])):
        return
    if not python.exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
        stamp = {}
    # Keep extras installed earlier with the same pyproject.toml, so `run` after `test` does not reinstall.
    if stamp.get("pyproject") == digest:
        extras = extras | set(stamp.get("extras", []))
    target = "." + (f"[{','.join(sorted(extras))}]" if extras else "")
    say(f"installing xcore{target[1:]} in editable mode")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    result = subprocess.run([*pip, "--editable", target], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"tasks.py: pip could not install the project (exit {result.returncode}); see the messages above")
    STAMP.write_text(json.dumps({"pyproject": digest, "extras": sorted(extras)}))


def linked_libraries() -> set[str]:
    """The shared library names in the dynamic linker's cache (empty where there is no ldconfig)."""
    ldconfig = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if ldconfig is None:
        return set()
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


def ensure_apt(packages: dict[str, str]) -> None:
    """Install the Debian packages whose executable or library is missing; do nothing when all are present."""
    libraries = linked_libraries() if any(".so" in key for key in packages) else set()

    def present(key: str) -> bool:
        if key.startswith("/"):
            return bool(glob.glob(key))
        return key in libraries if ".so" in key else shutil.which(key) is not None

    missing = sorted({pkg for key, pkg in packages.items() if not present(key)})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        sys.exit(f"tasks.py: please install these system packages: {' '.join(missing)} (no apt-get here)")
    sudo: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(f"tasks.py: installing {' '.join(missing)} needs root; run: apt-get install {' '.join(missing)}")
        sudo = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(f"installing system packages: {' '.join(missing)}")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, stdin=subprocess.DEVNULL, check=False)
    result = subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        sys.exit(f"tasks.py: apt-get could not install {' '.join(missing)} (exit {result.returncode})")


def ensure_test_wheels() -> None:
    """Download TEST_WHEEL_DOWNLOADS into TEST_WHEELS with the venv's pip, unless the last download got them all."""
    stamp = TEST_WHEELS / "downloaded.json"
    wanted = json.dumps(TEST_WHEEL_DOWNLOADS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    say(f"downloading the test wheels into {TEST_WHEELS}")
    python = str(venv_bin("python"))
    for requirement, platform in TEST_WHEEL_DOWNLOADS:
        command = [python, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--no-deps"]
        command += ["--only-binary=:all:", "--dest", str(TEST_WHEELS), requirement]
        if platform:
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            command += ["--platform", platform, "--python-version", version, "--implementation", "cp"]
        if subprocess.run(command, stdin=subprocess.DEVNULL).returncode != 0:
            sys.exit(f"tasks.py: pip could not download {requirement} for the tests; see the messages above")
    stamp.write_text(wanted)


def run_in_venv(argv: list[str], extra_env: dict[str, str] | None = None, replace: bool = True) -> int:
    """Run a program from .venv. On POSIX, with `replace`, the runner replaces itself, so signals reach the
    program; without, it waits for the program and returns its exit code (something runs after it). While it
    waits, a SIGTERM is passed on to the program, and Ctrl+C, which the terminal sends to the program as well, is
    left to the program: it stops (and cleans up) on its own."""
    env = {**os.environ, "VIRTUAL_ENV": str(VENV), **(extra_env or {})}
    env["PATH"] = str(venv_bin("python").parent) + os.pathsep + env.get("PATH", "")
    if replace and os.name != "nt":
        os.execve(argv[0], argv, env)
    with subprocess.Popen(argv, env=env) as program:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: program.terminate())
        try:
            return program.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def cmd_run(args: list[str]) -> int:
    ensure_venv(set())
    return run_in_venv([str(venv_bin("xcore")), *(args or ["serve"])])


# The markers of the slow tiers (pyproject.toml registers them; tests/conftest.py marks by fixture what uses a
# browser, a display or a real server), which `test --fast` leaves out.
SLOW_TIERS = "browser or desktop or release or e2e"


def usable_cores() -> int:
    """usable_cores is how many cores this process may run on (its CPU affinity: taskset, a container's cpuset),
    which can be fewer than the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# pytest-xdist: test processes that each take whole files (a file's module fixtures are then made once), more
# than the usable cores (at most 8): one more for the unit tier, whose tests keep the cores busy, and two more for
# the whole suite, whose browser, desktop, release and e2e tests spend much of their time waiting on servers,
# browsers and windows. Files are handed out in the order tests/conftest.py puts them, the slowest tiers first;
# xdist's own order (most tests first) left the browser files, few tests but long, for the end.
PARALLEL = ["-n", str(min(usable_cores() + 1, 8)), "--dist", "loadfile", "--no-loadscope-reorder"]
PARALLEL_WHOLE = ["-n", str(min(usable_cores() + 2, 8)), *PARALLEL[2:]]


def pytest_command(args: list[str], fast: bool) -> list[str]:
    """pytest_command is the pytest command line for `test`: the unit tier alone with `fast`, in PARALLEL, else in
    PARALLEL_WHOLE, unless the arguments choose the processes themselves (`-n 0` runs in this one, `-p no:xdist`
    without the plugin). A `-m` among the arguments wins over the one --fast adds: pytest takes the last."""
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a in ("no:xdist", "-pno:xdist") for a in args)
    tier = ["-m", f"not ({SLOW_TIERS})"] if fast else []
    processes = [] if chosen else PARALLEL if fast else PARALLEL_WHOLE
    return [str(venv_bin("python")), "-m", "pytest", *tier, *processes, *args]


def cmd_test(args: list[str]) -> int:
    """`test [--fast] [--postgres] [PYTEST ARGS]`: pytest on the whole suite, which CI runs, then the unit tier
    again with the core database on PostgreSQL; with --fast, the unit tier only, on SQLite, which needs neither
    the desktop and build extras nor the browser's and the desktop's Debian packages. --postgres runs what the
    arguments choose on PostgreSQL (XCORE_TEST_DATABASE=postgresql, tests/conftest.py)."""
    fast, postgres = "--fast" in args, "--postgres" in args
    args = [arg for arg in args if arg not in ("--fast", "--postgres")]
    if fast:
        ensure_venv({"test"})
        ensure_apt(APT_FOR_UNIT_TESTS)
    else:
        ensure_venv({"test", "desktop", "build"})  # build: the release tests make a PyInstaller bundle
        ensure_apt(APT_FOR_TEST)
    ensure_test_wheels()
    started = time.time()
    test_env = {**TEST_ENV, **temporary_folder()}
    on_postgresql = {**test_env, **POSTGRES_ENV}
    if postgres:
        code = run_in_venv(pytest_command(args, fast), on_postgresql, replace=False)
    elif fast or args:
        code = run_in_venv(pytest_command(args, fast), test_env, replace=False)
    else:  # the second pass runs the unit tests that used the core database in the first (tests/conftest.py)
        with tempfile.TemporaryDirectory(prefix="xcore-test-") as folder:
            core_use = {"XCORE_TEST_CORE_USE": str(Path(folder) / "core-use.txt")}
            code = run_in_venv(pytest_command([], fast=False), {**test_env, **core_use}, replace=False)
            say("the unit tier again, with the core database on PostgreSQL: the tests that used it on SQLite")
            code = run_in_venv(pytest_command([], fast=True), {**on_postgresql, **core_use}, replace=False) or code
    report_artefacts(started)
    return code


POSTGRES_ENV = {"XCORE_TEST_DATABASE": "postgresql"}
# Bytecode caches on for the tests, whatever PYTHONDONTWRITEBYTECODE says outside (an empty value turns it off):
# each test process, and each of the few hundred `python -m xcore` and pytest processes the tests start, would
# otherwise compile xcore and rewrite the test modules afresh (collecting the suite: 9 s a process, 3 s with them).
# The caches are the usual `__pycache__` folders, which git ignores; plugin code never reads or writes them.
TEST_ENV = {"PYTHONDONTWRITEBYTECODE": ""}
# The tests' temporary files (pytest's tmp_path, the throwaway PostgreSQL clusters, the data directories of the
# servers they start) go to a folder in RAM when the machine has a tmpfs with room, unless TMPDIR chooses a folder.
# The suite creates and deletes files by the hundred thousand, and on a disk that is kernel work: on an ext4 disk
# without a journal, each new file's inode is found by a search that grows with the files deleted before it. Every
# test of the PostgreSQL pass copies a database, some 300 files (CREATE DATABASE), and spent most of its time there.
RAM_FOLDER = Path("/dev/shm")
RAM_ROOM = 2 << 30  # bytes free in RAM_FOLDER, at least: a full run keeps well under it


def temporary_folder() -> dict[str, str]:
    """temporary_folder is the environment that puts the tests' temporary files in RAM: TMPDIR, a folder of this
    user's in RAM_FOLDER (made if missing), when TMPDIR is not set and RAM_FOLDER is a tmpfs with RAM_ROOM free;
    else nothing. pytest keeps only failed tests' folders there (pyproject.toml), so a run leaves little behind."""
    if os.environ.get("TMPDIR") or os.name != "posix" or not ram_backed(RAM_FOLDER):
        return {}
    try:
        if shutil.disk_usage(RAM_FOLDER).free < RAM_ROOM:
            return {}
        folder = RAM_FOLDER / f"xcore-tests-{os.getuid()}"
        folder.mkdir(exist_ok=True)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return {}  # not a folder of ours (another user's, or a link): the default temporary folder
        folder.chmod(0o711)  # x for others: under root, the PostgreSQL clusters run as the postgres user
    except OSError:
        return {}
    return {"TMPDIR": str(folder)}


def ram_backed(folder: Path, mounts_file: Path = Path("/proc/mounts")) -> bool:
    """ram_backed: `folder` is the mount point of a tmpfs (`mounts_file`)."""
    try:
        mounts = mounts_file.read_text().splitlines()
    except OSError:
        return False
    return any(fields[1:3] == [str(folder), "tmpfs"] for fields in (line.split() for line in mounts) if len(fields) > 2)


def artefacts_dir() -> Path:
    """The folder the tests leave their artefacts in, kept after the run (the UI tests' screenshots, under
    screenshots/): XCORE_TEST_ARTEFACTS, or build/test-artefacts (git-ignored). tests/browser.py's artefacts_dir
    is the same folder."""
    chosen = os.environ.get("XCORE_TEST_ARTEFACTS")
    return Path(chosen) if chosen else ROOT / "build" / "test-artefacts"


def report_artefacts(since: float) -> None:
    """Say, last, where the run's artefacts are and how many screenshots it saved (those written since `since`)."""
    screenshots = artefacts_dir() / "screenshots"
    saved = [p for p in screenshots.glob("*.png") if p.stat().st_mtime >= since] if screenshots.is_dir() else []
    say(f"test artefacts: {artefacts_dir()} ({len(saved)} screenshots saved by this run in screenshots/)")


LINTED = ("app", "tests", "benchmarks", "migrations", "packaging", "tasks.py")


def cmd_lint(args: list[str]) -> int:
    ensure_venv({"lint", "test", "bench"})
    python = str(venv_bin("python"))
    failed = 0
    for step in (
        [python, "-m", "ruff", "check", *LINTED],
        [python, "-m", "ruff", "format", "--check", *LINTED],
        [python, "-m", "mypy"],
    ):
        say(" ".join(step[2:]))
        failed |= subprocess.call(step, cwd=ROOT)
    return 1 if failed else 0


def cmd_bench(args: list[str]) -> int:
    """`bench [http|instructions|startup|start_ab] [ARGS]`: benchmarks/http.py (the default),
    benchmarks/instructions.py, benchmarks/startup.py (which builds the bundles, so it needs PyInstaller) or
    benchmarks/start_ab.py."""
    script = "http"
    if args and args[0] in ("http", "instructions", "startup", "start_ab"):
        script, args = args[0], args[1:]
    ensure_venv({"bench", "build"} if script == "startup" else {"bench"})
    ensure_apt(APT_FOR_BENCH)
    return run_in_venv([str(venv_bin("python")), str(ROOT / "benchmarks" / f"{script}.py"), *args])


def bundle_options(args: list[str]) -> argparse.Namespace:
    """bundle_options parses `bundle [--onedir|--onefile] [--headless] [--out DIR] [--check]`."""
    parser = argparse.ArgumentParser(prog="tasks.py bundle", description="Build the single binary with PyInstaller.")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--onedir", dest="onefile", action="store_false", help="one folder, DIR/xcore/ (the default)")
    kind.add_argument("--onefile", dest="onefile", action="store_true", help="one file, DIR/xcore")
    parser.add_argument("--headless", action="store_true", help="leave the desktop window (pywebview, Qt) out")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the build goes (default: dist)")
    parser.add_argument("--check", action="store_true", help="run the release check on the build")
    parser.set_defaults(onefile=False)  # else --onedir's store_false would make its default (True) the default
    return parser.parse_args(args)


def cmd_bundle(args: list[str]) -> int:
    """`bundle [--onedir|--onefile] [--headless] [--out DIR] [--check]`: build xcore with PyInstaller."""
    options = bundle_options(args)
    # The desktop window is built in unless --headless; on Linux that is Qt WebEngine, a large install.
    ensure_venv({"build"} if options.headless else {"build", "desktop"})
    out = options.out.resolve()
    target = out / "xcore"
    # PyInstaller's work folder, one per kind of build and output folder, so two builds never share one.
    variant = f"{'onefile' if options.onefile else 'onedir'}-{'headless' if options.headless else 'desktop'}"
    work = ROOT / "build" / "pyinstaller" / f"{variant}-{hashlib.sha256(str(out).encode()).hexdigest()[:8]}"
    stamp = work / "stamp"
    stamp.mkdir(parents=True, exist_ok=True)
    python = str(venv_bin("python"))
    # The commit and build facts for `xcore --version` (xcore.build reads them from xcore/_build.json).
    facts = subprocess.run(
        [python, "-c", "import json, xcore.build as b; print(json.dumps({'commit': b.commit()}))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    build = {**json.loads(facts), "onefile": options.onefile, "headless": options.headless}
    git = shutil.which("git")
    if (
        git
        and subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    ):
        build["commit"] += "-dirty"  # built from changes that were not committed
    (stamp / "_build.json").write_text(json.dumps(build) + "\n")
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)  # a one-folder build where this one-file build goes, or the previous one
    elif target.exists():
        target.unlink()
    env = {
        **os.environ,
        "XCORE_BUNDLE_ONEFILE": "1" if options.onefile else "0",
        "XCORE_BUNDLE_HEADLESS": "1" if options.headless else "0",
        "XCORE_BUNDLE_STAMP": str(stamp),
    }
    say(
        f"building {'one file' if options.onefile else 'one folder'}{' (headless)' if options.headless else ''} "
        f"into {target} (commit {build['commit']})"
    )
    step = [
        python,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--log-level",
        "WARN",
        "--distpath",
        str(out),
        "--workpath",
        str(work),
        str(ROOT / "packaging" / "xcore.spec"),
    ]
    result = subprocess.run(step, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"tasks.py: PyInstaller failed (exit {result.returncode}); see the messages above")
    executable = target / ("xcore.exe" if os.name == "nt" else "xcore") if target.is_dir() else target
    size = (
        sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
        if target.is_dir()
        else target.stat().st_size
    )
    print(f"{executable}  ({size / 1e6:.1f} MB)", flush=True)
    if options.check:
        return subprocess.call([python, str(ROOT / "packaging" / "release_check.py"), str(executable)])
    return 0


def cmd_pack(args: list[str]) -> int:
    """`pack [OUTDIR]`: `xcore plugin pack` each folder of plugins/ holding a plugin.json; print the zips."""
    if len(args) > 1:
        sys.exit("tasks.py: pack takes at most one argument, the output folder (default dist/plugins)")
    ensure_venv(set())
    out = Path(args[0]).resolve() if args else ROOT / "dist" / "plugins"
    folders = sorted(p.parent for p in (ROOT / "plugins").glob("*/plugin.json"))
    if not folders:
        sys.exit("tasks.py: no plugin folder (holding plugin.json) under plugins/")
    for folder in folders:
        step = [str(venv_bin("xcore")), "plugin", "pack", str(folder), "--out", str(out)]
        result = subprocess.run(step, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"tasks.py: packing plugins/{folder.name} failed: {result.stderr.strip()}")
        print(result.stdout.splitlines()[0])
    return 0


COMMANDS = {
    "run": cmd_run,
    "test": cmd_test,
    "lint": cmd_lint,
    "bench": cmd_bench,
    "pack": cmd_pack,
    "bundle": cmd_bundle,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    os.chdir(ROOT)
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
