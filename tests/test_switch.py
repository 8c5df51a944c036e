"""The Switch swaps apps without failing a request, keeps the old app when a new one cannot start, and runs
each app's startup and shutdown once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from litestar import Litestar, get

from xcore.web.requestlog import logged
from xcore.web.switch import AppStartupError, Switch


def make_app(name: str, events: list[str], fail_startup: bool = False, delay: float = 0.0) -> Litestar:
    @get("/who")
    async def who() -> dict[str, str]:
        if delay:
            await asyncio.sleep(delay)
        return {"app": name}

    async def startup() -> None:
        events.append(f"{name} up")
        if fail_startup:
            raise RuntimeError(f"{name} cannot start")

    async def shutdown() -> None:
        events.append(f"{name} down")

    return Litestar([who], on_startup=[startup], on_shutdown=[shutdown], logging_config=None, openapi_config=None)


async def lifespan_start(
    switch: Switch,
) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]], list[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(switch({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    while not sent:
        await asyncio.sleep(0.001)
    return task, inbox, sent


async def test_swaps_under_load_without_a_failed_request() -> None:
    events: list[str] = []
    switch = Switch(lambda: make_app("v0", events, delay=0.002))
    task, inbox, sent = await lifespan_start(switch)
    assert sent == [{"type": "lifespan.startup.complete"}]
    transport = httpx.ASGITransport(app=switch)  # type: ignore[arg-type]
    statuses: list[int] = []
    seen: set[str] = set()

    async with httpx.AsyncClient(transport=transport, base_url="http://xcore") as client:

        async def hammer() -> None:
            for _ in range(60):
                response = await client.get("/who")
                statuses.append(response.status_code)
                seen.add(response.json()["app"])

        async def swapper() -> None:
            for n in range(1, 11):
                await asyncio.sleep(0.005)
                await switch.swap_in(make_app(f"v{n}", events, delay=0.002))

        await asyncio.gather(*(hammer() for _ in range(8)), swapper())

    assert statuses and set(statuses) == {200}, "no request fails because of a swap"
    assert len(seen) > 1
    await inbox.put({"type": "lifespan.shutdown"})
    await task
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    for n in range(11):
        assert events.count(f"v{n} up") == 1 and events.count(f"v{n} down") == 1
        assert events.index(f"v{n} up") < events.index(f"v{n} down")


async def test_failed_startup_keeps_the_old_app_serving() -> None:
    events: list[str] = []
    switch = Switch(lambda: make_app("good", events))
    task, inbox, _ = await lifespan_start(switch)
    with pytest.raises(AppStartupError, match="bad cannot start"):
        await switch.swap_in(make_app("bad", events, fail_startup=True))
    transport = httpx.ASGITransport(app=switch)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://xcore") as client:
        assert (await client.get("/who")).json() == {"app": "good"}
    await inbox.put({"type": "lifespan.shutdown"})
    await task
    assert "good down" in events


async def test_old_app_shuts_down_only_after_its_requests_finish() -> None:
    events: list[str] = []
    switch = Switch(lambda: make_app("slow", events, delay=0.3))
    task, inbox, _ = await lifespan_start(switch)
    transport = httpx.ASGITransport(app=switch)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://xcore") as client:
        pending = asyncio.create_task(client.get("/who"))
        await asyncio.sleep(0.05)
        await switch.swap_in(make_app("fast", events))
        await asyncio.sleep(0.05)
        assert "slow down" not in events, "the old app still serves a request"
        assert (await pending).json() == {"app": "slow"}
        await asyncio.sleep(0.05)
        assert "slow down" in events
    await inbox.put({"type": "lifespan.shutdown"})
    await task


async def test_first_app_failing_to_start_fails_the_server_lifespan() -> None:
    switch = Switch(lambda: make_app("broken", [], fail_startup=True))
    task, _, sent = await lifespan_start(switch)
    await task
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "broken cannot start" in sent[0]["message"]


async def test_a_request_that_never_ends_does_not_keep_the_old_app_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    from xcore.web import switch as module

    monkeypatch.setattr(module, "DRAIN_TIMEOUT", 0.2)
    events: list[str] = []
    switch = Switch(lambda: make_app("stuck", events, delay=30))
    task, inbox, _ = await lifespan_start(switch)
    retired: list[str] = []

    async def cleanup() -> None:
        retired.append("cleaned")

    transport = httpx.ASGITransport(app=switch)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://xcore") as client:
        hanging = asyncio.create_task(client.get("/who"))
        await asyncio.sleep(0.05)
        await switch.swap_in(make_app("next", events), retired=cleanup)
        await asyncio.sleep(0.5)
        assert "stuck down" in events and retired == ["cleaned"], "shut down once the drain time ran out"
        hanging.cancel()
    await inbox.put({"type": "lifespan.shutdown"})
    await task


async def test_an_http_request_runs_in_one_coroutine_of_the_switch() -> None:
    """The Switch is on every request's path, so it hands an HTTP request to `requestlog.logged` with a plain call:
    the request log and the in-flight count are one coroutine, not one per layer."""
    switch = Switch(lambda: make_app("one", []))
    task, inbox, _ = await lifespan_start(switch)
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http", "method": "GET", "path": "/who", "raw_path": b"/who", "query_string": b"", "root_path": "",
        "headers": [], "scheme": "http", "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip
    served = switch(scope, receive, send)
    assert served.cr_code is logged.__code__
    await served
    assert answer[0]["status"] == 200 and b"x-request-id" in dict(answer[0]["headers"])
    assert switch._current is not None and switch._current.inflight == 0
    await inbox.put({"type": "lifespan.shutdown"})
    await task
