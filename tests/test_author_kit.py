"""The plugin author kit: pack a folder, scaffold a plugin, and `xcore plugin new|pack|install|list|remove`.

Everything runs for real: files on disk, the `git` executable, the `xcore` CLI in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import CLEAN_ENV, run_xcore, xcore_command
from xcore import __version__
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.manifest import parse_manifest
from xcore.plugins.pack import folder_manifest, pack_folder
from xcore.plugins.scaffold import ScaffoldError, create_scaffold, next_steps

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = {"id": "memo", "version": "1.2.0", "name": "Memo"}


def make_plugin(folder: Path, manifest: dict[str, object] | None = None, files: dict[str, str] | None = None) -> Path:
    """make_plugin writes a plugin folder: plugin.json, run.py, and `files` (relative path: text)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.json").write_text(json.dumps(manifest or MANIFEST))
    (folder / "run.py").write_text("from xcore.sdk import Router\n\nrouter = Router('/', route_handlers=[])\n")
    for name, text in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# pack_folder


def test_pack_leaves_out_caches_vcs_folders_and_the_output_folder(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path / "memo", files={"lib/store.py": "X = 1\n", "static/app.css": "body {}\n"})
    junk = [
        "__pycache__/run.cpython-311.pyc", "lib/__pycache__/store.cpython-311.pyc", "stray.pyc", "old.pyo",
        ".git/config", ".hg/store", ".svn/entries", ".pytest_cache/README.md", ".mypy_cache/x.json",
        ".ruff_cache/x", ".venv/pyvenv.cfg", "memo.egg-info/PKG-INFO", ".DS_Store", "lib/.DS_Store", "dist/old.zip",
    ]  # fmt: skip
    for name in junk:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("junk")
    (folder / ".venv" / "python").symlink_to(sys.executable)  # links inside an excluded folder do not matter

    path = pack_folder(folder, folder / "dist", __version__)

    assert path == folder / "dist" / "memo-1.2.0.zip"
    assert names(path) == ["lib/store.py", "plugin.json", "run.py", "static/app.css"]
    assert sorted(p.name for p in (folder / "dist").iterdir()) == ["memo-1.2.0.zip", "old.zip"]
    bundle = inspect_bundle(path, __version__)
    assert (bundle.manifest.id, bundle.manifest.version, bundle.root) == ("memo", "1.2.0", "")


def test_packing_into_the_folder_itself_does_not_pack_the_previous_zip(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path / "memo")
    first = pack_folder(folder, folder, __version__)
    second = pack_folder(folder, folder, __version__)
    assert first == second == folder / "memo-1.2.0.zip"
    assert names(second) == ["plugin.json", "run.py"]
    assert sorted(p.name for p in folder.iterdir()) == ["memo-1.2.0.zip", "plugin.json", "run.py"]


@pytest.mark.parametrize("link", ["lib/alias.py", "shared"])
def test_a_symlink_is_refused_naming_its_path(tmp_path: Path, link: str) -> None:
    folder = make_plugin(tmp_path / "memo", files={"lib/real.py": "X = 1\n"})
    (folder / link).symlink_to(folder / "lib" / ("real.py" if link.endswith(".py") else ""))
    out = tmp_path / "out"
    with pytest.raises(BundleError) as caught:
        pack_folder(folder, out, __version__)
    assert caught.value.rule == "symlink" and caught.value.entry == link
    assert str(folder) in str(caught.value) and repr(link) in str(caught.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_the_same_folder_always_gives_the_same_sha256(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path / "memo", files={"lib/a.py": "A = 1\n", "lib/b.py": "B = 2\n", "docs/café.md": "é\n"})
    first = pack_folder(folder, tmp_path / "one", __version__)
    for path in folder.rglob("*"):  # a checkout at another time: new mtimes, same content
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (folder / "lib" / "a.py").write_text("A = 1\n")
    second = pack_folder(folder, tmp_path / "two", __version__)
    assert sha256(first) == sha256(second)
    with zipfile.ZipFile(second) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.external_attr >> 16 == 0o100644 for i in infos)
    assert [i.flag_bits & 0x800 for i in infos if i.filename == "docs/café.md"] == [0x800]  # flagged UTF-8
    (folder / "run.py").write_text("# changed\nfrom xcore.sdk import Router\n")
    assert sha256(pack_folder(folder, tmp_path / "three", __version__)) != sha256(first)


