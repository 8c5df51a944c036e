"""Two nodes on one PostgreSQL database: two hosts with data directories of their own, in this process, each with
its plugin manager and its listener of the database's notifications (`xcore.db.notify`), as two machines run them.

What one node changes reaches the other through PostgreSQL's LISTEN/NOTIFY: a logout or a revoke is in force there
within 1 s; a plugin uploaded, disabled, enabled or removed there within 2 s, its bundle fetched from the database
(`xcore.plugins.shared`).
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORDS, create_account, plugin_host, until
from xcore.db import notify
from xcore.plugins.store import plugins_dir, settled
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database

SECRET = "a-secret-key-every-node-shares-0123456789abcdef"
PLUGIN = """\
from xcore.sdk import get


@get("/hello", sync_to_thread=False)
def hello() -> dict:
    return {"hello": "world"}


router = [hello]
"""


def bundle(folder: Path, plugin_id: str = "hello", run_py: str = PLUGIN, **files: str) -> Path:
    """bundle writes `<folder>/<id>-1.0.0.zip` with its plugin.json, `run_py` as run.py, and `files`."""
    path = folder / f"{plugin_id}-1.0.0.zip"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0"}))
        archive.writestr("run.py", run_py)
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def upload(client: Any, path: Path, headers: dict[str, str]) -> None:
    """upload installs the bundle at `path` through the node of `client`'s admin API."""
    with path.open("rb") as data:
        response = client.post("/api/admin/plugins", files={"data": (path.name, data)}, headers=headers)
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[list[Any]]:
    """nodes: two hosts on one PostgreSQL database; a plugin bundle was dropped into the first one's folder."""
    source = bundle(tmp_path / "source")
    runtimes: list[Runtime] = []
    with ExitStack() as stack:
        for name in ("a", "b"):
            # Every node signs and checks the same tokens: the nodes share secure.secret_key.
            environ = {"DATABASE_URL": postgres_url, "XCORE_SECURE__SECRET_KEY": SECRET}
            runtime = open_runtime(tmp_path / name, environ=environ)
            stack.callback(runtime.close)
            prepare_database(runtime)
            runtimes.append(runtime)
        target = plugins_dir(runtimes[0]) / source.name
        target.write_bytes(source.read_bytes())
        settled(target)
        create_account(runtimes[0], "root", ["superadmin"])
        yield [stack.enter_context(plugin_host(runtime)) for runtime in runtimes]


def bearer(client: Any, name: str = "root") -> dict[str, str]:
    response = client.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_logout_on_one_node_refuses_the_token_on_the_other_within_a_second(nodes: list[Any]) -> None:
    a, b = nodes
    token = bearer(a)
    assert b.get("/api/me", headers=token).status_code == 200  # node b has it cached now
    assert a.post("/api/auth/logout", headers=token).status_code in (200, 204)
    started = time.monotonic()
    until(lambda: b.get("/api/me", headers=token).status_code == 401, "node b to refuse the token", timeout=1.0)
    assert time.monotonic() - started < 1.0


def test_a_plugin_disabled_on_one_node_is_gone_from_the_other_within_two_seconds(nodes: list[Any]) -> None:
    a, b = nodes
    token = bearer(a)
    for client in nodes:  # the second node fetched the bundle the first one had
        until(lambda c=client: c.get("/app/hello/hello", headers=token).status_code == 200, "the plugin to serve")
    assert a.post("/api/admin/plugins/hello/disable", headers=token).status_code == 200
    started = time.monotonic()
    until(lambda: b.get("/app/hello/hello", headers=token).status_code == 404, "node b to stop serving it", timeout=2)
    assert time.monotonic() - started < 2.0
    assert a.post("/api/admin/plugins/hello/enable", headers=token).status_code == 200
    until(lambda: b.get("/app/hello/hello", headers=token).status_code == 200, "node b to serve it again", timeout=2)


