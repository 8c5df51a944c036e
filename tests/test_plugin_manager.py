"""The plugin manager and the plugin admin API (issue 4), in process, with crafted bundles.

Each test runs what a worker serves (conftest's `plugin_host`: the Switch driven by a real PluginManager that
watches the plugins folder) on a fresh data directory, with real zips, real imports and real logins. Bundles are
copied into the plugins folder the way a user would copy them; the watcher is asynchronous, so tests poll
(`eventually`) for the outcome. Bundle rules are unit-tested in test_bundle.py; here they go through the drop-in
path and must show up in the admin API.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import struct
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import PASSWORDS, create_account, plugin_host
from test_bundle import DAMAGES, damaged_bundle
from xcore.db.models import PluginState
from xcore.plugins import bundle as bundle_module
from xcore.plugins import loader
from xcore.plugins.bundle import MAX_ENTRIES, MAX_UNCOMPRESSED
from xcore.plugins.store import plugin_data_dir, plugins_dir, settled, signal_state_change
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database

T = TypeVar("T")
WAIT = 10.0  # seconds to wait for the watcher; it normally takes well under one


# --- building bundles ------------------------------------------------------------------------------------------


def make_zip(
    folder: Path,
    plugin_id: str,
    version: str,
    run_py: str,
    *,
    zip_name: str | None = None,
    extra_files: dict[str, bytes | str] | None = None,
    symlinks: Sequence[str] = (),
    manifest: Any = None,
    **manifest_extra: Any,
) -> Path:
    """make_zip writes `<folder>/<id>-<version>.zip` (or `zip_name`) holding plugin.json, run.py and extra files.

    `manifest_extra` goes into plugin.json; `manifest` replaces plugin.json's whole content (a dict or raw text).
    Entries named in `symlinks` are stored as symbolic links.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (zip_name or f"{plugin_id}-{version}.zip")
    if manifest is None:
        manifest = {"id": plugin_id, "version": version, **manifest_extra}
    files: dict[str, bytes | str] = {
        "plugin.json": manifest if isinstance(manifest, str) else json.dumps(manifest),
        "run.py": run_py,
        **(extra_files or {}),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ((stat.S_IFLNK | 0o777) if name in symlinks else (stat.S_IFREG | 0o644)) << 16
            archive.writestr(info, content)
    return path


def route(says: str, path: str = "/hello", *, guard: str | None = None) -> str:
    """route is a run.py with one GET route answering its plugin's id, version, `says` and config."""
    guards = f", guards=[requires({guard!r})]" if guard else ""
    return f"""
from xcore.sdk import Ctx, get, requires


@get({path!r}, sync_to_thread=False{guards})
def answer(ctx: Ctx) -> dict[str, object]:
    return {{"id": ctx.id, "version": ctx.version, "says": {says!r}, "config": dict(ctx.config)}}


router = [answer]
"""


def hooks(log: Path) -> str:
    """hooks is run.py code whose on_load and on_unload append "load|unload <id> <version>" lines to `log`."""
    return f"""
import pathlib as _pathlib


def _record(event, ctx):
    with _pathlib.Path({str(log)!r}).open("a") as out:
        out.write(f"{{event}} {{ctx.id}} {{ctx.version}}\\n")


def on_load(ctx):
    _record("load", ctx)


def on_unload(ctx):
    _record("unload", ctx)
"""


def events(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def line_of(code: str, text: str) -> int:
    """line_of is the 1-based line of `code` holding `text`."""
    return next(n for n, line in enumerate(code.splitlines(), 1) if text in line)


def claim_size(path: Path, entry: str, size: int) -> Path:
    """claim_size rewrites the central directory record of `entry` so it claims `size` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_length] == entry.encode():
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return path
        at = data.find(b"PK\x01\x02", at + 46)
    raise AssertionError(f"{entry} is not in {path}")


# --- a running host --------------------------------------------------------------------------------------------


def eventually(check: Callable[[], T], timeout: float = WAIT) -> T:
    """eventually calls `check` until it stops raising AssertionError; re-raises the last one after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def login(client: Any, username: str) -> dict[str, str]:
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class Host:
    """Host is a running plugin host: its client (logged in as root), its plugins folder and a staging folder."""

    def __init__(self, client: Any, runtime: Runtime, staging: Path) -> None:
        self.client = client
        self.runtime = runtime
        self.staging = staging
        self.folder = plugins_dir(runtime)
        self.root = login(client, "root")

    @property
    def manager(self) -> Any:
        return self.client.manager

    def drop(self, source: Path, name: str | None = None) -> Path:
        """drop copies a zip into the plugins folder as `cp` would: in place, not atomically."""
        target = self.folder / (name or source.name)
        shutil.copyfile(source, target)
        return target

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=self.root if headers is None else headers)

    def view(self, plugin_id: str) -> dict[str, Any] | None:
        """view is GET /api/admin/plugins/<id>, or None when the host does not know the id."""
        response = self.get(f"/api/admin/plugins/{plugin_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_view(self, plugin_id: str, state: str, **expected: Any) -> dict[str, Any]:
        """wait_view polls until the plugin's view has `state` (and the expected fields); returns the view."""

        def check() -> dict[str, Any]:
            view = self.view(plugin_id)
            assert view is not None, f"{plugin_id} is not listed"
            assert view["state"] == state, view
            for key, value in expected.items():
                assert view[key] == value, view
            return view

        return eventually(check)

    def wait_answer(self, path: str, **expected: Any) -> dict[str, Any]:
        """wait_answer polls until GET `path` answers 200 with the expected fields; returns the body."""

        def check() -> dict[str, Any]:
            response = self.get(path)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            for key, value in expected.items():
                assert body[key] == value, body
            return body

        return eventually(check)

    def wait_status(self, path: str, status: int) -> None:
        eventually(lambda: _expect(self.get(path).status_code, status))

    def openapi_paths(self) -> set[str]:
        response = self.client.get("/openapi.json")
        assert response.status_code == 200
        return set(response.json()["paths"])

    def audit_actions(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        response = self.get("/api/admin/audit?action=plugin.*")
        assert response.status_code == 200, response.text
        return [(e["action"], e["target"], e["detail"]) for e in response.json()["items"]]


def _expect(actual: Any, expected: Any) -> None:
    assert actual == expected, f"{actual!r} != {expected!r}"


@contextmanager
def open_host(runtime: Runtime, staging: Path, dev_dirs: Sequence[Path] = ()) -> Iterator[Host]:
    with plugin_host(runtime, dev_dirs) as client:
        yield Host(client, runtime, staging)


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    """host: a running plugin host with an empty plugins folder and the owner account root."""
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


@contextmanager
def configured_runtime(data_dir: Path, **environ: str) -> Iterator[Runtime]:
    rt = open_runtime(data_dir, environ=environ)
    try:
        prepare_database(rt)
        create_account(rt, "root", ["superadmin"])
        yield rt
    finally:
        rt.close()


def preinstall(runtime: Runtime, *zips: Path) -> None:
    """preinstall puts settled zips in the plugins folder before a host starts, so they load at its start."""
    for source in zips:
        target = plugins_dir(runtime) / source.name
        shutil.copyfile(source, target)
        settled(target)


# --- 1. drop-in through the watcher ---------------------------------------------------------------------------


def test_a_dropped_zip_goes_live_is_replaced_in_place_and_goes_away_when_deleted(host: Host) -> None:
    v1 = make_zip(host.staging / "v1", "demo", "1.0.0", route("one"), zip_name="demo.zip")
    two = route("two") + route("extra", "/extra").replace("answer", "extra") + "\nrouter = [answer, extra]\n"
    v2 = make_zip(host.staging / "v2", "demo", "2.0.0", two, zip_name="demo.zip")
    assert "/app/demo/hello" not in host.openapi_paths()

    dropped = host.drop(v1)
    assert host.wait_answer("/app/demo/hello", says="one") == {
        "id": "demo",
        "version": "1.0.0",
        "says": "one",
        "config": {},
    }
    view = host.wait_view("demo", "active", version="1.0.0", error=None, file="demo.zip", source="zip")
    assert view["routes"] == ["GET /app/demo/hello"]
    paths = host.openapi_paths()
    assert "/app/demo/hello" in paths and "/app/demo/extra" not in paths

    tmp = host.folder / ".demo.zip.part"  # replaced atomically, as an editor or `mv` would
    shutil.copyfile(v2, tmp)
    os.replace(tmp, dropped)
    host.wait_answer("/app/demo/hello", says="two", version="2.0.0")
    assert host.get("/app/demo/extra").json()["says"] == "extra"
    host.wait_view("demo", "active", version="2.0.0")
    assert {"/app/demo/hello", "/app/demo/extra"} <= host.openapi_paths()

    dropped.unlink()
    host.wait_status("/app/demo/hello", 404)
    assert host.get("/app/demo/extra").status_code == 404
    eventually(lambda: _expect(host.view("demo"), None))
    assert "demo" not in [v["id"] for v in host.get("/api/admin/plugins").json()]
    assert not {p for p in host.openapi_paths() if p.startswith("/app/demo")}


# --- 2. a broken new version keeps the old one serving -------------------------------------------------------

ON_LOAD_RAISES = route("two") + "\n\ndef on_load(ctx):\n    raise RuntimeError('no database today')\n"
SYNTAX_ERROR = "x = 1\ny = 2\ndef broken(:\n    pass\n"


@pytest.mark.parametrize(
    ("run_py", "reason"),
    [
        pytest.param(SYNTAX_ERROR, "SyntaxError in run.py, line 3", id="syntax-error"),
        pytest.param(
            ON_LOAD_RAISES,
            f"on_load raised RuntimeError: no database today (run.py, line {line_of(ON_LOAD_RAISES, 'raise')})",
            id="on_load-raises",
        ),
        pytest.param(
            route("two") + "\nrouter = 'not a router'\n",
            "run.py: `router` must be a Router or a list of route handlers, not str",
            id="router-not-a-router",
        ),
        pytest.param(
            route("two") + "\n\ndef on_load(ctx):\n    raise SystemExit(3)\n",
            "on_load raised SystemExit",
            id="on_load-exits",
        ),
        pytest.param(
            route("two") + "\n\nimport sys\nsys.exit(4)\n",
            "importing the plugin raised SystemExit: 4",
            id="import-exits",
        ),
        pytest.param(
            route("two") + "\n\nasync def on_load(ctx):\n    import asyncio\n    await asyncio.sleep(3600)\n",
            "on_load did not finish within 1 s",
            id="on_load-hangs",
        ),
    ],
)
def test_a_broken_new_version_leaves_the_old_one_serving(
    host: Host, run_py: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "HOOK_TIMEOUT", 1.0)
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("one")))
    host.wait_answer("/app/demo/hello", says="one")

    host.drop(make_zip(host.staging, "demo", "2.0.0", run_py))
    view = eventually(lambda: _failed_upgrade(host))
    assert view["error"].startswith(f"2.0.0 failed: {reason}"), view["error"]
    assert view["error"].endswith("; serving 1.0.0"), view["error"]
    assert (view["state"], view["version"]) == ("active", "1.0.0")
    states = {v["version"]: (v["state"], v["error"]) for v in view["versions"]}
    assert states["1.0.0"] == ("active", None)
    assert states["2.0.0"][0] == "failed" and states["2.0.0"][1].startswith(reason)
    assert host.get("/app/demo/hello").json() == {"id": "demo", "version": "1.0.0", "says": "one", "config": {}}
    # The failed upgrade is counted and said, not hidden behind the old version's "active".
    said = ("1.0.0", ["2.0.0"], "serving 1.0.0, 2.0.0 failed")
    assert (view["serving"], view["failed_versions"], view["summary"]) == said
    listed = host.get("/api/admin/plugins").json()
    assert [(v["id"], v["summary"]) for v in listed] == [("demo", "serving 1.0.0, 2.0.0 failed")]
    counts = host.client.get("/health").json()["plugins"]
    assert (counts["active"], counts["failed"], counts["failed_versions"]) == (1, 0, 1), counts


def _failed_upgrade(host: Host) -> dict[str, Any]:
    view = host.view("demo")
    assert view is not None and (view["error"] or "").startswith("2.0.0 failed: "), view
    return view


# --- 3. every bundle rule, through the drop-in path -------------------------------------------------------------


def _zip_slip(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"../evil.py": "x = 1"})


