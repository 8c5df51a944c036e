"""Plugins that bring third-party packages (issue 24): wheels packed into the bundle, checked, unpacked into the
plugin's own library folder, and imported by that plugin only, offline.

The wheels are real ones from PyPI, which `python3 tasks.py test` downloads into .venv/test-wheels: humanize
4.9.0 and 4.10.0 (pure Python), mmh3 4.1.0 (a C extension) for this machine and for Windows. Every test runs what
a worker serves (conftest's `plugin_host`), packs with the real `pip download` against that folder (offline:
--no-index), or builds a zip by hand for the rules a packer would never break.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import create_account
from test_plugin_manager import Host, configured_runtime, eventually, open_host, upload
from xcore import __version__
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.libraries import LibraryFinder
from xcore.plugins.lock import WheelError
from xcore.plugins.pack import folder_manifest, pack_folder
from xcore.plugins.wheelhouse import WheelOptions, download_wheels
from xcore.plugins.wheels import SOURCE_BUNDLE, install_libraries, wheel_ref
from xcore.runtime import Runtime, open_runtime

WHEELS = Path(__file__).resolve().parent.parent / ".venv" / "test-wheels"
HUMANIZE_OLD = "humanize-4.9.0-py3-none-any.whl"
HUMANIZE_NEW = "humanize-4.10.0-py3-none-any.whl"
MMH3_WINDOWS = "mmh3-4.1.0-cp311-cp311-win_amd64.whl"
OFFLINE = WheelOptions(find_links=(WHEELS,), no_index=True)

HUMANIZE_ROUTE = """
import humanize
from litestar import get

@get("/hello")
async def hello() -> dict:
    return {"says": humanize.intword(12_300_000), "version": humanize.__version__, "file": humanize.__file__}

router = [hello]
"""
MMH3_ROUTE = """
import mmh3
from litestar import get

@get("/hash")
async def hashed() -> dict:
    return {"hash": mmh3.hash("foo"), "file": mmh3.__file__}