def test_a_listener_that_lost_its_connection_comes_back_and_raises_every_signal(postgres_url: str) -> None:
    from postgres import server

    raised: list[str] = []
    listener = notify.Listener(postgres_url, {notify.ACCOUNTS: lambda: raised.append("accounts")})
    listener.start()
    try:
        until(listener.listening.is_set, "the listener to listen")
        database = postgres_url.rsplit("/", 1)[1]
        server().execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
            "AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
        )
        until(lambda: raised == ["accounts"], "the listener to come back and raise its signal", timeout=10)
        from sqlalchemy import create_engine

        engine = create_engine(postgres_url)
        notify.publish(engine, notify.ACCOUNTS)
        engine.dispose()
        until(lambda: raised == ["accounts", "accounts"], "a notification after the reconnection")
    finally:
        listener.stop()


def test_the_safety_net_raises_every_signal_without_any_notification(postgres_url: str) -> None:
    raised: list[str] = []
    handlers = {notify.ACCOUNTS: lambda: raised.append("accounts"), notify.PLUGINS: lambda: raised.append("plugins")}
    listener = notify.Listener(postgres_url, handlers, every=0.5).start()
    try:
        until(lambda: raised.count("plugins") >= 2, "the safety net to raise the signals twice", timeout=10)
        assert raised.count("accounts") >= 2
    finally:
        listener.stop()
    assert notify.listen("sqlite:///nowhere.db", handlers) is None, "one machine: nothing to listen to"


def test_a_plugin_uploaded_through_one_node_serves_on_the_other_and_its_removal_too(
    nodes: list[Any], tmp_path: Path
) -> None:
    a, b = nodes
    token = bearer(a)
    second = bundle(tmp_path / "second", plugin_id="greet")
    upload(a, second, token)
    started = time.monotonic()
    until(lambda: b.get("/app/greet/hello", headers=token).status_code == 200, "node b to serve the upload", timeout=2)
    assert time.monotonic() - started < 2.0
    folder_b = plugins_dir(b.manager.runtime)
    assert (folder_b / second.name).read_bytes() == second.read_bytes(), "node b holds the very bundle"

    assert a.delete("/api/admin/plugins/greet", headers=token).status_code in (200, 204)
    until(lambda: b.get("/app/greet/hello", headers=token).status_code == 404, "node b to drop it", timeout=2)
    until(lambda: not (folder_b / second.name).exists(), "node b to delete its copy", timeout=2)
    assert b.get("/app/hello/hello", headers=token).status_code == 200, "the other plugin stays"


def test_what_a_plugin_keeps_in_ctx_kv_on_one_node_the_other_reads(nodes: list[Any], tmp_path: Path) -> None:
    from test_kv import KV_PLUGIN

    a, b = nodes
    token = bearer(a)
    upload(a, bundle(tmp_path, "kvp", KV_PLUGIN), token)
    until(lambda: b.get("/app/kvp/kv/x", headers=token).status_code == 200, "node b to serve kvp")
    assert a.post("/app/kvp/kv/counter", json={"value": 41}, headers=token).json() == {"stored": "counter"}
    assert b.get("/app/kvp/kv/counter", headers=token).json() == {"value": 41, "keys": ["counter"]}


CONFIGURED = """\
from xcore.sdk import Ctx, get


@get("/greeting", sync_to_thread=False)
def greeting(ctx: Ctx) -> dict:
    return {"greeting": ctx.config["greeting"]}


router = [greeting]
"""


def test_a_plugin_reconfigured_on_one_node_answers_with_its_new_settings_on_the_other(
    nodes: list[Any], tmp_path: Path
) -> None:
    a, b = nodes
    token = bearer(a)
    upload(a, bundle(tmp_path, "cfg", CONFIGURED, **{"config.json": json.dumps({"greeting": "hello"})}), token)
    until(lambda: b.get("/app/cfg/greeting", headers=token).json() == {"greeting": "hello"}, "node b to serve cfg")
    changed = a.put("/api/admin/plugins/cfg/config", json={"overrides": {"greeting": "bonjour"}}, headers=token)
    assert changed.status_code == 200, changed.text
    started = time.monotonic()
    until(
        lambda: b.get("/app/cfg/greeting", headers=token).json() == {"greeting": "bonjour"},
        "node b to answer with the new setting",
        timeout=2,
    )
    assert time.monotonic() - started < 2.0
