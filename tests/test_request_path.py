"""The layers every request passes (`xcore.web.calls`, `xcore.web.dispatch`): cheaper calls, same behaviour."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.response import Stream

from conftest import PASSWORDS, create_account, plugin_host
from xcore.web.calls import direct
from xcore.web.dispatch import Dispatch, Mount, entry


class Layer:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> str:
        self.calls.append(args)
        return "served"


def plain(*args: Any) -> str:
    return "plain"


def test_direct_calls_an_instance_through_its_bound_method_and_leaves_other_callables_alone() -> None:
    layer = Layer()
    call = direct(layer)
    assert call is not layer and call.__self__ is layer and call.__func__ is Layer.__call__
    assert call(1, 2, 3) == "served" and layer.calls == [(1, 2, 3)]
    assert direct(plain) is plain
    assert direct(call) is call, "a bound method is already direct"
    assert direct(Layer) is Layer, "a class is called to make an instance, not served"
    assert direct(len) is len
    app = Litestar(route_handlers=[])
    assert direct(app).__self__ is app and direct(app).__func__ is Litestar.__call__


def recording_app(**options: Any) -> tuple[Litestar, list[tuple[dict[str, Any], Any]]]:
    """A Litestar app whose ASGI handler (what `Litestar.__call__` calls) records the scope and send it gets."""
    app = Litestar(route_handlers=[], logging_config=None, **options)
    seen: list[tuple[dict[str, Any], Any]] = []

    async def handler(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((dict(scope), send))

    app.asgi_handler = handler
    return app, seen


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b"", "root_path": ""}
    return {**scope, **extra}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


@pytest.mark.parametrize("state", [None, {"request_id": "abc"}], ids=["no state", "state"])
async def test_dispatch_enters_an_app_as_litestar_call_does(state: dict[str, Any] | None) -> None:
    """Dispatch skips `Litestar.__call__`'s coroutine and sets up the scope itself: what the app's handler gets
    must be what it gets through `Litestar.__call__`, or a Litestar release that does more there breaks it."""
    app, seen = recording_app()
    extra = {} if state is None else {"state": state}
    await app(http_scope("/x", **extra), receive, send)  # type: ignore[arg-type]
    await Dispatch(app)(http_scope("/x", **extra), receive, send)
    (through_litestar, send_1), (through_dispatch, send_2) = seen
    assert through_dispatch == through_litestar
    assert through_dispatch["app"] is app and through_dispatch["litestar_app"] is app
    assert send_1 is send and send_2 is send, "no before_send hook: send goes through unwrapped both ways"


async def test_dispatch_enters_an_app_with_before_send_hooks_through_litestar() -> None:
    sent: list[str] = []

    async def hook(message: Any, scope: Any) -> None:
        sent.append(message["type"])

    app, seen = recording_app(before_send=[hook])
    await Dispatch(app)(http_scope("/x"), receive, send)
    ((scope, wrapped),) = seen
    assert wrapped is not send and scope["litestar_app"] is app
    await wrapped({"type": "http.response.start", "status": 200, "headers": []})
    assert sent == ["http.response.start"], "Litestar's own wrapper runs the hook"


async def test_dispatch_sends_each_plugin_prefix_to_its_app_and_the_rest_to_the_core() -> None:
    @get("/", sync_to_thread=False)
    def core_root() -> str:
        return "core"

    @get("/app/notes", sync_to_thread=False)
    def notes() -> str:
        return "plugin"

    core = Litestar(route_handlers=[core_root], logging_config=None, openapi_config=None)
    plugins = Litestar(route_handlers=[notes], logging_config=None)
    other = Litestar(route_handlers=[notes], logging_config=None)
    dispatch = Dispatch(core, [Mount.of("/app/notes", plugins), Mount.of("/app/notes2/deep", other)])
    for path, expected in [("/app/notes", plugins), ("/app/notes/", plugins), ("/app//notes", plugins),
                           ("/app/notes/3/x", plugins), ("/app/notesx", core), ("/", core), ("/app", core),
                           ("/app/notes2", core), ("/app/notes2/deep/1", other)]:  # fmt: skip
        answers: list[dict[str, Any]] = []

        async def collect(message: dict[str, Any]) -> None:
            answers.append(message)  # noqa: B023  (used before the loop moves on)

        scope = http_scope(path, raw_path=path.encode(), scheme="http", http_version="1.1", asgi={"version": "3.0"})
        await dispatch(scope, receive, collect)
        assert scope["litestar_app"] is expected, path
        assert answers[0]["type"] == "http.response.start", path


def test_errors_through_the_switch_come_out_as_through_the_app(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's Dispatch enters the apps past Litestar's error layer, and the Switch's request coroutine hands a
    request's exception to `Dispatch.recover`: router errors, a handler's validation error and a crash must come
    out exactly as the app answers them on its own (`Litestar.__call__`, error layer included)."""
    from litestar.testing import TestClient

    from xcore.web import core_routes
    from xcore.web.app import build_app

    create_account(runtime, "root", ["superadmin"])
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/no-such-route", {}),  # the router: 404
        ("DELETE", "/api/version", {}),  # the router: 405
        ("POST", "/api/auth/login", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", "/api/auth/login", {"json": {"username": "root"}}),  # a missing field: 400
        ("GET", "/api/admin/system", {"auth": False}),  # the guard: 401
        ("GET", "/health", {"crash": True}),  # the handler raises: 500
    ]
    core = build_app(runtime)
    assert entry(core).__self__.inner is core.asgi_router, "the worker's path: the guard, then the router alone"
    answers: dict[str, list[tuple[int, Any]]] = {}
    with TestClient(build_app(runtime)) as alone, plugin_host(runtime) as switched:
        login = {"username": "root", "password": PASSWORDS["root"]}
        token = alone.post("/api/auth/login", json=login).json()["access_token"]
        for name, client in (("alone", alone), ("switched", switched)):
            client.raise_server_exceptions = False
            for method, path, options in cases:
                options = dict(options)
                headers = options.pop("headers", {})
                if options.pop("auth", True):
                    headers["authorization"] = f"Bearer {token}"
                with monkeypatch.context() as patch:
                    if options.pop("crash", False):
                        patch.setattr(core_routes, "check_database", _crash)
                    response = client.request(method, path, headers=headers, **options)
                document = response.json()
                document.pop("request_id", None)
                answers.setdefault(name, []).append((response.status_code, document))
    assert [status for status, _ in answers["alone"]] == [404, 405, 400, 400, 401, 500]
    assert answers["switched"] == answers["alone"]


