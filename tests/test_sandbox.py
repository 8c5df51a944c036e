"""Sandboxed plugins (issue 23): a bundle with `"sandbox": true` runs in a worker process of its own, confined.

Each test runs what a worker of the server serves (conftest's `plugin_host`) with real zips; a sandboxed plugin's
requests go through a real worker process, forked by the sandbox's fork server and confined with Landlock,
seccomp and resource limits.
The escape tests are one hostile bundle that tries, per route, what a stranger's plugin would try; each attempt
must be blocked while the host keeps serving.
"""

from __future__ import annotations

import json
import os
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_tasks as tasks_module
from conftest import create_account, fresh_python, plugin_host
from test_plugin_manager import Host, configured_runtime, eventually, login, make_zip, open_host, route
from xcore.plugins.store import plugin_data_dir
from xcore.runtime import Runtime

PROBE = """
import os, socket, subprocess, time
from pathlib import Path
from litestar import Response
from litestar.datastructures import Cookie
from xcore.sdk import Ctx, Request, get, post


def attempt(action):
    try:
        return {"outcome": "done", "detail": str(action())[:200]}
    except BaseException as exc:  # what the sandbox raised
        return {"outcome": "blocked", "detail": f"{type(exc).__name__}: {exc}"[:300]}


def data_root(ctx):
    return Path(ctx.data_dir).parent.parent


@get("/try/{what:str}", sync_to_thread=True)
def try_it(ctx: Ctx, what: str) -> dict:
    root = data_root(ctx)
    actions = {
        "secret": lambda: (root / "secret.key").read_text(),
        "core-db": lambda: (root / "xcore.db").read_bytes()[:16],
        "other-plugin": lambda: (root / "plugin-data" / "other" / "notes.txt").read_text(),
        "plugins-folder": lambda: os.listdir(root / "plugins"),
        "write-outside": lambda: (root / "planted.txt").write_text("x"),
        "write-own": lambda: (Path(ctx.data_dir) / "mine.txt").write_text("mine"),
        "read-own": lambda: (Path(ctx.data_dir) / "mine.txt").read_text(),
        "host-environ": lambda: Path(f"/proc/{os.getppid()}/environ").read_bytes()[:50],
        "signal-host": lambda: os.kill(os.getppid(), 0),
        "fork": lambda: os.fork(),
        "shell": lambda: subprocess.run(["/bin/sh", "-c", "echo escaped"], capture_output=True).stdout,
        "connect": lambda: socket.create_connection(("127.0.0.1", int(ctx.config["port"])), timeout=2),
        "memory": lambda: len(bytearray(4 * 1024**3)),
        "etc-passwd": lambda: Path("/etc/passwd").read_text()[:20],
        "chmod": lambda: os.chmod(root / "secret.key", 0o644),
        "unix-socket": lambda: socket.socket(socket.AF_UNIX).connect(str(root / "host.sock")),
        "hashlib": lambda: __import__("hashlib").sha256(b"x").hexdigest()[:8],
        "zlib": lambda: len(__import__("zlib").compress(b"x" * 100)),
        "environment": lambda: sorted(k for k in os.environ if k.startswith("XCORE") or "SECRET" in k),
    }
    return attempt(actions[what])


@get("/who", sync_to_thread=False)
def who(request: Request, ctx: Ctx) -> dict:
    user = request.scope.get("user")
    return {
        "pid": os.getpid(),
        "user": user.username if user else None,
        "roles": sorted(user.roles) if user else [],
        "headers": sorted(request.headers.keys()),
        "config": dict(ctx.config),
    }


@get("/exit", sync_to_thread=False)
def exit_now() -> dict:
    os._exit(3)


@get("/abort", sync_to_thread=False)
def abort_now() -> dict:
    os.abort()


@get("/segfault", sync_to_thread=False)
def segfault_now() -> dict:
    import ctypes
    ctypes.string_at(0)


@get("/spin", sync_to_thread=False)
def spin() -> dict:
    while True:
        pass


@get("/cookie", sync_to_thread=False)
def cookie() -> Response:
    headers = {"Set-Cookie": "xcore_access=forged; Path=/", "X-Plugin": "kept"}
    return Response({"set": True}, headers=headers, cookies=[Cookie(key="probe_pref", value="dark")])


@get("/forge/{how:str}", sync_to_thread=False)
def forge(how: str) -> dict:
    # A stranger's code reaches past the SDK: it finds its worker's frame of this request and writes a frame of
    # its own for it, as any code in the worker could.
    import sys
    frame = sys._getframe()
    while frame is not None and not (frame.f_code.co_name == "http" and "number" in frame.f_locals):
        frame = frame.f_back
    worker, number = frame.f_locals["self"], frame.f_locals["number"]
    forged = {
        "status": ["response", number, 999, [], b""],
        "crlf": ["response", number, 200, [[b"x-a", b"b\\r\\nset-cookie: xcore_access=forged"]], b""],
        "name": ["response", number, 200, [[b"bad name", b"x"]], b""],
        "types": ["response", number, "200", "not headers", 42],
        "body": ["start", number, 200, []],
    }[how]
    worker.send(*forged)
    if how == "body":
        worker.send("body", number, "not bytes", False)
    return {"forged": how}


@post("/echo", sync_to_thread=False)
def echo(data: dict) -> dict:
    return {"got": data}


router = [try_it, who, exit_now, abort_now, segfault_now, spin, echo, cookie, forge]
"""