def _absolute(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"/tmp/evil.py": "x = 1"})


def _symlink(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"link": "/etc/passwd"}, symlinks=["link"])


def _ratio_bomb(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"zeros.bin": b"\0" * (4 * 1024 * 1024)})


def _too_large(staging: Path) -> Path:
    path = make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"big.bin": b"small"})
    return claim_size(path, "big.bin", MAX_UNCOMPRESSED + 1)


def _too_many_entries(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), extra_files={f"f/{i}": "" for i in range(MAX_ENTRIES)})


def _bad_utf8_name(staging: Path) -> Path:
    path = make_zip(staging, "bad", "1.0.0", route("x"), extra_files={"ok.txt": "x"})
    path.write_bytes(path.read_bytes().replace(b"ok.txt", b"\xff\xfe.txt"))  # in the local and central headers
    return path


def _no_manifest(staging: Path) -> Path:
    path = staging / "bad-1.0.0.zip"
    staging.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("run.py", route("x"))
    return path


def _manifest(**manifest: Any) -> Callable[[Path], Path]:
    def build(staging: Path) -> Path:
        return make_zip(staging, "bad", "1.0.0", route("x"), manifest={"id": "bad", "version": "1.0.0", **manifest})

    return build


def _bad_id(staging: Path) -> Path:
    return make_zip(staging, "bad", "1.0.0", route("x"), manifest={"id": "Bad!", "version": "1.0.0"})


