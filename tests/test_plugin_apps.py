"""Per-plugin app generations (`xcore.web.plugin_apps`): a reload builds and starts only the changed plugin's app,
however many plugins are installed; plugins loaded together share one app, which is built apart when it fails,
so the failure falls on the plugin that caused it; an app shuts down once none of its versions serves; and
/openapi.json shows exactly what serves, each plugin's part cut from its app's document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar

from test_plugin_manager import Host, configured_runtime, eventually, make_zip, open_host, preinstall, route
from xcore.web import plugin_apps
from xcore.web.dispatch import document_under
from xcore.web.switch import Generation

# Litestar refuses to build an app with this route: the dependency and the path parameter share a name.
AMBIGUOUS = """
from xcore.sdk import get
from litestar.di import Provide


@get("/{x:int}", sync_to_thread=False, dependencies={"x": Provide(lambda: 1, sync_to_thread=False)})
def clash(x: int) -> str:
    return "never"


router = [clash]
"""


class Recorder:
    """Recorder counts the plugin apps built (with the prefixes of each) and the app lifespans started and
    stopped, by wrapping what `xcore.web.plugin_apps` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.builds: list[list[str]] = []
        self.running: set[int] = set()
        self.stopped = 0
        build = plugin_apps.build_plugin_app
        recorder = self

        def counted(runtime: Any, mounts: list[Any], manager: Any) -> Litestar:
            recorder.builds.append(sorted(m.path for m in mounts))
            return build(runtime, mounts, manager)

        class Recorded(Generation):
            async def start(self) -> None:
                await super().start()
                recorder.running.add(id(self))

            async def stop(self) -> None:
                await super().stop()
                recorder.running.discard(id(self))
                recorder.stopped += 1

        monkeypatch.setattr(plugin_apps, "build_plugin_app", counted)
        monkeypatch.setattr(plugin_apps, "Generation", Recorded)


@pytest.fixture
def five(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, Recorder]]:
    """five: a host that started with five plugins installed, p1 to p5, and the recorder of its plugin apps."""
    recorder = Recorder(monkeypatch)
    with configured_runtime(tmp_path / "data") as rt:
        preinstall(rt, *(make_zip(tmp_path / "zips", f"p{n}", "1.0.0", route(f"p{n} one")) for n in range(1, 6)))
        with open_host(rt, tmp_path / "staging") as running:
            yield running, recorder


def test_plugins_loaded_at_the_start_share_one_app_and_a_reload_builds_only_the_changed_one(
    five: tuple[Host, Recorder],
) -> None:
    host, recorder = five
    assert recorder.builds == [[f"/app/p{n}" for n in range(1, 6)]], "the five plugins of the start: one app"
    assert len(recorder.running) == 2, "the core app and the plugins' shared app"

    host.drop(make_zip(host.staging, "p3", "2.0.0", route("p3 two"), zip_name="p3-1.0.0.zip"))
    host.wait_answer("/app/p3/hello", says="p3 two", version="2.0.0")
    assert recorder.builds[1:] == [["/app/p3"]], "a reload builds the changed plugin's app, and nothing else"
    for n in (1, 2, 4, 5):
        assert host.get(f"/app/p{n}/hello").json()["says"] == f"p{n} one"
    assert len(recorder.running) == 3, "the core, p3's app, and the shared app, which still serves p1, p2, p4, p5"
    assert host.view("p3")["routes"] == ["GET /app/p3/hello"]  # type: ignore[index]


def test_a_shared_app_shuts_down_once_none_of_its_plugins_serves(five: tuple[Host, Recorder]) -> None:
    host, recorder = five
    for n in range(1, 6):
        host.drop(make_zip(host.staging, f"p{n}", "2.0.0", route(f"p{n} two"), zip_name=f"p{n}-1.0.0.zip"))
        host.wait_answer(f"/app/p{n}/hello", says=f"p{n} two")
    eventually(lambda: _expect(len(recorder.running), 6))  # the core and one app each; the shared one stopped
    assert recorder.stopped == 1

    host.client.post("/api/admin/plugins/p1/disable", headers=host.root)
    eventually(lambda: _expect(len(recorder.running), 5))
    assert host.get("/app/p1/hello").status_code == 404


def test_a_plugin_that_breaks_the_shared_app_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(monkeypatch)
    with configured_runtime(tmp_path / "data") as rt:
        zips = tmp_path / "zips"
        preinstall(rt, make_zip(zips, "good", "1.0.0", route("fine")), make_zip(zips, "clash", "1.0.0", AMBIGUOUS))
        preinstall(rt, make_zip(zips, "other", "1.0.0", route("also fine")))
        with open_host(rt, tmp_path / "staging") as host:
            assert host.get("/app/good/hello").json()["says"] == "fine"
            assert host.get("/app/other/hello").json()["says"] == "also fine"
            view = host.wait_view("clash", "failed")
            assert "its routes cannot be mounted" in view["error"] and "ambiguity" in view["error"], view
            assert host.get("/app/clash/1").status_code == 404
            assert "/app/clash/{x}" not in host.get("/openapi.json").json()["paths"]
    assert recorder.builds[0] == ["/app/clash", "/app/good", "/app/other"], "tried together first"
    assert sorted(recorder.builds[1:]) == [["/app/clash"], ["/app/good"], ["/app/other"]], "then each alone"


def test_the_openapi_document_shows_each_plugin_as_it_serves_now(five: tuple[Host, Recorder]) -> None:
    """The shared app's document still holds p3's old routes; the merged one shows p3's new routes only."""
    host, _ = five
    two = route("two", "/renamed").replace("answer", "renamed") + "\nrouter = [renamed]\n"
    host.drop(make_zip(host.staging, "p3", "2.0.0", two, zip_name="p3-1.0.0.zip"))
    host.wait_answer("/app/p3/renamed", says="two")
    paths = host.get("/openapi.json").json()["paths"]
    assert "/app/p3/renamed" in paths and "/app/p3/hello" not in paths
    assert {f"/app/p{n}/hello" for n in (1, 2, 4, 5)} <= set(paths)


def test_document_under_keeps_the_paths_under_a_prefix_and_what_they_refer_to() -> None:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def get(tag: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"tags": [tag], "responses": {"200": {"content": {"application/json": {"schema": schema}}}}}}

    document = {
        "openapi": "3.1.0",
        "info": {"title": "xcore"},
        "paths": {
            "/app/a": get("a", ref("Note")),
            "/app/a/list": get("a", {"type": "array", "items": ref("Page")}),
            "/app/ab": get("ab", ref("Other")),
        },
        "components": {
            "schemas": {
                "Note": {"type": "object", "properties": {"author": ref("Person")}},
                "Person": {"type": "object"},
                "Page": {"type": "object"},
                "Other": {"type": "object"},
            },
            "securitySchemes": {"bearer": {"type": "http"}},
        },
        "tags": [{"name": "a"}, {"name": "ab"}],
    }
    part = document_under(document, "/app/a")
    assert set(part["paths"]) == {"/app/a", "/app/a/list"}, "a prefix is a whole path segment: /app/ab is not in"
    assert set(part["components"]["schemas"]) == {"Note", "Person", "Page"}, "what the paths refer to, at any depth"
    assert part["components"]["securitySchemes"] == {"bearer": {"type": "http"}}
    assert part["tags"] == [{"name": "a"}]
    assert part["info"] == {"title": "xcore"}


def _expect(actual: object, expected: object) -> None:
    assert actual == expected, f"{actual!r} != {expected!r}"
