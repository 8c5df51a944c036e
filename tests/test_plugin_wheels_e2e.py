"""End to end: plugins that bring third-party packages (issue 24) in a real `xcore serve`, offline.

The bundles are made by the real CLI, `xcore plugin pack DIR --wheels --no-index --find-links .venv/test-wheels`
(pip downloads nothing: it takes the real PyPI wheels `python3 tasks.py test` put there), or by hand for what the
packer would never make (a Windows-only bundle, a requirement that clashes with xcore's own package). They are
installed the ways an admin installs them: uploaded through the admin API, `xcore plugin install`, or copied into
the plugins folder; every check goes through HTTP. tests/test_plugin_wheels.py checks the same rules in process.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import test_plugins_e2e
from conftest import run_xcore
from test_plugin_wheels import HUMANIZE_NEW, HUMANIZE_OLD, HUMANIZE_ROUTE, MMH3_ROUTE, MMH3_WINDOWS, zip_with_wheels
from test_plugins_e2e import Host, drop, write_plugin

pytestmark = pytest.mark.e2e
serve = test_plugins_e2e.serve  # the fixture: a real `xcore serve` on a fresh data dir, set up and logged in

WHEELS = Path(__file__).resolve().parent.parent / ".venv" / "test-wheels"
MMH3_HERE = (
    "mmh3-4.1.0-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
)
MMH3_FOO = -156908512  # mmh3.hash("foo")
OFFLINE = ("--wheels", "--no-index", "--find-links", str(WHEELS))


@pytest.fixture(scope="module", autouse=True)
def _wheels_downloaded() -> None:
    """_wheels_downloaded fails the module at once, saying how to fix it, when the test wheels are not there."""
    missing = [n for n in (HUMANIZE_OLD, HUMANIZE_NEW, MMH3_HERE, MMH3_WINDOWS) if not (WHEELS / n).is_file()]
    assert not missing, f"{WHEELS} lacks the test wheels {missing}: run `python3 tasks.py test` once"


def packed(tmp: Path, plugin_id: str, code: str, requirements: list[str], *options: str, **manifest: Any) -> Path:
    """packed is the zip the real `xcore plugin pack <source> <options>` makes of a plugin folder with these
    requirements (with OFFLINE: its wheels from .venv/test-wheels); fails the test when the CLI fails."""
    folder = write_plugin(tmp / "src" / plugin_id, plugin_id, "1.0.0", code, requirements=requirements, **manifest)
    done = run_xcore("plugin", "pack", str(folder), "--out", str(tmp / "zips"), *options)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.splitlines()[0])


def answer(host: Host, path: str) -> dict[str, Any]:
    """answer is the JSON of the first 200 answer of GET `path`, polled until the plugin serves it."""
    return host.until(lambda: (r := host.get(path)).status_code == 200 and r.json(), f"GET {path} answers 200")


def settled(host: Host, plugin_id: str, state: str) -> dict[str, Any]:
    """settled is the admin view of the plugin (GET /api/admin/plugins/<id>) once it is in `state`."""

    def view() -> dict[str, Any] | None:
        response = host.get(f"/api/admin/plugins/{plugin_id}")
        return response.json() if response.status_code == 200 and response.json()["state"] == state else None

    return host.until(view, f"plugin {plugin_id} is {state}")


def bundled(view: dict[str, Any], name: str) -> dict[str, Any]:
    """bundled is the requirement entry of the view for the package `name`."""
    found = [r for r in view["requirements"] if r["name"].lower() == name]
    assert len(found) == 1, view["requirements"]
    return found[0]


def test_pure_and_compiled_wheels_serve_and_an_unfit_wheel_or_a_clash_with_xcore_is_refused(
    serve: Callable[..., Host], tmp_path: Path
) -> None:
    nice = packed(tmp_path, "nice", HUMANIZE_ROUTE, ["humanize>=4,<4.10", "pyyaml"], *OFFLINE)
    hasher = packed(tmp_path, "hasher", MMH3_ROUTE, ["mmh3==4.1.0"], *OFFLINE)
    host = serve()

    # A pure-Python wheel, uploaded through the admin API: served from the plugin's own library folder.
    uploaded = host.request("POST", "/api/admin/plugins", files={"data": (nice.name, nice.read_bytes())})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["state"] == "active", uploaded.json()
    body = answer(host, "/app/nice/hello")
    assert (body["says"], body["version"]) == ("12.3 million", "4.9.0")
    assert Path(body["file"]).is_relative_to(host.data / "cache") and "nice-libs-" in body["file"], body
    view = settled(host, "nice", "active")
    assert bundled(view, "humanize") == {
        "requirement": "humanize>=4,<4.10", "name": "humanize", "version": "4.9.0", "source": "bundle",
        "wheel": HUMANIZE_OLD, "needed_by": None,
    }  # fmt: skip
    assert bundled(view, "pyyaml")["source"] == "xcore" and bundled(view, "pyyaml")["wheel"] is None

    # A C extension for this machine, installed by `xcore plugin install` while the server runs.
    installed = run_xcore("plugin", "install", str(hasher), "--data-dir", str(host.data))
    assert installed.returncode == 0, installed.stderr
    body = answer(host, "/app/hasher/hash")
    assert body["hash"] == MMH3_FOO and body["file"].endswith(".so") and "hasher-libs-" in body["file"], body
    shown = bundled(settled(host, "hasher", "active"), "mmh3")
    assert (shown["source"], shown["version"], shown["wheel"]) == ("bundle", "4.1.0", MMH3_HERE)

    # Only a Windows wheel: refused naming the wheel and its tags; the others keep serving.
    windows = {MMH3_WINDOWS: (WHEELS / MMH3_WINDOWS).read_bytes()}
    win = zip_with_wheels(tmp_path / "hand" / "win-1.0.0.zip", "win", MMH3_ROUTE, windows, requirements=["mmh3"])
    drop(win, host.plugins)
    error = settled(host, "win", "failed")["error"]
    assert "mmh3: no wheel fits this xcore" in error and f"{MMH3_WINDOWS} is for cp311-cp311-win_amd64" in error
    assert "this xcore takes cp311-cp311-" in error, error
    assert host.get("/app/win/hash").status_code == 404

    # Another version of a package xcore ships: `pack --wheels` refuses it before pip runs, and so does the host.
    folder = write_plugin(tmp_path / "src" / "old", "old", "1.0.0", HUMANIZE_ROUTE, requirements=["pyyaml<5"])
    refused = run_xcore("plugin", "pack", str(folder), "--out", str(tmp_path / "zips"), *OFFLINE)
    clash = f"pyyaml<5 clashes with PyYAML {yaml.__version__}, which xcore ships"
    assert refused.returncode == 2 and clash in refused.stderr, refused.stderr
    drop(packed(tmp_path, "old", HUMANIZE_ROUTE, ["pyyaml<5"]), host.plugins)  # packed without its wheels
    assert clash in settled(host, "old", "failed")["error"]

    assert answer(host, "/app/nice/hello")["version"] == "4.9.0"
    assert answer(host, "/app/hasher/hash")["hash"] == MMH3_FOO
    assert host.server.stop() == 0


def test_one_version_of_a_package_per_process_and_a_sandboxed_plugin_has_its_own(
    serve: Callable[..., Host], tmp_path: Path
) -> None:
    first = packed(tmp_path, "first", HUMANIZE_ROUTE, ["humanize==4.9.0"], *OFFLINE)
    second = packed(tmp_path, "second", HUMANIZE_ROUTE, ["humanize==4.10.0"], *OFFLINE)
    boxed = packed(tmp_path, "boxed", HUMANIZE_ROUTE, ["humanize==4.10.0"], *OFFLINE, sandbox=True)
    with zipfile.ZipFile(boxed) as archive:
        assert [w["file"] for w in json.loads(archive.read("wheels/lock.json"))["wheels"]] == [HUMANIZE_NEW]
    host = serve()

    drop(first, host.plugins)
    assert answer(host, "/app/first/hello")["version"] == "4.9.0"
    drop(second, host.plugins)
    error = settled(host, "second", "failed")["error"]
    assert "humanize 4.10.0 clashes with humanize 4.9.0, which plugin 'first' imports in this process" in error, error
    assert host.get("/app/second/hello").status_code == 404

    drop(boxed, host.plugins)
    view = settled(host, "boxed", "active")
    assert view["sandbox"]["state"] == "running", view
    assert bundled(view, "humanize")["wheel"] == HUMANIZE_NEW
    body = answer(host, "/app/boxed/hello")
    assert (body["version"], body["says"]) == ("4.10.0", "12.3 million") and "boxed-libs-" in body["file"], body
    assert answer(host, "/app/first/hello")["version"] == "4.9.0", "the in-process plugin keeps its version"
    assert host.server.stop() == 0