router = [hashed]
"""


@pytest.fixture(scope="module", autouse=True)
def _wheels_downloaded() -> None:
    assert (WHEELS / HUMANIZE_OLD).is_file(), f"{WHEELS} lacks the test wheels: run `python3 tasks.py test`"


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


def plugin_folder(parent: Path, plugin_id: str, version: str, code: str, **manifest: object) -> Path:
    folder = parent / f"{plugin_id}-{version}"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps({"id": plugin_id, "version": version, **manifest}))
    (folder / "run.py").write_text(code)
    return folder


def packed(parent: Path, plugin_id: str, version: str, code: str, requirements: list[str], **manifest: object) -> Path:
    """packed is the zip `xcore plugin pack --wheels --no-index --find-links .venv/test-wheels` makes."""
    folder = plugin_folder(parent, plugin_id, version, code, requirements=requirements, **manifest)
    downloads = parent / f"{plugin_id}-{version}-wheels"
    downloads.mkdir()
    wheels = download_wheels(folder, folder_manifest(folder), OFFLINE, downloads)
    return pack_folder(folder, parent / "dist", __version__, wheels)


def zip_with_wheels(path: Path, plugin_id: str, code: str, wheels: dict[str, bytes], **manifest: object) -> Path:
    """zip_with_wheels writes a bundle by hand: plugin.json, run.py, and the wheels with a lock that lists them."""
    lock = {"lock": 1, "wheels": [
        {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in wheels.items()
    ]}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0", **manifest}))
        archive.writestr("run.py", code)
        archive.writestr("wheels/lock.json", json.dumps(lock))
        for name, data in wheels.items():
            archive.writestr(f"wheels/{name}", data)
    return path


def wheel_of(name: str, version: str, files: dict[str, str], tag: str = "py3-none-any") -> tuple[str, bytes]:
    """wheel_of builds a small wheel by hand (for the rules pip would never break)."""
    dist = f"{name}-{version}.dist-info"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, text in files.items():
            archive.writestr(entry, text)
        if f"{dist}/METADATA" not in files:
            archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{dist}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        archive.writestr(f"{dist}/RECORD", "")
    return f"{name}-{version}-{tag}.whl", out.getvalue()


# --- pack --wheels -------------------------------------------------------------------------------------------


def test_pack_wheels_puts_the_wheels_and_their_hashes_into_the_bundle(tmp_path: Path) -> None:
    path = packed(tmp_path, "nice", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0", "pyyaml>=5"])
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        lock = json.loads(archive.read("wheels/lock.json"))
        carried = archive.read(f"wheels/{HUMANIZE_OLD}")
    assert f"wheels/{HUMANIZE_OLD}" in names
    assert not [n for n in names if "PyYAML" in n or "pyyaml" in n], "xcore ships PyYAML: its wheel is not packed"
    assert lock == {"lock": 1, "wheels": [
        {"file": HUMANIZE_OLD, "sha256": hashlib.sha256(carried).hexdigest(), "size": len(carried)}
    ]}  # fmt: skip
    assert carried == (WHEELS / HUMANIZE_OLD).read_bytes()
    bundle = inspect_bundle(path, __version__)
    assert [w[0] for w in bundle.wheels] == [f"wheels/{HUMANIZE_OLD}"]
    assert not any(e.startswith("wheels/") for e in bundle.entries), "wheels are not extracted with the code"


def test_pack_wheels_for_another_platform_takes_that_platforms_wheel(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "hasher", "1.0.0", MMH3_ROUTE, requirements=["mmh3==4.1.0"])
    options = WheelOptions(platforms=("windows",), find_links=(WHEELS,), no_index=True, python_version="3.11")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wheels = download_wheels(folder, folder_manifest(folder), options, downloads)
    assert [w.name for w in wheels] == [MMH3_WINDOWS]


def test_pack_wheels_for_several_platforms_at_once_packs_the_pure_wheel_once(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "both", "1.0.0", MMH3_ROUTE, requirements=["mmh3==4.1.0", "humanize==4.10.0"])
    options = WheelOptions(platforms=("linux", "windows"), find_links=(WHEELS,), no_index=True, python_version="3.11")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    wheels = download_wheels(folder, folder_manifest(folder), options, downloads)
    linux = next(WHEELS.glob("mmh3-4.1.0-cp311-cp311-manylinux*.whl")).name
    assert [w.name for w in wheels] == [HUMANIZE_NEW, linux, MMH3_WINDOWS]
    with zipfile.ZipFile(pack_folder(folder, tmp_path / "dist", __version__, wheels)) as archive:
        listed = [w["file"] for w in json.loads(archive.read("wheels/lock.json"))["wheels"]]
        carried = [n for n in archive.namelist() if n.endswith(".whl")]
    assert listed == [HUMANIZE_NEW, linux, MMH3_WINDOWS] and len(carried) == 3


def test_pack_wheels_refuses_a_requirement_that_clashes_with_xcore_before_pip_runs(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "old", "1.0.0", HUMANIZE_ROUTE, requirements=["pyyaml<5"])
    with pytest.raises(BundleError) as caught:
        download_wheels(folder, folder_manifest(folder), OFFLINE, tmp_path)
    assert caught.value.rule == "requirements"
    assert "pyyaml<5 clashes with PyYAML" in caught.value.reason and "which xcore ships" in caught.value.reason


def test_pack_wheels_says_what_pip_could_not_find(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "gone", "1.0.0", HUMANIZE_ROUTE, requirements=["humanize==0.0.1"])
    with pytest.raises(BundleError) as caught:
        download_wheels(folder, folder_manifest(folder), OFFLINE, tmp_path)
    assert caught.value.rule == "wheels-download"
    assert "humanize==0.0.1" in caught.value.reason, caught.value.reason


def test_pack_wheels_without_pip_says_so_before_it_runs_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing from source uses this Python's pip; without one, the refusal says how to go on."""
    folder = plugin_folder(tmp_path, "old", "1.0.0", HUMANIZE_ROUTE, requirements=["humanize==4.9.0"])
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a[0]}"))
    with pytest.raises(BundleError) as caught:
        download_wheels(folder, folder_manifest(folder), OFFLINE, tmp_path)
    assert caught.value.rule == "wheels-download"
    assert f"{sys.executable} has no pip: install pip, or name another by --python" in caught.value.reason


# --- the bundle's lock ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "rule", "entry"),
    [
        ("unlisted", "wheels", "wheels/extra-1.0-py3-none-any.whl"),
        ("hash", "wheel-hash", f"wheels/{HUMANIZE_OLD}"),
        ("missing", "wheels", "wheels/lock.json"),
        ("stray", "wheels", "wheels/notes.txt"),
        ("no-lock", "wheels", None),
    ],
)
def test_a_bundle_whose_wheels_do_not_match_its_lock_is_refused(
    tmp_path: Path, tamper: str, rule: str, entry: str | None
) -> None:
    data = (WHEELS / HUMANIZE_OLD).read_bytes()
    lock = {
        "lock": 1,
        "wheels": [{"file": HUMANIZE_OLD, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}],
    }
    files = {f"wheels/{HUMANIZE_OLD}": data}
    if tamper == "unlisted":
        files["wheels/extra-1.0-py3-none-any.whl"] = wheel_of("extra", "1.0", {"extra.py": ""})[1]
    elif tamper == "hash":
        lock["wheels"][0]["sha256"] = "0" * 64
    elif tamper == "missing":
        lock["wheels"].append({"file": "ghost-1.0-py3-none-any.whl", "sha256": "0" * 64, "size": 1})
    elif tamper == "stray":
        files["wheels/notes.txt"] = b"hello"
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "bad", "version": "1.0.0", "requirements": ["humanize"]}))
        archive.writestr("run.py", "")
        if tamper != "no-lock":
            archive.writestr("wheels/lock.json", json.dumps(lock))
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(BundleError) as caught:
        inspect_bundle(path, __version__)
    assert (caught.value.rule, caught.value.entry) == (rule, entry), caught.value