def probe_zip(staging: Path, port: int = 9, version: str = "1.0.0", plugin_id: str = "probe", **manifest: Any) -> Path:
    manifest.setdefault("sandbox", True)
    return make_zip(
        staging, plugin_id, version, PROBE, extra_files={"config.json": json.dumps({"port": port})}, **manifest
    )


@pytest.fixture
def listener() -> Iterator[int]:
    """listener is the port of a TCP socket on 127.0.0.1 that accepts connections (the host's port, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def boxes(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    """boxes: a running plugin host with an empty plugins folder and the owner account root."""
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


@pytest.fixture
def probed(boxes: Host, listener: int) -> Host:
    host = boxes
    other = plugin_data_dir(host.runtime, "other")
    other.mkdir(parents=True, exist_ok=True)
    (other / "notes.txt").write_text("another plugin's data")
    host.drop(probe_zip(host.staging, listener))
    host.wait_view("probe", "active")
    return host


def outcome(host: Host, what: str) -> dict[str, str]:
    response = host.get(f"/app/probe/try/{what}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_sandboxed_plugin_serves_from_its_own_process_with_the_principal_and_no_credentials(probed: Host) -> None:
    body = probed.get("/app/probe/who").json()
    assert body["pid"] != os.getpid()
    assert Path(f"/proc/{body['pid']}/comm").read_text().strip() == "xplug:probe", "ps and top name the plugin"
    assert body["user"] == "root" and body["roles"] == ["superadmin"]
    assert "authorization" not in body["headers"] and "cookie" not in body["headers"]
    assert body["config"]["port"] > 0
    view = probed.view("probe")
    assert view is not None and "GET /app/probe/who" in view["routes"]
    assert view["sandbox"]["state"] == "running"
    assert all(view["sandbox"]["layers"][name].startswith("active") for name in ("landlock-fs", "seccomp"))
    assert "/app/probe/who" in probed.openapi_paths()
    assert probed.get("/app/probe/who", headers={}).status_code == 401, "the host's ACCESS_RULES still apply"


@pytest.mark.parametrize(
    "what",
    [
        "secret",
        "core-db",
        "other-plugin",
        "plugins-folder",
        "write-outside",
        "host-environ",
        "signal-host",
        "fork",
        "shell",
        "connect",
        "memory",
        "etc-passwd",
        "chmod",
        "unix-socket",
    ],
)
def test_an_escape_attempt_is_blocked_and_the_host_serves_on(probed: Host, what: str) -> None:
    result = outcome(probed, what)
    assert result["outcome"] == "blocked", result
    assert probed.get("/api/version").status_code == 200
    assert not (probed.runtime.data.root / "planted.txt").exists()


def test_the_network_needs_both_the_plugins_request_and_the_operators_leave(tmp_path: Path, listener: int) -> None:
    limits = json.dumps({"asks": {"network": True}, "silent": {"network": True}, "refused": {"network": False}})
    runtime = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__LIMITS_BY_PLUGIN=limits)
    with runtime as rt, open_host(rt, tmp_path / "staging") as running:
        running.drop(probe_zip(running.staging, listener, plugin_id="asks", network=True))
        running.drop(probe_zip(running.staging, listener, plugin_id="silent"))
        running.drop(probe_zip(running.staging, listener, plugin_id="refused", network=True))
        for plugin_id in ("asks", "silent", "refused"):
            running.wait_view(plugin_id, "active")
        outcomes = {p: running.get(f"/app/{p}/try/connect").json()["outcome"] for p in ("asks", "silent", "refused")}
        assert outcomes == {"asks": "done", "silent": "blocked", "refused": "blocked"}
        assert running.get("/app/asks/try/secret").json()["outcome"] == "blocked", "the network opens nothing else"


def test_a_plugin_cannot_set_the_hosts_cookies_but_sets_its_own(probed: Host) -> None:
    response = probed.get("/app/probe/cookie")
    assert response.status_code == 200, response.text
    cookies = response.headers.get_list("set-cookie")
    assert not any(c.lower().startswith("xcore_") for c in cookies), cookies
    assert any(c.startswith("probe_pref=dark") for c in cookies), cookies
    assert response.headers["x-plugin"] == "kept"


@pytest.mark.parametrize("how", ["status", "crlf", "name", "types", "body"])
def test_a_forged_answer_from_the_worker_is_refused_and_the_host_serves_on(probed: Host, how: str) -> None:
    if how == "body":  # the answer had started: it is cut off, as for any app failing mid-response
        with pytest.raises(Exception, match="after response started"):
            probed.get(f"/app/probe/forge/{how}")
    else:
        response = probed.get(f"/app/probe/forge/{how}")
        assert response.status_code == 502, response.text
        assert "invalid response" in response.json()["detail"]
        assert "xcore_access=forged" not in str(response.headers)
    assert probed.get("/api/version").status_code == 200
    assert probed.get("/app/probe/who").status_code == 200


def test_the_standard_library_works_inside_the_sandbox(probed: Host) -> None:
    assert outcome(probed, "hashlib") == {"outcome": "done", "detail": "2d711642"}
    assert outcome(probed, "zlib")["outcome"] == "done"


def test_a_request_body_reaches_the_worker_and_a_bad_one_gets_the_plugins_own_answer(probed: Host) -> None:
    sent = {"text": "é" * 1000, "items": list(range(100))}
    response = probed.client.post("/app/probe/echo", json=sent, headers=probed.root)
    assert response.status_code == 201, response.text
    assert response.json() == {"got": sent}
    broken = probed.client.post(
        "/app/probe/echo", content=b"{not json", headers={**probed.root, "content-type": "application/json"}
    )
    assert broken.status_code == 400, broken.text
    assert broken.headers["content-type"].startswith("application/problem+json")


def test_a_large_body_and_answer_go_through_and_the_worker_lives_on(probed: Host) -> None:
    """A body of some 100 KB or more made the worker's libuv use its io_uring ring, which the seccomp filter
    refused, and libuv aborted (signal 6): the worker runs on asyncio's own loop, which has no ring."""
    pid = probed.get("/app/probe/who").json()["pid"]
    sent = {"text": "x" * 3_000_000}
    response = probed.client.post("/app/probe/echo", json=sent, headers=probed.root)
    assert response.status_code == 201, response.text
    assert response.json() == {"got": sent}
    assert probed.get("/app/probe/who").json()["pid"] == pid, "the same worker: it did not die on the way"


