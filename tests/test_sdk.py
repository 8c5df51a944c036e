"""xcore.sdk, what plugins import: the guard enforced, the task decorators checked (test_contract.py checks that
plugins/README.md documents every name)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import msgspec
import pluggy
import pytest
import sqlite_utils
from litestar.testing import TestClient
from sqlite_utils.plugins import pm

import xcore.sdk as sdk
from conftest import Api, create_account
from xcore.auth import roles
from xcore.auth.login import find_user
from xcore.auth.permissions import register_plugin_permissions
from xcore.auth.principals import principal_of
from xcore.auth.rules import Principal
from xcore.auth.service import Client
from xcore.runtime import Runtime
from xcore.web.app import build_app


def test_requires_guards_a_plugin_route_on_top_of_the_access_rules(accounts_api: Api) -> None:
    runtime = accounts_api.runtime
    with runtime.auth.transaction() as session:
        assert register_plugin_permissions(session, "notes", ["notes.write"]) == ["notes.write"]
    roles.create_role(runtime.auth, _root(accounts_api), Client(), name="writers", permissions=["notes.write"])
    create_account(runtime, "wren", ["user", "writers"], password="writer-secret-pass-5")

    @sdk.post("/app/notes/write", guards=[sdk.requires("notes.write")], sync_to_thread=False)
    def write() -> dict[str, bool]:
        return {"written": True}

    with TestClient(build_app(runtime, [sdk.Router("/", route_handlers=[write])])) as client:
        api = Api(client, runtime)
        assert client.post("/app/notes/write").status_code == 401  # the access rules: login required
        assert client.post("/app/notes/write", headers=api.login("bob")).status_code == 403
        allowed = client.post("/app/notes/write", headers=api.login("wren", "writer-secret-pass-5"))
        assert allowed.status_code == 201 and allowed.json() == {"written": True}
        assert client.post("/app/notes/write", headers=api.login("root")).status_code == 201


def _root(api: Api) -> Principal:
    with api.runtime.sessions() as session:
        user = find_user(session, "root")
        assert user is not None
        return principal_of(user)


def test_plugin_permissions_stay_in_their_namespace(runtime: Runtime) -> None:
    with runtime.auth.transaction() as session, pytest.raises(ValueError, match=r"must be named notes\.<name>"):
        register_plugin_permissions(session, "notes", ["users.manage"])


def test_plugin_context_gives_a_database_and_a_logger(tmp_path: Path) -> None:
    ctx = sdk.PluginContext(id="notes", version="1.0.0", data_dir=tmp_path / "notes")
    ctx.db["notes"].insert({"id": 1, "text": "hello"}, pk="id")
    assert (tmp_path / "notes" / "plugin.db").exists()
    assert list(ctx.db["notes"].rows) == [{"id": 1, "text": "hello"}]
    assert ctx.logger.name == "xcore.plugins.notes"
    with pytest.raises(TypeError):
        ctx.config["x"] = 1  # type: ignore[index]


def test_plugin_databases_run_no_sqlite_utils_plugins(tmp_path: Path) -> None:
    """An installed sqlite-utils plugin hooks into every connection sqlite-utils opens; not into a plugin's."""
    seen: list[object] = []

    class Intruder:
        @pluggy.HookimplMarker("sqlite_utils")
        def prepare_connection(self, conn: object) -> None:
            seen.append(conn)

    intruder = Intruder()
    pm.register(intruder)
    try:
        sqlite_utils.Database(sqlite3.connect(":memory:"))  # the hook works: sqlite-utils runs it by default
        assert len(seen) == 1
        ctx = sdk.PluginContext(id="notes", version="1.0.0", data_dir=tmp_path / "notes")
        ctx.db["notes"].insert({"id": 1}, pk="id")
        assert len(seen) == 1
    finally:
        pm.unregister(intruder)


def test_task_decorators_record_their_spec_and_refuse_to_enqueue_before_load() -> None:
    @sdk.task(retries=2, timeout=5)
    def send(to: str) -> None: ...

    @sdk.periodic(every=30)
    def tick() -> None: ...

    assert send.__xcore_task__ == sdk.TaskSpec(retries=2, timeout=5)  # type: ignore[attr-defined]
    assert msgspec.to_builtins(tick.__xcore_task__)["every"] == 30  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="registered when its plugin loads"):
        send.enqueue("a@b.c")  # type: ignore[attr-defined]


def test_a_task_declares_the_permissions_it_requires() -> None:
    @sdk.task(requires="notes.write")
    def wipe() -> None: ...

    @sdk.periodic(every=60, requires=["notes.write", "backups.manage", "notes.write"])
    def sweep() -> None: ...

    assert wipe.__xcore_task__.requires == ("notes.write",)  # type: ignore[attr-defined]
    assert sweep.__xcore_task__.requires == ("backups.manage", "notes.write")  # type: ignore[attr-defined]
    for wrong in ("notes", "a.b.c", ".write", ["notes.write", 3]):
        with pytest.raises(ValueError, match=r"<namespace>\.<name>"):
            sdk.task(requires=wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({}, "exactly one of"),
        ({"cron": "* * * * *", "every": 5}, "exactly one of"),
        ({"cron": "*/5 * *"}, "5 fields"),
        ({"every": 0}, "positive number of seconds"),
    ],
)
def test_periodic_refuses_a_bad_schedule(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        sdk.periodic(**kwargs)  # type: ignore[arg-type]


def test_plugin_database_transactions_from_several_threads_wait_for_each_other(tmp_path: Path) -> None:
    """A read-then-write transaction (`ctx.db.atomic()`) in several threads at once: each waits for the write lock
    instead of failing at once with "database is locked" (a deferred BEGIN in WAL mode would, whatever the busy
    timeout), and none loses another's update."""
    ctx = sdk.PluginContext(id="notes", version="1.0.0", data_dir=tmp_path / "notes")
    ctx.db["counter"].create({"n": int}, pk="n")
    failures: list[str] = []

    def count(times: int) -> None:
        for _ in range(times):
            try:
                with ctx.db.atomic():  # each thread has its own connection
                    ctx.db["counter"].insert({"n": ctx.db["counter"].count})
            except sqlite3.Error as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=count, args=(50,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert [row["n"] for row in ctx.db["counter"].rows_where(order_by="n")] == list(range(200))
