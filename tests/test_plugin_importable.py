"""`xcore plugin runtime`: what a plugin may import, from the real CLI; and the loader's hint in a frozen build."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import types
from pathlib import Path

import pytest

from conftest import run_xcore
from xcore import __version__
from xcore.plugins.importable import STDLIB_LEFT_OUT, Package, list_importable
from xcore.plugins.loader import _import_failure

STDLIB_EXPECTED = ("sqlite3", "email", "json", "asyncio", "itertools", "__future__")  # itertools is built in
PACKAGES_EXPECTED = ("litestar", "msgspec", "sqlalchemy", "xcore")


def sections(output: str) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """sections splits the text output into its first line(s), the standard-library names and the package rows."""
    head, stdlib, packages = output.split("\n\n")
    stdlib_lines = stdlib.splitlines()
    assert stdlib_lines[0].startswith("standard library: ")
    package_lines = packages.splitlines()
    assert package_lines[0].startswith("packages: ")
    assert package_lines[1].split() == ["MODULE", "DISTRIBUTION", "VERSION", "NOTE"]
    rows = {line.split()[0]: line.split()[1:] for line in package_lines[2:]}
    return head.splitlines(), " ".join(stdlib_lines[1:]).split(), rows


def test_the_text_lists_the_standard_library_and_the_packages_without_a_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_xcore("plugin", "runtime", env={"XCORE_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    head, stdlib, packages = sections(result.stdout)
    assert head == [
        "source install: plugins may import anything installed in this Python environment (listed below); a frozen "
        "build contains only the standard library and xcore's own dependencies, see `plugins/README.md`"
    ]
    assert set(STDLIB_EXPECTED) <= set(stdlib)
    assert not set(STDLIB_LEFT_OUT) & set(stdlib)
    assert not set(PACKAGES_EXPECTED) & set(stdlib)
    assert set(PACKAGES_EXPECTED) <= set(packages)
    assert not set(STDLIB_EXPECTED) & set(packages) and "tkinter" not in packages
    assert packages["litestar"] == ["litestar", importlib.metadata.version("litestar")]
    assert packages["xcore"] == ["xcore", __version__, "plugins", "import", "only", "xcore.sdk", "from", "it"]
    assert not [name for name in packages if name.startswith("_")]
    assert not data_dir.exists()  # no data directory was opened


def test_json_has_the_same_lists_sorted() -> None:
    result = run_xcore("plugin", "runtime", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert set(found) == {"frozen", "stdlib", "packages"} and found["frozen"] is False
    assert set(STDLIB_EXPECTED) <= set(found["stdlib"])
    assert "tkinter" not in found["stdlib"]
    modules = [p["module"] for p in found["packages"]]
    assert set(PACKAGES_EXPECTED) <= set(modules)
    assert found["stdlib"] == sorted(found["stdlib"], key=str.lower)
    assert modules == sorted(modules, key=str.lower)
    assert {"module": "msgspec", "distribution": "msgspec", "version": importlib.metadata.version("msgspec")} in (
        found["packages"]
    )
    assert {"module": "xcore", "distribution": "xcore", "version": __version__} in found["packages"]
    text = run_xcore("plugin", "runtime")
    assert sorted(sections(text.stdout)[2]) == sorted(modules)


def test_from_source_the_current_folder_is_not_listed_but_other_path_entries_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    for folder, module in ((here, "stray_in_cwd"), (elsewhere, "on_the_path")):
        folder.mkdir()
        (folder / f"{module}.py").write_text("")
    monkeypatch.chdir(here)
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.syspath_prepend(str(elsewhere))
    found = list_importable()
    modules = [p.module for p in found.packages]
    assert "stray_in_cwd" not in modules
    assert Package("on_the_path") in found.packages  # no metadata: the module name alone


def test_a_frozen_build_lists_its_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = {"litestar": {}, "only_in_the_archive": "", "pyimod01_archive": ""}
    bootstrap = types.SimpleNamespace(get_pyz_toc_tree=lambda: archive)
    monkeypatch.setitem(sys.modules, "pyimod02_importers", bootstrap)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    found = list_importable()
    assert found.frozen and found.as_json()["frozen"] is True
    modules = [p.module for p in found.packages]
    assert "only_in_the_archive" in modules and "pyimod01_archive" not in modules
    assert "json" in found.stdlib


def test_a_missing_module_names_the_runtime_command_in_a_frozen_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        importlib.import_module("not_installed_anywhere")
    missing = raised.value
    source = _import_failure(missing, tmp_path)
    assert source.startswith("cannot import 'not_installed_anywhere': it is not part of the bundle or of this xcore")
    assert "xcore plugin runtime" not in source
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    frozen = _import_failure(missing, tmp_path)
    assert frozen == source + "; `xcore plugin runtime` lists what this binary contains"
    assert "\n" not in frozen