def test_the_plugin_has_its_own_data_folder_and_no_host_settings(probed: Host) -> None:
    assert outcome(probed, "write-own")["outcome"] == "done"
    assert outcome(probed, "read-own") == {"outcome": "done", "detail": "mine"}
    assert (plugin_data_dir(probed.runtime, "probe") / "mine.txt").read_text() == "mine"
    assert outcome(probed, "environment") == {"outcome": "done", "detail": "[]"}


@pytest.mark.parametrize(
    ("crash", "reason"),
    [
        ("exit", "it exited with code 3"),
        ("abort", "it was killed by signal 6"),
        ("segfault", "it was killed by signal 11"),
    ],
)
def test_a_crashed_worker_answers_502_alone_and_comes_back(probed: Host, crash: str, reason: str) -> None:
    first = probed.get("/app/probe/who").json()["pid"]
    assert probed.get(f"/app/probe/{crash}").status_code == 502
    assert probed.get("/api/version").status_code == 200
    view = eventually(lambda: _crashed(probed))
    assert view["sandbox"]["state"].startswith(f"crashed ({reason}), restarting in"), view["sandbox"]
    assert "crashed" in view["error"]
    answer = probed.get("/app/probe/who")
    assert answer.status_code in (200, 502), answer.text
    restarted = eventually(lambda: _served_by_another(probed, first), timeout=15)
    assert restarted != first


