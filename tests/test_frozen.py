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
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import CLEAN_ENV, free_port, run_xcore, until
from test_plugin_wheels import (
    HUMANIZE_NEW,
    HUMANIZE_OLD,
    HUMANIZE_ROUTE,
    MMH3_ROUTE,
    MMH3_WINDOWS,
    wheel_of,
    zip_with_wheels,
)
from test_plugin_wheels_e2e import MMH3_FOO, MMH3_HERE, OFFLINE, WHEELS, packed
from test_plugins_e2e import drop, write_plugin
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
    # Every package carries its distribution's metadata, which a plugin's requirements are checked against
    # (xcore.plugins.requirements.host_versions): those behind an extra, like litestar[jwt]'s PyJWT, too.
    assert [p["module"] for p in listing["packages"] if p["distribution"] is None] == []
    assert {"jwt": "PyJWT"}.items() <= {p["module"]: p["distribution"] for p in listing["packages"]}.items()
    # and no metadata of a package left out, which a requirement would take for one the binary ships
    carried = {p.name.split("-")[0].lower() for p in (bundle.parent / "_internal").glob("*.dist-info")}
    assert not carried & {"pygments", "rich", "faker", "pip", "pytest", "pydantic", "polyfactory"}, carried


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


# --- plugins that bring wheels (issue 24) -------------------------------------------------------------------------

BOTH_ROUTES = """
import humanize
import mmh3
from litestar import get

@get("/hello")
async def hello() -> dict:
    return {"says": humanize.intword(12_300_000), "version": humanize.__version__}

@get("/hash")
async def hashed() -> dict:
    return {"hash": mmh3.hash("foo"), "file": mmh3.__file__}

router = [hello, hashed]
"""
PYGMENTS = wheel_of("Pygments", "2.99.0", {"pygments/__init__.py": "__version__ = '2.99.0'\n"})
STYLED_ROUTE = """
import pygments
from litestar import get

@get("/v")
async def v() -> dict:
    return {"version": pygments.__version__, "file": pygments.__file__}

router = [v]
"""


