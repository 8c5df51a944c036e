"""End to end: plugins in a real `xcore serve` (real Granian workers, real data directory, real watcher).

Bundles are dropped into `<data>/plugins/` the way an admin would (a plain file copy), uploaded through the
admin API, or edited in a `--plugins-dev` folder; every check goes through HTTP. The watcher is asynchronous,
so each step polls (with a deadline) for the outcome instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from conftest import fresh_python
from conftest import until as wait_for
from test_bundle import DAMAGES, damaged_bundle
from xcore import __version__
from xcore.plugins.pack import pack_folder

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
NOTES = REPO / "plugins" / "notes"
OWNER, OWNER_PASSWORD = "root", "first-owner-secret-1"
DEADLINE = 10.0  # seconds any change may take to be live

T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------------------------


class Host:
    """Host is a started server with its first superadmin set up and logged in."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url = server.url
        self.data = server.data_dir
        self.plugins = self.data / "plugins"
        # No keep-alive: every request opens a new connection, so requests spread over the workers.
        self.http = httpx.Client(base_url=self.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        server.wait_ready()
        token = (self.data / "setup-token").read_text().strip()
        setup = self.http.post("/api/setup", json={"token": token, "username": OWNER, "password": OWNER_PASSWORD})
        assert setup.status_code == 201, setup.text
        self.headers = self.login(OWNER, OWNER_PASSWORD)

    def login(self, username: str, password: str) -> dict[str, str]:
        response = self.http.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """request is one call on a fresh connection, as the owner unless `headers` says otherwise."""
        kwargs.setdefault("headers", self.headers)
        return self.http.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def openapi_paths(self, prefix: str) -> set[str]:
        response = self.get("/openapi.json")
        assert response.status_code == 200 and "paths" in response.json(), response.text[:2000]
        paths = response.json()["paths"]
        return {p for p in paths if p == prefix or p.startswith(prefix + "/")}

    def view(self, plugin_id: str) -> dict[str, Any] | None:
        found = [v for v in self.get("/api/admin/plugins").json() if v["id"] == plugin_id]
        return found[0] if found else None

    def until(self, check: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
        """until polls `check` until it returns something truthy; fails naming `what`, the last value and the log."""

        def tail() -> str:
            lines = [line for line in self.server.output.splitlines() if " api " not in line]  # not the polls
            return "server output (tail):\n" + "\n".join(lines[-30:])

        return wait_for(check, what, timeout, context=tail)


@pytest.fixture
def serve(start_server) -> Iterator[Callable[..., Host]]:
    """serve(*args, env=None) starts `xcore serve` on a fresh data dir and returns its Host (closed at the end)."""
    hosts: list[Host] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Host:
        hosts.append(Host(start_server(None, *args, env=env)))
        return hosts[-1]

    yield start
    for host in hosts:
        host.http.close()


def write_plugin(folder: Path, plugin_id: str, version: str, code: str, **manifest: Any) -> Path:
    """write_plugin creates (or rewrites) a plugin source folder with plugin.json and run.py."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"id": plugin_id, "version": version, "name": plugin_id.title(), "requires": ">=0.1", **manifest}
    (folder / "plugin.json").write_text(json.dumps(fields, indent=2))
    (folder / "run.py").write_text(code)
    return folder


def pack(folder: Path, out: Path) -> Path:
    return pack_folder(folder, out, __version__)


def drop(bundle: Path, plugins: Path) -> Path:
    """drop copies a bundle into the plugins folder as an admin would: a plain, non-atomic copy."""
    return Path(shutil.copyfile(bundle, plugins / bundle.name))


VERSION_ROUTE = """\
import os

from xcore.sdk import Ctx, PluginContext, Router, get


def _event(ctx: PluginContext, what: str) -> None:
    with open(ctx.data_dir / "events.log", "a") as log:
        log.write(f"{what} {os.getpid()} {ctx.version}\\n")


def on_load(ctx: PluginContext) -> None:
    _event(ctx, "load")


def on_unload(ctx: PluginContext) -> None:
    _event(ctx, "unload")


@get("/", sync_to_thread=False)
def version(ctx: Ctx) -> dict[str, object]:
    return {"version": ctx.version, "pid": os.getpid()}


router = Router("/", route_handlers=[version])
"""


def version_plugin(tmp: Path, plugin_id: str, version: str) -> Path:
    """version_plugin is the zip of a plugin whose one route answers its version and the worker's pid."""
    folder = write_plugin(tmp / f"src-{plugin_id}-{version}", plugin_id, version, VERSION_ROUTE)
    return pack(folder, tmp / "zips")


def events(host: Host, plugin_id: str) -> list[tuple[str, int, str]]:
    """events are the (hook, pid, version) lines the version plugin's on_load/on_unload wrote."""
    path = host.data / "plugin-data" / plugin_id / "events.log"
    if not path.exists():
        return []
    return [(w, int(p), v) for w, p, v in (line.split() for line in path.read_text().splitlines())]


def notes_variant(tmp: Path, version: str, edit: Callable[[str], str]) -> Path:
    """notes_variant is a copy of plugins/notes with another version and run.py changed by `edit`, packed."""
    folder = tmp / f"notes-{version}"
    shutil.copytree(NOTES, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((folder / "plugin.json").read_text())
    (folder / "plugin.json").write_text(json.dumps({**manifest, "version": version}, indent=2))
    (folder / "run.py").write_text(edit((folder / "run.py").read_text()))
    return pack(folder, tmp / "zips")


def with_about_route(code: str) -> str:
    """with_about_route adds GET /app/notes/about, which answers the version: the 'new behaviour'."""
    code = code.replace(
        "router = Router(",
        '@get("/about", sync_to_thread=False)\n'
        "def about(ctx: Ctx) -> dict[str, Any]:\n"
        '    return {"version": ctx.version, "notes": "upgraded"}\n\n\n'
        "router = Router(",
    )
    return code.replace("route_handlers=[list_notes,", "route_handlers=[about, list_notes,")


def zip_bytes(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# --- 1. the lifecycle of a dropped plugin ----------------------------------------------------------------------


def test_dropped_plugin_upgrades_keeps_its_data_survives_broken_versions_and_unmounts(serve, tmp_path) -> None:
    host = serve()
    base = {"/app/notes", "/app/notes/{note_id}"}
    assert host.openapi_paths("/app/notes") == set()
    assert host.get("/app/notes").status_code == 404

    # Drop 1.1.0: its CRUD routes go live.
    first = drop(pack(NOTES, tmp_path / "zips"), host.plugins)
    host.until(lambda: host.get("/app/notes").status_code == 200, "notes 1.1.0 is served")
    assert host.openapi_paths("/app/notes") == base
    created = host.request("POST", "/app/notes", json={"title": "written by 1.1.0", "body": "keep me"})
    assert created.status_code == 201, created.text
    note = created.json()
    assert note["title"] == "written by 1.1.0" and note["body"] == "keep me"
    assert host.get(f"/app/notes/{note['id']}").json() == note
    assert host.request("PUT", f"/app/notes/{note['id']}", json={"title": " "}).status_code == 400

    # notes.write guards the writes: a plain user reads, but may not write.
    made = host.request("POST", "/api/admin/users", json={"username": "bob", "password": "plain-user-secret-3"})
    assert made.status_code == 201, made.text
    bob = host.login("bob", "plain-user-secret-3")
    assert host.get("/app/notes", headers=bob).json() == [note]
    refused = host.request("POST", "/app/notes", headers=bob, json={"title": "not allowed"})
    assert refused.status_code == 403 and "notes.write" in refused.text
    assert host.get("/app/notes", headers={}).status_code == 401

    # Replace it with 1.2.0 (new file first, then the old one goes): the new route is live, the notes are kept.
    upgrade = drop(notes_variant(tmp_path, "1.2.0", with_about_route), host.plugins)
    first.unlink()
    about = host.until(
        lambda: (r := host.get("/app/notes/about")).status_code == 200 and r.json(), "notes 1.2.0 is served"
    )
    assert about == {"version": "1.2.0", "notes": "upgraded"}
    assert host.get("/app/notes").json() == [note], "ctx.db survives the upgrade"
    assert host.openapi_paths("/app/notes") == base | {"/app/notes/about"}
    view = host.view("notes")
    assert view is not None
    assert (view["state"], view["version"], view["error"], view["file"]) == ("active", "1.2.0", None, upgrade.name)

    # A version that does not import: recorded as failed; 1.2.0 keeps serving.
    drop(notes_variant(tmp_path, "1.3.0", lambda code: code + "\ndef broken(:\n    pass\n"), host.plugins)
    view = host.until(
        lambda: (v := host.view("notes")) and v["error"] and "1.3.0 failed" in v["error"] and v, "1.3.0 fails"
    )
    assert view["state"] == "active" and view["version"] == "1.2.0"
    assert "SyntaxError in run.py" in view["error"] and view["error"].endswith("serving 1.2.0")
    states = {v["version"]: v["state"] for v in view["versions"]}
    assert states == {"1.3.0": "failed", "1.2.0": "active"}
    assert host.get("/app/notes/about").json()["version"] == "1.2.0"
    assert host.get("/app/notes").json() == [note]
    assert host.openapi_paths("/app/notes") == base | {"/app/notes/about"}

    # A version whose on_load raises: failed as well; 1.2.0 still serves, and 1.3.0's failure is still shown.
    crash = "\n\ndef on_load(ctx):\n    raise RuntimeError('no database today')\n"
    drop(notes_variant(tmp_path, "1.4.0", lambda code: code + crash), host.plugins)
    view = host.until(
        lambda: (v := host.view("notes")) and v["error"] and "1.4.0 failed" in v["error"] and v, "1.4.0 fails"
    )
    assert view["state"] == "active" and view["version"] == "1.2.0"
    assert "on_load raised RuntimeError: no database today" in view["error"]
    assert "1.3.0 failed" in view["error"] and view["error"].endswith("serving 1.2.0")
    states = {v["version"]: v["state"] for v in view["versions"]}
    assert states == {"1.4.0": "failed", "1.3.0": "failed", "1.2.0": "active"}
    assert host.get("/app/notes/about").json()["version"] == "1.2.0"
    assert host.request("POST", "/app/notes", json={"title": "written by 1.2.0"}).status_code == 201
    assert [n["title"] for n in host.get("/app/notes").json()] == ["written by 1.1.0", "written by 1.2.0"]
    assert host.openapi_paths("/app/notes") == base | {"/app/notes/about"}

    # Delete every zip: the routes go, the plugin is forgotten, its data stays on disk.
    for path in host.plugins.glob("notes-*.zip"):
        path.unlink()
    host.until(lambda: host.get("/app/notes").status_code == 404, "notes is unmounted")
    assert host.get("/app/notes/about").status_code == 404
    assert host.openapi_paths("/app/notes") == set()
    assert host.view("notes") is None
    assert host.get("/api/admin/plugins/notes").status_code == 404
    assert (host.data / "plugin-data" / "notes" / "plugin.db").is_file()
    assert host.get("/health").status_code == 200
    assert host.server.stop() == 0


# --- 2. no request fails during reloads ------------------------------------------------------------------------


async def _hammer(url: str, headers: dict[str, str], stop: threading.Event, seen: Counter[str], lanes: int) -> None:
    """_hammer keeps `lanes` connections busy until `stop`: half on the plugin route, half on /health."""
    limits = httpx.Limits(max_connections=lanes, max_keepalive_connections=lanes)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=10) as client:

        async def lane(path: str) -> None:
            while not stop.is_set():
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    seen[f"{path} {type(exc).__name__}"] += 1
                    continue
                if path == "/health":
                    seen[f"/health {response.status_code}"] += 1
                elif response.status_code == 200:
                    seen[f"200 {response.json()['version']}"] += 1
                else:
                    seen[f"{path} {response.status_code} {response.text[:200]}"] += 1

        await asyncio.gather(*(lane("/app/flip" if i % 2 else "/health") for i in range(lanes)))


UNDER_LOAD = 20  # requests the load gets answered by each version before the next reload


def served_under_load(host: Host, seen: Counter[str], version: str, what: str) -> None:
    """served_under_load waits until `version` of flip answers, then until the load has had UNDER_LOAD more answers
    from it: each version serves real traffic before the next reload, however slow the machine (a fixed pause gave
    a busy machine's load a few requests, a quick one's hundreds)."""
    host.until(lambda: host.get("/app/flip").json()["version"] == version, f"{what}: {version} answers")
    before = seen[f"200 {version}"]
    host.until(lambda: seen[f"200 {version}"] >= before + UNDER_LOAD, f"{what}: the load is served by {version}")


def test_no_request_fails_through_twenty_reloads(serve, tmp_path) -> None:
    host = serve()
    older, newer = version_plugin(tmp_path, "flip", "1.0.0"), version_plugin(tmp_path, "flip", "2.0.0")
    drop(older, host.plugins)
    host.until(lambda: host.get("/app/flip").status_code == 200, "flip 1.0.0 is served")

    seen: Counter[str] = Counter()
    stop = threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(_hammer(host.url, host.headers, stop, seen, 16)))
    load.start()
    try:
        # 20 reloads: adding 2.0.0 makes it active; removing it brings 1.0.0 back. A zip is always present.
        for swap in range(20):
            expected = "2.0.0" if swap % 2 == 0 else "1.0.0"
            if expected == "2.0.0":
                drop(newer, host.plugins)
            else:
                (host.plugins / newer.name).unlink()
            served_under_load(host, seen, expected, f"reload {swap + 1}")
    finally:
        stop.set()
        load.join(timeout=30)
    assert not load.is_alive()

    failures = {k: n for k, n in seen.items() if not k.startswith(("200 ", "/health 200"))}
    assert failures == {}, f"requests failed during reloads: {failures}"
    assert seen["200 1.0.0"] >= 10 * UNDER_LOAD and seen["200 2.0.0"] >= 10 * UNDER_LOAD, seen
    assert seen["/health 200"] > 0, seen
    loads = [(hook, version) for hook, _, version in events(host, "flip")]
    assert loads.count(("load", "2.0.0")) == 10 and loads.count(("load", "1.0.0")) == 11, loads
    assert host.server.stop() == 0


def test_a_sandboxed_plugin_reloads_under_load_without_a_failed_request_and_survives_a_crash(serve, tmp_path) -> None:
    host = serve()
    code = VERSION_ROUTE.replace(
        'router = Router("/", route_handlers=[version])',
        '@get("/crash", sync_to_thread=False)\ndef crash() -> None:\n    os._exit(3)\n\n\n'
        'router = Router("/", route_handlers=[version, crash])',
    )
    zips = [
        pack(write_plugin(tmp_path / f"src-{v}", "flip", v, code, sandbox=True), tmp_path / "zips")
        for v in ("1.0.0", "2.0.0")
    ]
    drop(zips[0], host.plugins)
    first = host.until(lambda: host.get("/app/flip").status_code == 200 and host.get("/app/flip").json(), "flip runs")
    assert first["pid"] not in _worker_pids(host), "a sandboxed plugin answers from a process of its own"

    seen: Counter[str] = Counter()
    stop = threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(_hammer(host.url, host.headers, stop, seen, 16)))
    load.start()
    try:
        for swap in range(6):
            expected = "2.0.0" if swap % 2 == 0 else "1.0.0"
            if expected == "2.0.0":
                drop(zips[1], host.plugins)
            else:
                (host.plugins / zips[1].name).unlink()
            served_under_load(host, seen, expected, f"reload {swap + 1}")
    finally:
        stop.set()
        load.join(timeout=30)
    failures = {k: n for k, n in seen.items() if not k.startswith(("200 ", "/health 200"))}
    assert failures == {}, f"requests failed during reloads: {failures}"
    assert seen["200 1.0.0"] > 0 and seen["200 2.0.0"] > 0, seen

    before = host.get("/app/flip").json()["pid"]
    assert host.get("/app/flip/crash").status_code == 502
    assert host.get("/health").status_code == 200
    back = host.until(
        lambda: (r := host.get("/app/flip")).status_code == 200 and r.json()["pid"] != before and r.json(),
        "the crashed worker is back",
        timeout=20,
    )
    assert back["version"] == "1.0.0"
    assert host.server.stop() == 0


def test_the_notes_example_runs_sandboxed_with_its_task_and_a_broken_upgrade_leaves_it_serving(serve, tmp_path) -> None:
    host = serve()
    folder = tmp_path / "boxed-notes"
    shutil.copytree(NOTES, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((folder / "plugin.json").read_text())
    (folder / "plugin.json").write_text(json.dumps({**manifest, "sandbox": True}, indent=2))
    drop(pack(folder, tmp_path / "zips"), host.plugins)
    view = host.until(lambda: (v := host.view("notes")) and v["state"] == "active" and v, "sandboxed notes is active")
    assert view["sandbox"]["state"] == "running", view

    created = host.request("POST", "/app/notes/", json={"title": "boxed", "body": "from the sandbox"})
    assert created.status_code == 201, created.text
    assert [n["title"] for n in host.get("/app/notes/").json()] == ["boxed"]
    assert host.request("POST", "/app/notes/", json={"title": ""}).status_code in (400, 422)
    queued = host.request("POST", "/api/admin/tasks/notes.purge_empty/run")
    assert queued.status_code == 201, queued.text
    run = host.until(
        lambda: (
            (r := host.get(f"/api/admin/tasks/runs/{queued.json()['run']}").json())["status"]
            in ("succeeded", "failed", "dropped")
            and r
        ),
        "the task run to finish",
    )
    assert run["status"] == "succeeded", run

    broken = tmp_path / "broken-notes"
    shutil.copytree(folder, broken)
    (broken / "plugin.json").write_text(json.dumps({**manifest, "sandbox": True, "version": "2.0.0"}, indent=2))
    (broken / "run.py").write_text("raise RuntimeError('this version cannot start')\n")
    drop(pack(broken, tmp_path / "zips"), host.plugins)
    failed = host.until(lambda: (v := host.view("notes")) and "2.0.0" in v["failed_versions"] and v, "2.0.0 fails")
    assert failed["state"] == "active" and failed["serving"] == "1.1.0", failed
    assert [n["title"] for n in host.get("/app/notes/").json()] == ["boxed"]
    assert host.server.stop() == 0


def _worker_pids(host: Host) -> set[int]:
    """_worker_pids are the pids of the server's process tree."""
    root = host.server.process.pid
    found = {root}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root:
                found.add(int(entry.name))
    return found


# --- 3. several workers converge ---------------------------------------------------------------------------------


def _fresh(host: Host, path: str, count: int) -> list[httpx.Response]:
    """_fresh makes `count` requests, each on a new connection, so they spread over the workers."""
    return [host.get(path) for _ in range(count)]


def test_every_worker_serves_disables_and_enables_a_plugin(serve, tmp_path) -> None:
    host = serve("--workers", "2")
    workers = set()

    def all_serve(version: str) -> bool:
        responses = _fresh(host, "/app/where", 40)
        if any(r.status_code != 200 or r.json()["version"] != version for r in responses):
            return False
        workers.update(r.json()["pid"] for r in responses)
        return len(workers) == 2

    drop(version_plugin(tmp_path, "where", "1.0.0"), host.plugins)
    host.until(lambda: all_serve("1.0.0"), "both workers serve where 1.0.0", timeout=15)
    assert {pid for hook, pid, _ in events(host, "where") if hook == "load"} == workers

    disabled = host.request("POST", "/api/admin/plugins/where/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["state"] == "disabled" and disabled.json()["enabled"] is False
    host.until(lambda: all(r.status_code == 404 for r in _fresh(host, "/app/where", 40)), "every worker answers 404")
    host.until(
        lambda: {pid for hook, pid, _ in events(host, "where") if hook == "unload"} == workers,
        "on_unload ran in both workers",
    )
    assert all(r.status_code == 404 for r in _fresh(host, "/app/where", 40))
    assert all(host.view("where")["state"] == "disabled" for _ in range(10)), "every worker shows it disabled"

    enabled = host.request("POST", "/api/admin/plugins/where/enable")
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["state"] == "active"
    workers.clear()
    host.until(lambda: all_serve("1.0.0"), "both workers serve where again")
    assert all(r.status_code == 200 for r in _fresh(host, "/app/where", 40))
    assert all(host.view("where")["state"] == "active" for _ in range(10)), "every worker shows it active"

    # A new version reaches both workers too.
    drop(version_plugin(tmp_path, "where", "1.1.0"), host.plugins)
    workers.clear()
    host.until(lambda: all_serve("1.1.0"), "both workers serve where 1.1.0")
    assert host.server.stop() == 0


# --- 4. --plugins-dev ------------------------------------------------------------------------------------------

# As on an author's machine, Python writes bytecode caches (__pycache__) into the dev folder; the test
# environment may have turned them off with PYTHONDONTWRITEBYTECODE (an empty value turns them back on).
AUTHOR_ENV = {"PYTHONDONTWRITEBYTECODE": ""}

DEV_CODE = """\
from xcore.sdk import Router, get


@get("/", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"message": "MESSAGE"}


router = Router("/", route_handlers=[hello])
"""


def test_dev_folder_edits_are_live_without_a_restart(serve, tmp_path) -> None:
    dev = tmp_path / "dev"
    folder = write_plugin(dev / "devp", "devp", "0.1.0", DEV_CODE.replace("MESSAGE", "first"))
    host = serve("--plugins-dev", str(dev), env=AUTHOR_ENV)

    def message() -> str | None:
        response = host.get("/app/devp")
        return response.json()["message"] if response.status_code == 200 else None

    assert host.until(message, "the dev plugin is served") == "first"
    view = host.view("devp")
    assert view is not None and view["source"] == "dev" and view["sha256"] is None

    (folder / "run.py").write_text(DEV_CODE.replace("MESSAGE", "second, after an edit"))
    host.until(lambda: message() == "second, after an edit", "the edit is live")

    # A broken save keeps the last good code serving and shows why; the fix goes live.
    (folder / "run.py").write_text(DEV_CODE.replace("MESSAGE", "third") + "\ndef broken(:\n")
    view = host.until(lambda: (v := host.view("devp")) and v["error"] and v, "the broken save is reported")
    assert "SyntaxError in run.py" in view["error"] and view["state"] == "active"
    assert message() == "second, after an edit"
    (folder / "run.py").write_text(DEV_CODE.replace("MESSAGE", "fourth, fixed"))
    host.until(lambda: message() == "fourth, fixed", "the fix is live")
    assert host.view("devp")["error"] is None

    # A dev plugin is deleted with its folder, not through the API.
    refused = host.request("DELETE", "/api/admin/plugins/devp")
    assert refused.status_code == 409, refused.text
    assert host.server.stop() == 0


def test_dev_folder_edit_of_the_same_size_within_a_second_is_live(serve, tmp_path) -> None:
    """Two saves in the same second that keep the file's size (a one-letter fix) must both be served:
    Python's bytecode cache checks the source's whole-second mtime and its size only."""
    dev = tmp_path / "dev"
    folder = write_plugin(dev / "same", "same", "0.1.0", DEV_CODE.replace("MESSAGE", "v1"))
    run = folder / "run.py"
    host = serve("--plugins-dev", str(dev), env=AUTHOR_ENV)
    assert host.until(lambda: (r := host.get("/app/same")).status_code == 200 and r.json(), "served") == {
        "message": "v1"
    }
    first = run.stat().st_mtime_ns
    run.write_text(DEV_CODE.replace("MESSAGE", "v2"))
    second = (first // 1_000_000_000) * 1_000_000_000 + (first + 500_000_000) % 1_000_000_000
    os.utime(run, ns=(second, second))  # the second save lands in the same second as the first
    assert run.stat().st_size == len(DEV_CODE.replace("MESSAGE", "v1"))
    host.until(lambda: host.get("/app/same").json() == {"message": "v2"}, "the same-size edit is live")
    assert host.server.stop() == 0


GC_PROBE = """\
import gc
import os

from xcore.sdk import Router, get


@get("/", sync_to_thread=False)
def collector() -> dict[str, object]:
    return {"pid": os.getpid(), "threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}


router = Router("/", route_handlers=[collector])
"""


def test_every_worker_collects_garbage_as_usual_once_it_has_started(serve, tmp_path) -> None:
    """A start defers the cyclic garbage collector (xcore.heap); each worker of a real server sets the
    interpreter's default thresholds back once its core app is built, and has frozen the heap of its start."""
    write_plugin(tmp_path / "dev" / "gcprobe", "gcprobe", "0.1.0", GC_PROBE)
    host = serve("--plugins-dev", str(tmp_path / "dev"), "--workers", "2")
    defaults = json.loads(fresh_python("import gc, json; print(json.dumps(gc.get_threshold()))"))
    seen: dict[int, dict[str, Any]] = {}

    def both_workers() -> bool:
        response = host.get("/app/gcprobe")
        if response.status_code == 200:
            seen[response.json()["pid"]] = response.json()
        return len(seen) == 2

    host.until(both_workers, "both workers answered")
    for probe in seen.values():
        assert probe["threshold"] == defaults and probe["frozen"] > 10_000, probe
    assert host.server.stop() == 0


# --- 5. upload through the API ---------------------------------------------------------------------------------

GOOD_MANIFEST = json.dumps({"id": "bad", "version": "1.0.0", "name": "Bad", "requires": ">=0.1"})
RUN = "from xcore.sdk import Router\nrouter = Router('/', route_handlers=[])\n"

BROKEN_UPLOADS = [
    # (name, content, rule, entry)
    ("not-a-zip.zip", b"this is not a zip file", "not-a-zip", None),
    ("no-manifest.zip", zip_bytes({"run.py": RUN}), "manifest-missing", None),
    ("bad-id.zip", zip_bytes({"plugin.json": GOOD_MANIFEST.replace('"bad"', '"Bad-Id"'), "run.py": RUN}),
     "manifest-invalid", "plugin.json"),
    ("no-entry.zip", zip_bytes({"plugin.json": GOOD_MANIFEST}), "entry-missing", None),
    ("escape.zip", zip_bytes({"plugin.json": GOOD_MANIFEST, "run.py": RUN, "../evil.py": "x = 1"}),
     "unsafe-path", "../evil.py"),
    ("future.zip", zip_bytes({"plugin.json": GOOD_MANIFEST.replace(">=0.1", ">=99"), "run.py": RUN}), "requires", None),
    ("core-prefix.zip",
     zip_bytes({"plugin.json": GOOD_MANIFEST[:-1] + ', "api_prefix": "/api/admin/x"}', "run.py": RUN}),
     "api-prefix", None),
    ("taken-prefix.zip",
     zip_bytes({"plugin.json": GOOD_MANIFEST[:-1] + ', "api_prefix": "/app/upl"}', "run.py": RUN}),
     "api-prefix", None),
]  # fmt: skip


def test_upload_installs_a_bundle_live_and_refuses_broken_ones_naming_the_rule(serve, tmp_path) -> None:
    host = serve()
    bundle = version_plugin(tmp_path, "upl", "1.0.0")

    uploaded = host.request("POST", "/api/admin/plugins", files={"data": ("my upload.zip", bundle.read_bytes())})
    assert uploaded.status_code == 201, uploaded.text
    view = uploaded.json()
    assert (view["id"], view["state"], view["version"], view["error"]) == ("upl", "active", "1.0.0", None)
    assert view["routes"] == ["GET /app/upl"]
    # One worker: the answer comes after the reload, so the route is live at once.
    assert host.get("/app/upl").json()["version"] == "1.0.0"
    assert (host.plugins / "upl-1.0.0.zip").read_bytes() == bundle.read_bytes()
    assert "/app/upl" in host.openapi_paths("/app/upl")
    audit = host.get("/api/admin/audit", params={"action": "plugin.upload"}).json()["items"]
    assert [(e["action"], e["actor"], e["target"]) for e in audit] == [("plugin.upload", OWNER, "upl")]

    before = sorted(p.name for p in host.plugins.iterdir())
    for name, content, rule, entry in BROKEN_UPLOADS:
        refused = host.request("POST", "/api/admin/plugins", files={"data": (name, content, "application/zip")})
        assert refused.status_code == 422, (name, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json"), name
        problem = refused.json()
        assert (problem["rule"], problem["entry"]) == (rule, entry), (name, problem)
        assert f"bundle {name}: {rule}:" in problem["detail"], (name, problem)
        assert sorted(p.name for p in host.plugins.iterdir()) == before, f"{name}: nothing is written"
    assert [v["id"] for v in host.get("/api/admin/plugins").json()] == ["upl"]
    assert host.get("/app/upl").json()["version"] == "1.0.0"

    # Uploading a newer version makes it active in the same answer; the older zip stays as superseded.
    newer = version_plugin(tmp_path, "upl", "1.1.0")
    upgraded = host.request("POST", "/api/admin/plugins", files={"data": (newer.name, newer.read_bytes())})
    assert upgraded.status_code == 201, upgraded.text
    assert (upgraded.json()["state"], upgraded.json()["version"]) == ("active", "1.1.0")
    assert {v["version"]: v["state"] for v in upgraded.json()["versions"]} == {"1.1.0": "active", "1.0.0": "superseded"}
    assert host.get("/app/upl").json()["version"] == "1.1.0"

    # A plain user may not upload.
    made = host.request("POST", "/api/admin/users", json={"username": "bob", "password": "plain-user-secret-3"})
    assert made.status_code == 201, made.text
    bob = host.login("bob", "plain-user-secret-3")
    forbidden = host.request("POST", "/api/admin/plugins", headers=bob, files={"data": ("x.zip", bundle.read_bytes())})
    assert forbidden.status_code == 403
    assert host.server.stop() == 0


# --- 7. a damaged bundle and the leftovers of interrupted uploads at the start ---------------------------------


def test_a_start_removes_interrupted_uploads_and_survives_a_zip_that_cannot_be_extracted(serve, tmp_path) -> None:
    data = tmp_path / "data"
    plugins, cache = data / "plugins", data / "cache" / "plugins"
    for folder in (data, plugins, cache):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    leftovers = [plugins / ".upload-k2j4h1.tmp", plugins / ".upload-9x8y7z.tmp", cache / ".extract-a1b2c3"]
    for path in leftovers[:2]:
        path.write_bytes(b"PK\3\4 the first half of an upload")
    leftovers[2].mkdir()
    (leftovers[2] / "run.py").write_text("# half extracted\n")
    code = "from xcore.sdk import get\n"
    manifest = {"id": "broken", "version": "1.0.0"}
    method, entry, how = DAMAGES[0].values[:3]  # bad CRC: every check before extraction passes
    damaged = damaged_bundle(tmp_path / "zips" / "broken-1.0.0.zip", manifest, code, method, entry, how)
    drop(damaged, plugins)
    drop(version_plugin(tmp_path, "good", "1.0.0"), plugins)

    host = serve()  # it used to exit 1 here ("ASGI lifespan startup failed")
    assert [path for path in leftovers if path.exists()] == []
    assert host.get("/app/good").json()["version"] == "1.0.0"
    view = host.until(lambda: (v := host.view("broken")) and v["state"] == "failed" and v, "broken is failed")
    assert "corrupt-entry" in view["error"] and "'data.txt'" in view["error"], view

    again = damaged_bundle(tmp_path / "upload" / "crc.zip", {"id": "crc", "version": "1.0.0"}, code, method, entry, how)
    refused = host.request("POST", "/api/admin/plugins", files={"data": (again.name, again.read_bytes())})
    assert refused.status_code == 422, refused.text
    assert (refused.json()["rule"], refused.json()["entry"]) == ("corrupt-entry", "data.txt")
    assert sorted(p.name for p in plugins.iterdir() if not p.name.startswith(".")) == [
        "broken-1.0.0.zip",
        "good-1.0.0.zip",
    ]
    assert not list(plugins.glob(".upload-*")) and not list(cache.glob(".extract-*"))
    newer = version_plugin(tmp_path, "good", "1.1.0")
    assert (
        host.request("POST", "/api/admin/plugins", files={"data": (newer.name, newer.read_bytes())}).status_code == 201
    )
    assert host.request("POST", "/api/admin/plugins/good/disable").status_code == 200
    assert host.get("/app/good").status_code == 404
    assert host.request("POST", "/api/admin/plugins/good/enable").status_code == 200
    assert host.get("/app/good").json()["version"] == "1.1.0"
    assert host.server.output.count("broken 1.0.0 failed to load") == 1, host.server.output
    assert host.server.stop() == 0
