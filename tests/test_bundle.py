"""Bundle checks before any plugin code runs (DESIGN.md, "Validation before import"), and atomic extraction."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from xcore.plugins.bundle import MAX_ENTRIES, BundleError, collect_garbage, extract_bundle, inspect_bundle

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