# --- loading --------------------------------------------------------------------------------------------------


def test_a_pure_python_wheel_is_imported_from_the_plugins_own_folder_and_shown(host: Host, tmp_path: Path) -> None:
    host.drop(packed(tmp_path, "nice", "1.0.0", HUMANIZE_ROUTE, ["humanize>=4,<4.10", "pyyaml"]))
    view = host.wait_view("nice", "active")
    body = host.wait_answer("/app/nice/hello")
    assert body["says"] == "12.3 million" and body["version"] == "4.9.0"
    assert "-libs-" in body["file"] and str(host.runtime.data.root) in body["file"]
    shown = {r["name"].lower(): r for r in view["requirements"]}
    assert shown["humanize"] == {
        "requirement": "humanize>=4,<4.10", "name": "humanize", "version": "4.9.0", "source": "bundle",
        "wheel": HUMANIZE_OLD, "needed_by": None,
    }  # fmt: skip
    assert shown["pyyaml"]["source"] == "xcore"
    # on the plugin's import path only: the finder does not answer the host, nor tell it the library's metadata
    assert LibraryFinder.installed().find_spec("humanize", None) is None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("humanize")


def test_a_compiled_wheel_for_this_platform_loads_and_serves(host: Host, tmp_path: Path) -> None:
    host.drop(packed(tmp_path, "hasher", "1.0.0", MMH3_ROUTE, ["mmh3==4.1.0"]))
    host.wait_view("hasher", "active")
    body = host.wait_answer("/app/hasher/hash")
    assert body["hash"] == -156908512 and body["file"].endswith(".so")


def test_a_sandboxed_plugin_imports_its_wheels_in_its_own_worker(host: Host, tmp_path: Path) -> None:
    code = HUMANIZE_ROUTE.replace("router = [hello]", "") + MMH3_ROUTE.replace(
        "import mmh3\nfrom litestar import get\n", "import mmh3\n"
    ).replace("router = [hashed]", "router = [hello, hashed]")
    host.drop(packed(tmp_path, "boxed", "1.0.0", code, ["humanize==4.10.0", "mmh3"], sandbox=True))
    view = host.wait_view("boxed", "active")
    assert view["sandbox"]["state"] == "running"
    assert host.wait_answer("/app/boxed/hello")["version"] == "4.10.0"
    assert host.wait_answer("/app/boxed/hash")["hash"] == -156908512


def test_a_wheel_for_another_platform_is_refused_naming_the_wheel_and_the_tags(host: Host, tmp_path: Path) -> None:
    windows = (WHEELS / MMH3_WINDOWS).read_bytes()
    host.drop(zip_with_wheels(tmp_path / "win.zip", "win", MMH3_ROUTE, {MMH3_WINDOWS: windows}, requirements=["mmh3"]))
    error = host.wait_view("win", "failed")["error"]
    assert "mmh3: no wheel fits this xcore" in error and f"{MMH3_WINDOWS} is for cp311-cp311-win_amd64" in error
    assert "this xcore takes cp311-cp311-" in error, error


def test_a_bundled_wheel_of_a_package_xcore_ships_in_another_version_is_refused_naming_both(
    host: Host, tmp_path: Path
) -> None:
    name, data = wheel_of("PyYAML", "3.13", {"yaml/__init__.py": "OLD = True\n"})
    host.drop(zip_with_wheels(tmp_path / "y.zip", "oldyaml", "", {name: data}, requirements=["pyyaml==3.13"]))
    error = host.wait_view("oldyaml", "failed")["error"]
    import yaml

    assert f"pyyaml==3.13 clashes with PyYAML {yaml.__version__}, which xcore ships" in error, error