def test_the_binary_serves_pure_and_compiled_wheels_in_process_and_sandboxed_and_refuses_an_unfit_one(
    frozen: Any, tmp_path: Path
) -> None:
    """The bundles are packed from source, as an author would, and dropped into the binary's plugins folder; the
    binary has no index to ask (the default), so it loads them offline from the wheels they carry. A requirement
    that clashes with a package the binary ships, and a second in-process plugin that needs another version of a
    package the first imports, are refused naming both versions."""
    assert (WHEELS / MMH3_HERE).is_file(), f"{WHEELS} lacks the test wheels: run `python3 tasks.py test` once"
    data = tmp_path / "data"
    (data / "plugins").mkdir(parents=True)
    windows = {MMH3_WINDOWS: (WHEELS / MMH3_WINDOWS).read_bytes()}
    zips = [
        # PyJWT: xcore ships it through an extra (litestar[jwt]), so the pack leaves it out and the binary meets it
        packed(tmp_path, "nice", HUMANIZE_ROUTE, ["humanize==4.9.0", "pyjwt>=2"], *OFFLINE),
        packed(tmp_path, "hasher", MMH3_ROUTE, ["mmh3==4.1.0"], *OFFLINE),
        packed(tmp_path, "boxed", BOTH_ROUTES, ["humanize==4.10.0", "mmh3==4.1.0"], *OFFLINE, sandbox=True),
        zip_with_wheels(tmp_path / "hand" / "win-1.0.0.zip", "win", MMH3_ROUTE, windows, requirements=["mmh3"]),
        # Pygments: in xcore's environment, but left out of the binary (EXCLUDES), so a plugin brings its own
        zip_with_wheels(tmp_path / "hand" / "styled-1.0.0.zip", "styled", STYLED_ROUTE, dict([PYGMENTS]),
                        requirements=["pygments"]),
    ]  # fmt: skip
    for path in zips:
        shutil.copyfile(path, data / "plugins" / path.name)
    old_yaml = packed(tmp_path, "old", HUMANIZE_ROUTE, ["pyyaml<5"])  # without wheels: the pack step refuses it
    second = packed(tmp_path, "second", HUMANIZE_ROUTE, ["humanize==4.10.0"], *OFFLINE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = frozen("serve", "--port", str(port), "--data-dir", str(data))
    until(lambda: healthy(base), "the frozen server answering /health", START, alive=server.alive)
    headers = owner_headers(base, data)

    def answer(path: str) -> dict[str, Any]:
        return until(
            lambda: (r := httpx.get(base + path, headers=headers)).status_code == 200 and r.json(),
            f"GET {path} answers 200", alive=server.alive, context=lambda: server.output()[-3000:],
        )  # fmt: skip

    def view(plugin_id: str) -> dict[str, Any]:
        return httpx.get(f"{base}/api/admin/plugins/{plugin_id}", headers=headers).json()

    nice = answer("/app/nice/hello")
    assert (nice["says"], nice["version"]) == ("12.3 million", "4.9.0") and "nice-libs-" in nice["file"], nice
    hashed = answer("/app/hasher/hash")
    assert hashed["hash"] == MMH3_FOO and hashed["file"].endswith(".so") and "hasher-libs-" in hashed["file"]
    assert answer("/app/boxed/hello")["version"] == "4.10.0", "the sandboxed plugin has its own humanize"
    assert answer("/app/boxed/hash")["hash"] == MMH3_FOO, "a C extension loads in the confined worker"
    boxed = view("boxed")
    assert boxed["state"] == "active" and boxed["sandbox"]["state"] == "running", boxed
    assert {r["name"]: (r["source"], r["wheel"]) for r in boxed["requirements"]} == {
        "humanize": ("bundle", HUMANIZE_NEW), "mmh3": ("bundle", MMH3_HERE),
    }  # fmt: skip
    nice_view = view("nice")
    assert [(r["name"], r["source"], r["wheel"]) for r in nice_view["requirements"]] == [
        ("humanize", "bundle", HUMANIZE_OLD), ("PyJWT", "xcore", None)
    ], nice_view  # fmt: skip

    styled = answer("/app/styled/v")
    assert styled["version"] == "2.99.0" and "styled-libs-" in styled["file"], styled
    assert [(r["source"], r["wheel"]) for r in view("styled")["requirements"]] == [("bundle", PYGMENTS[0])]

    win = until(lambda: (v := view("win"))["state"] == "failed" and v, "win is refused", alive=server.alive)
    assert "mmh3: no wheel fits this xcore" in win["error"], win
    assert f"{MMH3_WINDOWS} is for cp311-cp311-win_amd64" in win["error"], win
    # the tags of the frozen interpreter: this platform's, glibc's manylinux ones included
    assert "this xcore takes cp311-cp311-linux_x86_64, cp311-cp311-manylinux_2_" in win["error"], win

    # PyYAML: the binary ships its own, and a plugin may not need another version of it
    drop(old_yaml, data / "plugins")
    old = until(lambda: (v := view("old")).get("state") == "failed" and v, "old is refused", alive=server.alive)
    assert f"pyyaml<5 clashes with PyYAML {yaml.__version__}, which xcore ships" in old["error"], old
    # humanize 4.9.0 is imported in process by nice: a second in-process plugin cannot have 4.10.0
    drop(second, data / "plugins")
    refused = until(
        lambda: (v := view("second")).get("state") == "failed" and v, "second is refused", alive=server.alive
    )
    clash = "humanize 4.10.0 clashes with humanize 4.9.0, which plugin 'nice' imports in this process"
    assert clash in refused["error"], refused
    assert httpx.get(f"{base}/app/second/hello", headers=headers).status_code == 404
    assert answer("/app/nice/hello")["version"] == "4.9.0", "the first keeps its version"
    assert server.stop() == 0


def test_the_binary_packs_wheels_with_the_pip_of_the_python_it_is_given(bundle: Path, tmp_path: Path) -> None:
    """The binary has no pip: `--python` names one, and the zip is the one packing from source makes (PyJWT, which
    both ship, left out: offline, pip would find no wheel of it)."""
    assert (WHEELS / MMH3_HERE).is_file(), f"{WHEELS} lacks the test wheels: run `python3 tasks.py test` once"
    requirements = ["humanize<4.10", "mmh3", "pyjwt"]
    folder = write_plugin(tmp_path / "src", "both", "1.0.0", BOTH_ROUTES, requirements=requirements)
    python = ROOT / ".venv" / "bin" / "python"

    def pack(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bundle), "plugin", "pack", str(folder), "--out", str(tmp_path / "frozen"), *OFFLINE, *extra],
            env={**HEADLESS_ENV, **(env or {})}, capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    done = pack("--python", str(python))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("wheel ")] == [
        f"wheel {HUMANIZE_OLD}", f"wheel {MMH3_HERE}"
    ]  # fmt: skip
    made = Path(done.stdout.splitlines()[0])
    source = run_xcore("plugin", "pack", str(folder), "--out", str(tmp_path / "source"), *OFFLINE)
    assert source.returncode == 0, source.stderr
    assert made.read_bytes() == Path(source.stdout.splitlines()[0]).read_bytes(), "the same zip, byte for byte"

    no_python = pack(env={"PATH": str(tmp_path / "empty-bin")})
    assert no_python.returncode == 2, no_python.stdout + no_python.stderr
    assert "this xcore has no pip: name a Python with pip by --python" in no_python.stderr