def test_under_require_a_host_without_a_layer_refuses_the_plugin_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has every layer, so the kernel's answer is replaced by one without seccomp: the decision, not
    the confinement, is what is tested here (tests/test_confine.py tests the layers)."""
    from xcore.config.schema import PluginsConfig
    from xcore.plugins import sandbox
    from xcore.plugins.confine import Confinement
    from xcore.plugins.manifest import Manifest

    layers = {**available_layers(), "seccomp": "unavailable: the kernel has no seccomp (CONFIG_SECCOMP)"}
    monkeypatch.setattr(sandbox, "available", lambda: Confinement(layers))
    plain = Manifest(id="plain", version="1.0.0")
    sandboxed, refusal = sandbox.sandbox_reason(plain, PluginsConfig(sandbox="require"))
    assert sandboxed and "seccomp: unavailable: the kernel has no seccomp" in refusal
    assert sandbox.sandbox_reason(plain, PluginsConfig(sandbox="require", trusted=["plain"])) == (False, "")
    assert sandbox.sandbox_reason(plain, PluginsConfig(sandbox="allow")) == (False, "")


def available_layers() -> dict[str, str]:
    from xcore.plugins.confine import available

    return dict(available().layers)


def _crashed(host: Host) -> dict[str, Any]:
    view = host.view("probe")
    assert view is not None and view["sandbox"]["state"].startswith("crashed"), view
    return view


def _served_by_another(host: Host, pid: int) -> int:
    response = host.get("/app/probe/who")
    assert response.status_code == 200, response.text
    assert response.json()["pid"] != pid
    return int(response.json()["pid"])


def test_a_request_past_its_time_limit_gets_504_and_the_worker_is_replaced(tmp_path: Path, listener: int) -> None:
    limits = json.dumps({"probe": {"request_timeout": 1}})
    runtime = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__LIMITS_BY_PLUGIN=limits)
    with runtime as rt, open_host(rt, tmp_path / "staging") as running:
        running.drop(probe_zip(running.staging, listener))
        running.wait_view("probe", "active")
        first = running.get("/app/probe/who").json()["pid"]
        started = time.monotonic()
        assert running.get("/app/probe/spin").status_code == 504
        assert time.monotonic() - started < 10
        assert running.get("/api/version").status_code == 200
        eventually(lambda: _served_by_another(running, first), timeout=15)


def test_a_new_version_replaces_the_worker_and_the_old_one_exits(probed: Host, listener: int) -> None:
    old = probed.get("/app/probe/who").json()["pid"]
    probed.drop(probe_zip(probed.staging, listener, version="2.0.0"), name="probe-1.0.0.zip")
    probed.wait_view("probe", "active", version="2.0.0")
    new = probed.get("/app/probe/who").json()["pid"]
    assert new != old
    eventually(lambda: _gone(old))


def _gone(pid: int) -> None:
    """_gone passes when process `pid` has exited: no such process, or a zombie. It may be reaped between the two
    looks (reading /proc/<pid>/stat then fails with ESRCH or ENOENT): gone too."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read()
    except (ProcessLookupError, FileNotFoundError):
        return
    assert state.split(") ", 1)[1].startswith("Z"), f"worker {pid} still runs"


def test_under_require_every_untrusted_plugin_is_sandboxed(tmp_path: Path) -> None:
    env = {"XCORE_MANAGER__PLUGINS__SANDBOX": "require", "XCORE_MANAGER__PLUGINS__TRUSTED": '["trusted"]'}
    pid_route = route("x").replace("\"says\": 'x'", '"says": __import__("os").getpid()')
    with configured_runtime(tmp_path / "data", **env) as rt, open_host(rt, tmp_path / "staging") as running:
        running.drop(make_zip(running.staging, "plain", "1.0.0", pid_route))
        running.drop(make_zip(running.staging, "trusted", "1.0.0", pid_route))
        assert running.wait_answer("/app/plain/hello")["says"] != os.getpid()
        assert running.wait_answer("/app/trusted/hello")["says"] == os.getpid()


