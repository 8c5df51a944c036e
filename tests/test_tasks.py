"""Tasks (issue 5, first part): plugin tasks run on the embedded Huey consumer and every run is journalled.

Real SQLite queue (`<data>/tasks.db`), real consumer threads, real plugins loaded from zips.
"""

from __future__ import annotations

import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORDS, create_account, plugin_host
from conftest import until as wait_for
from xcore.db.models import TaskRun
from xcore.plugins.store import plugins_dir, settled
from xcore.runtime import Runtime
from xcore.sdk import PluginContext
from xcore.tasks.context import with_context
from xcore.tasks.host import TaskHost

WAIT = 10.0

RUN_PY = """
import time

from xcore.sdk import Ctx, FromPath, FromQuery, get, task

VERSION = "{version}"


@task(retries=2, retry_delay=0)
def record(ctx, text, fail_first=0):
    table = ctx.db["hits"]
    table.insert({{"text": text, "version": VERSION}})
    if table.count_where("text = ?", [text]) <= fail_first:
        raise RuntimeError(f"attempt failed on purpose: {{text}}")


@task(retries=0)
def always_fails():
    raise ValueError("this task always fails")


@task(retries=0, timeout=0.3)
def too_slow():
    time.sleep(3)


@task(retries=0, requires="tk.purge")
def purge(ctx):
    if ctx.db["hits"].exists():
        ctx.db["hits"].delete_where()


@get("/enqueue/{{name:str}}", sync_to_thread=True)
def enqueue(
    ctx: Ctx, name: FromPath[str], text: FromQuery[str] = "x", fail_first: FromQuery[int] = 0,
    delay: FromQuery[float] = 0,
) -> dict:
    functions = {{"record": record, "always_fails": always_fails, "too_slow": too_slow}}
    if name == "record":
        return {{"run": record.enqueue(text, fail_first=fail_first, delay=delay or None)}}
    return {{"run": functions[name].enqueue()}}


@get("/hits", sync_to_thread=True)
def hits(ctx: Ctx) -> list:
    return list(ctx.db["hits"].rows) if ctx.db["hits"].exists() else []


router = [enqueue, hits]
"""


def bundle(folder: Path, version: str) -> Path:
    path = folder / f"tk-{version}.zip"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "tk", "version": version, "permissions": ["tk.purge"]}))
        archive.writestr("run.py", RUN_PY.format(version=version))
    return path


def install(runtime: Runtime, source: Path, name: str = "tk.zip") -> None:
    target = plugins_dir(runtime) / name
    target.write_bytes(source.read_bytes())
    settled(target)


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return wait_for(check, what, timeout, interval=0.02)


def run_of(runtime: Runtime, run_id: int) -> TaskRun:
    with runtime.sessions() as session:
        found = session.get(TaskRun, run_id)
        assert found is not None
        return found


def finished(runtime: Runtime, run_id: int) -> TaskRun | None:
    run = run_of(runtime, run_id)
    return run if run.status in ("succeeded", "failed", "dropped") else None


