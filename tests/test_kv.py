"""`ctx.kv`: each plugin's keys and values in the core database (`xcore.plugins.kv`), for a plugin in process and
a sandboxed one alike; on several nodes every node sees what any node wrote (tests/test_nodes.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account, fresh_python
from test_plugin_manager import Host, make_zip, open_host
from xcore.plugins import kv
from xcore.plugins.kv import KeyValue
from xcore.runtime import Runtime

KV_PLUGIN = """
from xcore.sdk import Ctx, FromPath, JSONBody, get, post


@post("/kv/{key:str}", sync_to_thread=True)
def put(ctx: Ctx, key: FromPath[str], data: JSONBody[dict]) -> dict:
    try:
        ctx.kv.set(key, data["value"])
    except ValueError as exc:
        return {"refused": str(exc)}
    return {"stored": key}


@get("/kv/{key:str}", sync_to_thread=True)
def read(ctx: Ctx, key: FromPath[str]) -> dict:
    return {"value": ctx.kv.get(key, "absent"), "keys": ctx.kv.keys()}


@post("/kv/{key:str}/delete", sync_to_thread=True)
def remove(ctx: Ctx, key: FromPath[str]) -> dict:
    return {"deleted": ctx.kv.delete(key)}


router = [put, read, remove]
"""


@pytest.fixture
def store(runtime: Runtime) -> KeyValue:
    return KeyValue(runtime.sessions, "notes")


def test_a_plugins_store_keeps_json_values_by_key(store: KeyValue, runtime: Runtime) -> None:
    assert store.get("missing") is None and store.get("missing", 7) == 7
    store.set("b", {"list": [1, 2.5, "three", None, True], "nested": {"x": "é"}})
    store.set("a/1", (1, 2))  # a tuple comes back as JSON reads it: a list
    store.set("null", None)
    assert store.get("b") == {"list": [1, 2.5, "three", None, True], "nested": {"x": "é"}}
    assert store.get("a/1") == [1, 2] and store.get("null", "default") is None, "a stored null is not a miss"
    store.set("b", "replaced")
    assert store.get("b") == "replaced"
    assert store.keys() == ["a/1", "b", "null"] and store.keys("a/") == ["a/1"]
    assert store.delete("b") is True and store.delete("b") is False
    other = KeyValue(runtime.sessions, "other")
    assert other.get("a/1") is None and other.keys() == [], "a plugin sees only its own keys"
    other.set("a/1", "theirs")
    assert store.get("a/1") == [1, 2]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (7, "v", "a key is text, not int"),
        ("", "v", "a key has 1 to 255 characters, not 0"),
        ("k" * 256, "v", "not 256"),
        ("a\x00b", "v", "NUL"),
        ("k", {1, 2}, "a value must be JSON"),
        ("k", float("nan"), "a value must be JSON"),
        ("k", object(), "a value must be JSON"),
        ("k", "x" * (kv.VALUE_MAX + 1), "at most 1048576 bytes"),
        ("k", {"text": "a\x00b"}, "NUL"),
    ],
    ids=["int-key", "empty-key", "long-key", "nul-key", "set", "nan", "object", "too-large", "nul-value"],
)
def test_a_wrong_key_or_value_is_a_value_error_that_says_why_and_stores_nothing(
    store: KeyValue, key: Any, value: Any, says: str
) -> None:
    with pytest.raises(ValueError, match=r"^ctx\.kv: ") as caught:
        store.set(key, value)
    assert says in str(caught.value)
    assert store.keys() == []


def test_a_plugin_holds_at_most_so_many_keys(store: KeyValue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "KEYS_MAX", 3)
    for key in "abc":
        store.set(key, key)
    with pytest.raises(ValueError, match="at most 3 keys"):
        store.set("d", "d")
    store.set("a", "replacing a key is always allowed")
    assert store.keys() == ["a", "b", "c"]


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


@pytest.mark.parametrize("sandbox", [False, True], ids=["in-process", "sandboxed"])
def test_a_plugin_uses_ctx_kv_in_process_and_in_the_sandbox(host: Host, sandbox: bool) -> None:
    host.drop(make_zip(host.staging, "kvp", "1.0.0", KV_PLUGIN, sandbox=sandbox))
    host.wait_view("kvp", "active")
    post = host.client.post
    stored = post("/app/kvp/kv/greeting", json={"value": {"hello": ["world", 1]}}, headers=host.root)
    assert stored.status_code == 201 and stored.json() == {"stored": "greeting"}, stored.text
    assert host.get("/app/kvp/kv/greeting").json() == {"value": {"hello": ["world", 1]}, "keys": ["greeting"]}
    refused = post("/app/kvp/kv/big", json={"value": "x" * (kv.VALUE_MAX + 1)}, headers=host.root)
    assert "at most 1048576 bytes" in refused.json().get("refused", ""), refused.text
    assert post("/app/kvp/kv/greeting/delete", headers=host.root).json() == {"deleted": True}
    assert host.get("/app/kvp/kv/greeting").json() == {"value": "absent", "keys": []}
    assert KeyValue(host.runtime.sessions, "kvp").keys() == [], "the values are in the core database"


def test_a_sandbox_worker_never_imports_sqlalchemy() -> None:
    """The worker has no database: ctx.kv asks the host. Its modules, error handling included, leave SQLAlchemy
    out (15 MB and 0.1 s per worker)."""
    probe = "import sys, xcore.plugin_worker; print(json.dumps('sqlalchemy' in sys.modules))"
    assert json.loads(fresh_python("import json; " + probe)) is False