def test_with_the_sandbox_off_a_bundle_asking_for_one_is_refused(tmp_path: Path) -> None:
    runtime = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__SANDBOX="off")
    with runtime as rt, open_host(rt, tmp_path / "staging") as running:
        running.drop(make_zip(running.staging, "boxed", "1.0.0", route("inside"), sandbox=True))
        view = running.wait_view("boxed", "failed")
        assert "sandbox is off" in view["error"]
        assert running.get("/app/boxed/hello").status_code == 404


def test_a_sandboxed_plugin_that_fails_to_import_fails_alone_with_the_reason(boxes: Host) -> None:
    host = boxes
    host.drop(make_zip(host.staging, "broken", "1.0.0", "import nowhere_to_be_found\n", sandbox=True))
    view = host.wait_view("broken", "failed")
    assert "nowhere_to_be_found" in view["error"]
    assert host.get("/api/version").status_code == 200


# --- tasks ---------------------------------------------------------------------------------------------------


def sandboxed_tasks_bundles(folder: Path) -> list[Path]:
    """The task plugin of test_tasks.py (tk: record, always_fails, too_slow, purge) and its periodic one (pp:
    tick every 0.3 s, nightly), both with "sandbox": true."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for plugin_id, code, extra in [
        ("tk", tasks_module.RUN_PY.format(version="1.0.0"), {"permissions": ["tk.purge"]}),
        ("pp", tasks_module.PERIODIC_PY.format(every=0.3, fail=False), {}),
    ]:
        path = folder / f"{plugin_id}-1.0.0.zip"
        with zipfile.ZipFile(path, "w") as archive:
            manifest = {"id": plugin_id, "version": "1.0.0", "sandbox": True, **extra}
            archive.writestr("plugin.json", json.dumps(manifest))
            archive.writestr("run.py", code)
        made.append(path)
    return made


@pytest.fixture
def tasks_host(runtime: Runtime, tmp_path: Path) -> Iterator[tasks_module.Host]:
    create_account(runtime, "root", ["superadmin"])
    for bundle in sandboxed_tasks_bundles(tmp_path):
        tasks_module.install(runtime, bundle, bundle.name)
    with plugin_host(runtime, tasks=True) as client:
        yield tasks_module.Host(client, runtime)


def test_a_sandboxed_plugins_tasks_are_journalled_by_the_host_and_run_in_its_worker(
    tasks_host: tasks_module.Host,
) -> None:
    host = tasks_host
    run_id = host.enqueue("record", text="boxed", fail_first=1)  # enqueued by the plugin, inside its worker
    run = tasks_module.until(lambda: tasks_module.finished(host.runtime, run_id), "the run to finish")
    assert (run.status, run.attempt, run.plugin_id) == ("succeeded", 2, "tk")
    assert run.pid == os.getpid(), "the host's consumer ran it (and the worker executed it)"
    assert [h["text"] for h in host.get("/app/tk/hits")] == ["boxed", "boxed"]

    failing = host.enqueue("always_fails")
    run = tasks_module.until(lambda: tasks_module.finished(host.runtime, failing), "the failing run to finish")
    assert run.status == "failed" and run.error is not None and run.error.startswith("SandboxTaskError")
    assert "ValueError: this task always fails" in run.error and "raise ValueError" in (run.traceback or "")

    slow = host.enqueue("too_slow")
    run = tasks_module.until(lambda: tasks_module.finished(host.runtime, slow), "the slow run to finish")
    assert run.status == "failed" and "timeout of 0.3 s" in (run.error or "")

    tasks_module.until(lambda: host.get("/app/pp/ticks") >= 3, "three ticks of the periodic task, in its worker")


def test_a_sandboxed_plugin_cannot_enqueue_another_plugins_or_the_cores_tasks(tasks_host: tasks_module.Host) -> None:
    sandboxed = tasks_host.client.manager.loaded["tk"].sandbox
    assert sandboxed._answer(["enqueue", "xcore.backup", [], {}, None, None])[0] == "refused"
    assert sandboxed._answer(["enqueue", "other.task", [], {}, None, None])[0] == "refused"
    assert sandboxed._answer(["enqueue", "tk.record", [], {}, None, None]) == [
        "refused",
        "TaskArgumentsError: tk.record(text, fail_first=0): missing a required argument: 'text'",
    ]


def test_a_plugin_authors_tests_can_run_the_plugin_sandboxed(plugin_client: Any, tmp_path: Path) -> None:
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "plugin.json").write_text(json.dumps({"id": "hello", "version": "1.0.0"}))
    (folder / "run.py").write_text(route("hi").replace("\"says\": 'hi'", '"says": __import__("os").getpid()'))
    client = plugin_client(folder, sandbox=True)
    assert client.plugin.sandbox is not None and client.plugin.sandbox["state"] == "running"
    assert client.get("/app/hello/hello").json()["says"] != os.getpid()


def test_worker_log_records_reach_the_hosts_log_with_the_plugins_context(boxes: Host) -> None:
    code = route("x").replace(
        "def answer(ctx: Ctx) -> dict[str, object]:\n",
        'def answer(ctx: Ctx) -> dict[str, object]:\n    ctx.logger.warning("a word from the box %s", 42)\n',
    )
    boxes.drop(make_zip(boxes.staging, "talker", "1.0.0", code, sandbox=True))
    boxes.wait_answer("/app/talker/hello")
    records = eventually(lambda: _logged(boxes.runtime, "a word from the box 42"))
    assert records[0]["level"] == "WARNING" and records[0]["context"] == "plugins"
    assert records[0]["logger"] == "xcore.plugins.talker"


def test_a_worker_flooding_its_log_is_cut_to_a_rate(boxes: Host) -> None:
    code = route("x").replace(
        "def answer(ctx: Ctx) -> dict[str, object]:\n",
        "def answer(ctx: Ctx) -> dict[str, object]:\n"
        '    for n in range(5000):\n        ctx.logger.warning("flood %d", n)\n',
    )
    boxes.drop(make_zip(boxes.staging, "flood", "1.0.0", code, sandbox=True))
    boxes.wait_answer("/app/flood/hello")
    notice = eventually(lambda: _logged(boxes.runtime, "the rest of them are dropped"))
    assert notice[0]["logger"] == "xcore.plugins.flood"
    relayed = [r for r in _logged(boxes.runtime, "flood ") if r["message"].startswith("flood ")]
    assert 0 < len(relayed) <= 2 * 200, "at most two seconds' worth of the 5,000 lines"


def test_a_worker_writing_no_line_break_is_still_read_and_keeps_serving(boxes: Host) -> None:
    code = route("x").replace(
        "def answer(ctx: Ctx) -> dict[str, object]:\n",
        "def answer(ctx: Ctx) -> dict[str, object]:\n"
        "    import sys\n    sys.stderr.write('endless' * 100_000)\n    sys.stderr.flush()\n",
    )
    boxes.drop(make_zip(boxes.staging, "noeol", "1.0.0", code, sandbox=True))
    boxes.wait_answer("/app/noeol/hello")
    for _ in range(3):  # 700 KB without a line break each time: more than a pipe holds, so it must be read
        assert boxes.get("/app/noeol/hello").status_code == 200
    eventually(lambda: _logged(boxes.runtime, "endlessendless"))


def _logged(runtime: Runtime, message: str) -> list[dict[str, Any]]:
    path = runtime.log_file
    assert path is not None
    lines = path.read_text().splitlines() if path.exists() else []
    found = [json.loads(line) for line in lines if message in line]
    assert found, f"{message!r} is not in the log"
    return found


# --- who may change a sandboxed plugin --------------------------------------------------------------------------


def upload(host: Host, headers: dict[str, str], bundle: Path) -> Any:
    return host.client.post("/api/admin/plugins", headers=headers, files={"data": (bundle.name, bundle.read_bytes())})


def test_an_admin_changes_sandboxed_plugins_and_only_a_superadmin_one_in_process(boxes: Host) -> None:
    create_account(boxes.runtime, "ada", ["admin"])
    ada = login(boxes.client, "ada")
    boxed = make_zip(boxes.staging, "boxed", "1.0.0", route("boxed"), sandbox=True)
    response = upload(boxes, ada, boxed)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "active" and response.json()["sandbox"]["state"] == "running"
    assert response.json()["manage_permission"] == "plugins.manage_sandboxed"

    refused = upload(boxes, ada, make_zip(boxes.staging, "inproc", "1.0.0", route("in process")))
    assert refused.status_code == 403 and "plugins.manage" in refused.json()["detail"], refused.text
    assert not list(boxes.folder.glob("inproc-*")), "nothing of a refused upload is installed"

    for method, url, body in [
        ("PUT", "/api/admin/plugins/boxed/config", {"overrides": {}}),
        ("POST", "/api/admin/plugins/boxed/reload", None),
        ("POST", "/api/admin/plugins/boxed/disable", None),
        ("POST", "/api/admin/plugins/boxed/enable", None),
    ]:
        answer = boxes.client.request(method, url, headers=ada, json=body)
        assert answer.status_code == 200, (method, url, answer.text)

    boxes.drop(make_zip(boxes.staging, "inproc", "1.0.0", route("in process")))
    boxes.wait_view("inproc", "active")
    for method, url in [("POST", "/api/admin/plugins/inproc/disable"), ("DELETE", "/api/admin/plugins/inproc")]:
        answer = boxes.client.request(method, url, headers=ada)
        assert answer.status_code == 403 and "plugins.manage" in answer.json()["detail"], (method, answer.text)
    assert boxes.client.post("/api/admin/plugins/reload", headers=ada).status_code == 403

    # A plugin with one version in process is a superadmin's, even if another runs sandboxed.
    boxes.drop(make_zip(boxes.staging, "boxed", "0.9.0", route("older, in process")))
    eventually(lambda: _has_version(boxes, "boxed", "0.9.0"))
    assert boxes.view("boxed")["manage_permission"] == "plugins.manage"  # type: ignore[index]
    answer = boxes.client.delete("/api/admin/plugins/boxed", headers=ada)
    assert answer.status_code == 403, answer.text
    assert boxes.client.delete("/api/admin/plugins/boxed", headers=boxes.root).status_code == 200


def _has_version(host: Host, plugin_id: str, version: str) -> None:
    view = host.view(plugin_id)
    assert view is not None and version in [v["version"] for v in view["versions"]], view


def test_under_require_an_admin_may_upload_any_bundle_as_it_will_run_sandboxed(tmp_path: Path) -> None:
    runtime = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__SANDBOX="require")
    with runtime as rt, open_host(rt, tmp_path / "staging") as running:
        create_account(rt, "ada", ["admin"])
        ada = login(running.client, "ada")
        response = upload(running, ada, make_zip(running.staging, "plain", "1.0.0", route("plain")))
        assert response.status_code == 201, response.text
        assert response.json()["sandbox"]["state"] == "running"


def test_the_fork_server_asks_to_die_with_its_host_before_its_imports() -> None:
    """The zygote's imports (Litestar, the SDK) take a while: it asks for the death signal before them, so a host
    that dies meanwhile still takes it along (one was left an orphan, stopped during its imports by a profiler)."""
    probe = (
        "import sys\n"
        "import xcore.plugin_zygote as zygote\n"
        "def asked():\n"
        "    print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'litestar', 'sqlite_utils'}))\n"
        "    raise SystemExit(0)\n"
        "zygote.die_with_parent = asked\n"
        "zygote.main(['--fd', '999'])\n"
    )
    assert "LOADED []" in fresh_python(probe).splitlines()


def test_a_forked_worker_whose_fork_server_is_gone_exits_at_once(tmp_path: Path) -> None:
    """A child asks to die with the zygote right after the fork; when the zygote has already ended by then (its
    parent is another process), the child exits without running the plugin worker. With its real parent it goes
    on, here to fail on the made-up sockets, saying so on its stderr."""
    probe = (
        "import os, socket, sys\n"
        "from xcore.plugin_zygote import Zygote\n"
        "for parent in (-1, os.getpid()):\n"
        "    err_read, err_write = os.pipe()\n"
        "    control, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        os._exit(Zygote(control).child([998, 997, err_write], {str(tmp_path)!r}, parent))\n"
        "    os.close(err_write)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    said = os.read(err_read, 4096).decode()\n"
        "    print('PARENT' if parent > 0 else 'GONE', os.waitstatus_to_exitcode(status), said.split(':')[0] + '.')\n"
    )
    lines = fresh_python(probe).splitlines()
    assert lines == ["GONE 1 .", "PARENT 1 the plugin worker failed to start."], lines
