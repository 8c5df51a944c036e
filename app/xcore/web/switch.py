"""The Switch: the ASGI callable of a worker. It holds the current Litestar app and swaps in new ones.

Litestar cannot unregister routes, so a plugin change builds a new app for that plugin and a new Dispatch over
all of them (`web.plugin_apps`), and swaps the Dispatch in. `swap_in(app)`:

1. starts the new app's lifespan in a task of its own (a Litestar app's startup and shutdown must run in the
   same asyncio task) and waits for its startup to complete; if startup fails, the old app keeps serving and
   the error is raised to the caller;
2. swaps the reference, so new requests go to the new app;
3. lets requests in flight finish on the old app, then runs the old app's shutdown.

The Switch answers the server's own lifespan: at startup it builds the first app with `factory` (or runs the
`startup` hook, which swaps the first app in itself), at shutdown it shuts the current app down, then runs the
`shutdown` hook. Every HTTP request passes through `requestlog.logged`, which counts it in flight on its generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from xcore.logs import access
from xcore.web.calls import direct
from xcore.web.headers import secure
from xcore.web.requestlog import logged

log = logging.getLogger("xcore.web")

ASGIApp = Callable[..., Any]
# How long a retired app may keep serving requests in flight (long polls, streams, websockets) before its
# shutdown runs anyway.
DRAIN_TIMEOUT = 60.0


class AppStartupError(RuntimeError):
    """AppStartupError is raised by swap_in when the new app's startup failed; the old app keeps serving."""


class Generation:
    """Generation is one app with its lifespan task and the count of requests it is serving.

    `serve` calls the app (`direct(app)`: see `xcore.web.calls`). An app that lets a request's exceptions out
    to be answered later (the Dispatch) has `recover(scope, receive, send, exc, started)`: the Switch calls it.
    """

    def __init__(self, app: ASGIApp, number: int) -> None:
        self.app = app
        self.serve = direct(app)
        self.recover = getattr(app, "recover", None)
        self.number = number
        self.inflight = 0
        self.retiring = False
        self.drained = asyncio.Event()
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """start runs the app's lifespan startup; raises AppStartupError when it fails."""
        self._task = asyncio.create_task(self._lifespan(), name=f"xcore-app-{self.number}")
        await self._started.wait()
        if self._failure is not None:
            await self._task
            raise AppStartupError(self._failure)

    async def stop(self) -> None:
        """stop runs the app's lifespan shutdown and waits for it."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _lifespan(self) -> None:
        startup_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal startup_sent
            if not startup_sent:
                startup_sent = True
                return {"type": "lifespan.startup"}
            await self._stop.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                self._started.set()
            elif kind == "lifespan.startup.failed":
                self._failure = message.get("message") or "startup failed"
                self._started.set()
            elif kind == "lifespan.shutdown.failed":
                log.error("app generation %d: shutdown failed: %s", self.number, message.get("message"))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if not self._started.is_set():
                self._failure = f"{type(exc).__name__}: {exc}"
                self._started.set()
            elif not isinstance(exc, asyncio.CancelledError):
                log.exception("app generation %d: lifespan error", self.number)


class Switch:
    """Switch forwards each request to the current app; `swap_in` replaces the app without dropping requests."""

    def __init__(
        self,
        factory: Callable[[], ASGIApp] | None = None,
        *,
        startup: Callable[[Switch], Awaitable[None]] | None = None,
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._factory = factory
        self._startup = startup
        self._shutdown = shutdown
        self._current: Generation | None = None
        self._generations = 0
        self._swap_lock: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def app(self) -> ASGIApp | None:
        """app is the app that new requests go to."""
        return self._current.app if self._current else None

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # An HTTP request is the one coroutine of `logged`: a plain call here adds none of its own.
        generation = self._current
        if generation is not None and scope["type"] == "http":
            return logged(generation, scope, receive, send)
        return self._other(scope, receive, send)

    async def _other(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """_other serves the server's lifespan, websockets, and requests before the first app is in."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._server_lifespan(receive, send)
            return
        generation = self._current
        if generation is None:
            await _unavailable(scope, send)
            return
        generation.inflight += 1
        try:
            await generation.serve(scope, receive, send)
        except Exception as exc:
            if generation.recover is None:
                raise
            await generation.recover(scope, receive, send, exc, False)  # websockets: no response to start
        finally:
            generation.inflight -= 1
            if generation.retiring and generation.inflight == 0:
                generation.drained.set()

    async def swap_in(self, app: ASGIApp, retired: Callable[[], Awaitable[None]] | None = None) -> None:
        """swap_in starts `app` and makes it current; raises AppStartupError (old app kept) if it fails.

        `retired` runs once the old app has served its last request and shut down (at once when there is none).
        """
        if self._swap_lock is None:
            self._swap_lock = asyncio.Lock()
        async with self._swap_lock:
            self._generations += 1
            fresh = Generation(app, self._generations)
            await fresh.start()
            old, self._current = self._current, fresh
            if old is not None or retired is not None:
                task = asyncio.create_task(self._retire(old, retired))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Generation | None, retired: Callable[[], Awaitable[None]] | None) -> None:
        if old is not None:
            old.retiring = True
            if old.inflight:
                try:
                    await asyncio.wait_for(old.drained.wait(), DRAIN_TIMEOUT)
                except TimeoutError:
                    log.warning(
                        "app generation %d: %d request(s) still running after %.0f s; shutting it down anyway",
                        old.number, old.inflight, DRAIN_TIMEOUT,
                    )  # fmt: skip
            await old.stop()
        if retired is not None:
            try:
                await retired()
            except Exception:
                log.exception("cleaning up after app generation %d failed", old.number if old else 0)

    async def close(self) -> None:
        """close shuts down the current app and waits for retiring ones."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        current, self._current = self._current, None
        if current is not None:
            await current.stop()

    async def _server_lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._startup is not None:
                        await self._startup(self)
                    elif self._factory is not None:
                        await self.swap_in(self._factory())
                except Exception as exc:
                    log.exception("the app could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.close()
                    if self._shutdown is not None:
                        await self._shutdown()
                    access.flush()
                except Exception as exc:
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _unavailable(scope: dict[str, Any], send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"xcore is starting"}'
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"retry-after", b"1"))
    secure(headers, scope.get("scheme") == "https")
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