@pytest.mark.parametrize(
    ("manifest", "rule", "named"),
    [
        ({"id": "memo", "version": "1.0", "colour": "red"}, "manifest-invalid", "colour"),
        ({"id": "Memo", "version": "1.0"}, "manifest-invalid", "id"),
        ({"id": "memo", "version": "one"}, "manifest-invalid", "'one'"),
        ({"id": "memo", "version": "1.0", "entry": "main"}, "entry-missing", "'main'"),
        ({"id": "memo", "version": "1.0", "requires": ">=99"}, "requires", ">=99"),
        ({"id": "memo", "version": "1.0", "api_prefix": "/api/memo"}, "api-prefix", "/api"),
    ],
)
def test_an_invalid_folder_is_refused_naming_the_rule(
    tmp_path: Path, manifest: dict[str, object], rule: str, named: str
) -> None:
    folder = make_plugin(tmp_path / "memo", manifest)
    out = tmp_path / "out"
    with pytest.raises(BundleError) as caught:
        pack_folder(folder, out, __version__)
    assert caught.value.rule == rule
    assert named in str(caught.value)
    assert not out.exists() or list(out.iterdir()) == []  # no zip, no temporary file


def test_a_failed_pack_leaves_the_previous_zip_alone(tmp_path: Path) -> None:
    folder = make_plugin(tmp_path / "memo")
    good = pack_folder(folder, tmp_path / "out", __version__)
    before = sha256(good)
    (folder / "plugin.json").write_text(json.dumps({**MANIFEST, "requires": ">=99"}))
    with pytest.raises(BundleError, match=r"memo-1\.2\.0\.zip: requires: needs xcore >=99"):
        pack_folder(folder, tmp_path / "out", __version__)
    assert sha256(good) == before and [p.name for p in (tmp_path / "out").iterdir()] == ["memo-1.2.0.zip"]


def test_folder_manifest_names_a_missing_or_broken_plugin_json(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as caught:
        folder_manifest(tmp_path)
    assert caught.value.rule == "manifest-missing" and str(tmp_path) in str(caught.value)
    (tmp_path / "plugin.json").write_text("{not json")
    with pytest.raises(BundleError) as caught:
        folder_manifest(tmp_path)
    assert caught.value.rule == "manifest-invalid" and caught.value.entry == "plugin.json"
    with pytest.raises(BundleError, match="not-a-folder"):
        folder_manifest(tmp_path / "nowhere")
    assert folder_manifest(make_plugin(tmp_path / "memo")).id == "memo"


# The scaffold


def test_the_scaffold_is_a_valid_plugin_that_packs_cleanly(tmp_path: Path) -> None:
    folder = create_scaffold(tmp_path, "my_notes")
    assert folder == tmp_path / "my_notes"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md", "config.yaml", "plugin.json", "pytest.ini", "run.py", "static/my_notes.js", "static/my_notes.svg",
        "tests/test_page.py", "tests/test_plugin.py",
    ]  # fmt: skip
    manifest, problem = parse_manifest((folder / "plugin.json").read_bytes())
    assert manifest is not None, problem
    major, minor = __version__.split(".")[:2]
    assert (manifest.id, manifest.version, manifest.requires) == ("my_notes", "0.1.0", f">={major}.{minor}")
    [page] = manifest.pages
    assert (page.path, page.title, page.module, page.icon, page.permission) == (
        "my-notes", "My notes", "static/my_notes.js", "static/my_notes.svg", None,
    )  # fmt: skip
    page_js = (folder / "static" / "my_notes.js").read_text()
    for part in ["export function render(", "xcore", "api.get(`${plugin.prefix}/hello`)", "page.title"]:
        assert part in page_js
    code = "\n".join(line for line in page_js.splitlines() if not line.lstrip().startswith("//"))
    for forbidden in ["innerHTML", "eval(", 'setAttribute("on', "<script"]:
        assert forbidden not in code
    run_py = (folder / "run.py").read_text()
    for part in ['@get("/hello"', "ctx: Ctx", 'ctx.config["greeting"]', "@task()", "def on_load(ctx"]:
        assert part in run_py
    assert "greeting: Hello" in (folder / "config.yaml").read_text()
    test_py = (folder / "tests" / "test_plugin.py").read_text()
    assert "plugin_client" in test_py and "/app/my_notes/hello" in test_py and "401" in test_py
    page_test = (folder / "tests" / "test_page.py").read_text()
    assert "plugin_page(PLUGIN)" in page_test and "Hello, from my_notes!" in page_test
    readme = (folder / "README.md").read_text()
    for command in [
        "python -m pytest", "xcore plugin pack .", "xcore plugin install", "xcore serve --plugins-dev",
        "pip install playwright", "apt install\n  chromium", "python -m playwright install chromium",
        "python -m pytest tests/test_page.py", "/admin/apps/my_notes/my-notes",
    ]:  # fmt: skip
        assert command in readme
    compile(run_py, "run.py", "exec")
    compile(test_py, "test_plugin.py", "exec")
    compile(page_test, "test_page.py", "exec")
    bundle = inspect_bundle(pack_folder(folder, tmp_path / "out", __version__), __version__)
    assert bundle.manifest.id == "my_notes" and {"run.py", "static/my_notes.js", "static/my_notes.svg"} <= set(
        bundle.entries
    )