@pytest.mark.parametrize(
    ("files", "rule"),
    [
        ({"json/__init__.py": "HIJACKED = True\n"}, "wheel-shadows"),
        ({"litestar/__init__.py": "HIJACKED = True\n"}, "wheel-shadows"),
        ({"xcore_plugin_other_1/__init__.py": ""}, "wheel-shadows"),
        ({"sneaky-1.0.dist-info/METADATA": "Name: sneaky\n" + "x" * (5 << 20)}, "too-large"),
        ({"../escape.py": "X = 1\n"}, "unsafe-path"),
        ({"/abs.py": "X = 1\n"}, "unsafe-path"),
    ],
)
def test_a_wheel_that_breaks_a_rule_is_refused_naming_it(
    host: Host, tmp_path: Path, files: dict[str, str], rule: str
) -> None:
    name, data = wheel_of("sneaky", "1.0", files)
    host.drop(zip_with_wheels(tmp_path / "s.zip", "sneaky", "", {name: data}, requirements=["sneaky"]))
    error = host.wait_view("sneaky", "failed")["error"]
    assert f"wheel {name}: {rule}:" in error, error
    import json as stdlib_json

    assert not hasattr(stdlib_json, "HIJACKED")


def _install(cache: Path, *wheels: tuple[str, bytes]) -> object:
    """_install checks and unpacks the wheels as the host does for plugin `rules`."""
    refs = [
        wheel_ref(name, hashlib.sha256(data).hexdigest(), len(data), SOURCE_BUNDLE, lambda data=data: data)
        for name, data in wheels
    ]
    return install_libraries(cache, "rules", refs)


def _declaring(wheel: tuple[str, bytes], entry: str, size: int) -> tuple[str, bytes]:
    """_declaring is the wheel with the uncompressed size its central directory declares for `entry` set to
    `size`, as a crafted zip could: the limits are checked on the declared sizes, before a byte is written."""
    name, data = wheel
    raw = bytearray(data)
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(raw[at + 28 : at + 30], "little")
        if raw[at + 46 : at + 46 + length].decode() == entry:
            raw[at + 24 : at + 28] = size.to_bytes(4, "little")
            return name, bytes(raw)
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{entry} is not in {name}")


