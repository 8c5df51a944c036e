"""Bundle checks before any plugin code runs (plugins/README.md, "plugin.json"), and atomic extraction."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xcore.plugins import bundle as bundle_module
from xcore.plugins.bundle import (
    MAX_ENTRIES,
    BundleError,
    collect_garbage,
    extract_bundle,
    host_fault,
    inspect_bundle,
)
from xcore.plugins.manifest import PLUGIN_ID, RESERVED_IDS

MANIFEST = {"id": "notes", "version": "1.0.0", "name": "Notes"}
RUN = "from xcore.sdk import get\n"


def make_zip(path: Path, files: dict[str, bytes | str], *, symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, content)
    return path


def bundle(tmp_path: Path, manifest: dict[str, Any] | None = None, **extra: bytes | str) -> Path:
    files: dict[str, bytes | str] = {"plugin.json": json.dumps(manifest or MANIFEST), "run.py": RUN}
    files.update({name.replace("__", "/"): content for name, content in extra.items()})
    return make_zip(tmp_path / "notes.zip", files)


def test_a_good_bundle_is_read_without_running_it(tmp_path: Path) -> None:
    found = inspect_bundle(bundle(tmp_path, static__app_css="body {}"), "0.1.0")
    assert (found.manifest.id, found.manifest.version, found.manifest.prefix) == ("notes", "1.0.0", "/app/notes")
    assert found.root == "" and set(found.entries) == {"plugin.json", "run.py", "static/app_css"}
    assert len(found.sha256) == 64


def test_one_top_folder_holding_plugin_json_is_accepted(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "n.zip", {"notes-1.0/": "", "notes-1.0/plugin.json": json.dumps(MANIFEST), "notes-1.0/run.py": RUN}
    )
    found = inspect_bundle(path, "0.1.0")
    assert found.root == "notes-1.0/"
    folder = extract_bundle(found, tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["plugin.json", "run.py"]


def test_extraction_is_content_addressed_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    found = inspect_bundle(bundle(tmp_path), "0.1.0")
    cache = tmp_path / "cache"
    first = extract_bundle(found, cache)
    assert first.name == f"notes-1.0.0-{found.sha256[:16]}"
    assert (first / "run.py").read_text() == RUN
    (first / "marker").write_text("kept")
    assert extract_bundle(found, cache) == first and (first / "marker").exists(), "the same zip is extracted once"
    assert [p.name for p in cache.iterdir()] == [first.name]
    changed = inspect_bundle(bundle(tmp_path, static__x="new"), "0.1.0")
    assert extract_bundle(changed, cache) != first, "different content, different folder"


def rule_of(path: Path, host: str = "0.1.0", taken: dict[str, str] | None = None) -> BundleError:
    with pytest.raises(BundleError) as caught:
        inspect_bundle(path, host, taken)
    return caught.value


@pytest.mark.parametrize(
    ("files", "rule", "entry"),
    [
        ({"/etc/evil.py": "x"}, "unsafe-path", "/etc/evil.py"),
        ({"../evil.py": "x"}, "unsafe-path", "../evil.py"),
        ({"static/../../evil.py": "x"}, "unsafe-path", "static/../../evil.py"),
        ({"C:/evil.py": "x"}, "unsafe-path", "C:/evil.py"),
        ({"static\\evil.py": "x"}, "unsafe-path", "static\\evil.py"),
    ],
)
def test_unsafe_paths_are_refused_naming_the_entry(
    tmp_path: Path, files: dict[str, str], rule: str, entry: str
) -> None:
    error = rule_of(make_zip(tmp_path / "b.zip", {"plugin.json": json.dumps(MANIFEST), "run.py": RUN, **files}))
    assert (error.rule, error.entry) == (rule, entry)
    assert f"bundle b.zip: {rule}: " in str(error) and repr(entry) in str(error)


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "b.zip",
        {"plugin.json": json.dumps(MANIFEST), "run.py": RUN, "link": "/etc/passwd"},
        symlinks=("link",),
    )
    assert (rule_of(path).rule, rule_of(path).entry) == ("symlink", "link")


def test_an_entry_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "b.zip", {"plugin.json": json.dumps(MANIFEST), "run.py": RUN, "ok.txt": "x"})
    data = path.read_bytes().replace(b"ok.txt", b"\xff\xfe.txt")  # same length, in the local and central headers
    path.write_bytes(data)
    assert rule_of(path).rule == "entry-name"


def test_too_many_entries(tmp_path: Path) -> None:
    files: dict[str, bytes | str] = {f"f/{i}": "" for i in range(MAX_ENTRIES)}
    path = make_zip(tmp_path / "b.zip", {"plugin.json": json.dumps(MANIFEST), "run.py": RUN, **files})
    error = rule_of(path)
    assert error.rule == "too-many-entries" and f"{MAX_ENTRIES + 2} entries" in str(error)


def test_a_zip_bomb_is_refused_by_its_ratio_and_a_huge_bundle_by_its_size(tmp_path: Path) -> None:
    bomb = bundle(tmp_path, data__zeros=b"\0" * (4 * 1024 * 1024))
    assert rule_of(bomb).rule == "compression-ratio"
    huge = make_zip(
        tmp_path / "huge.zip", {"plugin.json": json.dumps(MANIFEST), "run.py": RUN, "big": b"\0" * (201 * 1024 * 1024)}
    )
    assert rule_of(huge).rule == "too-large"


def test_small_files_that_compress_well_are_fine(tmp_path: Path) -> None:
    inspect_bundle(bundle(tmp_path, blank__txt="\n" * 50_000), "0.1.0")


@pytest.mark.parametrize(
    ("manifest", "rule", "says"),
    [
        ("{not json", "manifest-invalid", "not valid JSON"),
        ({"version": "1.0"}, "manifest-invalid", "missing required field id"),
        ({"id": "Notes!", "version": "1.0"}, "manifest-invalid", "id"),
        ({"id": "n", "version": "1.0"}, "manifest-invalid", "id"),
        ({"id": "notes", "version": "one"}, "manifest-invalid", "PEP 440 version"),
        ({"id": "notes", "version": "1.0", "verison": "1"}, "manifest-invalid", "unknown field verison"),
        ({"id": "notes", "version": "1.0", "requires": "new"}, "manifest-invalid", "PEP 440 specifier"),
        ({"id": "notes", "version": "1.0", "permissions": ["other.read"]}, "manifest-invalid", "notes.<name>"),
        ({"id": "notes", "version": "1.0", "dependencies": {"Bad!": ">=1"}}, "manifest-invalid", "not a plugin id"),
        ({"id": "notes", "version": "1.0", "api_prefix": "app/notes/"}, "manifest-invalid", "api_prefix"),
        ({"id": "notes", "version": "1.0", "entry": "main"}, "entry-missing", "'main'"),
        ({"id": "notes", "version": "1.0", "requires": ">=9"}, "requires", "needs xcore >=9; this is xcore 0.1.0"),
        ({"id": "notes", "version": "1.0", "api_prefix": "/api/notes"}, "api-prefix", "overlaps the core's /api"),
        ({"id": "notes", "version": "1.0", "api_prefix": "/docs"}, "api-prefix", "overlaps the core's /docs"),
    ],
)
def test_manifest_rules(tmp_path: Path, manifest: Any, rule: str, says: str) -> None:
    raw = manifest if isinstance(manifest, str) else json.dumps(manifest)
    error = rule_of(make_zip(tmp_path / "b.zip", {"plugin.json": raw, "run.py": RUN}))
    assert error.rule == rule and says in str(error), str(error)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("version", " 1.0.0\n", "version: ' 1.0.0\\n' holds whitespace"),
        ("version", "1.0.0\t", "version: '1.0.0\\t' holds whitespace"),
        ("version", "1.0.0\u00a0", "version: '1.0.0\\xa0' holds whitespace"),
        ("version", "1.0 .0", "version: '1.0 .0' holds whitespace"),
        ("version", "1.0.0\x00", "version: '1.0.0\\x00' holds the control character U+0000"),
        ("name", "Notes\nlogin.succeeded", "name: 'Notes\\nlogin.succeeded' holds the control character U+000A"),
        ("author", "Eve\x1b[2J", "author: 'Eve\\x1b[2J' holds the control character U+001B"),
        ("name", "Notes\u202etxt.exe", "name: 'Notes\\u202etxt.exe' holds the control character U+202E"),
        ("description", "one\rtwo", "description: 'one\\rtwo' holds the control character U+000D"),
        ("tags", ["ok", "b\nad"], "tags[1]: 'b\\nad' holds the control character U+000A"),
        ("requires", ">=0.1\n", "requires: '>=0.1\\n' holds the control character U+000A"),
        ("permissions", ["notes.read", "notes.wr ite"], "permissions[1]: 'notes.wr ite' holds whitespace"),
    ],
)
def test_manifest_text_with_whitespace_or_control_characters_is_refused_naming_the_field(
    tmp_path: Path, field: str, value: Any, says: str
) -> None:
    error = rule_of(bundle(tmp_path, {"id": "notes", "version": "1.0.0", field: value}))
    assert error.rule == "manifest-invalid" and says in str(error), str(error)


def test_a_description_may_have_line_breaks_and_a_version_is_normalised(tmp_path: Path) -> None:
    found = inspect_bundle(bundle(tmp_path, {"id": "notes", "version": "V1.0-RC1", "description": "a\n\tb"}), "0.1.0")
    assert (found.manifest.version, found.manifest.description) == ("1.0rc1", "a\n\tb")
    assert inspect_bundle(bundle(tmp_path, {"id": "notes", "version": "v1.0.0"}), "0.1.0").manifest.version == "1.0.0"


def core_namespaces() -> set[str]:
    """core_namespaces are the names the core uses itself: its permissions' namespaces, the first segment of its
    routes (/health, /api, /docs...), the sections of /api and /api/admin, and its task namespace."""
    from xcore.auth.builtin import PERMISSIONS
    from xcore.runtime import open_runtime
    from xcore.web.app import build_app

    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(Path(tmp) / "data", environ={}, logs=False)
        try:
            paths = [route.path for route in build_app(runtime).routes]
        finally:
            runtime.close()
    names = {name.split(".")[0] for name in PERMISSIONS} | {"xcore"}
    for path in paths:
        parts = [part.split(".")[0] for part in path.strip("/").split("/") if part and "{" not in part]
        names |= {parts[0]} if parts else set()
        if parts[:2] == ["api", "admin"] and len(parts) > 2:
            names.add(parts[2])
        elif parts[:1] == ["api"] and len(parts) > 1 and parts[1] != "admin":
            names.add(parts[1])
    return {name for name in names if re.match(PLUGIN_ID, name)}


def test_every_core_namespace_is_a_reserved_plugin_id() -> None:
    missing = core_namespaces() - set(RESERVED_IDS)
    assert not missing, f"add {sorted(missing)} to xcore.plugins.manifest.RESERVED_IDS"
    assert {"users", "roles", "plugins", "tasks", "backups", "settings", "xcore", "health"} <= set(RESERVED_IDS)


@pytest.mark.parametrize("plugin_id", ["users", "roles", "plugins", "audit", "xcore", "health", "admin", "system"])
def test_a_plugin_cannot_take_a_core_namespace_as_its_id(tmp_path: Path, plugin_id: str) -> None:
    error = rule_of(bundle(tmp_path, {"id": plugin_id, "version": "1.0.0"}))
    assert error.rule == "manifest-invalid", str(error)
    assert f"id: {plugin_id!r} is reserved (" in str(error) and "choose another id" in str(error)
    assert error.entry == "plugin.json"


def test_a_prefix_taken_by_another_plugin_is_refused_but_its_own_is_not(tmp_path: Path) -> None:
    path = bundle(tmp_path, {"id": "notes", "version": "2.0", "api_prefix": "/app/shared"})
    error = rule_of(path, taken={"/app/shared/sub": "todo"})
    assert error.rule == "api-prefix" and "of plugin todo" in str(error)
    inspect_bundle(path, "0.1.0", {"/app/shared": "notes"})  # an upgrade keeps its own prefix


def test_not_a_zip_and_no_manifest(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\3\4 not really")
    assert rule_of(junk).rule == "not-a-zip"
    assert rule_of(make_zip(tmp_path / "b.zip", {"run.py": RUN})).rule == "manifest-missing"
    two_tops = make_zip(tmp_path / "c.zip", {"a/plugin.json": json.dumps(MANIFEST), "b/run.py": RUN})
    assert rule_of(two_tops).rule == "manifest-missing"


def test_garbage_collection_keeps_what_is_in_use_and_fresh_extractions(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    used = extract_bundle(inspect_bundle(bundle(tmp_path), "0.1.0"), cache)
    old = extract_bundle(inspect_bundle(bundle(tmp_path, static__x="v2"), "0.1.0"), cache)
    running = cache / ".extract-now"
    running.mkdir()
    stale = cache / ".extract-crashed"
    stale.mkdir()
    os.utime(stale, (0, 0))
    removed = collect_garbage(cache, {used})
    assert sorted(removed) == sorted([old, stale])
    assert sorted(p.name for p in cache.iterdir()) == sorted([used.name, running.name])
    assert collect_garbage(tmp_path / "no-cache", set()) == []


# --- zips damaged after their directory: every way zipfile can fail on an entry -----------------------------------

DATA = b"hello, plugin data " * 20


def damaged_bundle(
    path: Path, manifest: dict[str, Any], run_py: str, method: int, entry: str, how: Callable[..., None]
) -> Path:
    """damaged_bundle writes a bundle (plugin.json, run.py, data.txt stored with `method`) whose central directory
    reads fine, then damages `entry` with `how(data, local header offset, central record offset)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("plugin.json"), json.dumps(manifest))
        archive.writestr(zipfile.ZipInfo("run.py"), run_py)
        info = zipfile.ZipInfo("data.txt")
        info.compress_type = method
        archive.writestr(info, DATA)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_length] == entry.encode():
            how(data, struct.unpack_from("<I", data, at + 42)[0], at)
            path.write_bytes(bytes(data))
            return path
        at = data.find(b"PK\x01\x02", at + 46)
    raise AssertionError(f"{entry} is not in {path}")


def _data_start(data: bytearray, local: int) -> int:
    name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
    return local + 30 + name_length + extra_length


def _flip_a_byte(data: bytearray, local: int, central: int) -> None:
    data[_data_start(data, local) + 3] ^= 0x01


def _garbage_data(data: bytearray, local: int, central: int) -> None:
    start, size = _data_start(data, local), struct.unpack_from("<I", data, central + 20)[0]
    data[start : start + size] = b"\xff" * size


def _bad_local_magic(data: bytearray, local: int, central: int) -> None:
    data[local : local + 4] = b"PK\x09\x09"


def _local_name_differs(data: bytearray, local: int, central: int) -> None:
    data[local + 30] = ord("D")  # data.txt -> Data.txt in the local header only


def _sizes(uncompressed: Callable[[int], int] | None = None, compressed: int | None = None) -> Callable[..., None]:
    def how(data: bytearray, local: int, central: int) -> None:
        for size_at in (local + 22, central + 24) if uncompressed else ():
            struct.pack_into("<I", data, size_at, uncompressed(struct.unpack_from("<I", data, size_at)[0]))
        for size_at in (local + 18, central + 20) if compressed is not None else ():
            struct.pack_into("<I", data, size_at, compressed)

    return how


def _method(method: int) -> Callable[..., None]:
    def how(data: bytearray, local: int, central: int) -> None:
        struct.pack_into("<H", data, local + 8, method)
        struct.pack_into("<H", data, central + 10, method)

    return how


def _flag(bit: int) -> Callable[..., None]:
    def how(data: bytearray, local: int, central: int) -> None:
        for at in (local + 6, central + 8):
            struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | bit)

    return how


STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
# (method of data.txt, damaged entry, damage, rule, words of the reason)
DAMAGES = [
    pytest.param(STORED, "data.txt", _flip_a_byte, "corrupt-entry", "Bad CRC-32", id="bad-crc"),
    pytest.param(STORED, "plugin.json", _flip_a_byte, "corrupt-entry", "Bad CRC-32", id="bad-crc-of-manifest"),
    pytest.param(DEFLATED, "data.txt", _garbage_data, "corrupt-entry", "while decompressing", id="zlib-error"),
    pytest.param(STORED, "data.txt", _bad_local_magic, "corrupt-entry", "Bad magic number", id="bad-local-header"),
    pytest.param(STORED, "data.txt", _local_name_differs, "corrupt-entry", "differ", id="local-name-differs"),
    pytest.param(STORED, "data.txt", _sizes(lambda _: 900_000, 900_000), "corrupt-entry", "ends early", id="eof"),
    pytest.param(DEFLATED, "data.txt", _sizes(compressed=5), "corrupt-entry", "Bad CRC-32", id="truncated-deflate"),
    pytest.param(DEFLATED, "data.txt", _sizes(lambda n: n + 7), "corrupt-entry", "holds 380 bytes", id="size-larger"),
    pytest.param(DEFLATED, "data.txt", _sizes(lambda n: n - 7), "corrupt-entry", "Bad CRC-32", id="size-smaller"),
    pytest.param(STORED, "data.txt", _method(99), "compression-method", "method 99", id="unknown-method"),
    pytest.param(STORED, "data.txt", _method(12), "corrupt-entry", "Invalid data stream", id="bad-bzip2-data"),
    pytest.param(STORED, "data.txt", _method(8), "corrupt-entry", "while decompressing", id="bad-deflate-data"),
    pytest.param(STORED, "data.txt", _flag(0x20), "compression-method", "patched data", id="patched-data"),
    pytest.param(STORED, "data.txt", _flag(0x01), "encrypted", "without a password", id="encrypted"),
    pytest.param(STORED, "data.txt", _flag(0x40), "encrypted", "without a password", id="strong-encryption"),
]


@pytest.mark.parametrize(("method", "entry", "how", "rule", "says"), DAMAGES)
def test_a_zip_damaged_after_its_directory_is_refused_naming_the_entry_and_leaves_no_trace(
    tmp_path: Path, method: int, entry: str, how: Callable[..., None], rule: str, says: str
) -> None:
    path = damaged_bundle(tmp_path / "b.zip", MANIFEST, RUN, method, entry, how)
    cache = tmp_path / "cache"
    with pytest.raises(BundleError) as caught:
        extract_bundle(inspect_bundle(path, "0.1.0"), cache)
    error = caught.value
    assert (error.rule, error.entry) == (rule, entry), str(error)
    assert says in str(error) and f"bundle b.zip: {rule}: " in str(error) and repr(entry) in str(error), str(error)
    assert not cache.exists() or list(cache.iterdir()) == [], "no half-extracted folder is left"


@pytest.mark.parametrize(
    ("files", "entry", "says"),
    [
        ({"run.py": RUN + "# second copy\n"}, "run.py", "two entries extract to this path"),
        ({"static//app.js": "1", "static/app.js": "2"}, "static/app.js", "two entries extract to this path"),
        ({"Run.py": "import os\n"}, "Run.py", "two entries extract to this path"),
        ({"static": "a file", "static/app.js": "x"}, "static", "a file and a folder"),
    ],
    ids=["same-name", "same-path-once-normalised", "same-name-but-case", "file-and-folder"],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_entries_that_extract_to_the_same_path_are_refused(
    tmp_path: Path, files: dict[str, str], entry: str, says: str
) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps(MANIFEST))
        archive.writestr("run.py", RUN)
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name), content)  # a ZipInfo: zipfile warns of duplicates, and writes
    error = rule_of(path)
    assert (error.rule, error.entry) == ("duplicate-entry", entry) and says in str(error), str(error)


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_zip_that_changed_after_its_check_is_not_extracted(tmp_path: Path, change: str) -> None:
    path = bundle(tmp_path)
    checked = inspect_bundle(path, "0.1.0")
    if change == "replaced":
        bundle(tmp_path, static__evil_js="not what was checked")
    else:
        path.unlink()
    with pytest.raises(BundleError) as caught:
        extract_bundle(checked, tmp_path / "cache")
    assert caught.value.rule == "changed", str(caught.value)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_a_full_disk_while_extracting_is_the_hosts_fault_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = inspect_bundle(bundle(tmp_path), "0.1.0")
    real_open = open

    def full_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and Path(path).name == "run.py":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "open", full_disk, raising=False)
    with pytest.raises(BundleError) as caught:
        extract_bundle(checked, tmp_path / "cache")
    error = caught.value
    assert (error.rule, error.entry) == ("extract-failed", "run.py") and "No space left" in str(error), str(error)
    assert host_fault(error)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    corrupt = damaged_bundle(tmp_path / "c.zip", MANIFEST, RUN, STORED, "data.txt", _flip_a_byte)
    with pytest.raises(BundleError) as caught:
        extract_bundle(inspect_bundle(corrupt, "0.1.0"), tmp_path / "cache")
    assert not host_fault(caught.value), "a damaged zip is the bundle's fault"


def test_a_cached_folder_that_lost_files_is_extracted_again(tmp_path: Path) -> None:
    checked = inspect_bundle(bundle(tmp_path, static__app_js="x"), "0.1.0")
    folder = extract_bundle(checked, tmp_path / "cache")
    (folder / "run.py").unlink()
    assert extract_bundle(checked, tmp_path / "cache") == folder
    assert (folder / "run.py").read_text() == RUN and (folder / "static" / "app_js").read_text() == "x"