@pytest.mark.parametrize("name", ["My-Notes", "1notes", "n", "notes/x", "../notes", ""])
def test_a_scaffold_name_must_be_a_plugin_id(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match="an id is 2 to 40 characters"):
        create_scaffold(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["users", "plugins", "xcore", "health"])
def test_a_scaffold_name_may_not_be_a_core_namespace(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match=f"plugin name '{name}' is reserved \\(.+\\); choose another name"):
        create_scaffold(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_the_scaffold_refuses_a_folder_in_use_but_fills_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists and is not empty"):
        create_scaffold(tmp_path, "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert (create_scaffold(tmp_path, "empty") / "run.py").is_file()


@pytest.mark.browser
@pytest.mark.e2e
def test_the_scaffold_passes_its_own_tests_with_warnings_as_errors(tmp_path: Path) -> None:
    """Needs xcore.testing (the plugin_client and plugin_page fixtures, registered through the pytest11 entry
    point): the page's test starts a real xcore and Chromium. No warning either: pytest-asyncio's about its unset
    loop scope among them, or any other."""
    folder = create_scaffold(tmp_path, "greeter")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=folder,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert "warning" not in (result.stdout + result.stderr).lower()


# xcore.testing's plugin_page: a plugin's pages in a real browser

PROBE = {
    "id": "probe",
    "version": "1.0.0",
    "name": "Probe",
    "permissions": ["probe.edit"],
    "pages": [
        {"path": "who", "title": "Who", "module": "static/who.js"},
        {"path": "bad", "title": "Bad", "module": "static/bad.js", "permission": "probe.edit"},
    ],
}
PROBE_RUN = """\
from xcore.sdk import Router, post, requires


@post("/edit", guards=[requires("probe.edit")], sync_to_thread=False, status_code=200)
def edit() -> dict[str, bool]:
    return {"edited": True}


router = Router("/", route_handlers=[edit])
"""
WHO_JS = """\
export function render({ main, xcore }) {
  const { h, user, can } = xcore;
  main.append(h("h1", {}, "Who"), h("p", {}, `${user().username} may edit: ${can("probe.edit") ? "yes" : "no"}`));
}
"""
# Breaks the policy twice (an inline handler; a console error) and makes two 404s that are not problems.
BAD_JS = """\
export function render({ main, xcore }) {
  const { h, api } = xcore;
  main.append(h("h1", {}, "Bad"));
  api.get("/app/probe/missing").catch(() => main.append(h("p", {}, "answered 404")));
  const img = document.createElement("img");
  img.setAttribute("onerror", "document.title = 'inline ran'");
  img.addEventListener("error", () => main.append(h("p", {}, "image failed")));
  img.src = "/nowhere.png";
  main.append(img);
  console.error("the page is broken");
}
"""


def probe_plugin(folder: Path) -> Path:
    files = {"run.py": PROBE_RUN, "static/who.js": WHO_JS, "static/bad.js": BAD_JS}
    return make_plugin(folder, PROBE, files)


@pytest.mark.browser
@pytest.mark.e2e
def test_plugin_page_opens_a_page_as_each_user_on_one_server(plugin_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    folder = probe_plugin(tmp_path / "probe")
    page = plugin_page(folder)
    assert page.url == f"{plugin_page.server.url}/admin/apps/probe/who"
    expect(page.get_by_role("heading", level=1)).to_have_text("Who")
    expect(page.get_by_text("user1 may edit: no")).to_be_visible()
    editor = plugin_page(folder, roles=("user",), permissions=["probe.edit"])
    expect(editor.get_by_text("user2 may edit: yes")).to_be_visible()
    assert editor.url.startswith(plugin_page.server.url) and len({page.context, editor.context}) == 2

    refused = plugin_page.request(page, "POST", "/app/probe/edit", json={})
    assert refused.status == 403 and "probe.edit" in refused.json()["detail"]
    assert plugin_page.request(editor, "POST", "/app/probe/edit", json={}).json() == {"edited": True}
    assert plugin_page.server.api.get("/api/admin/users").is_success  # the owner's client
    with pytest.raises(pytest.fail.Exception, match=r"plugin probe has no page 'nope'; it has \['who', 'bad'\]"):
        plugin_page(folder, "nope")


@pytest.mark.browser
@pytest.mark.e2e
def test_plugin_page_fails_the_test_on_a_policy_violation_or_a_console_error(plugin_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = plugin_page(probe_plugin(tmp_path / "probe"), "bad", roles=("superadmin",))
    expect(page.get_by_text("image failed")).to_be_visible()
    expect(page.get_by_text("answered 404")).to_be_visible()
    with pytest.raises(pytest.fail.Exception) as failed:
        plugin_page.check()
    problems = str(failed.value)
    assert "Content Security Policy" in problems and "inline event handler" in problems
    assert "console error: the page is broken" in problems
    # Not "404" alone: an asset's version in a problem's URL is hex digits, which hold "404" now and then.
    assert "status of 404" not in problems, "a 4xx answer is the page's to handle"
    assert plugin_page.problems and page.title() != "inline ran"
    plugin_page.check()  # each problem fails the test once


def test_plugin_page_without_playwright_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    folder = create_scaffold(tmp_path, "greeter")
    shadow = tmp_path / "shadow" / "playwright"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError('No module named playwright', name='playwright')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=folder,
        env={**CLEAN_ENV, "PYTHONPATH": str(shadow.parent)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "3 passed, 1 error" in result.stdout and "skipped" not in result.stdout
    assert "ERROR at setup of test_the_page_shows_the_greeting_of_the_server" in result.stdout
    assert "plugin_page needs Playwright, which xcore does not install: run `pip install playwright`" in result.stdout
    assert "`apt install chromium`" in result.stdout and "`python -m playwright install chromium`" in result.stdout


# The CLI


def xcore_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """xcore_in runs the real CLI in `cwd`, for the commands whose default is the current folder."""
    return subprocess.run(
        xcore_command(*args), cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def test_cli_new_then_pack_prints_the_zip_and_its_sha256(tmp_path: Path) -> None:
    result = run_xcore("plugin", "new", "greeter", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"created {tmp_path / 'greeter'}" in result.stdout

    result = xcore_in(tmp_path / "greeter", "plugin", "pack", ".")
    assert result.returncode == 0, result.stderr
    path_line, sha_line = result.stdout.splitlines()
    zip_path = tmp_path / "greeter" / "greeter-0.1.0.zip"
    assert path_line == str(zip_path) and sha_line == f"sha256 {sha256(zip_path)}"

    again = run_xcore("plugin", "pack", str(tmp_path / "greeter"), "--out", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [str(tmp_path / "out" / "greeter-0.1.0.zip"), sha_line]


@pytest.mark.browser
@pytest.mark.e2e
def test_cli_new_prints_next_commands_that_work_without_the_environment_on_path(tmp_path: Path) -> None:
    """The printed commands run as printed from a shell whose PATH has no xcore, no venv and no pytest."""
    result = run_xcore("plugin", "new", "greeter", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    created, test_line, pack_line = result.stdout.splitlines()
    assert created == f"created {tmp_path / 'greeter'}"
    assert test_line == f"next: cd {tmp_path / 'greeter'} && {sys.executable} -m pytest"
    assert pack_line == f"then: {sys.executable} -m xcore plugin pack .  (see its README.md)"
    bare = {**CLEAN_ENV, "PATH": "/usr/bin:/bin"}
    bare.pop("VIRTUAL_ENV", None)
    shell = ["/bin/sh", "-c"]
    tested = subprocess.run(
        [*shell, test_line.removeprefix("next: ") + " -q -p no:cacheprovider -W error"],
        cwd=tmp_path,
        env=bare,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "4 passed" in tested.stdout
    command = pack_line.removeprefix("then: ").removesuffix("  (see its README.md)")
    packed = subprocess.run(
        [*shell, command], cwd=tmp_path / "greeter", env=bare, capture_output=True, text=True, timeout=60
    )
    assert packed.returncode == 0, packed.stderr
    assert (tmp_path / "greeter" / "greeter-0.1.0.zip").is_file()


def test_next_commands_name_the_xcore_script_or_the_frozen_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "my dir" / "greeter"
    script = tmp_path / "venv" / "bin" / "xcore"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script), "plugin", "new", "greeter"])
    assert next_steps(folder) == [
        f"next: cd '{folder}' && {sys.executable} -m pytest",
        f"then: {script} plugin pack .  (see its README.md)",
    ]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/xcore/xcore")
    steps = next_steps(folder)
    assert steps[0] == f"next: cd '{folder}' && /opt/xcore/xcore plugin pack .  (see its README.md)"
    assert "python -m pytest" in steps[1] and "/opt/xcore" not in steps[1]


def test_cli_errors_are_one_line_naming_the_problem(tmp_path: Path) -> None:
    result = run_xcore("plugin", "new", "Bad-Name", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "xcore: error: plugin name 'Bad-Name': an id is 2 to 40 characters, lowercase letters, digits and _, "
        "starting with a letter (for example my_notes)"
    )
    folder = make_plugin(tmp_path / "memo", {"id": "memo", "version": "1.0", "colour": "red"})
    result = run_xcore("plugin", "pack", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"xcore: error: bundle {folder}: manifest-invalid: ")
    assert "colour" in result.stderr and "Traceback" not in result.stderr


def init_repo(folder: Path) -> None:
    """init_repo makes `folder` a git repository with one commit of everything in it."""
    git = ["git", "-c", "user.name=Author", "-c", "user.email=author@example.com", "-c", "init.defaultBranch=main"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *step], cwd=folder, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def test_cli_install_list_and_remove(tmp_path: Path, data_dir: Path) -> None:
    data = ["--data-dir", str(data_dir)]
    zip_path = pack_folder(make_plugin(tmp_path / "memo", files={"lib/x.py": "X = 1\n"}), tmp_path / "out", __version__)
    result = run_xcore("plugin", "install", str(zip_path), *data)
    assert result.returncode == 0, result.stderr
    installed = data_dir / "plugins" / "memo-1.2.0.zip"
    assert f"installed memo 1.2.0 as {installed}" in result.stdout and sha256(installed) == sha256(zip_path)

    repo = make_plugin(tmp_path / "repo", {"id": "clipper", "version": "0.3.0"}, {"notes/a.txt": "a\n"})
    init_repo(repo)
    (repo / "uncommitted.txt").write_text("not in the clone\n")
    result = run_xcore("plugin", "install", str(repo), *data)
    assert result.returncode == 0, result.stderr
    cloned = data_dir / "plugins" / "clipper-0.3.0.zip"
    assert names(cloned) == ["notes/a.txt", "plugin.json", "run.py"]  # no .git, nothing uncommitted
    result = run_xcore("plugin", "install", repo.as_uri(), *data)
    assert result.returncode == 0, result.stderr

    (data_dir / "plugins" / "broken-1.0.zip").write_bytes(b"not a zip")
    error = "on_load raised KeyError: 'x' (run.py, line 3)\nmore"
    _record_state(data_dir, "memo", "failed", "1.2.0", error)
    result = run_xcore("plugin", "list", *data)
    assert result.returncode == 0, result.stderr
    rows = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert rows == [
        "ID ENABLED SERVING FAILED OTHERS SIGNED STATE",
        "broken yes - broken-1.0.zip (not-a-zip) - unsigned -",
        "clipper yes - - 0.3.0 new unsigned -",  # installed twice: one zip, one row; no server has loaded it yet
        f"memo no - 1.2.0 - unsigned failed 1.2.0: {error.splitlines()[0]}",  # never "valid" when it failed to load
    ]

    result = run_xcore("plugin", "remove", "memo", *data)  # no terminal to confirm on
    assert result.returncode == 2 and "--yes" in result.stderr and installed.exists()
    plugin_data = data_dir / "plugin-data" / "memo"
    plugin_data.mkdir(parents=True)
    (plugin_data / "plugin.db").write_bytes(b"")
    result = run_xcore("plugin", "remove", "memo", "--yes", *data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"deleted {installed}"
    assert not installed.exists() and plugin_data.is_dir()  # the data stays unless purged
    result = run_xcore("plugin", "remove", "memo", "--purge", "--yes", *data)
    assert result.returncode == 0, result.stderr
    assert not plugin_data.exists() and f"deleted {plugin_data}" in result.stdout
    result = run_xcore("plugin", "remove", "memo", "--yes", *data)
    assert result.returncode == 2 and "xcore: error: plugin 'memo' is not installed" in result.stderr
    result = run_xcore("plugin", "remove", "../plugins", "--purge", "--yes", *data)
    assert result.returncode == 2 and "is not a plugin id" in result.stderr
    assert (data_dir / "plugins" / "clipper-0.3.0.zip").exists()


def test_cli_list_shows_one_row_per_plugin_with_the_version_serving_and_the_failed_ones(
    tmp_path: Path, data_dir: Path
) -> None:
    """What a server made of each zip: 1.0.0 serves, its upgrade 2.0.0 failed to import, 0.9.0 is superseded."""
    from conftest import plugin_host
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database

    runtime = open_runtime(data_dir, environ={}, logs=False)
    try:
        prepare_database(runtime)
        plugins = data_dir / "plugins"
        for version, files in (("0.9.0", {}), ("1.0.0", {}), ("2.0.0", {"run.py": "raise RuntimeError('boom')\n"})):
            folder = make_plugin(tmp_path / version, {"id": "memo", "version": version}, files)
            pack_folder(folder, plugins, __version__)
        with plugin_host(runtime) as host:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                host.manager.views.get("memo") is None or not host.manager.views["memo"].failed_versions
            ):
                time.sleep(0.05)
            assert host.manager.views["memo"].summary == "serving 1.0.0, 2.0.0 failed"
    finally:
        runtime.close()
    result = run_xcore("plugin", "list", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    header, *rows = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert header == "ID ENABLED SERVING FAILED OTHERS SIGNED STATE"
    assert len(rows) == 1
    assert rows[0].startswith("memo yes 1.0.0 2.0.0 0.9.0 superseded unsigned active 1.0.0: 2.0.0 failed: ")
    assert "boom" in rows[0]


def _record_state(data_dir: Path, plugin_id: str, state: str, version: str, error: str) -> None:
    """_record_state writes the plugin_state row a server would have written."""
    from xcore.db.models import PluginState
    from xcore.runtime import open_runtime

    runtime = open_runtime(data_dir, environ={}, logs=False)
    try:
        with runtime.sessions() as session, session.begin():
            session.add(PluginState(plugin_id=plugin_id, version=version, state=state, enabled=False, error=error))
    finally:
        runtime.close()


def test_cli_install_refuses_what_it_cannot_use(tmp_path: Path, data_dir: Path) -> None:
    data = ["--data-dir", str(data_dir)]
    result = run_xcore("plugin", "install", (tmp_path / "missing").as_uri(), *data)
    assert result.returncode == 2 and result.stderr.startswith(f"xcore: error: git clone {tmp_path.as_uri()}/missing")
    assert "failed: " in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_xcore("plugin", "install", str(tmp_path / "nothing.zip"), *data)
    assert result.returncode == 2 and "no such file or folder, and not a git URL" in result.stderr
    (tmp_path / "junk.zip").write_bytes(b"junk")
    result = run_xcore("plugin", "install", str(tmp_path / "junk.zip"), *data)
    assert result.returncode == 2 and "xcore: error: bundle junk.zip: not-a-zip" in result.stderr
    repo = make_plugin(tmp_path / "repo", {"id": "clipper", "version": "0.3.0", "requires": ">=99"})
    init_repo(repo)
    result = run_xcore("plugin", "install", str(repo), *data)
    assert result.returncode == 2 and "bundle clipper-0.3.0.zip: requires: needs xcore >=99" in result.stderr
    no_git = {"PATH": str(tmp_path / "empty-bin")}
    result = run_xcore("plugin", "install", "https://example.com/x.git", *data, env=no_git)
    assert result.returncode == 2 and "git is not installed" in result.stderr
    assert list((data_dir / "plugins").glob("*.zip")) == []


def test_tasks_py_pack_packs_every_example_plugin(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tasks.py"), "pack", str(tmp_path)],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    expected = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/plugin.json"))
    assert {"hello", "notes"} <= set(expected)
    zips = [Path(line) for line in result.stdout.splitlines()]
    assert [z.parent for z in zips] == [tmp_path] * len(expected)
    assert [inspect_bundle(z, __version__).manifest.id for z in zips] == expected
    assert "notes.write" in inspect_bundle(tmp_path / "notes-1.1.0.zip", __version__).manifest.permissions


# The example plugins, loaded as a server would load them (xcore.testing's plugin_client)

HELLO, NOTES = ROOT / "plugins" / "hello", ROOT / "plugins" / "notes"


def test_hello_answers_with_its_configured_greeting(plugin_client: Any) -> None:
    assert plugin_client(HELLO).get("/app/hello/").json() == {"message": "Hello, world!"}
    assert plugin_client(HELLO, config={"greeting": "Salut"}).get("/app/hello").json() == {"message": "Salut, world!"}
    assert plugin_client(HELLO, login=False).get("/app/hello/").status_code == 401


def test_notes_create_read_update_delete(plugin_client: Any) -> None:
    client = plugin_client(NOTES)
    assert client.plugin.permissions == ["notes.write"]
    assert [t["name"] for t in client.plugin.tasks] == ["notes.hourly_purge", "notes.purge_empty"]
    assert client.get("/app/notes/").json() == []
    created = client.post("/app/notes/", json={"title": " Groceries ", "body": "milk"})
    assert created.status_code == 201, created.text
    note = created.json()
    assert (note["id"], note["title"], note["body"]) == (1, "Groceries", "milk") and note["created_at"]
    assert client.get("/app/notes/1").json() == note
    updated = client.put("/app/notes/1", json={"title": "Shopping", "body": "milk, eggs"})
    assert updated.status_code == 200 and updated.json() == {**note, "title": "Shopping", "body": "milk, eggs"}
    assert client.get("/app/notes/").json() == [updated.json()]
    assert client.delete("/app/notes/1").status_code == 204
    assert client.get("/app/notes/").json() == []
    assert (client.runtime.data.root / "plugin-data" / "notes" / "plugin.db").is_file()


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "detail"),
    [
        ("get", "/app/notes/7", None, 404, "there is no note 7"),
        ("put", "/app/notes/7", {"title": "x"}, 404, "there is no note 7"),
        ("delete", "/app/notes/7", None, 404, "there is no note 7"),
        ("post", "/app/notes/", {"body": "no title"}, 400, "title"),
        ("post", "/app/notes/", {"title": "   "}, 400, "must not be blank (field 'title')"),
        ("post", "/app/notes/", {"title": "x" * 201}, 400, "at most 200 characters, got 201 (field 'title')"),
        ("post", "/app/notes/", {"title": 5}, 400, "title"),
        ("put", "/app/notes/1", {"title": ""}, 400, "must not be blank (field 'title')"),
        ("get", "/app/notes/abc", None, 404, ""),
    ],
)
def test_notes_refuse_bad_requests_with_a_clear_message(
    plugin_client: Any, method: str, url: str, body: object, status: int, detail: str
) -> None:
    client = plugin_client(NOTES)
    assert client.post("/app/notes/", json={"title": "first"}).status_code == 201
    response = client.request(method.upper(), url, json=body) if body is not None else client.request(method, url)
    assert response.status_code == status, response.text
    assert detail in response.json().get("detail", "")


def test_notes_validation_errors_name_the_field_for_the_page_form(plugin_client: Any) -> None:
    """The page shows each of the problem's `errors` next to its field."""
    client = plugin_client(NOTES)
    for title, message in [("  ", "must not be blank"), ("x" * 201, "at most 200 characters, got 201")]:
        problem = client.post("/app/notes/", json={"title": title, "body": "b"}).json()
        assert problem["errors"] == [{"field": "title", "message": message, "source": "body"}]


@pytest.mark.parametrize(
    ("roles", "permissions", "read", "write"),
    [
        (("user",), (), 200, 403),
        (("user",), ("notes.write",), 200, 201),
        (("admin",), (), 200, 403),
        (("superadmin",), (), 200, 201),
    ],
)
def test_notes_writes_need_the_notes_write_permission(
    plugin_client: Any, roles: tuple[str, ...], permissions: tuple[str, ...], read: int, write: int
) -> None:
    client = plugin_client(NOTES, roles=roles, permissions=permissions)
    assert client.get("/app/notes/").status_code == read
    assert client.post("/app/notes/", json={"title": "t"}).status_code == write
    changed, deleted = (200, 204) if write == 201 else (403, 403)
    assert client.put("/app/notes/1", json={"title": "u"}).status_code == changed
    refused = client.delete("/app/notes/1")
    assert refused.status_code == deleted
    if deleted == 403:
        assert "notes.write" in refused.json()["detail"]
    assert plugin_client(NOTES, login=False).get("/app/notes/").status_code == 401


def test_notes_offers_its_page_to_every_logged_in_user(plugin_client: Any) -> None:
    client = plugin_client(NOTES, roles=("user",))
    assert [(p["path"], p["title"], p["permission"]) for p in client.plugin.pages] == [("notes", "Notes", None)]
    [page] = client.get("/api/me/pages").json()["pages"]
    assert (page["href"], page["module"], page["icon"]) == (
        "/admin/apps/notes/notes", "/app/notes/static/notes.js", "/app/notes/static/notes.svg",
    )  # fmt: skip
    module = client.get(page["module"])
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    assert client.get(page["icon"]).headers["content-type"].startswith("image/svg+xml")


def test_notes_purge_empty_deletes_the_notes_without_a_body(plugin_client: Any) -> None:
    client = plugin_client(NOTES)
    for title, body in [("a", "kept"), ("b", ""), ("c", "  ")]:
        assert client.post("/app/notes/", json={"title": title, "body": body}).status_code == 201
    run = next(m for n, m in sys.modules.items() if n.startswith("xcore_plugin_notes_") and n.endswith(".run"))
    ctx = run.PluginContext("notes", "1.1.0", client.runtime.data.root / "plugin-data" / "notes")
    assert run.purge_empty(ctx) == 2
    assert [n["title"] for n in client.get("/app/notes/").json()] == ["a"]
