"""The blocklist and safe mode (issue 26): versions that never load, and a start with every plugin off, asked
for (`xcore serve --safe`) or after repeated failed starts, naming the suspect. The safe-mode starts are real
`xcore serve` processes, with a plugin that kills the server while it loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import XcoreServer, run_xcore
from test_plugin_manager import Host, configured_runtime, eventually, make_zip, open_host, preinstall, route, upload
from test_plugins_e2e import pack, write_plugin
from xcore.plugins import safemode
from xcore.runtime import Runtime, open_runtime

BLOCKLIST = json.dumps([{"id": "memo", "versions": ">=1.1,<1.2", "reason": "it deletes every note (CVE-0)"}])


@pytest.fixture
def blocking_host(tmp_path: Path) -> Iterator[tuple[Host, Runtime]]:
    with (
        configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__BLOCKLIST=BLOCKLIST) as runtime,
        open_host(runtime, tmp_path / "staging") as host,
    ):
        yield host, runtime


def test_a_blocked_version_never_loads_and_an_older_one_keeps_serving(blocking_host: tuple[Host, Runtime]) -> None:
    host, _ = blocking_host
    host.drop(make_zip(host.staging, "memo", "1.0.0", route("old")), "memo.zip")
    host.wait_view("memo", "active")
    host.drop(make_zip(host.staging / "2", "memo", "1.1.0", route("bad")), "memo-1.1.0.zip")
    blocked = "blocked: it deletes every note (CVE-0) (manager.plugins.blocklist: memo >=1.1,<1.2)"
    eventually(lambda: _expect_in(blocked, host.wait_view("memo", "active", serving="1.0.0")["error"]))
    assert host.get("/app/memo/hello").json()["says"] == "old"
    refused = upload(host, make_zip(host.staging / "3", "memo", "1.1.5", route("bad")))
    assert refused.status_code == 422 and refused.json()["rule"] == "blocked", refused.text
    assert "it deletes every note" in refused.json()["detail"]
    host.drop(make_zip(host.staging / "4", "memo", "1.2.0", route("fixed")), "memo-1.2.0.zip")
    host.wait_view("memo", "active", serving="1.2.0")


def _expect_in(part: str, text: str | None) -> bool:
    assert text is not None and part in text, text
    return True


def test_a_serving_version_the_blocklist_names_is_unloaded_at_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with configured_runtime(data) as runtime:
        preinstall(runtime, make_zip(tmp_path / "z", "memo", "1.1.0", route("bad")))
    rt = open_runtime(data, environ={"XCORE_MANAGER__PLUGINS__BLOCKLIST": BLOCKLIST})
    try:
        with open_host(rt, tmp_path / "staging") as host:
            view = host.wait_view("memo", "failed")
            assert view["error"].startswith("1.1.0 failed: blocked: it deletes every note")
            assert host.get("/app/memo/hello").status_code == 404
    finally:
        rt.close()


def test_the_local_blocklist_is_read_again_when_the_settings_file_changes(tmp_path: Path) -> None:
    from xcore.plugins.blocklist import LocalBlocklist
    from xcore.plugins.manifest import Manifest

    memo = Manifest(id="memo", version="1.1.0")
    settings = tmp_path / "data" / "config.json"
    with configured_runtime(tmp_path / "data") as runtime:
        held = LocalBlocklist(runtime)
        assert held.from_file and not held.changed() and held.blocked(memo) is None
        settings.write_text(json.dumps({"manager": {"plugins": {"blocklist": json.loads(BLOCKLIST)}}}))
        assert held.changed() and held.reread() and not held.changed()
        assert held.blocked(memo) == (
            "blocked: it deletes every note (CVE-0) (manager.plugins.blocklist: memo >=1.1,<1.2)"
        )
        assert held.blocked(Manifest(id="memo", version="1.2.0")) is None
        settings.write_text('{"manager": {"plugins": {"blocklist": [{"id": "Memo"}]}}}  ')
        assert held.changed() and not held.reread(), "a file that does not validate keeps the list held"
        assert held.blocked(memo) is not None
        settings.unlink()
        assert held.changed() and held.reread() and held.blocked(memo) is None
    with configured_runtime(tmp_path / "env", XCORE_MANAGER__PLUGINS__BLOCKLIST=BLOCKLIST) as runtime:
        held = LocalBlocklist(runtime)  # the environment sets it, as at a start: the file does not
        (tmp_path / "env" / "config.json").write_text(json.dumps({"manager": {"plugins": {"blocklist": []}}}))
        assert held.changed() and not held.reread() and held.blocked(memo) is not None


def test_a_blocklist_entry_in_the_settings_file_unloads_a_serving_version_and_its_removal_loads_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with configured_runtime(data) as runtime, open_host(runtime, tmp_path / "staging") as host:
        host.drop(make_zip(host.staging, "memo", "1.1.0", route("new")), "memo.zip")
        host.wait_view("memo", "active")
        (data / "config.json").write_text(json.dumps({"manager": {"plugins": {"blocklist": json.loads(BLOCKLIST)}}}))
        view = host.wait_view("memo", "failed")
        assert view["error"].startswith("1.1.0 failed: blocked: it deletes every note"), view
        assert host.get("/app/memo/hello").status_code == 404
        (data / "config.json").write_text("{}")
        host.wait_view("memo", "active")
        assert host.get("/app/memo/hello").json()["says"] == "new"


@pytest.mark.e2e  # real `xcore serve` processes
def test_a_blocklist_entry_written_to_the_settings_file_unloads_a_serving_version_in_every_worker(
    tmp_path: Path,
) -> None:
    from conftest import PASSWORDS, free_port, until

    data = tmp_path / "data"
    with configured_runtime(data) as runtime:  # set up (root): /app answers 503 before
        preinstall(runtime, make_zip(tmp_path / "z", "calm", "1.0.0", route("here")))
    settings = data / "config.json"
    server = XcoreServer(data, free_port(), ("--workers", "2"))

    def answers(status: int) -> bool:  # several requests in a row: each of the two workers answers some of them
        return all(client.get("/app/calm/hello").status_code == status for _ in range(12))

    def listed() -> str:
        return run_xcore("plugin", "list", "--data-dir", str(data)).stdout

    try:
        server.wait_ready(60)
        client = httpx.Client(base_url=server.url, timeout=5)
        login = client.post("/api/auth/login", json={"username": "root", "password": PASSWORDS["root"]})
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        assert until(lambda: answers(200), "calm serves", context=lambda: server.output)
        entry = {"id": "calm", "versions": "==1.0.0", "reason": "it leaks notes"}
        settings.write_text(json.dumps({"manager": {"plugins": {"blocklist": [entry]}}}))
        assert until(lambda: answers(404), "calm is unloaded by every worker", context=lambda: server.output)
        assert until(lambda: "blocked: it leaks notes (manager.plugins.blocklist: calm ==1.0.0)" in listed(), "why")
        # Each worker re-reads the file and says so; its line may reach the output after the requests' answers.
        said = lambda: server.output.count("manager.plugins.blocklist changed")  # noqa: E731
        assert until(lambda: said() >= 2, "each worker to say it re-read the file", context=lambda: server.output)

        # A file that no longer validates: a warning naming the key, and the list held stays.
        settings.write_text(json.dumps({"manager": {"plugins": {"blocklist": [{"id": "calm", "versions": "soon"}]}}}))
        assert until(lambda: "does not validate" in server.output, "the warning", context=lambda: server.output)
        warning = next(line for line in server.output.splitlines() if "does not validate" in line)
        assert "manager.plugins.blocklist[0]: versions: 'soon' is not a PEP 440 specifier" in warning, warning
        assert "stays as it was" in warning, warning
        assert answers(404)

        settings.write_text(json.dumps({"manager": {"plugins": {"blocklist": []}}}))  # the entry removed
        assert until(lambda: answers(200), "calm serves again", context=lambda: server.output)
        assert server.stop() == 0
    finally:
        server.kill()


def test_the_journal_counts_failed_starts_and_names_the_plugin_whose_load_was_cut_short(tmp_path: Path) -> None:
    assert safemode.begin_start(tmp_path, forced=False) is None
    safemode.mark_up(tmp_path)
    for _ in range(safemode.SAFE_AFTER):  # starts that never came up
        assert safemode.begin_start(tmp_path, forced=False) is None
        safemode.loading(tmp_path, "crasher", "2.0.0")
    mode = safemode.begin_start(tmp_path, forced=False)
    assert mode == safemode.SafeMode("the last 3 starts failed before the server came up", "crasher 2.0.0")
    safemode.loaded(tmp_path)
    safemode.mark_up(tmp_path)
    assert safemode.begin_start(tmp_path, forced=False) is None, "a start that came up resets the count"
    forced = safemode.begin_start(tmp_path, forced=True)
    assert forced is not None and forced.reason == "asked for with --safe"


def test_a_failed_start_counts_only_when_it_had_plugins_to_load_and_names_the_last_one_loaded(
    tmp_path: Path,
) -> None:
    for _ in range(safemode.SAFE_AFTER + 2):  # starts that failed with no plugin to load: the port taken, say
        assert safemode.begin_start(tmp_path, forced=False) is None
    for n in range(safemode.SAFE_AFTER):  # starts that loaded every plugin, then died before they came up
        assert safemode.begin_start(tmp_path, forced=False) is None
        safemode.loading(tmp_path, "quiet", "1.0.0")
        safemode.loaded(tmp_path)
        safemode.loading(tmp_path, "greedy", f"3.0.{n}")
        safemode.loaded(tmp_path)
        assert not (tmp_path / safemode.LOADING_FILE).exists()
    mode = safemode.begin_start(tmp_path, forced=False)
    assert mode == safemode.SafeMode("the last 3 starts failed before the server came up", "greedy 3.0.2")
    mode = safemode.begin_start(tmp_path, forced=False)  # the safe start failed too, loading nothing
    assert mode == safemode.SafeMode("the last 3 starts failed before the server came up", "greedy 3.0.2")
    safemode.mark_up(tmp_path)
    assert safemode.begin_start(tmp_path, forced=False) is None


CRASHER = """\
import os

