"""The single binary: a PyInstaller build of this checkout, run the way its users run it.

The module builds the one-folder bundle once (`python3 tasks.py bundle --out build/test-bundle`), with the
desktop window built in (the test environment has the desktop extra), and reuses it while its inputs are
unchanged: a digest of app/, ui/, migrations/, config.json, packaging/, pyproject.toml and tasks.py. Marked
`release`, so `pytest -m release` runs these alone; CI runs them with everything else.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import marshal
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CLEAN_ENV, free_port, until
from xcore import codecache
from xcore.desktop import ENV_PROBE
from xwindow import WINDOW_ENV, close_window, find_window

pytestmark = [pytest.mark.release, pytest.mark.e2e, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_OUT = ROOT / "build" / "test-bundle"
INPUTS = ("app", "ui", "migrations", "config.json", "packaging", "pyproject.toml", "tasks.py")
HEADLESS_ENV = {k: v for k, v in CLEAN_ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
PASSWORD = "frozen-build-secret-1"
START = 90.0  # seconds: a first start migrates a new database; Qt WebEngine's first start is slow under load


def inputs_digest() -> str:
    """inputs_digest is a digest of every file the bundle is built from."""
    digest = hashlib.sha256()
    for name in INPUTS:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.fixture(scope="module")
def bundle() -> Path:
    """bundle is the one-folder build's executable, built by `tasks.py bundle` unless an identical one exists."""
    executable = BUNDLE_OUT / "xcore" / "xcore"
    stamp = BUNDLE_OUT / "inputs.sha256"
    digest = inputs_digest()
    if executable.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return executable
    stamp.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tasks.py"), "bundle", "--onedir", "--out", str(BUNDLE_OUT)],
        capture_output=True,
        text=True,
        timeout=1400,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"the bundle build failed:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"
    stamp.write_text(digest)
    return executable


class Frozen:
    """Frozen is one run of the bundle's executable, its output captured to a file."""

    def __init__(self, executable: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.out = out
        self._file = out.open("w")
        self.process = subprocess.Popen(
            [str(executable), *args],
            env={**HEADLESS_ENV, **(env or {})},
            stdout=self._file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        self._file.flush()
        return self.out.read_text(errors="replace")

    def alive(self) -> None:
        assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.output()[-3000:]}"

    def stop(self) -> int:
        """stop sends SIGTERM, as systemd or `docker stop` does, and returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._file.close()


@pytest.fixture
def frozen(bundle: Path, tmp_path: Path) -> Iterator[Any]:
    """frozen starts the bundle with arguments; every run still alive at the end of the test is killed."""
    runs: list[Frozen] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "run") -> Frozen:
        runs.append(Frozen(bundle, tmp_path / f"{name}.out", *args, env=env))
        return runs[-1]

    yield start
    for run in runs:
        run.kill()


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def owner_headers(base: str, data: Path) -> dict[str, str]:
    """owner_headers completes first-run setup through the API and returns the owner's Bearer headers."""
    token = (data / "setup-token").read_text().strip()
    created = httpx.post(f"{base}/api/setup", json={"token": token, "username": "owner", "password": PASSWORD})
    assert created.status_code == 201, created.text
    session = httpx.post(f"{base}/api/auth/login", json={"username": "owner", "password": PASSWORD})
    assert session.status_code == 200, session.text
    return {"Authorization": f"Bearer {session.json()['access_token']}"}


def plugin_zip(folder: Path, plugin_id: str, run_py: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{plugin_id}-1.0.0.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0"}))
        archive.writestr("run.py", run_py)
    return path


# --- the release check ------------------------------------------------------------------------------------------


def test_the_release_check_passes_on_the_one_folder_bundle(bundle: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "release_check.py"), str(bundle)],
        env=HEADLESS_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if "  pass  " in line}
    for step in ("version", "start", "first-run", "install", "call", "run", "stop", "plugin"):
        assert step in rows, f"step {step!r} did not pass:\n{done.stdout}"


# --- what plugins can import ------------------------------------------------------------------------------------

USES_THE_RUNTIME = """
import email.mime.text
import sqlite3

from litestar.stores.file import FileStore

from xcore.sdk import Router, get


@get("/", sync_to_thread=False)
def probe() -> dict:
    message = email.mime.text.MIMEText("hello")
    with sqlite3.connect(":memory:") as db:
        version = db.execute("select sqlite_version()").fetchone()[0]
    return {"mime": message.get_content_type(), "sqlite": version, "store": FileStore.__name__}


router = Router("/", route_handlers=[probe])
"""

NEEDS_PYDANTIC = """
import pydantic

from xcore.sdk import Router

router = Router("/", route_handlers=[])
"""