def _symlinked() -> tuple[str, bytes]:
    name, data = wheel_of("linked", "1.0", {"linked/__init__.py": ""})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        link = zipfile.ZipInfo("linked/secrets.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        target.writestr(link, "/etc/passwd")
    return name, out.getvalue()


@pytest.mark.parametrize(
    ("case", "rule", "said"),
    [
        ("many", "too-many-entries", "20003 entries; at most 20000"),
        ("bomb", "compression-ratio", "; at most 100:1"),
        ("total", "too-large", "the plugin's wheels hold over 1,073,741,824 bytes unpacked"),
        ("symlink", "symlink", "symbolic links are not allowed"),
        ("overlap", "wheel-overlap", "first-1.0-py3-none-any.whl brings this file too"),
    ],
)
def test_a_wheel_past_a_limit_is_refused_before_anything_is_written(
    tmp_path: Path, case: str, rule: str, said: str
) -> None:
    if case == "many":
        wheels = [wheel_of("many", "1.0", {f"many/m{i}.py": "" for i in range(20_000)})]
    elif case == "bomb":
        wheels = [wheel_of("bomb", "1.0", {"bomb/__init__.py": "0" * (2 << 20)})]
    elif case == "total":  # 12 MiB that do not compress, declared as 1 GiB + 1 MiB: a ratio under 100:1
        big = wheel_of("big", "1.0", {"big/__init__.py": "", "big/blob.bin": ""})
        name, data = big
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                content = source.read(info) if info.filename != "big/blob.bin" else os.urandom(12 << 20)
                target.writestr(info, content)
        wheels = [_declaring((name, out.getvalue()), "big/blob.bin", (1 << 30) + (1 << 20))]
    elif case == "symlink":
        wheels = [_symlinked()]
    else:
        wheels = [
            wheel_of("first", "1.0", {"shared/util.py": "A = 1\n"}),
            wheel_of("second", "1.0", {"shared/util.py": "A = 2\n"}),
        ]
    cache = tmp_path / "cache"
    with pytest.raises(WheelError) as caught:
        _install(cache, *wheels)
    assert caught.value.rule == rule and said in caught.value.reason, caught.value
    assert caught.value.wheel == wheels[-1][0]
    assert not list(cache.iterdir()), "nothing is left in the cache"


def test_a_requirement_the_bundle_has_no_wheel_for_is_refused_naming_it(host: Host, tmp_path: Path) -> None:
    name, data = wheel_of("other", "1.0", {"other.py": ""})
    host.drop(zip_with_wheels(tmp_path / "m.zip", "lacking", "", {name: data}, requirements=["humanize>=4"]))
    error = host.wait_view("lacking", "failed")["error"]
    assert "humanize>=4 is not among the packages of this xcore, and the bundle carries no wheel of it" in error


def test_a_wheels_own_requirements_are_met_from_the_bundle(host: Host, tmp_path: Path) -> None:
    top = wheel_of("toplib", "1.0", {"toplib.py": "import sublib\nVALUE = sublib.VALUE + 1\n"})
    top_meta = _with_requires(top, ["sublib>=2", "neverneeded; extra == 'extra'"])
    sub = wheel_of("sublib", "2.1", {"sublib.py": "VALUE = 41\n"})
    code = (
        "import toplib\nfrom litestar import get\n\n"
        "@get('/v')\nasync def v() -> dict:\n    return {'v': toplib.VALUE}\n\nrouter = [v]\n"
    )
    host.drop(zip_with_wheels(tmp_path / "t.zip", "chain", code, dict([top_meta, sub]), requirements=["toplib"]))
    view = host.wait_view("chain", "active")
    assert host.wait_answer("/app/chain/v")["v"] == 42
    sub_shown = next(r for r in view["requirements"] if r["name"] == "sublib")
    assert sub_shown["needed_by"] == "toplib 1.0" and sub_shown["version"] == "2.1"


def _with_requires(wheel: tuple[str, bytes], requires: list[str]) -> tuple[str, bytes]:
    name, data = wheel
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith("/METADATA"):
                content += "".join(f"Requires-Dist: {r}\n" for r in requires).encode()
            target.writestr(info, content)
    return name, out.getvalue()


# --- two versions of one package --------------------------------------------------------------------------------


def test_two_in_process_plugins_cannot_hold_two_versions_of_one_package(host: Host, tmp_path: Path) -> None:
    host.drop(packed(tmp_path, "first", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0"]))
    host.wait_view("first", "active")
    host.drop(packed(tmp_path, "second", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.10.0"]))
    error = host.wait_view("second", "failed")["error"]
    assert "humanize 4.10.0 clashes with humanize 4.9.0, which plugin 'first' imports in this process" in error
    assert host.wait_answer("/app/first/hello")["version"] == "4.9.0"
    # the same version in two plugins is one package: both serve
    host.drop(packed(tmp_path, "third", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0"]))
    host.wait_view("third", "active")
    assert host.wait_answer("/app/third/hello")["version"] == "4.9.0"
    # once the first two go, the second loads (its refusal depended on them, not on itself)
    (host.folder / "first-1.0.0.zip").unlink()
    (host.folder / "third-1.0.0.zip").unlink()
    host.wait_view("second", "active")
    assert host.wait_answer("/app/second/hello")["version"] == "4.10.0"


def test_a_sandboxed_plugin_has_its_own_version_beside_an_in_process_one(host: Host, tmp_path: Path) -> None:
    host.drop(packed(tmp_path, "inproc", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0"]))
    host.wait_view("inproc", "active")
    host.drop(packed(tmp_path, "boxed", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.10.0"], sandbox=True))
    host.wait_view("boxed", "active")
    assert host.wait_answer("/app/inproc/hello")["version"] == "4.9.0"
    assert host.wait_answer("/app/boxed/hello")["version"] == "4.10.0"


# --- upgrades -----------------------------------------------------------------------------------------------------


def test_an_upgrade_with_new_requirements_imports_its_new_folder_and_a_code_change_reuses_it(
    host: Host, tmp_path: Path
) -> None:
    host.drop(packed(tmp_path / "a", "up", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0"]), "up.zip")
    first = host.wait_answer("/app/up/hello", version="4.9.0")
    host.drop(packed(tmp_path / "b", "up", "1.1.0", HUMANIZE_ROUTE, ["humanize==4.10.0"]), "up.zip")
    second = host.wait_answer("/app/up/hello", version="4.10.0")
    assert Path(first["file"]).parents[1] != Path(second["file"]).parents[1]
    folder = Path(second["file"]).parents[1]
    marker = folder / "xcore-libraries.json"
    before = marker.stat().st_mtime_ns
    changed = HUMANIZE_ROUTE.replace("intword(12_300_000)", "intword(45_600_000)")
    host.drop(packed(tmp_path / "c", "up", "1.2.0", changed, ["humanize==4.10.0"]), "up.zip")
    third = host.wait_answer("/app/up/hello", says="45.6 million")
    assert Path(third["file"]).parents[1] == folder and marker.stat().st_mtime_ns == before, "unpacked once"
    # the first version's library folder is garbage once no version uses it
    old = Path(first["file"]).parents[1]
    from xcore.plugins.bundle import collect_garbage

    removed = collect_garbage(host.manager.cache, host.manager.touch_in_use(), idle=0.0)
    assert old in removed and folder not in removed and folder.is_dir()


BY_NAME_ROUTE = """
import humanize as imported
from litestar import get

@get("/hello", sync_to_thread=False)
def hello() -> dict:
    import humanize  # by name, at request time
    from humanize import number

    return {
        "imported": imported.__version__, "version": humanize.__version__, "file": humanize.__file__,
        "number": number.__file__,
    }

router = [hello]
"""
WAITS_IN_ON_LOAD = """
import time
from pathlib import Path

def on_load(ctx) -> None:
    Path(GATE + ".started").touch()
    deadline = time.monotonic() + 20
    while not Path(GATE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""
FAILS_IN_ON_LOAD = """
def on_load(ctx) -> None:
    raise RuntimeError("not today")
"""


def test_the_old_version_serves_with_its_own_library_until_a_version_with_new_requirements_is_swapped_in(
    host: Host, tmp_path: Path
) -> None:
    host.drop(packed(tmp_path / "a", "up", "1.0.0", BY_NAME_ROUTE, ["humanize==4.9.0"]), "up.zip")
    old = host.wait_answer("/app/up/hello", imported="4.9.0", version="4.9.0")
    gate = tmp_path / "gate"
    waits = BY_NAME_ROUTE + WAITS_IN_ON_LOAD.replace("GATE", repr(str(gate)))
    host.drop(packed(tmp_path / "b", "up", "1.1.0", waits, ["humanize==4.10.0"]), "up.zip")
    eventually(lambda: _exists(tmp_path / "gate.started"))
    # The new version has imported humanize 4.10.0 and waits in on_load: the old one serves, and an import by
    # name at request time finds its own humanize, submodules too.
    for _ in range(5):
        response = host.get("/app/up/hello")
        assert response.status_code == 200 and response.json() == old, response.text
    gate.touch()
    new = host.wait_answer("/app/up/hello", imported="4.10.0", version="4.10.0")
    assert Path(new["file"]).parents[1] != Path(old["file"]).parents[1]
    assert Path(new["number"]).parent == Path(new["file"]).parent
    # A version that fails to load leaves the one serving with its own library.
    fails = BY_NAME_ROUTE + FAILS_IN_ON_LOAD
    host.drop(packed(tmp_path / "c", "up", "1.2.0", fails, ["humanize==4.9.0"]), "up.zip")

    def refused() -> str:
        view = host.view("up")
        assert view is not None and (view["error"] or "").startswith("1.2.0 failed: "), view
        return str(view["error"])

    assert "on_load raised RuntimeError: not today" in eventually(refused)
    assert host.wait_answer("/app/up/hello") == new


def _exists(path: Path) -> None:
    assert path.exists(), path


# --- the online mode ---------------------------------------------------------------------------------------------


def test_without_an_index_a_bundle_without_its_wheels_is_refused(host: Host, tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "online", "1.0.0", HUMANIZE_ROUTE, requirements=["humanize==4.10.0"])
    host.drop(pack_folder(folder, tmp_path / "dist", __version__))
    error = host.wait_view("online", "failed")["error"]
    assert "humanize==4.10.0 is not among the packages of this xcore" in error


def test_with_an_index_the_missing_wheels_are_downloaded_pinned_and_kept_for_offline_loads(
    tmp_path: Path, simple_index: str
) -> None:
    folder = plugin_folder(tmp_path, "online", "1.0.0", HUMANIZE_ROUTE, requirements=["humanize<4.10"])
    bundle = pack_folder(folder, tmp_path / "dist", __version__)
    data = tmp_path / "data"
    with (
        configured_runtime(data, XCORE_MANAGER__PLUGINS__INDEX_URL=simple_index) as rt,
        open_host(rt, tmp_path / "staging") as host,
    ):
        host.drop(bundle)
        view = host.wait_view("online", "active")
        assert host.wait_answer("/app/online/hello")["version"] == "4.9.0"
        shown = next(r for r in view["requirements"] if r["name"] == "humanize")
        assert shown["source"] == "index" and shown["wheel"] == HUMANIZE_OLD
    pins = list((data / "plugin-wheels" / "pins").glob("online-*.json"))
    assert len(pins) == 1
    sha = hashlib.sha256((WHEELS / HUMANIZE_OLD).read_bytes()).hexdigest()
    assert json.loads(pins[0].read_text()) == {"wheels": [{"file": HUMANIZE_OLD, "sha256": sha}]}
    # a restart with the index out of reach loads the pinned wheel from the disk
    rt = open_runtime(data, environ={"XCORE_MANAGER__PLUGINS__INDEX_URL": "http://127.0.0.1:9/simple"})
    try:
        with open_host(rt, tmp_path / "staging") as host:
            host.wait_view("online", "active")
            assert host.wait_answer("/app/online/hello")["version"] == "4.9.0"
    finally:
        rt.close()


def test_an_index_out_of_reach_is_named_and_tried_again(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path, "online", "1.0.0", HUMANIZE_ROUTE, requirements=["humanize"])
    bundle = pack_folder(folder, tmp_path / "dist", __version__)
    unreachable = "http://127.0.0.1:9/simple"
    with (
        configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__INDEX_URL=unreachable) as rt,
        open_host(rt, tmp_path / "staging") as host,
    ):
        host.drop(bundle)
        error = host.wait_view("online", "failed")["error"]
        assert "package index: http://127.0.0.1:9/simple/humanize/" in error, error
        assert host.manager._failed == {}, "not remembered: the next reconcile asks again"


@pytest.fixture
def simple_index(tmp_path: Path) -> Iterator[str]:
    """simple_index serves .venv/test-wheels as a PEP 503 index on 127.0.0.1."""
    import http.server
    import threading
    from functools import partial

    root = tmp_path / "index"
    for project in ("humanize", "mmh3"):
        page = root / "simple" / project
        page.mkdir(parents=True)
        links = []
        for wheel in sorted(WHEELS.glob(f"{project}-*.whl")):
            (root / wheel.name).write_bytes(wheel.read_bytes())
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            links.append(f'<a href="../../{wheel.name}#sha256={digest}">{wheel.name}</a>')
        (page / "index.html").write_text("<html><body>" + "\n".join(links) + "</body></html>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


# --- installing through the API ---------------------------------------------------------------------------------


def test_an_upload_whose_wheels_cannot_serve_here_is_refused_with_422_before_it_is_stored(
    host: Host, tmp_path: Path
) -> None:
    windows = (WHEELS / MMH3_WINDOWS).read_bytes()
    path = zip_with_wheels(tmp_path / "win.zip", "win", MMH3_ROUTE, {MMH3_WINDOWS: windows}, requirements=["mmh3"])
    response = upload(host, path)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["rule"] == "requirements" and f"{MMH3_WINDOWS} is for cp311-cp311-win_amd64" in problem["detail"]
    assert not list(host.folder.glob("win-*.zip")), "nothing is stored"
    name, data = wheel_of("sneaky", "1.0", {"json/__init__.py": ""})
    response = upload(host, zip_with_wheels(tmp_path / "s.zip", "sneaky", "", {name: data}, requirements=["sneaky"]))
    assert response.status_code == 422 and response.json()["rule"] == "wheel-shadows", response.text
    assert f"wheel {name}: its module 'json'" in response.json()["detail"]


def test_an_upload_with_wheels_that_fit_is_installed_with_its_library_folder_ready(host: Host, tmp_path: Path) -> None:
    response = upload(host, packed(tmp_path, "nice", "1.0.0", HUMANIZE_ROUTE, ["humanize"]))
    assert response.status_code in (200, 201), response.text
    assert list(host.manager.cache.glob("nice-libs-*/humanize/__init__.py"))
    assert host.wait_answer("/app/nice/hello")["version"] == "4.10.0"


def test_a_dev_folder_takes_the_wheels_of_its_wheels_folder(runtime: Runtime, tmp_path: Path) -> None:
    create_account(runtime, "root", ["superadmin"])
    folder = plugin_folder(tmp_path / "dev", "devwheels", "0.1.0", HUMANIZE_ROUTE, requirements=["humanize"])
    (folder / "wheels").mkdir()
    (folder / "wheels" / HUMANIZE_OLD).write_bytes((WHEELS / HUMANIZE_OLD).read_bytes())
    with open_host(runtime, tmp_path / "staging", dev_dirs=[folder]) as host:
        view = host.wait_view("devwheels", "active")
        assert host.wait_answer("/app/devwheels/hello")["version"] == "4.9.0"
        assert next(r for r in view["requirements"] if r["name"] == "humanize")["wheel"] == HUMANIZE_OLD


def test_an_in_process_plugin_that_imports_another_plugins_library_without_listing_it_is_refused(
    host: Host, tmp_path: Path
) -> None:
    host.drop(packed(tmp_path, "first", "1.0.0", HUMANIZE_ROUTE, ["humanize==4.9.0"]))
    host.wait_view("first", "active")
    freeloader = plugin_folder(tmp_path, "freeloader", "1.0.0", HUMANIZE_ROUTE)
    host.drop(pack_folder(freeloader, tmp_path / "dist", __version__))
    error = host.wait_view("freeloader", "failed")["error"]
    assert "run.py, line 2: imports humanize, which its plugin.json's requirements do not list" in error, error
    (host.folder / "first-1.0.0.zip").unlink()
    error = eventually(lambda: _changed(host, "freeloader", error))
    assert "cannot import 'humanize'" in error and "plugin.json's requirements" in error, error


LAZY_ROUTE = """
from litestar import get

@get("/hello", sync_to_thread=True)
def hello() -> dict:
    import humanize  # at request time, in a worker thread
    from humanize import number

    return {"version": humanize.__version__, "file": humanize.__file__, "number": number.__file__}

router = [hello]
"""
SNOOP_ROUTE = """
import importlib
from litestar import Request, get

@get("/try", sync_to_thread=False)
def attempt(request: Request) -> dict:
    try:
        return {"file": importlib.import_module(request.query_params["name"]).__file__}
    except ImportError as exc:
        return {"error": str(exc)}

router = [attempt]
"""
# A library that imports its dependency in a thread of its own, at request time: no frame of the plugin is there.
THREADED_LIB = """
import threading

def value() -> int:
    found = []
    worker = threading.Thread(target=lambda: found.append(__import__("sublib").VALUE))
    worker.start()
    worker.join()
    return found[0] + 1
"""
THREADED_ROUTE = """
import toplib
from litestar import get

@get("/v", sync_to_thread=False)
def v() -> dict:
    return {"v": toplib.value()}

router = [v]
"""


def test_a_plugins_library_answers_the_imports_of_that_plugin_and_its_libraries_only(
    host: Host, tmp_path: Path
) -> None:
    host.drop(packed(tmp_path, "lazy", "1.0.0", LAZY_ROUTE, ["humanize==4.9.0"]))
    host.drop(pack_folder(plugin_folder(tmp_path, "snoop", "1.0.0", SNOOP_ROUTE), tmp_path / "dist", __version__))
    host.wait_view("lazy", "active")
    host.wait_view("snoop", "active")
    assert "humanize" not in sys.modules, "lazy imports it at request time only"
    # another plugin's import by name is refused, naming the plugin that has it
    said = host.wait_answer("/app/snoop/try?name=humanize")["error"]
    assert "No module named 'humanize' for plugin 'snoop': the wheels of plugin 'lazy' bring it" in said, said
    # and so is the host's
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("humanize")
    assert importlib.util.find_spec("humanize") is None
    # the plugin's own import at request time, in a worker thread, finds it, and the library its own submodules
    body = host.wait_answer("/app/lazy/hello")
    assert body["version"] == "4.9.0" and "lazy-libs-" in body["file"] and "lazy-libs-" in body["number"], body
    # a literal import by name of another plugin's library is refused at load, as an import statement is
    literal = SNOOP_ROUTE.replace('request.query_params["name"]', '"humanize.time"')
    host.drop(pack_folder(plugin_folder(tmp_path, "literal", "1.0.0", literal), tmp_path / "dist", __version__))
    error = host.wait_view("literal", "failed")["error"]
    assert "imports humanize, which its plugin.json's requirements do not list" in error, error
    # a library importing its dependency from the plugin's folder, in a thread of its own at request time
    top = _with_requires(wheel_of("toplib", "1.0", {"toplib.py": THREADED_LIB}), ["sublib"])
    sub = wheel_of("sublib", "2.1", {"sublib.py": "VALUE = 41\n"})
    host.drop(
        zip_with_wheels(tmp_path / "t.zip", "threaded", THREADED_ROUTE, dict([top, sub]), requirements=["toplib"])
    )
    host.wait_view("threaded", "active")
    assert "error" in host.wait_answer("/app/snoop/try?name=sublib"), "another plugin does not find the dependency"
    assert host.wait_answer("/app/threaded/v")["v"] == 42


def _changed(host: Host, plugin_id: str, before: str) -> str:
    view = host.view(plugin_id)
    assert view is not None and view["state"] == "failed" and view["error"] != before, view
    return str(view["error"])


def test_the_downloads_of_bundles_no_longer_installed_are_collected(tmp_path: Path) -> None:
    from xcore.plugins.requirements import collect_downloads

    store = tmp_path / "plugin-wheels"
    (store / "pins").mkdir(parents=True)
    kept, gone = "a" * 64, "b" * 64
    for sha in (kept, gone, "c" * 64):
        (store / sha).mkdir()
        (store / sha / "x-1.0-py3-none-any.whl").write_bytes(b"wheel")
    installed, removed_bundle = "1" * 64, "2" * 64
    (store / "pins" / f"memo-{installed[:32]}.json").write_text(json.dumps({"wheels": [{"file": "x", "sha256": kept}]}))
    (store / "pins" / f"old-{removed_bundle[:32]}.json").write_text(
        json.dumps({"wheels": [{"file": "x", "sha256": gone}]})
    )
    assert collect_downloads(store, {installed}, older_than=3600) == [
        store / "pins" / f"old-{removed_bundle[:32]}.json"
    ]
    assert (store / gone).is_dir(), "a download younger than an hour may be one under way"
    removed = collect_downloads(store, {installed}, older_than=0)
    assert sorted(p.name for p in removed) == ["b" * 64, "c" * 64]
    assert (store / kept).is_dir() and (store / "pins" / f"memo-{installed[:32]}.json").is_file()