def test_a_failure_in_the_access_guard_is_answered_with_a_problem_document(
    runtime: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error in the guard itself (here the account lookup breaks) happens before any route is
    chosen; the app's own handlers answer it through the Switch, as for a path no route serves: a logged error
    and a 500 problem document that carries the request id, never the server's bare 500 or a traceback."""
    from xcore.web import guard

    create_account(runtime, "root", ["superadmin"])
    with plugin_host(runtime) as client:
        login = {"username": "root", "password": PASSWORDS["root"]}
        token = client.post("/api/auth/login", json=login).json()["access_token"]
        client.raise_server_exceptions = False

        def broken(*args: Any) -> Any:
            raise RuntimeError("the account store broke")

        monkeypatch.setattr(guard, "identify", broken)
        headers = {"authorization": f"Bearer {token}", "x-request-id": "guard-crash-1"}
        with caplog.at_level("ERROR", logger="xcore"):
            response = client.get("/api/admin/system", headers=headers)
        monkeypatch.undo()
        assert client.get("/api/admin/system", headers=headers).status_code == 200, "the next request is served"
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "guard-crash-1"
    document = response.json()
    assert document["status"] == 500 and document["request_id"] == "guard-crash-1"
    assert "account store" not in response.text and "Traceback" not in response.text
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "GET /api/admin/system" in r.getMessage()]
    assert errors and "the account store broke" in str(errors[0].exc_info[1])


def _crash(runtime: Any) -> Any:
    raise RuntimeError("the check broke")


async def _chunks() -> Any:
    yield b"first"
    raise RuntimeError("broke half way")


@get("/stream", sync_to_thread=False)
def _stream() -> Stream:
    return Stream(_chunks())


async def test_an_error_after_the_response_started_is_raised_as_litestar_raises_it(data_dir: Path) -> None:
    """A streamed response that fails half way cannot be answered with a problem document any more; Litestar's
    error layer raises "exception caught after response started", and so does `Dispatch.recover`."""
    from litestar.exceptions import LitestarException

    from xcore.runtime import open_runtime
    from xcore.server import prepare_database
    from xcore.web.app import _litestar
    from xcore.web.requestlog import logged
    from xcore.web.switch import Generation

    runtime = open_runtime(data_dir, environ={"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/stream": {"public": true}}'})
    prepare_database(runtime)
    try:
        app = _litestar(runtime, [_stream], None)
        assert entry(app).__self__.inner is app.asgi_router, "the fast entry: a guard in front of the router alone"
        sent: list[dict[str, Any]] = []

        async def collect(message: dict[str, Any]) -> None:
            sent.append(message)

        async def client_stays() -> dict[str, Any]:
            await asyncio.Event().wait()  # no disconnect while the response streams
            return {}

        def scope() -> dict[str, Any]:
            return http_scope(
                "/stream", raw_path=b"/stream", scheme="http", http_version="1.1", asgi={"version": "3.0"}
            )

        with pytest.raises(LitestarException, match="after response started") as alone:
            await app(scope(), client_stays, collect)  # type: ignore[arg-type]
        with pytest.raises(LitestarException, match="after response started") as switched:
            await logged(Generation(Dispatch(app), 1), scope(), client_stays, collect)
        assert type(switched.value.__cause__) is type(alone.value.__cause__)
        assert "broke half way" in repr(switched.value.__cause__)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] * 2
    finally:
        runtime.close()