def test_a_plugin_imports_the_standard_library_litestar_and_the_sdk_and_a_missing_module_fails_by_name(
    frozen: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    plugin_zip(data / "plugins", "runtime_user", USES_THE_RUNTIME)
    plugin_zip(data / "plugins", "needs_pydantic", NEEDS_PYDANTIC)  # left out of the binary on purpose
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = frozen("serve", "--port", str(port), "--data-dir", str(data))
    until(lambda: healthy(base), "the frozen server answering /health", START, alive=server.alive)
    headers = owner_headers(base, data)

    answer = until(lambda: (r := httpx.get(f"{base}/app/runtime_user/", headers=headers)).status_code == 200 and r, "")
    assert answer.json()["mime"] == "text/plain"
    assert answer.json()["store"] == "FileStore"
    assert answer.json()["sqlite"].count(".") == 2

    failed = httpx.get(f"{base}/api/admin/plugins/needs_pydantic", headers=headers).json()
    assert failed["state"] == "failed"
    assert "cannot import 'pydantic'" in failed["error"], failed
    assert "xcore plugin runtime" in failed["error"], failed
    assert healthy(base)  # the host is unharmed
    assert server.stop() == 0


def test_plugin_importable_lists_what_the_binary_holds(bundle: Path) -> None:
    done = subprocess.run(
        [str(bundle), "plugin", "runtime", "--json"], env=HEADLESS_ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    packages = {p["module"] for p in listing["packages"]}
    assert listing["frozen"] is True
    assert {"sqlite3", "email", "json", "asyncio", "zoneinfo"} <= set(listing["stdlib"])
    assert {"litestar", "msgspec", "sqlalchemy", "sqlite_utils", "yaml", "xcore"} <= packages
    # Left out on purpose, whatever the build environment holds (the test extras bring pytest and Pygments, the
    # benchmarks' FastAPI brings pydantic and Starlette).
    left_out = {"tkinter", "pydantic", "pytest", "faker", "rich", "pygments", "starlette", "fastapi"}
    assert not left_out & (set(listing["stdlib"]) | packages)
    assert not [m for m in packages if m.startswith("libnss")], "shared libraries listed as modules"


def test_the_binary_holds_the_dataclasses_methods_compiled_by_its_own_python(bundle: Path) -> None:
    """xcore.codecache: the file the entry point installs is there, readable by the Python the binary holds (this
    one: the build used this venv), and covers the start's dataclasses (Litestar's among them)."""
    magic, codes = marshal.loads((bundle.parent / "_internal" / "xcore" / codecache.FILE_NAME).read_bytes())
    assert magic == importlib.util.MAGIC_NUMBER
    assert len(codes) > 300
    # OpenAPIConfig's and Info's __init__ (Litestar's), among others
    assert any("def __init__(self,title:_type_title,version:_type_version" in source for source in codes)


# --- the first run of a double-click user ------------------------------------------------------------------------


def test_double_clicked_without_a_display_it_serves_from_the_standard_data_dir_and_prints_the_setup_url(
    frozen: Any, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {"HOME": str(home), "XCORE_SERVER__PORT": str(port)}
    env = {**env, **{k: "" for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME")}}
    server = frozen(env=env)  # no arguments, as a double-click starts it
    base = f"http://127.0.0.1:{port}"
    until(lambda: healthy(base), "the double-clicked binary serving", START, alive=server.alive)
    data = home / ".local" / "share" / "xcore"
    assert (data / "xcore.db").is_file()
    printed = until(lambda: "/admin/setup?token=" in (out := server.output()) and out, "the setup URL printed")
    token = (data / "setup-token").read_text().strip()
    assert f"{base}/admin/setup?token={token}" in printed
    assert f"data: {data}" in printed
    assert httpx.get(f"{base}/admin/setup").status_code == 200
    assert server.stop() == 0


def test_double_clicked_with_a_display_it_opens_the_window_on_the_setup_page(
    frozen: Any, display: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    probe = tmp_path / "probe.json"
    env = {**WINDOW_ENV, "DISPLAY": display, "HOME": str(home), ENV_PROBE: str(probe)}
    env = {**env, **{k: "" for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME")}}
    window = frozen(env=env, name="desktop")

    def page() -> dict[str, Any] | None:
        try:
            seen = json.loads(probe.read_text())
        except (OSError, ValueError):
            return None
        return seen if "/admin/setup" in seen.get("url", "") else None

    seen = until(page, "the window showing the setup page", START, interval=0.2, alive=window.alive)
    assert seen["url"].startswith("http://127.0.0.1:"), seen  # the page took the token out of the address bar
    assert seen["title"] in ("xcore", "Set up xcore · xcore"), seen
    assert (home / ".local" / "share" / "xcore" / "xcore.db").is_file()
    window_id, width, height = find_window(display)
    assert (width, height) == (1200, 800)
    close_window(display, window_id)
    assert window.process.wait(timeout=90) == 0, window.output()[-3000:]


# --- self-hosting --------------------------------------------------------------------------------------------------


def test_serve_with_two_workers_each_loads_plugins_and_one_runs_the_scheduler(frozen: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = frozen("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--data-dir", str(data))
    until(lambda: healthy(base), "two frozen workers serving", START, alive=server.alive)
    plugin_zip(data / "plugins", "two_workers", USES_THE_RUNTIME)

    def log() -> list[dict[str, Any]]:
        lines = []
        for file in sorted((data / "logs").glob("*.log")):
            lines += [json.loads(line) for line in file.read_text().splitlines() if line.startswith("{")]
        return lines

    def loaded_by() -> set[int]:
        return {e["pid"] for e in log() if e["message"].startswith("plugin two_workers 1.0.0 is active")}

    pids = until(lambda: len(loaded_by()) == 2 and loaded_by(), "both workers loading the dropped plugin", START)
    consumers = {e["pid"] for e in log() if e["message"].startswith("task consumer running here")}
    assert len(consumers) == 1 and consumers <= pids, (consumers, pids)
    assert server.stop() == 0
