"""The host's side of a sandboxed plugin: its worker process, the requests forwarded to it, and its restarts.

A plugin version that runs sandboxed (`sandbox_reason` decides: the bundle's `sandbox` flag and the operator's
`manager.plugins.sandbox` policy) is never imported by the host. `load_sandboxed` has the fork server
(`xcore.plugins.zygote`) start its worker (`xcore.plugin_worker`) and returns a `LoadedPlugin` whose Router
forwards every request under the plugin's prefix to that worker, so the web layer mounts it like any other
version, behind the same access guard and request log.

- The worker has a scrubbed environment (`confine.scrubbed_environment`), the plugin's data folder as its home
  and working folder, and one end of two socket pairs; nothing of the host's settings, secret key or database.
- A forwarded request carries the principal (id, name, roles, permissions), never the Authorization, Cookie
  or CSRF headers. The worker answers within the plugin's `request_timeout`, or the client gets 504 and the
  worker is replaced (a handler in an endless loop holds nothing else up).
- A worker that dies (a crash, `os._exit`, out of memory) fails its requests in flight with 502, and so are
  requests until it is back: it is started again after 1 s, then 2, 4... up to RESTART_MAX, the delay starting
  over once a worker has run for RESTART_MAX. Nothing else is touched: the core and other plugins serve on.
- What the worker writes to stderr (JSON lines of its log records, or anything else) is logged by the host
  with the plugin's context, so the log viewer shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import msgspec
from litestar import Router, asgi
from litestar.types import Receive, Scope, Send

from xcore.config.schema import PluginsConfig, SandboxLimits
from xcore.plugins import wire
from xcore.plugins.confine import Limits, available
from xcore.plugins.contract import HEALTH_DETAIL, HEALTH_TIMEOUT, HOOK_TIMEOUT
from xcore.plugins.loader import LoadedPlugin, PluginLoadError
from xcore.plugins.manifest import Manifest
from xcore.plugins.wheels import Libraries
from xcore.plugins.zygote import Child, ZygoteError, zygote
from xcore.sdk import PluginContext, TaskSpec

log = logging.getLogger("xcore.plugins")
RESTART_FIRST = 1.0  # seconds before a crashed worker is started again; doubled each time, up to RESTART_MAX
RESTART_MAX = 60.0
STOP_GRACE = 5.0  # seconds a worker has to exit after `stop` before it is killed
WATCH_EVERY = 0.25  # seconds between two looks for requests past their time limit
REQUIRED_LAYERS = ("landlock-fs", "seccomp", "no-new-privs", "capabilities", "rlimits")
FORWARDED_OUT = frozenset({b"authorization", b"cookie", b"x-csrf-token"})
MAX_BODY = 16 * 1024 * 1024  # the largest request body forwarded to a worker
HOST_COOKIE = b"xcore_"  # the host's cookies (session, refresh, CSRF) are named so; a sandboxed plugin's never are
_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-z]+\Z")  # an HTTP token (RFC 9110), in lower case
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
RELAY_LINES = 200  # lines a second of a worker's stderr that are logged; past it, one notice, and the rest dropped
RELAY_PIECE = 64 * 1024  # bytes of a line without a line break logged as one record


def sandbox_reason(manifest: Manifest, settings: PluginsConfig, must: str | None = None) -> tuple[bool, str]:
    """sandbox_reason says whether `manifest`'s plugin runs sandboxed on this host, and why it cannot load at all
    (an empty reason when it can). `allow`: as the bundle asks; `require`: every plugin not in
    `manager.plugins.trusted`; `off`: none, and a bundle that asks for a sandbox is refused. `must` says why this
    version runs sandboxed whatever else says (the signing policy). A sandboxed plugin whose required isolation
    layers this machine lacks is refused, naming them: it never runs without them."""
    mode = settings.sandbox
    if mode == "off":
        if must:
            return False, f"{must}, and the sandbox is off on this host (manager.plugins.sandbox)"
        if manifest.sandbox:
            return False, "it asks for a sandbox, and the sandbox is off on this host (manager.plugins.sandbox)"
        return False, ""
    sandboxed = bool(must) or manifest.sandbox or (mode == "require" and manifest.id not in settings.trusted)
    if not sandboxed:
        return False, ""
    here = available()
    missing = [name for name in REQUIRED_LAYERS if name in here.missing()]
    if missing:
        why = "; ".join(f"{name}: {here.layers.get(name, 'unknown')}" for name in missing)
        return True, f"it must run sandboxed, and this host lacks isolation layers it needs ({why})"
    return True, ""


def limits_for(manifest: Manifest, settings: PluginsConfig) -> tuple[Limits, float]:
    """limits_for are the operator's limits of `manifest`'s plugin (its own entry, else the defaults), and its
    request timeout in seconds. It has the network only when its plugin.json asks for it (`"network": true`)
    and the operator allows it."""
    chosen: SandboxLimits = settings.limits_by_plugin.get(manifest.id, settings.limits)
    limits = Limits(
        memory_mb=chosen.memory_mb,
        open_files=chosen.open_files,
        file_size_mb=chosen.file_size_mb,
        network=chosen.network and manifest.network,
    )
    return limits, chosen.request_timeout


class Exchange:
    """Exchange is one forwarded request's answer as it arrives: the frames, in order (`put`, `get`), and the
    time by which the worker must have answered it (`deadline`, on the loop's clock; None: no limit).

    Lighter than an asyncio.Queue: most answers are one frame, which `get` finds already there or waits for once.
    """

    __slots__ = ("deadline", "frames", "waiter")

    def __init__(self, deadline: float | None) -> None:
        self.frames: deque[list[Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = deadline

    def put(self, message: list[Any]) -> None:
        self.frames.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> list[Any]:
        while not self.frames:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.frames.popleft()


class WorkerGone(Exception):
    """WorkerGone: the worker ended (or never started) before it answered."""


class SandboxTaskError(Exception):
    """SandboxTaskError is a task run that failed in the worker: the worker's error and traceback."""


_EMPTY = inspect.Parameter.empty


class _Shown:
    """_Shown stands for a default value of a task's parameter in the worker: it shows as that value's repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Process:
    """Process is one running worker: its process, its socket, and the requests it is answering."""

    def __init__(self, proc: Child, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.exchanges: dict[int, Exchange] = {}
        self.numbers = itertools.count(1)
        self.started = time.monotonic()
        self.ended = asyncio.Event()
        self.reason = ""
        self.loop = asyncio.get_running_loop()
        self.outbox = wire.Outbox(writer)

    def exchange(self, *message: Any, timeout: float | None = None) -> tuple[int, Exchange]:
        """exchange sends a request frame (its number inserted second) and returns where its answer arrives, which
        must arrive within `timeout` seconds (the watchdog's to check: see `SandboxedPlugin._watchdog`)."""
        if self.ended.is_set():
            raise WorkerGone(self.reason or "the worker has ended")
        number = next(self.numbers)
        deadline = None if timeout is None else self.loop.time() + timeout
        found = self.exchanges[number] = Exchange(deadline)
        self.outbox.send(wire.frame(message[0], number, *message[1:]))
        return number, found

    async def pump(self) -> None:
        """pump hands each frame from the worker to its exchange, until the socket ends; then fails the rest."""
        try:
            while True:
                message = await wire.read(self.reader)
                if len(message) >= 2 and isinstance(message[1], int) and message[1] in self.exchanges:
                    self.exchanges[message[1]].put(message)
        except (EOFError, wire.WireError, ConnectionError) as exc:
            if not self.reason:
                self.reason = str(exc) if isinstance(exc, wire.WireError) else "the worker ended"
        self.ended.set()
        for exchange in self.exchanges.values():
            exchange.put(["gone"])

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def close(self) -> None:
        """close kills the worker and closes the host's end of its socket (a worker that never became ready)."""
        self.kill()
        self.writer.close()


class SandboxedPlugin:
    """SandboxedPlugin is one sandboxed plugin version on the host: its worker, restarted when it dies, and the
    ASGI app (`forward`) that serves its prefix."""

    def __init__(
        self,
        manifest: Manifest,
        params: dict[str, Any],
        data_dir: Path,
        timeout: float,
        task_host: Any = None,
        kv: Any = None,
        cache: Any = None,
    ) -> None:
        self.manifest = manifest
        self.task_host = task_host  # the process's `xcore.tasks.host.TaskHost`, which queues the plugin's runs
        self.kv = kv  # the plugin's `xcore.plugins.kv.KeyValue`, which the worker's `ctx.kv` calls reach
        self.cache = cache  # the plugin's `xcore.plugins.cache.PluginCache`, which the worker's `ctx.cache` reaches
        self.has_health = False  # whether the plugin defines `health` (the worker says so when it is ready)
        self.params = params
        self.data_dir = data_dir
        self.timeout = timeout
        self.process: Process | None = None
        self.openapi: dict[str, Any] = {}
        self.layers: dict[str, str] = {}
        self.tasks: dict[str, Any] = {}  # the worker's task declarations (`plugin_worker.Worker.task_declarations`)
        self.state = "starting"
        self.delay = RESTART_FIRST
        self.restart_at = 0.0
        self.stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def label(self) -> str:
        return f"{self.manifest.id} {self.manifest.version}"

    async def start(self) -> None:
        """start runs a worker and waits until it is ready; raises PluginLoadError with the reason it is not."""
        process = await self._spawn()
        try:
            with_timeout = asyncio.wait_for(wire.read(process.reader), HOOK_TIMEOUT)
            answer = await with_timeout
        except TimeoutError:
            process.close()
            raise PluginLoadError(f"its sandbox worker was not ready within {HOOK_TIMEOUT:.0f} s") from None
        except (EOFError, wire.WireError, ConnectionError):
            process.close()
            await process.proc.wait()
            raise PluginLoadError(
                f"its sandbox worker ended before it was ready (exit code {process.proc.returncode})"
            ) from None
        if answer[0] != "ready" or len(answer) != 2 or not isinstance(answer[1], dict):
            process.close()
            reason = answer[1] if answer[0] == "failed" and len(answer) == 2 else f"it answered {answer[0]!r}"
            raise PluginLoadError(str(reason))
        self.openapi = answer[1].get("openapi") or {}
        self.layers = answer[1].get("layers") or {}
        self.tasks = answer[1].get("tasks") or {}
        self.has_health = bool(answer[1].get("health"))
        self.process = process
        self.state = "running"
        self._keep(self._watch(process))
        self._keep(process.pump())
        self._keep(self._watchdog(process))

    async def _spawn(self) -> Process:
        """_spawn has the fork server start a worker (`xcore.plugins.zygote`) with its two sockets and its stderr,
        and sends it the `load` frame."""
        host, child = socket.socketpair()
        calls, child_calls = socket.socketpair()
        err_read, err_write = os.pipe()
        try:
            proc = await zygote().fork(self.data_dir, [child.fileno(), child_calls.fileno(), err_write])
        except ZygoteError as exc:
            host.close()
            calls.close()
            os.close(err_read)
            raise PluginLoadError(f"its sandbox worker could not be started: {exc}") from None
        finally:
            child.close()
            child_calls.close()
            os.close(err_write)
        name = f"xcore-sandbox-{self.manifest.id}"
        threading.Thread(target=self._answer_calls, args=(calls,), name=name, daemon=True).start()
        reader, writer = await asyncio.open_connection(sock=host)
        writer.write(wire.frame("load", self.params))
        stderr = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), os.fdopen(err_read, "rb", 0))
        self._keep(self._relay(stderr))
        return Process(proc, reader, writer)

    def _keep(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _relay(self, stream: asyncio.StreamReader) -> None:
        """_relay logs what the worker writes to stderr, with the plugin's context."""
        logger = logging.getLogger(f"xcore.plugins.{self.manifest.id}")
        extra = {"context": "plugins"}
        second, lines = 0, 0
        while line := await _line(stream):
            now = int(time.monotonic())
            if now != second:
                second, lines = now, 0
            lines += 1
            if lines > RELAY_LINES:  # a worker must not flood the host's log (and its disk)
                if lines == RELAY_LINES + 1:
                    logger.warning("over %d lines of its log in a second: the rest of them are dropped", RELAY_LINES)
                continue
            text = line.decode("utf-8", "replace").rstrip()
            try:
                record = json.loads(text)
                level = logging.getLevelName(str(record["level"]))
                message = str(record["message"])
            except (ValueError, KeyError, TypeError):
                level, message = logging.WARNING, text
            logger.log(level if isinstance(level, int) else logging.WARNING, "%s", message, extra=extra)

    async def _watch(self, process: Process) -> None:
        """_watch waits for the worker to end; unless it was stopped, it is started again after a delay."""
        code = await process.proc.wait()
        await process.ended.wait()
        if self.stopping or self.process is not process:
            return
        why = process.reason if process.reason and process.reason != "the worker ended" else ""
        why = why or (f"it was killed by signal {-code}" if code < 0 else f"it exited with code {code}")
        if time.monotonic() - process.started >= RESTART_MAX:
            self.delay = RESTART_FIRST
        self.restart_at = time.monotonic() + self.delay
        self.state = f"crashed ({why}), restarting in {self.delay:.0f} s"
        log.error("plugin %s: its sandbox worker ended: %s; restarting in %.0f s", self.label, why, self.delay)
        self.process = None
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, RESTART_MAX)
        while not self.stopping:
            try:
                await self.start()
                await self.hook("on_load")
                log.info("plugin %s: its sandbox worker is running again", self.label, extra={"context": "plugins"})
                return
            except PluginLoadError as exc:
                self.state = f"crashed ({exc}), restarting in {self.delay:.0f} s"
                log.error("plugin %s: its sandbox worker did not start again: %s", self.label, exc)
                if self.process is not None:
                    self.process.kill()
                    self.process = None
                await asyncio.sleep(self.delay)
                self.delay = min(self.delay * 2, RESTART_MAX)

    async def hook(self, name: str) -> None:
        """hook runs the plugin's `on_load` or `on_unload` in its worker; raises PluginLoadError when it fails."""
        process = self.process
        if process is None:
            raise PluginLoadError(f"{name}: the sandbox worker is not running")
        try:
            _, exchange = process.exchange("hook", name)
            answer = await asyncio.wait_for(exchange.get(), HOOK_TIMEOUT + 5)
        except (WorkerGone, TimeoutError):
            raise PluginLoadError(f"{name}: the sandbox worker did not answer") from None
        if answer[0] == "gone":
            raise PluginLoadError(f"{name}: the sandbox worker ended ({process.reason})")
        if answer[0] == "hooked" and len(answer) == 3 and answer[2]:
            raise PluginLoadError(str(answer[2]))

    async def health(self) -> tuple[str, str | None]:
        """health runs the plugin's health check in its worker: its status and detail (`xcore.plugins.health`);
        failing when the worker is not running or does not answer in time. Never raises."""
        process = self.process
        if process is None:
            return "failing", f"its sandbox worker is not running ({self.state})"
        try:
            _, exchange = process.exchange("health")
            answer = await asyncio.wait_for(exchange.get(), HEALTH_TIMEOUT + 5)
        except (WorkerGone, TimeoutError):
            return "failing", f"its sandbox worker did not answer the health check within {HEALTH_TIMEOUT + 5:g} s"
        if answer[0] == "gone":
            return "failing", f"its sandbox worker ended ({process.reason})"
        if answer[0] != "healthy" or len(answer) != 4 or answer[2] not in ("ok", "failing", "unknown"):
            return "failing", "its sandbox worker answered the health check with something else"
        detail = answer[3] if isinstance(answer[3], str) else None
        return answer[2], (detail[:HEALTH_DETAIL] if detail else None)

    def _answer_calls(self, sock: socket.socket) -> None:
        """_answer_calls answers the worker's calls (`wire.Caller`), in a thread of its own, until it ends."""
        with sock:
            while True:
                try:
                    message = wire.receive(sock)
                except (EOFError, wire.WireError, OSError):
                    return
                try:
                    sock.sendall(wire.frame(*self._answer(message)))
                except OSError:
                    return

    def _answer(self, message: list[Any]) -> list[Any]:
        """_answer is the answer to one call of the worker: a run of one of this plugin's own tasks queued, or an
        operation on its own `ctx.kv` or `ctx.cache`."""
        if message and message[0] == "kv":
            if self.kv is None:
                return ["refused", "ctx.kv: this host gives the plugin no store"]
            from xcore.plugins.kv import answer  # SQLAlchemy's: never in the worker, which imports this module

            return answer(self.kv, message)
        if message and message[0] == "cache":
            if self.cache is None:
                return ["refused", "ctx.cache: this host gives the plugin no cache"]
            from xcore.plugins.cache import answer as cache_answer  # Litestar's stores: never in the worker

            return cache_answer(self.cache, message)
        if message[0] != "enqueue" or len(message) != 6:
            return ["refused", f"the host does not answer {message[0]!r} calls"]
        _, name, args, kwargs, delay, eta = message
        if name not in self.tasks:
            return ["refused", f"{name!r} is not a task of plugin {self.manifest.id}"]
        if self.task_host is None:
            return ["refused", "this process runs no tasks"]
        try:
            when = datetime.fromisoformat(eta) if isinstance(eta, str) else None
            run = self.task_host.enqueue(name, list(args), dict(kwargs), delay=delay, eta=when)
        except Exception as exc:  # refused arguments, a journal that cannot be written: the plugin's error
            return ["refused", f"{type(exc).__name__}: {exc}"]
        return ["enqueued", run]

    async def run_task(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """run_task runs one run of the task `name` in the worker; raises SandboxTaskError with the worker's error,
        or WorkerGone when the worker is not running or ends meanwhile."""
        process = self.process
        if process is None:
            raise WorkerGone(f"plugin {self.manifest.id}'s sandbox worker is not running ({self.state})")
        _, exchange = process.exchange("task", name, args, kwargs)
        answer = await exchange.get()
        if answer[0] == "gone":
            raise WorkerGone(f"plugin {self.manifest.id}'s sandbox worker ended ({process.reason})")
        if answer[0] == "tasked" and len(answer) == 3 and answer[2]:
            error, trace = answer[2]
            raise SandboxTaskError(f"{error}\n(in the sandbox worker)\n{trace}")

    def task_functions(self, loop: asyncio.AbstractEventLoop) -> dict[str, Callable[..., Any]]:
        """task_functions are stand-ins for the worker's tasks, for the host's task registry: each has the task's
        declaration and signature, and runs the task in the worker (from a consumer thread, through `loop`)."""
        return {name: self._stand_in(name, declared, loop) for name, declared in self.tasks.items()}

    def _stand_in(self, name: str, declared: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> None:
            done = asyncio.run_coroutine_threadsafe(self.run_task(name, list(args), kwargs), loop)
            done.result()

        parameters = [
            inspect.Parameter(p_name, inspect._ParameterKind(kind), default=_EMPTY if shown is None else _Shown(shown))
            for p_name, kind, shown in declared["parameters"]
            if p_name != "ctx"  # the worker gives the task its context
        ]
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__name__ = run.__qualname__ = name.split(".", 1)[-1]
        run.__xcore_task__ = msgspec.convert(declared["spec"], TaskSpec)  # type: ignore[attr-defined]
        return run

    async def stop(self) -> None:
        """stop ends the worker: `stop`, then a kill if it has not exited within STOP_GRACE."""
        self.stopping = True
        self.state = "stopped"
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ConnectionError):
                process.outbox.send(wire.frame("stop"))
                process.outbox.flush()  # the frames before it, and it
                await process.writer.drain()
            try:
                await asyncio.wait_for(process.proc.wait(), STOP_GRACE)
            except TimeoutError:
                process.kill()
                await process.proc.wait()
            process.writer.close()
        for task in list(self._background):
            task.cancel()

    async def forward(self, scope: Any, receive: Any, send: Any) -> None:
        """forward serves one request of the plugin's prefix through its worker (the ASGI app of its Router)."""
        if scope["type"] != "http":
            await _answer(send, 404, "websockets are not served by sandboxed plugins")
            return
        # Litestar's mount gave `scope["path"]` the part after the prefix; the request log and the worker (whose
        # app mounts the plugin's routes at the prefix, as in process) need the path the client asked for.
        scope["path"] = _client_path(scope, self.manifest.prefix)
        body = await _body(receive) if _has_body(scope) else b""
        if body is None:
            await _answer(send, 413, f"the request body is over the limit of {MAX_BODY} bytes for a sandboxed plugin")
            return
        process = self.process
        if process is None:
            wait = max(0.0, self.restart_at - time.monotonic())
            await _answer(send, 502, f"plugin {self.manifest.id} is restarting (in {wait:.0f} s)", retry=wait)
            return
        try:
            number, exchange = process.exchange("http", _fields(scope), body, timeout=self.timeout)
        except WorkerGone:
            await _answer(send, 502, f"plugin {self.manifest.id} is not running")
            return
        started = False
        try:
            while True:
                message = await exchange.get()
                kind = message[0]
                if kind in ("response", "start"):
                    checked = self._checked(message)
                    if checked is None:
                        await _answer(send, 502, f"plugin {self.manifest.id} answered with an invalid response")
                        return
                    started = True
                    await send({"type": "http.response.start", "status": checked[0], "headers": checked[1]})
                    if kind == "response":
                        await send({"type": "http.response.body", "body": message[4]})
                        return
                elif kind == "body":
                    if len(message) != 4 or type(message[2]) is not bytes:
                        raise RuntimeError(f"plugin {self.manifest.id} sent an invalid part of a response")
                    await send({"type": "http.response.body", "body": message[2], "more_body": bool(message[3])})
                    if not message[3]:
                        return
                elif kind == "error":
                    await _answer(send, 500, "the plugin failed to answer this request")
                    return
                elif kind == "late":
                    if started:
                        raise RuntimeError(f"plugin {self.manifest.id} timed out mid-response")
                    await _answer(send, 504, f"plugin {self.manifest.id} did not answer within {self.timeout:g} s")
                    return
                else:  # gone
                    if started:
                        raise RuntimeError(f"plugin {self.manifest.id}'s worker ended mid-response")
                    await _answer(send, 502, f"plugin {self.manifest.id}'s worker ended ({process.reason})")
                    return
        finally:
            process.exchanges.pop(number, None)

    def _checked(self, message: list[Any]) -> tuple[int, list[tuple[bytes, bytes]]] | None:
        """_checked is the status and headers of a worker's `response` or `start` frame when they make a valid
        HTTP answer (and a `response` has a body of bytes), the headers' names in lower case and the host's own
        cookies left out (`HOST_COOKIE`: a plugin must not set or clear a session); None otherwise. The worker runs
        a stranger's code, which can write any frame it likes."""
        size = 5 if message[0] == "response" else 4
        if len(message) != size or type(message[2]) is not int or not 200 <= message[2] <= 599:
            return None
        if (size == 5 and type(message[4]) is not bytes) or not isinstance(message[3], list):
            return None
        headers: list[tuple[bytes, bytes]] = []
        for pair in message[3]:
            if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(type(p) is bytes for p in pair):
                return None
            name, value = pair[0].lower(), pair[1]
            if not _HEADER_NAME.match(name) or _BAD_VALUE.search(value):
                return None
            if name == b"set-cookie" and value.lstrip().lower().startswith(HOST_COOKIE):
                log.warning("plugin %s: a Set-Cookie of the host's was left out of its answer", self.label)
                continue
            headers.append((name, value))
        return message[2], headers

    async def _watchdog(self, process: Process) -> None:
        """_watchdog answers 504 to the requests past their deadline and replaces the worker that holds them: a
        handler in an endless loop would never answer. One check every WATCH_EVERY seconds, not a timer a request."""
        while not process.ended.is_set():
            await asyncio.sleep(WATCH_EVERY)
            now = process.loop.time()
            late = [e for e in list(process.exchanges.values()) if e.deadline is not None and e.deadline <= now]
            if not late:
                continue
            log.error(
                "plugin %s: %d request(s) ran past the %g s limit; its worker is replaced",
                self.label, len(late), self.timeout,
            )  # fmt: skip
            process.reason = f"a request ran past the {self.timeout:g} s limit"
            for exchange in late:
                exchange.put(["late"])
            process.kill()
            return


async def _line(stream: asyncio.StreamReader) -> bytes:
    """_line is the next line of a worker's stderr (b"" at its end); a line longer than the stream's limit comes
    in pieces of that size, so that no worker can stop its stderr from being read by writing no line break."""
    try:
        return await stream.readline()
    except ValueError:  # asyncio.LimitOverrunError: the buffer holds the limit's worth without a line break
        return await stream.read(RELAY_PIECE)


def _client_path(scope: Any, prefix: str) -> str:
    """_client_path is the request's path before the mount cut `prefix` off: the prefix and the rest."""
    rest: str = scope["path"]
    raw = scope.get("raw_path") or b""
    if rest == "/" and not raw.rstrip(b"?").endswith(b"/"):
        return prefix
    return prefix + rest


def _fields(scope: Any) -> dict[str, Any]:
    """_fields is what a worker learns of a request: its plain scope fields, its headers less the credentials,
    its request id, and its principal."""
    user = scope.get("user")
    principal = None
    if user is not None:
        principal = {
            "id": user.id,
            "username": user.username,
            "roles": sorted(user.roles),
            "permissions": sorted(user.permissions),
            "totp_enabled": bool(user.totp_enabled),
        }
    return {
        "http_version": scope.get("http_version", "1.1"),
        "method": scope["method"],
        "scheme": scope.get("scheme", "http"),
        "path": scope["path"],
        "raw_path": scope.get("raw_path") or scope["path"].encode(),
        "query_string": scope.get("query_string", b""),
        "headers": [[k, v] for k, v in scope["headers"] if k.lower() not in FORWARDED_OUT],
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "request_id": scope.get("state", {}).get("request_id", ""),
        "user": principal,
    }


def _has_body(scope: Any) -> bool:
    """_has_body says whether the request announces a body (Content-Length or Transfer-Encoding): most do not, and
    asking the server for one that is not there costs a round trip through it."""
    for name, value in scope["headers"]:
        if (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding":
            return True
    return False


async def _body(receive: Any) -> bytes | None:
    """_body reads the whole request body; None when it is over MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Any, status: int, detail: str, retry: float | None = None) -> None:
    """_answer sends an RFC 9457 problem document."""
    title = HTTPStatus(status).phrase
    body = msgspec.json.encode({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if retry is not None:
        headers.append((b"retry-after", str(max(1, round(retry))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def load_sandboxed(
    manifest: Manifest, folder: Path, *, source: Path, fingerprint: str, data_dir: Path, config: dict[str, Any],
    settings: PluginsConfig, task_host: Any = None, libraries: Libraries | None = None, kv: Any = None,
    cache: Any = None,
) -> LoadedPlugin:  # fmt: skip
    """load_sandboxed starts the worker of a sandboxed plugin version and returns it as a LoadedPlugin: its
    Router forwards the prefix to the worker, its hooks run there, and `close` stops the worker. Raises
    PluginLoadError with the reason the worker did not become ready."""
    limits, timeout = limits_for(manifest, settings)
    params = {
        "manifest": msgspec.to_builtins(manifest),
        "folder": str(folder),
        "data_dir": str(data_dir),
        "source": str(source),
        "fingerprint": fingerprint,
        "config": config,
        "limits": msgspec.to_builtins(limits),
        "libraries": None if libraries is None else {"folder": str(libraries.folder), **libraries.as_json()},
    }
    sandboxed = SandboxedPlugin(manifest, params, data_dir, timeout, task_host, kv, cache)
    await sandboxed.start()

    @asgi("/", is_mount=True, copy_scope=False)
    async def forwarded(scope: Scope, receive: Receive, send: Send) -> None:
        await sandboxed.forward(scope, receive, send)

    async def on_load(ctx: PluginContext) -> None:
        await sandboxed.hook("on_load")

    async def on_unload(ctx: PluginContext) -> None:
        if sandboxed.process is not None:  # a worker that has died has nothing left to unload
            await sandboxed.hook("on_unload")

    context = PluginContext(manifest.id, manifest.version, data_dir)
    tasks = sandboxed.task_functions(asyncio.get_running_loop())
    return LoadedPlugin(
        manifest=manifest,
        source=source,
        fingerprint=fingerprint,
        folder=folder,
        package=f"xcore_sandboxed_{manifest.id}_{id(sandboxed)}",
        context=context,
        mount=Router(path=manifest.prefix, route_handlers=[forwarded], tags=manifest.tags or [manifest.id]),
        tasks=tasks,
        on_load=on_load,
        on_unload=on_unload,
        sandbox=sandboxed,
    )


def closer(plugin: LoadedPlugin) -> Callable[[], Awaitable[None]] | None:
    """closer is what stops a loaded version's worker (None for a version in process)."""
    sandbox = plugin.sandbox
    return sandbox.stop if isinstance(sandbox, SandboxedPlugin) else None