os._exit(3)  # what a plugin with a crashing C extension does to the process that imports it
"""


@pytest.mark.e2e  # real `xcore serve` processes
def test_a_plugin_that_kills_the_start_brings_safe_mode_after_three_tries_then_it_can_be_removed(
    tmp_path: Path,
) -> None:
    from conftest import free_port

    data = tmp_path / "data"
    (data / "plugins").mkdir(parents=True)
    bundle = pack(write_plugin(tmp_path / "src", "crasher", "2.0.0", CRASHER), tmp_path / "dist")
    (data / "plugins" / bundle.name).write_bytes(bundle.read_bytes())
    outputs = []
    for _ in range(safemode.SAFE_AFTER):
        server = XcoreServer(data, free_port())
        code = server.process.wait(timeout=60)
        outputs.append(server.output)
        server._output.close()
        assert code != 0, server.output
    server = XcoreServer(data, free_port())
    try:
        health = server.wait_ready(60).json()
        assert health["safe_mode"] == {
            "reason": "the last 3 starts failed before the server came up", "suspect": "crasher 2.0.0"
        }  # fmt: skip
        assert "SAFE MODE: every plugin is off for this run" in server.output
        assert "the suspect is plugin crasher 2.0.0" in server.output
        assert health["plugins"]["disabled"] == 1
        assert server.stop() == 0
    finally:
        server.kill()
    removed = run_xcore("plugin", "remove", "crasher", "--yes", "--data-dir", str(data))
    assert removed.returncode == 0, removed.stderr
    server = XcoreServer(data, free_port())
    try:
        health = server.wait_ready(60).json()
        assert health.get("safe_mode") is None, "the start that came up in safe mode reset the count"
    finally:
        server.kill()


@pytest.mark.e2e  # real `xcore serve` processes
def test_serve_safe_turns_every_plugin_off_for_that_run_only(tmp_path: Path) -> None:
    from conftest import free_port

    data = tmp_path / "data"
    (data / "plugins").mkdir(parents=True)
    bundle = pack(write_plugin(tmp_path / "src", "calm", "1.0.0", route("here")), tmp_path / "dist")
    (data / "plugins" / bundle.name).write_bytes(bundle.read_bytes())
    server = XcoreServer(data, free_port(), ("--safe",))
    try:
        health = server.wait_ready(60).json()
        assert health["safe_mode"]["reason"] == "asked for with --safe"
        assert health["plugins"]["disabled"] == 1 and health["plugins"]["active"] == 0
        assert httpx.get(server.url + "/app/calm/hello").status_code != 200
        assert server.stop() == 0
    finally:
        server.kill()
    server = XcoreServer(data, free_port())
    try:
        health = server.wait_ready(60).json()
        assert health.get("safe_mode") is None and health["plugins"]["active"] == 1, "the enabled flags were kept"
    finally:
        server.kill()