@pytest.mark.parametrize(
    ("build", "says"),
    [
        pytest.param(_zip_slip, ["unsafe-path", "'..'", "'../evil.py'"], id="zip-slip"),
        pytest.param(_absolute, ["unsafe-path", "absolute", "'/tmp/evil.py'"], id="absolute-path"),
        pytest.param(_symlink, ["symlink", "'link'"], id="symlink"),
        pytest.param(_ratio_bomb, ["compression-ratio"], id="ratio-bomb"),
        pytest.param(_too_large, ["too-large", f"at most {MAX_UNCOMPRESSED:,}"], id="too-large"),
        pytest.param(_too_many_entries, ["too-many-entries", f"{MAX_ENTRIES + 2} entries"], id="too-many-entries"),
        pytest.param(_bad_utf8_name, ["entry-name", "UTF-8"], id="bad-utf8-name"),
        pytest.param(_no_manifest, ["manifest-missing", "plugin.json"], id="missing-manifest"),
        pytest.param(_manifest(version="one"), ["manifest-invalid", "PEP 440"], id="invalid-manifest"),
        pytest.param(_bad_id, ["manifest-invalid", "id"], id="bad-id"),
        pytest.param(_manifest(entry="main"), ["entry-missing", "'main'"], id="missing-entry-module"),
        pytest.param(_manifest(api_prefix="/api/x"), ["api-prefix", "overlaps the core's /api"], id="core-prefix"),
        pytest.param(_manifest(requires=">=99"), ["requires", "needs xcore >=99"], id="unmet-requires"),
    ],
)
def test_a_dropped_bundle_that_breaks_a_rule_fails_naming_the_rule(
    host: Host, build: Callable[[Path], Path], says: list[str]
) -> None:
    host.drop(build(host.staging))
    view = host.wait_view("bad", "failed")
    assert view["error"].startswith("bundle bad-1.0.0.zip: "), view["error"]
    for fragment in says:
        assert fragment in view["error"], view["error"]
    assert [(v["file"], v["state"]) for v in view["versions"]] == [("bad-1.0.0.zip", "failed")]
    assert host.get("/app/bad/hello").status_code == 404
    listed = {v["id"]: v["state"] for v in host.get("/api/admin/plugins").json()}
    assert listed == {"bad": "failed"}


@pytest.mark.parametrize(
    ("serving", "newcomer"),
    [
        pytest.param("alpha", "zeta", id="newcomer-sorts-after"),
        pytest.param("zeta", "alpha", id="newcomer-sorts-first"),
    ],
)
def test_a_prefix_taken_by_another_plugin_fails_the_newcomer(host: Host, serving: str, newcomer: str) -> None:
    host.drop(make_zip(host.staging, serving, "1.0.0", route(serving), api_prefix="/app/shared"))
    host.wait_answer("/app/shared/hello", id=serving)

    host.drop(make_zip(host.staging, newcomer, "1.0.0", route(newcomer), api_prefix="/app/shared"))
    view = host.wait_view(newcomer, "failed")
    assert "api_prefix /app/shared overlaps /app/shared of plugin " + serving in view["error"], view["error"]
    assert host.view(serving)["state"] == "active"  # type: ignore[index]
    assert host.get("/app/shared/hello").json()["id"] == serving


def test_a_missing_dependency_fails_naming_it(host: Host) -> None:
    host.drop(make_zip(host.staging, "needy", "1.0.0", route("x"), dependencies={"absent": ">=1"}))
    view = host.wait_view("needy", "failed")
    assert view["error"] == "1.0.0 failed: it needs plugin absent, which is not installed"
    assert host.get("/app/needy/hello").status_code == 404


def test_a_dependency_cycle_fails_both_plugins(host: Host) -> None:
    first = make_zip(host.staging, "ping", "1.0.0", route("ping"), dependencies={"pong": ">=1"})
    second = make_zip(host.staging, "pong", "1.0.0", route("pong"), dependencies={"ping": ">=1"})
    host.drop(first)
    host.drop(second)
    for pid in ("ping", "pong"):
        view = host.wait_view(pid, "failed")
        assert "dependency cycle" in view["error"] and "ping" in view["error"] and "pong" in view["error"], view
        assert host.get(f"/app/{pid}/hello").status_code == 404
    assert host.get("/health").status_code == 200


def test_a_dependency_of_the_wrong_version_fails_naming_both_versions(host: Host) -> None:
    host.drop(make_zip(host.staging, "base", "1.0.0", route("base")))
    host.wait_answer("/app/base/hello", says="base")
    host.drop(make_zip(host.staging, "addon", "1.0.0", route("addon"), dependencies={"base": ">=2"}))
    view = host.wait_view("addon", "failed")
    assert view["error"] == "1.0.0 failed: it needs plugin base >=2, and base 1.0.0 is the one loaded"

    host.drop(make_zip(host.staging, "base", "2.0.0", route("base")))  # the dependency catches up: addon loads
    host.wait_answer("/app/addon/hello", says="addon")
    assert host.view("base")["version"] == "2.0.0"  # type: ignore[index]


