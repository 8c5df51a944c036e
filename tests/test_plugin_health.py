"""Plugin health (`xcore.plugins.health`): a plugin's `health(ctx)` is called right after it loads and then
periodically, in process and in its sandbox worker; what it says shows in the admin API's views and, counted only,
in the public /health. A failing plugin is flagged, logged, and keeps serving.

Real plugins in a real plugin host; each test sets what the plugin's health() answers by writing a file in its
data folder, and shortens the period between checks (and, in process, the time limit) to keep the tests short.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account
from test_plugin_manager import Host, eventually, make_zip, open_host, route
from xcore.plugins import health as health_module
from xcore.plugins import manager as manager_module
from xcore.plugins.contract import HEALTH_DETAIL
from xcore.plugins.health import judge
from xcore.plugins.store import plugin_data_dir
from xcore.runtime import Runtime

HEALTHY_PLUGIN = """
import json, time
from pathlib import Path
from xcore.sdk import Ctx, get


@get("/hello", sync_to_thread=False)
def hello() -> dict:
    return {"hello": "still serving"}


ANSWERS = {
    "ok": True,
    "none": None,
    "false": False,
    "text": "3 jobs queued",
    "detail": {"ok": True, "queue": 3},
    "dict-fail": {"ok": False, "detail": "disk full"},
    "odd": 42,
}


def health(ctx):
    path = Path(ctx.data_dir) / "health"
    state = path.read_text() if path.exists() else "ok"
    if state == "raise":
        raise RuntimeError("the database is gone\\n" + "x" * 400)
    if state == "slow":
        time.sleep(3)
    return ANSWERS.get(state, True)


router = [hello]
"""

ASYNC_HEALTH = HEALTHY_PLUGIN.replace("def health(ctx):", "async def health(ctx):").replace(
    "time.sleep(3)", "import asyncio; await asyncio.sleep(3)"
)


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    monkeypatch.setattr(manager_module, "HEALTH_EVERY", 0.2)
    monkeypatch.setattr(health_module, "HEALTH_TIMEOUT", 1.0)  # in process; a sandbox worker keeps its 10 s
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


def answer(host: Host, plugin_id: str, state: str) -> None:
    """answer makes the plugin's health() answer as `state` says, from its next check on."""
    folder = plugin_data_dir(host.runtime, plugin_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "health").write_text(state)


def health_of(host: Host, plugin_id: str, status: str, detail: Any = ..., starts: str = "") -> dict[str, Any]:
    """health_of waits until the plugin's view shows health `status` (and `detail`, or a detail that `starts`
    so); returns the view's health."""

    def check() -> dict[str, Any]:
        view = host.view(plugin_id)
        assert view is not None and view["state"] == "active", view
        found: dict[str, Any] = view["health"]
        assert found["status"] == status, found
        if detail is not ...:
            assert found["detail"] == detail, found
        assert (found["detail"] or "").startswith(starts), found
        return found

    return eventually(check, timeout=20)