class Host:
    def __init__(self, client: Any, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime
        token = client.post("/api/auth/login", json={"username": "root", "password": PASSWORDS["root"]})
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, headers=self.headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def enqueue(self, name: str, **params: Any) -> int:
        run: int = self.get(f"/app/tk/enqueue/{name}", **params)["run"]
        return run


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    install(runtime, bundle(tmp_path, "1.0.0"))
    with plugin_host(runtime, tasks=True) as client:
        yield Host(client, runtime)


def test_a_plugin_task_enqueued_from_a_route_runs_with_its_context_and_is_journalled(host: Host) -> None:
    assert host.client.manager.tasks.leading, "the only process runs the consumer"
    run_id = host.enqueue("record", text="hello")
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert host.get("/app/tk/hits") == [{"text": "hello", "version": "1.0.0"}]
    assert (run.status, run.attempt, run.name, run.plugin_id) == ("succeeded", 1, "tk.record", "tk")
    assert run.args == "'hello', fail_first=0"
    assert run.started_at is not None and run.finished_at is not None and run.duration is not None
    assert run.pid is not None and run.task_id and run.error is None


def test_a_task_failing_twice_then_succeeding_records_three_attempts(host: Host) -> None:
    run_id = host.enqueue("record", text="flaky", fail_first=2)
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert (run.status, run.attempt) == ("succeeded", 3)
    assert len([h for h in host.get("/app/tk/hits") if h["text"] == "flaky"]) == 3


def test_a_task_that_keeps_failing_is_failed_with_its_error_and_traceback(host: Host) -> None:
    run_id = host.enqueue("always_fails")
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert (run.status, run.attempt) == ("failed", 1)
    assert run.error == "ValueError: this task always fails"
    assert run.traceback is not None and "raise ValueError" in run.traceback


def test_a_task_past_its_timeout_is_failed(host: Host) -> None:
    run_id = host.enqueue("too_slow")
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert run.status == "failed" and "timeout of 0.3 s" in (run.error or "")
    assert run.duration is not None and run.duration < 2


def test_a_queued_task_is_served_by_the_new_version_after_a_replacement(host: Host, tmp_path: Path) -> None:
    run_id = host.enqueue("record", text="later", delay=1.5)
    install(host.runtime, bundle(tmp_path / "v2", "2.0.0"))
    until(lambda: host.client.manager.views["tk"].version == "2.0.0", "version 2.0.0 to serve")
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert run.status == "succeeded"
    assert [h for h in host.get("/app/tk/hits") if h["text"] == "later"] == [{"text": "later", "version": "2.0.0"}]


def test_a_queued_task_of_a_disabled_plugin_is_dropped(host: Host) -> None:
    run_id = host.enqueue("record", text="orphan", delay=1.5)
    response = host.client.post("/api/admin/plugins/tk/disable", headers=host.headers)
    assert response.status_code == 200 and response.json()["state"] == "disabled"
    run = until(lambda: finished(host.runtime, run_id), "the run to finish")
    assert (run.status, run.error) == ("dropped", "plugin tk not loaded")


def test_one_process_of_two_runs_the_consumer_and_another_takes_over(runtime: Runtime) -> None:
    first, second = TaskHost(runtime), TaskHost(runtime)
    try:
        first.start()
        second.start()
        assert first.leading and not second.leading
        first.stop()
        until(lambda: second.leading, "the second host to take over", timeout=6)
    finally:
        first.stop()
        second.stop()


def test_a_host_stopped_in_another_thread_than_it_started_in_hands_the_consumer_on(runtime: Runtime) -> None:
    """A server's lifespan may start the task host in one worker thread and stop it in another. The leader lock
    must go with the stop: filelock's locks belong to the thread that took them unless told otherwise, and a
    stop from another thread left the lock held, so the next host in the process never ran the consumer."""

    def in_a_thread(step: Any) -> None:
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()

    first, second = TaskHost(runtime), TaskHost(runtime)
    try:
        in_a_thread(first.start)
        second.start()
        assert first.leading and not second.leading
        in_a_thread(first.stop)
        until(lambda: second.leading, "the second host to take over", timeout=6)
    finally:
        first.stop()
        second.stop()


def test_a_queued_run_carries_the_huey_task_name_of_earlier_releases(runtime: Runtime) -> None:
    """Runs queued before an upgrade name their Huey task `xcore.tasks.host.run`: the new code must answer to it."""

    def noop() -> None: ...

    host = TaskHost(runtime)
    try:
        host.register("noop", noop)
        host.enqueue("noop")
        message = host.huey.serializer.deserialize(host.huey.storage.dequeue())
        assert message.name == "xcore.tasks.host.run"
    finally:
        host.stop()


def test_ctx_goes_to_the_ctx_parameter_wherever_it_stands(tmp_path: Path) -> None:
    ctx = PluginContext("p", "1", tmp_path)

    def first(ctx: PluginContext, a: int, b: int = 2) -> None: ...
    def middle(a: int, ctx: PluginContext, *, b: int) -> None: ...
    def none(a: int) -> None: ...

    assert with_context(first, [1], {"b": 3}, ctx) == ([ctx, 1, 3], {})
    assert with_context(middle, [1], {"b": 3}, ctx) == ([1, ctx], {"b": 3})
    assert with_context(none, [1], {}, ctx) == ([1], {})
    with pytest.raises(TypeError):
        with_context(first, [1, 2, 3], {}, ctx)


def test_the_admin_api_lists_tasks_runs_one_and_shows_the_journal(host: Host) -> None:
    tasks = {t["name"]: t for t in host.get("/api/admin/tasks")}
    assert {"tk.record", "tk.always_fails", "tk.too_slow"} <= set(tasks)
    assert tasks["tk.too_slow"] | {"last_run": None} == {
        "name": "tk.too_slow", "plugin": "tk", "kind": "task", "cron": None, "every": None, "retries": 0,
        "timeout": 0.3, "paused": False, "paused_reason": None, "failures": 0, "next_run": None, "last_run": None,
        "requires": [], "allowed": True,
    }  # fmt: skip

    response = host.client.post(
        "/api/admin/tasks/tk.record/run", headers=host.headers, json={"args": ["by the api"], "kwargs": {}}
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["run"]
    until(lambda: finished(host.runtime, run_id), "the run to finish")
    failing = host.client.post("/api/admin/tasks/tk.always_fails/run", headers=host.headers).json()["run"]
    until(lambda: finished(host.runtime, failing), "the failing run to finish")

    page = host.get("/api/admin/tasks/runs", name="tk.record")
    assert page["total"] == 1 and page["items"][0]["id"] == run_id and page["items"][0]["status"] == "succeeded"
    assert page["items"][0]["args"] == "'by the api'"
    failed = host.get("/api/admin/tasks/runs", status="failed")["items"]
    assert [r["id"] for r in failed] == [failing]
    detail = host.get(f"/api/admin/tasks/runs/{failing}")
    assert detail["error"] == "ValueError: this task always fails" and "Traceback" in detail["traceback"]
    listed = {t["name"]: t for t in host.get("/api/admin/tasks")}
    assert listed["tk.always_fails"]["last_run"]["status"] == "failed"

    for method, url, body, status in [
        ("POST", "/api/admin/tasks/tk.nothing/run", None, 404),
        ("POST", "/api/admin/tasks/tk.record/run", {"args": "not a list"}, 400),
        ("POST", "/api/admin/tasks/tk.record/run", {"argz": []}, 400),
        ("GET", "/api/admin/tasks/runs/999999", None, 404),
        ("GET", "/api/admin/tasks/runs?status=sleeping", None, 400),
        # Arguments the function cannot take: refused before a run is queued, not failed three times later.
        ("POST", "/api/admin/tasks/tk.record/run", {"args": [], "kwargs": {}}, 422),
        ("POST", "/api/admin/tasks/tk.record/run", {"args": ["a"], "kwargs": {"colour": 1}}, 422),
        ("POST", "/api/admin/tasks/tk.record/run", {"args": ["a", 1, 2]}, 422),
    ]:
        response = host.client.request(method, url, headers=host.headers, json=body)
        assert response.status_code == status, (url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    refused = host.client.post(
        "/api/admin/tasks/tk.record/run", headers=host.headers, json={"args": ["a"], "kwargs": {"colour": 1}}
    ).json()
    assert refused["detail"] == "tk.record(text, fail_first=0): got an unexpected keyword argument 'colour'"
    assert refused["errors"] == [{"field": "kwargs", "message": refused["detail"]}]
    assert host.get("/api/admin/tasks/runs", name="tk.record")["total"] == 1  # none of them was queued


def test_a_task_that_acts_on_a_guarded_resource_needs_its_permission_to_run_pause_or_resume(host: Host) -> None:
    # An admin holds tasks.manage but not backups.manage: xcore.backup is a superadmin's, like POST /api/admin/backups.
    create_account(host.runtime, "ada", ["admin"])
    token = host.client.post("/api/auth/login", json={"username": "ada", "password": PASSWORDS["ada"]}).json()
    ada = {"Authorization": f"Bearer {token['access_token']}"}
    listed = {t["name"]: t for t in host.get("/api/admin/tasks")}
    assert listed["xcore.backup"]["requires"] == ["backups.manage"]
    assert listed["tk.purge"]["requires"] == ["tk.purge"]
    assert listed["xcore.prune_sessions"]["requires"] == ["users.manage"]
    assert listed["xcore.backup"]["allowed"] and listed["tk.purge"]["allowed"], "the superadmin may"
    as_ada = {t["name"]: t["allowed"] for t in host.client.get("/api/admin/tasks", headers=ada).json()}
    assert as_ada["xcore.backup"] is False and as_ada["tk.purge"] is False and as_ada["tk.record"] is True
    runs_before = host.get("/api/admin/tasks/runs")["total"]

    for name, permission in (("xcore.backup", "backups.manage"), ("tk.purge", "tk.purge")):
        for action in ("run", "pause", "resume"):
            response = host.client.post(f"/api/admin/tasks/{name}/{action}", headers=ada)
            assert response.status_code == 403, (name, action, response.text)
            assert permission in response.json()["detail"] and name in response.json()["detail"]
    assert host.get("/api/admin/tasks/runs")["total"] == runs_before, "a refused run queued nothing"
    listed = {t["name"]: t for t in host.get("/api/admin/tasks")}
    assert not listed["xcore.backup"]["paused"] and not listed["tk.purge"]["paused"]
    audit = host.get("/api/admin/audit", action="task.pause")["items"]
    assert audit == [], "a refused pause is not recorded as done"

    # A task that acts on nothing guarded stays the admin's; the superadmin may do everything.
    assert host.client.post("/api/admin/tasks/tk.record/run", headers=ada, json={"args": ["ada"]}).status_code == 201
    assert host.client.post("/api/admin/tasks/tk.always_fails/pause", headers=ada).status_code == 200
    for action in ("pause", "resume"):
        assert host.client.post(f"/api/admin/tasks/xcore.backup/{action}", headers=host.headers).status_code == 200
    run = host.client.post("/api/admin/tasks/tk.purge/run", headers=host.headers)
    assert run.status_code == 201, run.text
    assert until(lambda: finished(host.runtime, run.json()["run"]), "the purge").status == "succeeded"


def test_a_plugin_task_requiring_a_permission_nobody_declared_fails_its_plugin(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "tq.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "tq", "version": "1.0.0"}))
        archive.writestr(
            "run.py", "from xcore.sdk import task\n\n@task(requires='tq.undeclared')\ndef wipe():\n    pass\n"
        )
    install(host.runtime, path, "tq.zip")

    def failed() -> Any:
        view = next((v for v in host.get("/api/admin/plugins") if v["id"] == "tq"), None)
        return view if view is not None and view["state"] == "failed" else None

    view = until(failed, "tq to fail")
    assert "task tq.wipe: requires tq.undeclared" in view["error"], view["error"]
    assert "tq.wipe" not in {t["name"] for t in host.get("/api/admin/tasks")}


def test_a_run_left_started_by_a_dead_process_is_interrupted_and_runs_again(runtime: Runtime, tmp_path: Path) -> None:
    import pickle

    create_account(runtime, "root", ["superadmin"])
    install(runtime, bundle(tmp_path, "1.0.0"))
    with runtime.sessions.begin() as session:
        stale = TaskRun(
            task_id="gone", name="tk.record", plugin_id="tk", args="'crashed'", status="started", attempt=1,
            payload=pickle.dumps((["crashed"], {})), pid=2**22 + 1,
        )  # fmt: skip
        session.add(stale)
        session.flush()
        stale_id = stale.id
    with plugin_host(runtime, tasks=True) as client:
        running = Host(client, runtime)
        assert run_of(runtime, stale_id).status == "interrupted"
        assert "stopped before it finished" in (run_of(runtime, stale_id).error or "")
        until(lambda: [h for h in running.get("/app/tk/hits") if h["text"] == "crashed"], "the run to happen again")
        runs = running.get("/api/admin/tasks/runs", name="tk.record")["items"]
        assert [r["status"] for r in runs] == ["succeeded", "interrupted"]


PERIODIC_PY = """
from xcore.sdk import Ctx, get, periodic


@periodic(every={every}, retries=0)
def tick(ctx):
    # Runs may overlap: an insert's own creation of the table would look first and create after.
    ctx.db["ticks"].create({{"at": int}}, if_not_exists=True)
    ctx.db["ticks"].insert({{"at": 1}})
    if {fail}:
        raise RuntimeError("tick failed on purpose")


@periodic(cron="0 3 * * *")
def nightly(ctx):
    pass


@get("/ticks", sync_to_thread=True)
def ticks(ctx: Ctx) -> int:
    return ctx.db["ticks"].count if ctx.db["ticks"].exists() else 0


router = [ticks]
"""


def periodic_bundle(folder: Path, version: str = "1.0.0", every: float = 1, fail: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pp-{version}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "pp", "version": version}))
        archive.writestr("run.py", PERIODIC_PY.format(every=every, fail=fail))
    return path


def test_an_every_task_runs_on_its_interval_and_a_cron_task_waits_for_its_minute(
    runtime: Runtime, tmp_path: Path
) -> None:
    create_account(runtime, "root", ["superadmin"])
    install(runtime, periodic_bundle(tmp_path, every=0.5), "pp.zip")
    with plugin_host(runtime, tasks=True) as client:
        host = Host(client, runtime)
        started = time.monotonic()
        until(lambda: host.get("/app/pp/ticks") >= 5, "five ticks")
        elapsed = time.monotonic() - started
        assert elapsed < 4.5, f"five runs of an every=0.5 task took {elapsed:.1f} s"
        listed = {t["name"]: t for t in host.get("/api/admin/tasks")}
        assert listed["pp.tick"]["kind"] == "periodic" and listed["pp.tick"]["every"] == 0.5
        nightly = listed["pp.nightly"]
        assert nightly["cron"] == "0 3 * * *" and nightly["last_run"] is None
        assert nightly["next_run"] is not None and nightly["next_run"][11:16] in {f"{h:02d}:00" for h in range(24)}, (
            "a whole hour (in UTC it depends on the machine's zone)"
        )


def test_pause_holds_a_periodic_task_and_survives_a_restart(runtime: Runtime, tmp_path: Path) -> None:
    create_account(runtime, "root", ["superadmin"])
    install(runtime, periodic_bundle(tmp_path, every=0.3), "pp.zip")
    with plugin_host(runtime, tasks=True) as client:
        host = Host(client, runtime)
        until(lambda: host.get("/app/pp/ticks") >= 1, "a first tick")
        response = client.post("/api/admin/tasks/pp.tick/pause", headers=host.headers)
        assert response.status_code == 200 and response.json()["paused"] is True, response.text
        assert response.json()["paused_reason"] == "paused by root"
        # The answer shows the task as the list does, with its latest run (it has ticked).
        assert response.json()["last_run"] is not None and response.json()["last_run"]["name"] == "pp.tick"
        time.sleep(0.5)  # a run queued just before the pause may still finish
        count = host.get("/app/pp/ticks")
        time.sleep(1.2)
        assert host.get("/app/pp/ticks") == count, "no run while paused"
    with plugin_host(runtime, tasks=True) as client:
        host = Host(client, runtime)
        time.sleep(1.2)
        assert host.get("/app/pp/ticks") == count, "still paused after a restart"
        resumed = client.post("/api/admin/tasks/pp.tick/resume", headers=host.headers)
        assert resumed.status_code == 200, resumed.text
        last = resumed.json()["last_run"]  # the newest run when it resumed (a tick may follow at once)
        assert last is not None and last["id"] <= host.get("/api/admin/tasks/runs", name="pp.tick")["items"][0]["id"]
        until(lambda: host.get("/app/pp/ticks") > count, "a tick after the resume")
        actions = [e["action"] for e in host.get("/api/admin/audit", action="task.*")["items"]]
        assert actions == ["task.resume", "task.pause"]


def test_a_periodic_task_that_keeps_failing_is_paused_and_resumes_when_its_plugin_loads_again(
    data_dir: Path, tmp_path: Path
) -> None:
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database

    runtime = open_runtime(data_dir, environ={"XCORE_MANAGER__TASKS__PAUSE_AFTER": "2"})
    try:
        prepare_database(runtime)
        create_account(runtime, "root", ["superadmin"])
        install(runtime, periodic_bundle(tmp_path, every=0.2, fail=True), "pp.zip")
        with plugin_host(runtime, tasks=True) as client:
            host = Host(client, runtime)

            def paused() -> dict[str, Any] | None:
                task = {t["name"]: t for t in host.get("/api/admin/tasks")}["pp.tick"]
                return task if task["paused"] else None

            task = until(paused, "the task to be paused")
            assert task["failures"] >= 2 and task["paused_reason"].startswith("paused after 2 failed runs in a row")
            assert "RuntimeError: tick failed on purpose" in task["paused_reason"]
            install(runtime, periodic_bundle(tmp_path / "v2", "2.0.0", every=0.2), "pp.zip")
            until(lambda: not paused(), "the new version to resume it")
            until(lambda: host.get("/api/admin/tasks/runs", name="pp.tick", status="succeeded")["total"], "a success")
    finally:
        runtime.close()


def test_the_core_tasks_prune_what_is_past_its_retention_and_back_up_the_database(host: Host) -> None:
    from datetime import UTC, datetime, timedelta

    from xcore.db.models import AuditEvent, RefreshToken

    listed = {t["name"]: t for t in host.get("/api/admin/tasks")}
    for name in ("xcore.prune_sessions", "xcore.prune_history", "xcore.backup", "xcore.plugin_cache"):
        assert listed[name]["kind"] == "periodic" and listed[name]["plugin"] is None, name
    backups = host.runtime.backups_dir
    until(lambda: list(backups.glob("xcore-*-scheduled.xcbackup")), "the first scheduled backup, a complete one")

    now = datetime.now(UTC)
    with host.runtime.sessions.begin() as session:
        for days, tag in ((-1, "expired"), (1, "valid")):
            session.add(
                RefreshToken(
                    token_hash=tag * 8, family=tag, user_id=1, token_version=0, expires_at=now + timedelta(days=days)
                )
            )
        session.add(AuditEvent(action="old.event", at=now - timedelta(days=400), detail={}))
        session.add(TaskRun(task_id="old", name="tk.record", args="", status="succeeded", attempt=1,
                            enqueued_at=now - timedelta(days=40)))  # fmt: skip
    for name in ("xcore.prune_sessions", "xcore.prune_history"):
        run_id = host.client.post(f"/api/admin/tasks/{name}/run", headers=host.headers).json()["run"]
        assert until(lambda r=run_id: finished(host.runtime, r), name).status == "succeeded"
    with host.runtime.sessions() as session:
        assert {
            t.family for t in session.query(RefreshToken).filter(RefreshToken.family.in_(["expired", "valid"]))
        } == {"valid"}
        assert session.query(AuditEvent).filter_by(action="old.event").count() == 0
        assert session.query(TaskRun).filter_by(task_id="old").count() == 0
        assert session.query(AuditEvent).count() > 0, "recent events stay"


def test_health_reports_the_scheduler(host: Host) -> None:
    body = host.client.get("/health").json()
    assert body["scheduler"]["status"] == "ok" and body["scheduler"]["consumer"] == "running here"
    assert body["scheduler"]["queued"] >= 0 and "oldest_queued_seconds" in body["scheduler"]


def test_the_tasks_commands_list_run_and_show_history_while_the_server_runs(host: Host) -> None:
    from conftest import run_xcore

    data = ("--data-dir", str(host.runtime.data.root))
    listed = run_xcore("tasks", "list", *data)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "tk.record" in lines and "xcore.backup" in lines and "every 86400s" in lines["xcore.backup"]
    assert listed.stdout.splitlines()[0].split() == ["NAME", "PLUGIN", "SCHEDULE", "PAUSED", "LAST", "RUN"]

    queued = run_xcore("tasks", "run", "tk.record", "--args", '["from the cli"]', *data)
    assert queued.returncode == 0, queued.stderr
    run_id = int(queued.stdout.split()[-1])
    run = until(lambda: finished(host.runtime, run_id), "the consumer to run it", timeout=WAIT)
    assert run.status == "succeeded" and run.args == "'from the cli'"
    assert {"text": "from the cli", "version": "1.0.0"} in host.get("/app/tk/hits")

    shown = run_xcore("tasks", "history", "--name", "tk.record", "--json", *data)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["id"] == run_id and json.loads(shown.stdout)[0]["status"] == "succeeded"

    for args, says in [
        (("run", "tk.nothing"), "no task named 'tk.nothing' is registered"),
        (("run", "tk.record", "--args", "[oops"), "--args: not valid JSON"),
        (("run", "tk.record", "--kwargs", "[]"), "--kwargs: must be a JSON object"),
        (("history", "--status", "sleeping"), "xcore: error: tasks history: invalid value for '--status'"),
    ]:
        refused = run_xcore("tasks", *args, *data)
        assert refused.returncode == 2 and says in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr


def test_the_plugin_client_fixture_runs_a_plugins_tasks(plugin_client: Any, tmp_path: Path) -> None:
    client = plugin_client(bundle(tmp_path, "1.0.0"))
    run_id = client.get("/app/tk/enqueue/record", params={"text": "in a test"}).json()["run"]

    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/api/admin/tasks/runs/{run_id}").json()
        return run if run["status"] == "succeeded" else None

    until(done, "the run to succeed")
    assert client.get("/app/tk/hits").json() == [{"text": "in a test", "version": "1.0.0"}]