def test_a_dependency_loads_before_the_plugin_that_needs_it(runtime: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    create_account(runtime, "root", ["superadmin"])
    # The dependent sorts first by name, so only the dependency order puts the dependency first.
    preinstall(
        runtime,
        make_zip(tmp_path, "aaa", "1.0.0", route("aaa") + hooks(log), dependencies={"zzz": ">=1"}),
        make_zip(tmp_path, "zzz", "1.0.0", route("zzz") + hooks(log)),
    )
    with open_host(runtime, tmp_path) as running:
        running.wait_answer("/app/aaa/hello", says="aaa")
        assert events(log) == ["load zzz 1.0.0", "load aaa 1.0.0"]
    assert events(log)[2:] == ["unload aaa 1.0.0", "unload zzz 1.0.0"], "unloaded in reverse order"


# --- 4. isolation ----------------------------------------------------------------------------------------------


def test_a_broken_plugin_affects_neither_another_plugin_nor_the_core(host: Host) -> None:
    host.drop(make_zip(host.staging, "good", "1.0.0", route("fine")))
    host.wait_answer("/app/good/hello", says="fine")
    generation = host.manager.reloads

    host.drop(make_zip(host.staging, "syntax", "1.0.0", SYNTAX_ERROR))
    host.drop(make_zip(host.staging, "crashy", "1.0.0", ON_LOAD_RAISES))
    host.drop(make_zip(host.staging, "unsafe", "1.0.0", route("x"), extra_files={"../evil.py": "x = 1"}))
    for pid in ("syntax", "crashy", "unsafe"):
        host.wait_view(pid, "failed")

    assert host.get("/health").status_code == 200
    assert host.get("/api/version").status_code == 200
    assert host.get("/app/good/hello").json()["says"] == "fine"
    assert host.view("good")["state"] == "active"  # type: ignore[index]
    assert host.view("good")["error"] is None  # type: ignore[index]
    assert host.manager.reloads == generation, "nothing changed for the serving plugins: no new app"
    assert not (host.folder.parent / "evil.py").exists() and not (host.folder / "evil.py").exists()


# --- 5. several versions of one id -----------------------------------------------------------------------------


def test_of_several_zips_of_one_id_the_highest_serves_and_the_others_are_superseded(host: Host) -> None:
    for version in ("1.0.0", "1.10.0", "1.9.0"):  # 1.10 > 1.9: versions compare as versions, not as text
        host.drop(make_zip(host.staging, "demo", version, route(version)))
    host.wait_answer("/app/demo/hello", says="1.10.0")
    view = host.wait_view("demo", "active", version="1.10.0", error=None)
    assert [(v["version"], v["state"]) for v in view["versions"]] == [
        ("1.10.0", "active"),
        ("1.9.0", "superseded"),
        ("1.0.0", "superseded"),
    ]


def test_when_the_highest_version_fails_the_next_one_serves(runtime: Runtime, tmp_path: Path) -> None:
    create_account(runtime, "root", ["superadmin"])
    preinstall(
        runtime,
        make_zip(tmp_path, "demo", "1.0.0", route("1.0.0")),
        make_zip(tmp_path, "demo", "2.0.0", route("2.0.0")),
        make_zip(tmp_path, "demo", "3.0.0", ON_LOAD_RAISES),
    )
    with open_host(runtime, tmp_path) as running:
        running.wait_answer("/app/demo/hello", says="2.0.0")
        view = running.wait_view("demo", "active", version="2.0.0")
        assert view["error"].startswith("3.0.0 failed: on_load raised RuntimeError: no database today")
        assert view["error"].endswith("; serving 2.0.0")
        assert [(v["version"], v["state"]) for v in view["versions"]] == [
            ("3.0.0", "failed"),
            ("2.0.0", "active"),
            ("1.0.0", "superseded"),
        ]

        (running.folder / "demo-3.0.0.zip").unlink()  # the broken one is taken away: no error any more
        running.wait_view("demo", "active", version="2.0.0", error=None)


# --- 6. pending versus failed ----------------------------------------------------------------------------------


def test_a_fresh_truncated_zip_is_pending_until_old_enough_then_failed_then_active_when_complete(
    tmp_path: Path,
) -> None:
    complete = make_zip(tmp_path / "staging", "demo", "1.0.0", route("done"))
    data = complete.read_bytes()
    with (
        configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__INTERVAL="60") as rt,
        open_host(rt, tmp_path / "staging") as running,
    ):
        target = running.folder / complete.name
        target.write_bytes(data[: len(data) // 2])  # a copy in progress: no central directory yet
        seen = {running.wait_view("demo", "pending")["error"]}
        deadline = time.monotonic() + 1.5  # the manager rechecks pending files every 0.1 s: never failed
        while time.monotonic() < deadline:
            view = running.view("demo")
            assert view is not None and view["state"] == "pending", view
            seen.add(view["error"])
            time.sleep(0.05)
        assert "the file does not read as a zip yet (still being copied?)" in seen, seen
        assert running.get("/app/demo/hello").status_code == 404

        old = time.time() - 120  # older than the interval, and still not a zip: failed
        os.utime(target, (old, old))
        view = running.wait_view("demo", "failed")
        assert "not-a-zip" in view["error"] and "demo-1.0.0.zip" in view["error"], view

        target.write_bytes(data)  # the copy completes
        running.wait_answer("/app/demo/hello", says="done")
        running.wait_view("demo", "active", error=None)


# --- 7. the admin API ------------------------------------------------------------------------------------------


def upload(host: Host, path: Path, headers: dict[str, str] | None = None) -> Any:
    return host.client.post(
        "/api/admin/plugins",
        files={"data": (path.name, path.read_bytes(), "application/zip")},
        headers=host.root if headers is None else headers,
    )


def test_upload_installs_and_loads_the_bundle(host: Host) -> None:
    response = upload(host, make_zip(host.staging, "demo", "1.0.0", route("uploaded"), zip_name="whatever.zip"))
    assert response.status_code == 201, response.text
    view = response.json()
    assert (view["id"], view["state"], view["version"], view["file"]) == ("demo", "active", "1.0.0", "demo-1.0.0.zip")
    assert view["routes"] == ["GET /app/demo/hello"]
    assert host.get("/app/demo/hello").json()["says"] == "uploaded", "active when the answer comes"
    assert sorted(p.name for p in host.folder.iterdir() if not p.name.startswith(".")) == ["demo-1.0.0.zip"]
    actions = host.audit_actions()
    assert actions[0][:2] == ("plugin.upload", "demo")
    assert actions[0][2]["version"] == "1.0.0" and actions[0][2]["file"] == "whatever.zip"
    assert actions[0][2]["sha256"] == view["sha256"]


def test_one_version_is_one_file_named_by_its_normalised_version(host: Host) -> None:
    """1.0, v1.0.0 and 1.0.0 are one version (PEP 440): each upload replaces the file the last one wrote."""
    zips = lambda: sorted(p.name for p in host.folder.glob("*.zip"))  # noqa: E731
    first = upload(host, make_zip(host.staging, "demo", "1.0", route("first"), zip_name="a.zip"))
    assert first.status_code == 201, first.text
    assert (first.json()["version"], zips()) == ("1.0", ["demo-1.0.zip"])
    second = upload(host, make_zip(host.staging, "demo", "v1.0.0", route("second"), zip_name="b.zip"))
    assert second.status_code == 201, second.text
    assert (second.json()["version"], zips()) == ("1.0.0", ["demo-1.0.0.zip"])
    assert host.wait_answer("/app/demo/hello", says="second")["version"] == "1.0.0"
    third = upload(host, make_zip(host.staging, "demo", " 1.0.0\n", route("third"), zip_name="c.zip"))
    assert third.status_code == 422, third.text
    assert "version: ' 1.0.0\\n' holds whitespace" in third.json()["detail"]
    assert zips() == ["demo-1.0.0.zip"]
    assert host.get("/app/demo/hello").json()["says"] == "second"
    assert [v["version"] for v in host.wait_view("demo", "active")["versions"]] == ["1.0.0"]


def test_of_two_dropped_zips_of_an_equal_version_the_newer_serves_and_the_other_is_failed(host: Host) -> None:
    older = host.drop(make_zip(host.staging, "demo", "1.0", route("older"), zip_name="demo-old.zip"))
    os.utime(older, (time.time() - 60, time.time() - 60))
    host.drop(make_zip(host.staging, "demo", "v1.0.0", route("newer"), zip_name="demo-new.zip"))
    host.wait_answer("/app/demo/hello", says="newer")
    view = host.wait_view("demo", "active", version="1.0.0", failed_versions=["demo-old.zip"])
    states = {v["file"]: (v["state"], v["error"]) for v in view["versions"]}
    assert states["demo-new.zip"] == ("active", None)
    assert states["demo-old.zip"][0] == "failed"
    assert "version 1.0 is also in demo-new.zip, which is newer" in states["demo-old.zip"][1]


def test_a_plugin_id_equal_to_a_core_namespace_is_refused_on_upload_and_drop_in(host: Host) -> None:
    response = upload(host, make_zip(host.staging, "users", "1.0.0", route("x")))
    assert response.status_code == 422, response.text
    assert "id: 'users' is reserved (xcore's own permissions are named users.*)" in response.json()["detail"]
    assert not list(host.folder.glob("*.zip"))
    host.drop(make_zip(host.staging, "tasks", "1.0.0", route("x")))
    view = host.wait_view("tasks", "failed")
    assert "id: 'tasks' is reserved" in view["error"], view
    assert host.get("/app/tasks/hello").status_code == 404


def test_an_uploaded_bundle_that_breaks_a_rule_is_refused_and_nothing_is_written(host: Host) -> None:
    bad = make_zip(host.staging, "demo", "1.0.0", route("x"), extra_files={"static/../../evil.py": "x = 1"})
    response = upload(host, bad)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["rule"], problem["entry"]) == ("unsafe-path", "static/../../evil.py")
    assert "demo-1.0.0.zip" in problem["detail"] and "unsafe-path" in problem["detail"]
    assert [p.name for p in host.folder.iterdir() if p.name != ".xcore-state"] == []
    assert not [p for p in (host.runtime.data.root / "cache").rglob("*") if p.name.startswith(".upload-")]
    assert host.view("demo") is None
    assert not [a for a in host.audit_actions() if a[0] == "plugin.upload"]


def test_disable_unmounts_keeps_data_and_survives_a_restart_and_enable_mounts_again(
    runtime: Runtime, tmp_path: Path
) -> None:
    create_account(runtime, "root", ["superadmin"])
    code = route("on") + "\n\ndef on_load(ctx):\n    (ctx.data_dir / 'kept.txt').write_text('mine')\n"
    preinstall(runtime, make_zip(tmp_path, "demo", "1.0.0", code))
    kept = plugin_data_dir(runtime, "demo") / "kept.txt"
    with open_host(runtime, tmp_path) as running:
        running.wait_answer("/app/demo/hello", says="on")
        response = running.client.post("/api/admin/plugins/demo/disable", headers=running.root)
        assert response.status_code == 200, response.text
        assert (response.json()["state"], response.json()["enabled"]) == ("disabled", False)
        assert running.get("/app/demo/hello").status_code == 404
        assert kept.read_text() == "mine"
        assert "/app/demo/hello" not in running.openapi_paths()

    with open_host(runtime, tmp_path) as restarted:  # a new worker on the same data: still disabled
        view = restarted.view("demo")
        assert view is not None and (view["state"], view["enabled"]) == ("disabled", False)
        assert restarted.get("/app/demo/hello").status_code == 404
        response = restarted.client.post("/api/admin/plugins/demo/enable", headers=restarted.root)
        assert response.status_code == 200, response.text
        assert (response.json()["state"], response.json()["enabled"]) == ("active", True)
        assert restarted.get("/app/demo/hello").json()["says"] == "on"
        assert kept.read_text() == "mine"
        assert [a[:2] for a in restarted.audit_actions()] == [("plugin.enable", "demo"), ("plugin.disable", "demo")]


@pytest.mark.parametrize("purge", [False, True], ids=["keep-data", "purge"])
def test_delete_unmounts_and_purge_decides_whether_the_data_stays(host: Host, purge: bool) -> None:
    code = route("x") + "\n\ndef on_load(ctx):\n    (ctx.data_dir / 'notes.txt').write_text('data')\n"
    host.drop(make_zip(host.staging, "demo", "1.0.0", code))
    host.wait_answer("/app/demo/hello", says="x")
    data = plugin_data_dir(host.runtime, "demo")
    assert (data / "notes.txt").exists()

    response = host.client.delete(f"/api/admin/plugins/demo?purge={str(purge).lower()}", headers=host.root)
    assert response.status_code == 200, response.text
    removed = ["demo-1.0.0.zip", "demo"] if purge else ["demo-1.0.0.zip"]
    assert response.json() == {"id": "demo", "removed": removed, "purged": purge}
    assert host.get("/app/demo/hello").status_code == 404
    assert host.view("demo") is None
    assert not (host.folder / "demo-1.0.0.zip").exists()
    assert data.exists() is not purge
    action, target, detail = host.audit_actions()[0]
    assert (action, target, detail["purge"]) == ("plugin.remove", "demo", purge)
    assert host.client.delete("/api/admin/plugins/demo", headers=host.root).status_code == (404 if purge else 200)


def test_a_purge_during_a_reconcile_is_not_undone_by_it(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconcile records the states it saw last (`_persist_states`); a purge that lands while one is under way
    (the watcher's, after a drop) must wait for it, or the record brings the purged plugin's row back."""
    manager = host.manager
    slow = manager._persist_states

    def persist_late() -> None:
        time.sleep(0.4)  # the plugin is served already; its state is recorded a moment later
        slow()

    monkeypatch.setattr(manager, "_persist_states", persist_late)
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("x")))
    host.wait_answer("/app/demo/hello", says="x")
    response = host.client.delete("/api/admin/plugins/demo?purge=true", headers=host.root)
    assert response.status_code == 200, response.text
    assert host.client.delete("/api/admin/plugins/demo", headers=host.root).status_code == 404, "nothing left"


def test_config_overrides_are_checked_against_the_defaults_and_reach_the_plugin(host: Host) -> None:
    config = {"config.yaml": "greeting: hello\nlimit: 3\nratio: 0.5\n"}
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("x"), extra_files=config))
    host.wait_answer("/app/demo/hello", config={"greeting": "hello", "limit": 3, "ratio": 0.5})
    defaults = {"greeting": "hello", "limit": 3, "ratio": 0.5}
    response = host.get("/api/admin/plugins/demo/config")
    assert response.json() == {"defaults": defaults, "overrides": {}, "effective": defaults}

    for overrides, field in [({"nope": 1}, "overrides.nope"), ({"limit": "many"}, "overrides.limit")]:
        refused = host.client.put("/api/admin/plugins/demo/config", json={"overrides": overrides}, headers=host.root)
        assert refused.status_code == 400, refused.text
        problem = refused.json()
        assert [e["field"] for e in problem["errors"]] == [field], problem
        assert field in problem["detail"], problem
    assert host.get("/api/admin/plugins/demo/config").json()["overrides"] == {}

    changed = {"greeting": "hi", "ratio": 2}  # an integer where the default is a float is fine
    response = host.client.put("/api/admin/plugins/demo/config", json={"overrides": changed}, headers=host.root)
    assert response.status_code == 200, response.text
    effective = {"greeting": "hi", "limit": 3, "ratio": 2}
    assert response.json() == {"defaults": defaults, "overrides": changed, "effective": effective}
    assert host.get("/app/demo/hello").json()["config"] == effective, "the plugin sees the override at once"
    assert host.view("demo")["config"] == effective  # type: ignore[index]
    action, target, detail = host.audit_actions()[0]
    assert (action, target, detail["keys"]) == ("plugin.config", "demo", ["greeting", "ratio"])


def test_reload_runs_on_unload_then_on_load_and_a_rescan_is_audited(host: Host) -> None:
    log = host.staging / "hooks.log"
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("x") + hooks(log)))
    host.wait_answer("/app/demo/hello", says="x")
    assert events(log) == ["load demo 1.0.0"]
    package = host.manager.loaded["demo"].package

    response = host.client.post("/api/admin/plugins/demo/reload", headers=host.root)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "active"
    eventually(lambda: _expect(events(log), ["load demo 1.0.0", "load demo 1.0.0", "unload demo 1.0.0"]))
    assert host.manager.loaded["demo"].package != package, "imported afresh"
    assert host.get("/app/demo/hello").status_code == 200

    response = host.client.post("/api/admin/plugins/reload", headers=host.root)
    assert response.status_code == 200, response.text
    assert [v["id"] for v in response.json()] == ["demo"]
    assert [a[:2] for a in host.audit_actions()] == [("plugin.rescan", None), ("plugin.reload", "demo")]
    assert host.client.post("/api/admin/plugins/nosuch/reload", headers=host.root).status_code == 404


PLUGIN_ADMIN_ROUTES = [
    ("GET", "/api/admin/plugins"),
    ("GET", "/api/admin/plugins/demo"),
    ("POST", "/api/admin/plugins"),
    ("POST", "/api/admin/plugins/reload"),
    ("POST", "/api/admin/plugins/demo/reload"),
    ("POST", "/api/admin/plugins/demo/enable"),
    ("POST", "/api/admin/plugins/demo/disable"),
    ("DELETE", "/api/admin/plugins/demo?purge=true"),
    ("GET", "/api/admin/plugins/demo/config"),
    ("PUT", "/api/admin/plugins/demo/config"),
]


@pytest.fixture(scope="module")
def refusing_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, dict[str, dict[str, str]]]]:
    """refusing_host is one host for requests that must be refused (they change nothing): demo is active."""
    folder = tmp_path_factory.mktemp("plugin-admin-access")
    with configured_runtime(folder / "data") as rt:
        create_account(rt, "bob", ["user"])
        create_account(rt, "ada", ["admin"])
        preinstall(rt, make_zip(folder, "demo", "1.0.0", route("x"), extra_files={"config.yaml": "a: 1\n"}))
        with open_host(rt, folder) as running:
            yield running, {"anonymous": {}, "bob": login(running.client, "bob"), "ada": login(running.client, "ada")}


def admin_request(running: Host, headers: dict[str, str], method: str, url: str) -> Any:
    """admin_request calls one of PLUGIN_ADMIN_ROUTES as `headers` say, with a body it would accept."""
    extra: dict[str, Any] = {}
    if method == "PUT":
        extra["json"] = {"overrides": {"a": 2}}
    if url == "/api/admin/plugins" and method == "POST":
        extra["files"] = {"data": ("x.zip", make_zip(running.staging, "other", "1.0.0", "").read_bytes())}
    return running.client.request(method, url, headers=headers, **extra)


@pytest.mark.parametrize(("who", "status"), [("bob", 403), ("anonymous", 401)])
@pytest.mark.parametrize(("method", "url"), PLUGIN_ADMIN_ROUTES)
def test_the_plugin_admin_api_refuses_plain_users_and_anonymous_requests(
    refusing_host: tuple[Host, dict[str, dict[str, str]]], method: str, url: str, who: str, status: int
) -> None:
    running, headers = refusing_host
    response = admin_request(running, headers[who], method, url)
    assert response.status_code == status, response.text
    assert running.view("demo")["state"] == "active"  # type: ignore[index]
    assert running.get("/api/admin/plugins/demo/config").json()["overrides"] == {}
    assert sorted(p.name for p in running.folder.glob("*.zip")) == ["demo-1.0.0.zip"]
    assert running.audit_actions() == []


@pytest.mark.parametrize(("method", "url"), PLUGIN_ADMIN_ROUTES)
def test_an_admin_sees_plugins_but_only_a_superadmin_changes_what_runs(
    refusing_host: tuple[Host, dict[str, dict[str, str]]], method: str, url: str
) -> None:
    """A plugin in the server's process runs with its rights, so installing or changing one would make an admin a
    superadmin: it needs plugins.manage, which admins do not hold (they hold plugins.manage_sandboxed, enough for
    a sandboxed plugin: tests/test_sandbox.py)."""
    running, headers = refusing_host
    response = admin_request(running, headers["ada"], method, url)
    if method == "GET":
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403, response.text
        assert "the permission plugins.manage, which" in response.json()["detail"]
    assert running.view("demo")["state"] == "active"  # type: ignore[index]
    assert running.get("/api/admin/plugins/demo/config").json()["overrides"] == {}
    assert sorted(p.name for p in running.folder.glob("*.zip")) == ["demo-1.0.0.zip"]
    assert running.audit_actions() == []


# --- 8. permissions and access rules ---------------------------------------------------------------------------


def test_manifest_permissions_are_registered_and_requires_guards_the_plugin_route(host: Host) -> None:
    create_account(host.runtime, "bob", ["user"])
    code = route("written", "/write", guard="guarded.write")
    host.drop(make_zip(host.staging, "guarded", "1.0.0", code, permissions=["guarded.write", "guarded.read"]))
    host.wait_answer("/app/guarded/write", says="written")  # root is a superadmin

    listed = {p["name"]: p for p in host.get("/api/admin/permissions").json()}
    assert listed["guarded.write"]["plugin_id"] == "guarded"
    assert listed["guarded.read"]["plugin_id"] == "guarded"
    assert host.view("guarded")["permissions"] == ["guarded.write", "guarded.read"]  # type: ignore[index]

    response = host.client.post(
        "/api/admin/roles", json={"name": "writers", "permissions": ["guarded.write"]}, headers=host.root
    )
    assert response.status_code == 201, response.text
    create_account(host.runtime, "cyd", ["user", "writers"])
    bob, cyd = login(host.client, "bob"), login(host.client, "cyd")

    refused = host.get("/app/guarded/write", headers=bob)
    assert refused.status_code == 403 and "guarded.write" in refused.text
    assert host.get("/app/guarded/write", headers=cyd).status_code == 200
    assert host.get("/app/guarded/write", headers={}).status_code == 401


def test_access_rules_apply_to_plugin_routes(tmp_path: Path) -> None:
    rules = json.dumps({"/app/pub/*": {"public": True}})
    with configured_runtime(tmp_path / "data", XCORE_XCORE__MIDDLEWARE__ACCESS_RULES=rules) as rt:
        preinstall(
            rt, make_zip(tmp_path, "pub", "1.0.0", route("open")), make_zip(tmp_path, "priv", "1.0.0", route("shut"))
        )
        with open_host(rt, tmp_path) as running:
            running.wait_answer("/app/pub/hello", says="open")
            running.wait_answer("/app/priv/hello", says="shut")
            assert running.get("/app/pub/hello", headers={}).json()["says"] == "open"
            assert running.get("/app/priv/hello", headers={}).status_code == 401, "deny by default"


def test_a_manifest_without_entry_uses_the_hosts_entry_point_setting(tmp_path: Path) -> None:
    bundle = make_zip(tmp_path, "mainly", "1.0.0", "", extra_files={"main.py": route("from main.py")})
    with configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__ENTRY_POINT="main") as rt:
        preinstall(rt, bundle)
        with open_host(rt, tmp_path) as running:
            running.wait_answer("/app/mainly/hello", says="from main.py")
    with configured_runtime(tmp_path / "other") as rt:  # the default entry point, run, holds no route
        preinstall(rt, make_zip(tmp_path, "mainly", "1.0.0", "", extra_files={"main.py": route("from main.py")}))
        with open_host(rt, tmp_path) as running:
            assert running.get("/app/mainly/hello").status_code == 404


# --- 9. dev folders --------------------------------------------------------------------------------------------


def test_an_edit_in_a_dev_folder_is_live_without_a_restart(runtime: Runtime, tmp_path: Path) -> None:
    create_account(runtime, "root", ["superadmin"])
    dev = tmp_path / "dev"
    folder = dev / "devplug"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps({"id": "devplug", "version": "0.1.0"}))
    (folder / "run.py").write_text(route("first"))
    with open_host(runtime, tmp_path, dev_dirs=[dev]) as running:
        running.wait_answer("/app/devplug/hello", says="first")
        view = running.wait_view("devplug", "active")
        assert (view["source"], view["sha256"]) == ("dev", None)

        (folder / "run.py").write_text(route("second"))
        running.wait_answer("/app/devplug/hello", says="second")

        (folder / "run.py").write_text(route("third") + "\nbroken(\n")  # a typo while editing: the last good one serves
        view = eventually(lambda: _failed_dev(running))
        assert "SyntaxError in run.py" in view["error"] and view["error"].endswith("; serving 0.1.0")
        assert running.get("/app/devplug/hello").json()["says"] == "second"

        (folder / "run.py").write_text(route("fixed"))
        running.wait_answer("/app/devplug/hello", says="fixed")
        refused = running.client.delete("/api/admin/plugins/devplug", headers=running.root)
        assert refused.status_code == 409 and (folder / "run.py").exists()


def _failed_dev(running: Host) -> dict[str, Any]:
    view = running.view("devplug")
    assert view is not None and "failed" in (view["error"] or ""), view
    return view


# --- 10. retiring the old version -------------------------------------------------------------------------------


def slow_route(gate: Path, started: Path) -> str:
    return f"""
import asyncio
import pathlib

from xcore.sdk import get


@get("/slow")
async def slow() -> dict[str, str]:
    pathlib.Path({str(started)!r}).touch()
    while not pathlib.Path({str(gate)!r}).exists():
        await asyncio.sleep(0.02)
    return {{"served_by": "1.0.0"}}
"""


def test_the_old_version_unloads_after_the_swap_and_its_requests_and_leaves_sys_modules(host: Host) -> None:
    log, gate, started = host.staging / "hooks.log", host.staging / "gate", host.staging / "started"
    v1 = route("one") + slow_route(gate, started) + "\nrouter = [answer, slow]\n" + hooks(log)
    host.drop(make_zip(host.staging, "demo", "1.0.0", v1))
    host.wait_answer("/app/demo/hello", says="one")
    old = host.manager.loaded["demo"].package
    assert old in sys.modules

    in_flight: list[Any] = []
    request = threading.Thread(target=lambda: in_flight.append(host.get("/app/demo/slow")))
    request.start()
    try:
        eventually(lambda: _expect(started.exists(), True))
        host.drop(make_zip(host.staging, "demo", "2.0.0", route("two") + hooks(log)))
        host.wait_answer("/app/demo/hello", says="two")  # swapped: new requests reach 2.0.0
        assert events(log) == ["load demo 1.0.0", "load demo 2.0.0"], "1.0.0 still serves a request"
        assert old in sys.modules
    finally:
        gate.touch()
        request.join(WAIT)
    assert in_flight and in_flight[0].status_code == 200 and in_flight[0].json() == {"served_by": "1.0.0"}

    eventually(lambda: _expect(events(log), ["load demo 1.0.0", "load demo 2.0.0", "unload demo 1.0.0"]))
    new = host.manager.loaded["demo"].package
    eventually(lambda: _expect([m for m in sys.modules if m == old or m.startswith(old + ".")], []))
    assert f"{new}.run" in sys.modules


# --- 10. bundles that break while being read, extracted or imported ---------------------------------------------


def _versions(host: Host, plugin_id: str) -> dict[str, dict[str, Any]]:
    view = host.view(plugin_id)
    assert view is not None, f"{plugin_id} is not listed"
    return {v["file"]: v for v in view["versions"]}


def bad_crc(folder: Path, plugin_id: str, zip_name: str | None = None) -> Path:
    """bad_crc is `<id>-1.0.0.zip` whose data.txt has one byte flipped: every check before extraction passes."""
    method, entry, how = DAMAGES[0].values[:3]
    manifest = {"id": plugin_id, "version": "1.0.0"}
    return damaged_bundle(folder / (zip_name or f"{plugin_id}-1.0.0.zip"), manifest, route("x"), method, entry, how)


@pytest.mark.parametrize(("method", "entry", "how", "rule", "says"), DAMAGES)
def test_a_damaged_zip_fails_its_version_and_never_the_manager(
    host: Host, method: int, entry: str, how: Callable[..., None], rule: str, says: str
) -> None:
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("one")))
    host.wait_answer("/app/demo/hello", says="one")
    manifest = {"id": "demo", "version": "2.0.0"}
    host.drop(damaged_bundle(host.staging / "demo-2.0.0.zip", manifest, route("two"), method, entry, how))

    def failed() -> dict[str, Any]:
        version = _versions(host, "demo").get("demo-2.0.0.zip")
        assert version is not None and version["state"] == "failed", version
        return version

    error = eventually(failed)["error"]
    assert f"bundle demo-2.0.0.zip: {rule}: " in error and says in error and repr(entry) in error, error
    assert host.get("/app/demo/hello").json()["says"] == "one", "the version that served keeps serving"
    assert _versions(host, "demo")["demo-1.0.0.zip"]["state"] == "active"
    assert host.client.post("/api/admin/plugins/reload", headers=host.root).status_code == 200, "a forced retry"
    host.drop(make_zip(host.staging, "other", "1.0.0", route("other")))
    host.wait_answer("/app/other/hello", says="other")
    assert not list((host.runtime.data.root / "cache" / "plugins").glob(".extract-*")), "no half-extracted folder"


def test_a_zip_that_cannot_be_extracted_is_refused_at_upload_and_the_manager_keeps_working(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = bad_crc(host.staging, "demo", "demo.zip")
    with caplog.at_level("WARNING", logger="xcore.plugins"):
        response = upload(host, damaged)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert (problem["rule"], problem["entry"]) == ("corrupt-entry", "data.txt"), problem
    assert "demo.zip" in problem["detail"] and "Bad CRC-32" in problem["detail"], problem
    assert [p.name for p in host.folder.iterdir() if p.name != ".xcore-state"] == [], "nothing left in plugins/"
    cache = host.runtime.data.root / "cache" / "plugins"
    assert not cache.exists() or list(cache.iterdir()) == [], "nothing left in the cache"
    assert host.get("/api/admin/plugins").json() == []
    refusals = [r for r in caplog.records if "upload refused" in r.getMessage()]
    assert len(refusals) == 1 and "data.txt" in refusals[0].getMessage(), [r.getMessage() for r in refusals]

    # The state the bug left behind: the damaged zip in plugins/ (copied by hand). Nothing else may suffer.
    host.drop(bad_crc(host.staging, "broken"))
    assert "Bad CRC-32" in host.wait_view("broken", "failed")["error"]
    response = upload(host, make_zip(host.staging, "demo", "1.0.0", route("good")))
    assert response.status_code == 201 and response.json()["state"] == "active", response.text
    assert host.get("/app/demo/hello").json()["says"] == "good"
    response = host.client.post("/api/admin/plugins/demo/disable", headers=host.root)
    assert response.status_code == 200 and response.json()["state"] == "disabled", response.text
    assert host.get("/app/demo/hello").status_code == 404, "a disabled plugin stops serving"
    response = host.client.post("/api/admin/plugins/demo/enable", headers=host.root)
    assert response.status_code == 200 and response.json()["state"] == "active", response.text
    assert host.get("/app/demo/hello").json()["says"] == "good"
    assert {v["id"]: v["state"] for v in host.get("/api/admin/plugins").json()} == {
        "broken": "failed",
        "demo": "active",
    }


def test_a_host_starts_with_a_damaged_zip_in_its_folder_and_shows_it_failed(runtime: Runtime, tmp_path: Path) -> None:
    create_account(runtime, "root", ["superadmin"])
    preinstall(
        runtime,
        bad_crc(tmp_path, "broken"),
        make_zip(tmp_path, "good", "1.0.0", route("fine")),
    )
    with open_host(runtime, tmp_path) as running:
        assert running.get("/app/good/hello").json()["says"] == "fine"
        view = running.wait_view("broken", "failed")
        assert "corrupt-entry" in view["error"] and "'data.txt'" in view["error"], view
        assert running.get("/health").status_code == 200


def test_a_failure_anywhere_in_a_load_fails_that_version_only(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a load raises (here: the permission registry's database), the version fails with the reason."""
    manager = host.manager

    def broken(plugin: Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(manager, "_register_permissions", broken)
    host.drop(make_zip(host.staging, "demo", "1.0.0", route("x"), permissions=["demo.read"]))
    view = host.wait_view("demo", "failed")
    assert "RuntimeError('database is locked')" in view["error"], view
    monkeypatch.undo()
    assert host.client.post("/api/admin/plugins/reload", headers=host.root).status_code == 200
    host.wait_answer("/app/demo/hello", says="x")


def test_each_refused_bundle_is_logged_once_with_its_reason(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    old = time.time() - 3600  # long settled: failed at once, not pending
    not_a_zip = host.folder / "junk-1.0.0.zip"
    no_manifest = _no_manifest(host.staging)
    with caplog.at_level("ERROR", logger="xcore.plugins"):
        not_a_zip.write_bytes(b"this is not a zip")
        os.utime(not_a_zip, (old, old))
        host.drop(no_manifest)
        host.wait_view("junk", "failed")
        host.wait_view("bad", "failed")
        for _ in range(3):  # forced rescans re-read every zip: still one line each
            assert host.client.post("/api/admin/plugins/reload", headers=host.root).status_code == 200
        time.sleep(2 * host.manager.interval)  # and the watcher's polls

        def refusals(name: str) -> list[str]:
            return [r.getMessage() for r in caplog.records if name in r.getMessage() and "refused" in r.getMessage()]

        assert len(refusals("junk-1.0.0.zip")) == 1 and "not-a-zip" in refusals("junk-1.0.0.zip")[0]
        assert len(refusals("bad-1.0.0.zip")) == 1 and "manifest-missing" in refusals("bad-1.0.0.zip")[0]

        make_zip(host.staging, "junk", "1.0.0", route("x"), api_prefix="/api/x")  # another reason: logged again
        host.drop(host.staging / "junk-1.0.0.zip")
        eventually(lambda: _expect(len(refusals("junk-1.0.0.zip")), 2))
        assert "api-prefix" in refusals("junk-1.0.0.zip")[1]


def test_a_zip_replaced_between_its_scan_and_its_load_is_scanned_again_not_failed(host: Host) -> None:
    """Same size, same modification time: the scanner's memory says "unchanged", but the load reads other bytes.
    The load refuses to extract what was not checked, and the zip is checked again and loads."""
    with host.runtime.auth.transaction() as session:
        session.add(PluginState(plugin_id="demo", enabled=False))
    signal_state_change(host.runtime)
    first, second = host.staging / "a" / "demo-1.0.0.zip", host.staging / "b" / "demo-1.0.0.zip"
    for path, says in ((first, "aaa"), (second, "bbb")):
        path.parent.mkdir(parents=True)
        with zipfile.ZipFile(path, "w") as archive:  # stored, same dates: the same size
            for name, text in (("plugin.json", '{"id": "demo", "version": "1.0.0"}'), ("run.py", route(says))):
                archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    assert first.stat().st_size == second.stat().st_size
    target = host.drop(first)
    host.wait_view("demo", "disabled")  # scanned, not loaded
    stamp = target.stat().st_mtime_ns
    target.write_bytes(second.read_bytes())
    os.utime(target, ns=(stamp, stamp))
    response = host.client.post("/api/admin/plugins/demo/enable", headers=host.root)
    assert response.status_code == 200, response.text
    host.wait_answer("/app/demo/hello", says="bbb")
    view = host.wait_view("demo", "active", error=None)
    checked = hashlib.sha256(second.read_bytes()).hexdigest()
    assert view["sha256"] == checked
    cache = host.runtime.data.root / "cache" / "plugins"
    assert [p.name for p in cache.iterdir()] == [f"demo-1.0.0-{checked[:16]}"], "only checked bytes are extracted"


def test_an_upload_the_disk_cannot_take_is_a_507_that_names_the_disk_and_writes_nothing(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(bundle_module, "open", full_disk, raising=False)  # the extraction's writes
    response = upload(host, make_zip(host.staging, "demo", "1.0.0", route("x")))
    assert response.status_code == 507, response.text
    assert "No space left on device" in response.json()["detail"] and "demo-1.0.0.zip" in response.json()["detail"]
    assert [p.name for p in host.folder.iterdir() if p.name != ".xcore-state"] == []
    monkeypatch.undo()
    assert upload(host, make_zip(host.staging, "demo", "1.0.0", route("x"))).status_code == 201


def test_a_load_never_trips_over_imports_in_other_threads(tmp_path: Path) -> None:
    """A worker imports in other threads while it loads a plugin (its warm-up, handlers): the loader's walks over
    `sys.path_importer_cache` and `sys.modules` must not fail with "dictionary changed size during iteration",
    as one did in CI. The thread switch interval is made tiny so that the walks are interrupted often."""
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            sys.path_importer_cache[f"/xcore-test-churn/{n % 50}"] = None
            sys.path_importer_cache.pop(f"/xcore-test-churn/{(n + 25) % 50}", None)
            sys.modules[f"xcore_test_churn_{n % 50}"] = sys
            sys.modules.pop(f"xcore_test_churn_{(n + 25) % 50}", None)
            n += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(300):
            loader._fresh_sources(tmp_path)
            loader.unload_modules("xcore_test_churn_0")
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
        for n in range(50):
            sys.path_importer_cache.pop(f"/xcore-test-churn/{n}", None)
            sys.modules.pop(f"xcore_test_churn_{n}", None)