def public_counts(host: Host) -> dict[str, int]:
    response = host.client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "healthy" not in json.dumps(body), "/health names no plugin"
    return body["plugin_health"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("source", [HEALTHY_PLUGIN, ASYNC_HEALTH], ids=["sync", "async"])
def test_a_failing_plugin_is_flagged_keeps_serving_and_recovers(host: Host, source: str) -> None:
    host.drop(make_zip(host.staging, "healthy", "1.0.0", source))
    first = health_of(host, "healthy", "ok", None)
    assert first["checked_at"] and first["duration_ms"] is not None
    assert public_counts(host) == {"ok": 1, "failing": 0, "unknown": 0}

    answer(host, "healthy", "false")
    assert health_of(host, "healthy", "failing")["detail"] == "health() returned False"
    assert host.get("/app/healthy/hello").json() == {"hello": "still serving"}, "a failing plugin keeps serving"
    assert public_counts(host) == {"ok": 0, "failing": 1, "unknown": 0}
    listed = {v["id"]: v for v in host.get("/api/admin/plugins").json()}
    assert listed["healthy"]["health"]["status"] == "failing" and listed["healthy"]["state"] == "active"
    assert host.manager.views["healthy"].health.status == "failing", "what the metrics read"

    answer(host, "healthy", "raise")
    raised = health_of(host, "healthy", "failing", starts="health() raised RuntimeError: the database is gone xxx")
    raised = raised["detail"]
    assert len(raised) == HEALTH_DETAIL and raised.endswith("…") and "\n" not in raised

    answer(host, "healthy", "slow")
    health_of(host, "healthy", "failing", "health() did not answer within 1 s")
    assert host.get("/app/healthy/hello").status_code == 200, "a slow health() holds no request up"

    answer(host, "healthy", "ok")
    health_of(host, "healthy", "ok", None)
    assert public_counts(host) == {"ok": 1, "failing": 0, "unknown": 0}


@pytest.mark.parametrize(
    ("state", "status", "detail"),
    [
        ("none", "ok", None),
        ("text", "ok", "3 jobs queued"),
        ("detail", "ok", '{"queue": 3}'),
        ("dict-fail", "failing", "disk full"),
        ("odd", "failing", "health() returned int, not True, False, a str or a dict"),
    ],
)
def test_what_a_health_answer_says(host: Host, state: str, status: str, detail: str | None) -> None:
    answer(host, "healthy", state)
    host.drop(make_zip(host.staging, "healthy", "1.0.0", HEALTHY_PLUGIN))
    health_of(host, "healthy", status, detail)


def test_a_sandboxed_plugins_health_runs_in_its_worker(host: Host) -> None:
    host.drop(make_zip(host.staging, "boxed", "1.0.0", HEALTHY_PLUGIN, sandbox=True))
    health_of(host, "boxed", "ok", None)
    answer(host, "boxed", "raise")
    health_of(host, "boxed", "failing", starts="health() raised RuntimeError: the database is gone")
    assert host.get("/app/boxed/hello").json() == {"hello": "still serving"}
    answer(host, "boxed", "detail")
    health_of(host, "boxed", "ok", '{"queue": 3}')
    assert public_counts(host) == {"ok": 1, "failing": 0, "unknown": 0}


def test_a_plugin_without_health_is_unknown(host: Host) -> None:
    host.drop(make_zip(host.staging, "plain", "1.0.0", route("hi")))
    host.wait_view("plain", "active")
    assert host.view("plain")["health"] == {  # type: ignore[index]
        "status": "unknown", "detail": "it defines no health()", "checked_at": None, "duration_ms": None,
    }  # fmt: skip
    assert public_counts(host) == {"ok": 0, "failing": 0, "unknown": 1}


def test_health_is_checked_right_after_a_load_not_a_period_later(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "HEALTH_EVERY", 3600.0)
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as host:
        host.drop(make_zip(host.staging, "healthy", "1.0.0", HEALTHY_PLUGIN))
        health_of(host, "healthy", "ok", None)
        answer(host, "healthy", "false")
        host.client.blocking_portal.call(host.manager.check_health)  # what the periodic loop runs
        health_of(host, "healthy", "failing", "health() returned False")


@pytest.mark.parametrize(
    ("returned", "judged"),
    [
        (True, ("ok", None)),
        (None, ("ok", None)),
        (False, ("failing", "health() returned False")),
        ("  two\n lines ", ("ok", "two lines")),
        ("", ("ok", None)),
        ({"ok": False}, ("failing", None)),
        ({"ok": True, "detail": 7}, ("ok", "7")),
        ({"ok": "yes"}, ("failing", "health() returned a dict without a true or false `ok`")),
        ({"state": "fine"}, ("failing", "health() returned a dict without a true or false `ok`")),
        ([1], ("failing", "health() returned list, not True, False, a str or a dict")),
    ],
)
def test_judge(returned: Any, judged: tuple[str, str | None]) -> None:
    assert judge(returned) == judged
