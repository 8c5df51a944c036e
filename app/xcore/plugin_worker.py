"""The process a sandboxed plugin runs in: a child of the sandbox's fork server (`xcore.plugin_zygote`), which
calls `main(["--fd", N, "--calls", M])` in it.

The host (`xcore.plugins.sandbox`) has it forked with a scrubbed environment and one end of two socket pairs as
file descriptors N (frames, `xcore.plugins.wire`) and M (its calls of the host), then sends the `load` frame. The
worker, which holds xcore's and Litestar's modules already, confines itself (`xcore.plugins.confine`: the
bundle's folder and the Python runtime read-only, the plugin's data folder read-write, nothing else; no fork or
exec; no network unless the plugin asks and the operator allows it; its memory, files and file sizes limited),
and only then imports the plugin's code. It answers `ready` with the plugin's OpenAPI document, its tasks and the
confinement's layers, or `failed` with the reason.

Then it serves: each `http` frame is one request, run through a Litestar app of the plugin's routes (with the
host's error handling, so a failure reads as it would in process), and answered with a `response` frame (or
`start` and `body` frames for a streamed answer).
The host has already applied ACCESS_RULES, sessions, CSRF and the request log; the request comes without the
Authorization, Cookie and CSRF headers, and with the principal (id, name, roles, permissions) as `user`, so
`xcore.sdk.requires` works unchanged. The worker never sees a token, a cookie or the host's secret key.

Its log records go to stderr as JSON lines, which the host logs with the plugin's context. It exits when the
host sends `stop` or closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import json
import logging
import socket
import sys
import sysconfig
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar

import xcore
from xcore.auth.rules import Principal
from xcore.heap import freeze_startup_heap
from xcore.plugins import wire
from xcore.plugins.cache import CacheMethods
from xcore.plugins.confine import Confinement, Limits, confine
from xcore.plugins.health import check
from xcore.plugins.libraries import provide
from xcore.plugins.loader import LoadedPlugin, PluginLoadError, import_plugin, run_hook
from xcore.plugins.manifest import Manifest
from xcore.tasks.context import with_context
from xcore.web.docs_routes import openapi_config
from xcore.web.openapi_errors import describe_problems
from xcore.web.problems import handle_exception
from xcore.web.switch import Generation

log = logging.getLogger("xcore.plugins.worker")
PR_SET_NAME = 15
DRAIN_ABOVE = 256 * 1024  # bytes waiting in the socket's buffer past which a sender waits for the host


class JsonLines(logging.Formatter):
    """JsonLines formats a record as the one JSON line the host reads from the worker's stderr."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps({"level": record.levelname, "logger": record.name, "message": message})


def main(argv: list[str]) -> int:
    """main runs the worker on the socket whose file descriptor follows `--fd`; returns the exit code."""
    if len(argv) != 4 or argv[0] != "--fd" or argv[2] != "--calls" or not (argv[1] + argv[3]).isdigit():
        print("usage: --fd N --calls M (the fork server gives them to a sandboxed plugin's worker)", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    try:
        return run(Worker(int(argv[1]), int(argv[3])).run())
    except KeyboardInterrupt:
        return 130


# What the C library and the standard library read at run time: shared libraries (a module such as hashlib or
# zlib loads libcrypto or libz when first imported), the loader's cache, the time zones. Nothing of anybody's data.
SYSTEM_PATHS = (
    "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/usr/share/zoneinfo",
    "/etc/localtime",
)  # fmt: skip
# With the network allowed, also what name resolution and TLS read.
NETWORK_PATHS = (
    "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf", "/etc/ssl",
    "/etc/ca-certificates", "/usr/share/ca-certificates",
)  # fmt: skip


def run(main: Any) -> int:
    """run runs the coroutine `main` to its end on asyncio's own loop.

    Not on uvloop: its libuv sets up an io_uring ring for epoll batching when the loop starts, which is before the
    confinement, whose seccomp filter then refuses io_uring_enter (a ring the plugin could also use to get past
    the filter), and libuv aborts on that refusal: a request body of some 100 KB killed the worker."""
    return asyncio.run(main)  # type: ignore[no-any-return]


def runtime_paths(network: bool = False) -> list[Path]:
    """runtime_paths are what the worker's Python must keep reading once confined: the interpreter's standard
    library and installed packages, xcore's own package, a frozen binary's unpacked files, the system's shared
    libraries (SYSTEM_PATHS) and, with `network`, NETWORK_PATHS. Never the current folder or other entries of
    sys.path, which could be anything."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(xcore.__file__).parent.parent}
    paths |= {Path(p) for p in (*SYSTEM_PATHS, *(NETWORK_PATHS if network else ()))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        found = sysconfig.get_paths().get(key)
        if found:
            paths.add(Path(found))
    bundled = getattr(sys, "_MEIPASS", None)
    if bundled:
        paths.add(Path(bundled))
    return sorted(p for p in paths if p.exists())


def name_process(name: str) -> None:
    """name_process names this process `name` (its first 15 bytes) where ps and top show a process's name (Linux),
    so an operator tells one plugin's worker from another's: forked by the fork server, all share its command
    line."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def principal(user: dict[str, Any] | None) -> Principal | None:
    """principal rebuilds the request's principal from what the host sent (None: no user)."""
    if not user:
        return None
    return Principal(
        user["id"],
        user["username"],
        frozenset(user["roles"]),
        frozenset(user["permissions"]),
        token_version=0,
        totp_enabled=bool(user.get("totp_enabled")),
        totp_required=False,
    )


class RemoteKeyValue:
    """RemoteKeyValue is `ctx.kv` in the worker, which has no database: each operation is a call to the host,
    which runs it on the plugin's own store (`xcore.plugins.kv`) and answers; a refusal raises ValueError."""

    def __init__(self, caller: wire.Caller) -> None:
        self._caller = caller

    def _call(self, *operation: Any) -> Any:
        answer = self._caller.call("kv", *operation)
        if answer[0] == "kv" and len(answer) == 2:
            return answer[1]
        raise ValueError(answer[1] if len(answer) > 1 else "ctx.kv: the host refused")

    def get(self, key: str, default: Any = None) -> Any:
        return self._call("get", key, default)

    def set(self, key: str, value: Any) -> None:
        self._call("set", key, value)

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key))

    def keys(self, prefix: str = "") -> list[str]:
        return list(self._call("keys", prefix))


class RemoteCache(CacheMethods):
    """RemoteCache is `ctx.cache` in the worker, which has no store: `lookup`, `set`, `delete` and `clear` are calls
    to the host, which runs them on the plugin's own cache (`xcore.plugins.cache`), checks included; a refusal raises
    ValueError. `get_or_set` is built on them here (CacheMethods), so `make` runs in the worker; the async twins
    run the same calls in a thread, so the worker's loop goes on meanwhile."""

    def __init__(self, caller: wire.Caller) -> None:
        super().__init__()
        self._caller = caller

    def _call(self, *operation: Any) -> Any:
        answer = self._caller.call("cache", *operation)
        if answer[0] == "cache" and len(answer) == 2:
            return answer[1]
        raise ValueError(answer[1] if len(answer) > 1 else "ctx.cache: the host refused")

    def lookup(self, key: str) -> tuple[bool, Any]:
        found = self._call("get", key)
        return bool(found[0]), found[1]

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        self._call("set", key, value, ttl)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def clear(self) -> None:
        self._call("clear")

    async def alookup(self, key: str) -> tuple[bool, Any]:
        return await asyncio.to_thread(self.lookup, key)

    async def aset(self, key: str, value: Any, ttl: int | None = None) -> None:
        await asyncio.to_thread(self.set, key, value, ttl)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


class Worker:
    """Worker is one sandboxed plugin version's process: it loads the plugin, then serves the host's frames."""

    def __init__(self, fd: int, calls: int) -> None:
        self.fd = fd
        self.caller = wire.Caller(socket.socket(fileno=calls))
        self.plugin: LoadedPlugin | None = None
        self.app: Litestar | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.outbox: wire.Outbox | None = None

    async def run(self) -> int:
        """run loads the plugin named by the first frame and serves until `stop` or the end of the socket."""
        sock = socket.socket(fileno=self.fd)
        reader, self.writer = await asyncio.open_connection(sock=sock)
        self.outbox = wire.Outbox(self.writer)
        try:
            first = await wire.read(reader)
        except (EOFError, wire.WireError):
            return 1
        if first[0] != "load" or len(first) != 2 or not isinstance(first[1], dict):
            self.send("failed", "the first frame must be `load`")
            self.flush()
            await self.writer.drain()
            return 1
        try:
            openapi, confinement = self.load(first[1])
        except PluginLoadError as exc:
            self.send("failed", str(exc))
            self.flush()
            await self.writer.drain()
            return 1
        assert self.app is not None
        freeze_startup_heap()  # what requests make is collected; the web stack and the plugin are not looked at
        generation = Generation(self.app, 1)
        try:
            await generation.start()
        except Exception as exc:
            self.send("failed", f"the app did not start: {exc}")
            self.flush()
            await self.writer.drain()
            return 1
        declared: dict[str, Any] = {"openapi": openapi, "layers": confinement.layers}
        declared["tasks"] = self.task_declarations()
        declared["health"] = self.plugin is not None and self.plugin.health is not None
        self.send("ready", declared)
        try:
            await self.serve(reader)
        finally:
            await generation.stop()
        return 0

    def load(self, params: dict[str, Any]) -> tuple[dict[str, Any], Confinement]:
        """load confines the process, then imports the plugin and builds its app; raises PluginLoadError."""
        try:
            manifest = msgspec.convert(params["manifest"], Manifest)
            folder, data_dir = Path(params["folder"]), Path(params["data_dir"])
            limits = msgspec.convert(params["limits"], Limits)
            libraries = params.get("libraries") or {}
            library_folder = [Path(libraries["folder"])] if libraries else []
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise PluginLoadError(f"the host sent a load frame this worker cannot read: {exc}") from None
        name_process(f"xplug:{manifest.id}")
        confinement = confine([*runtime_paths(limits.network), folder, *library_folder], [data_dir], limits)
        if libraries:
            provide(library_folder[0], libraries["modules"])
        self.plugin = import_plugin(
            manifest,
            folder,
            source=Path(params.get("source", folder)),
            fingerprint=str(params.get("fingerprint", "")),
            data_dir=data_dir,
            config=params.get("config") or {},
            kv=RemoteKeyValue(self.caller),
            cache=RemoteCache(self.caller),
        )
        for name, fn in self.plugin.tasks.items():
            fn.enqueue = self.enqueuer(name)  # type: ignore[attr-defined]
        try:
            self.app = Litestar(
                route_handlers=[self.plugin.mount],
                openapi_config=openapi_config(),
                logging_config=None,
                exception_handlers={Exception: handle_exception},
                debug=False,
            )
            openapi = describe_problems(self.app.openapi_schema.to_schema())
        except Exception as exc:
            raise PluginLoadError(f"its routes cannot be mounted: {' '.join(str(exc).split())}") from None
        return openapi, confinement

    def enqueuer(self, name: str) -> Any:
        """enqueuer is the `enqueue` of the plugin's task `name`, as in process: it asks the host to queue a run
        and returns the run's id; it raises RuntimeError with the host's reason when the host refuses."""

        def enqueue(*args: Any, delay: float | None = None, eta: datetime | None = None, **kwargs: Any) -> int:
            when = eta.isoformat() if eta is not None else None
            answer = self.caller.call("enqueue", name, list(args), kwargs, delay, when)
            if answer[0] != "enqueued" or len(answer) != 2:
                raise RuntimeError(f"{name}.enqueue: {answer[1] if len(answer) > 1 else 'the host refused'}")
            return int(answer[1])

        return enqueue

    def task_declarations(self) -> dict[str, Any]:
        """task_declarations are the plugin's tasks by name: each one's TaskSpec and its parameters (name, kind,
        its default's repr or None), from which the host makes a stand-in with the same signature."""
        assert self.plugin is not None
        declared: dict[str, Any] = {}
        specs = self.plugin.task_specs()
        for name, fn in self.plugin.tasks.items():
            parameters = [
                [p.name, int(p.kind), None if p.default is inspect.Parameter.empty else repr(p.default)[:100]]
                for p in inspect.signature(fn).parameters.values()
            ]
            declared[name] = {"spec": msgspec.to_builtins(specs[name]), "parameters": parameters}
        return declared

    def send(self, *message: Any) -> None:
        """send writes one frame to the host, with the other frames of this turn of the loop (`wire.Outbox`)."""
        assert self.outbox is not None
        self.outbox.send(wire.frame(*message))

    def flush(self) -> None:
        """flush writes the frames `send` gathered."""
        assert self.outbox is not None
        self.outbox.flush()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """serve answers the host's frames until `stop` or the end of the socket."""
        disconnected = asyncio.Event()
        while True:
            try:
                message = await wire.read(reader)
            except (EOFError, wire.WireError):
                break
            kind = message[0]
            if kind == "stop":
                break
            if kind == "http" and len(message) == 4:
                self.spawn(self.http(message[1], message[2], message[3], disconnected))
            elif kind == "hook" and len(message) == 3:
                self.spawn(self.hook(message[1], message[2]))
            elif kind == "task" and len(message) == 5:
                self.spawn(self.task(message[1], message[2], message[3], message[4]))
            elif kind == "health" and len(message) == 2:
                self.spawn(self.health(message[1]))
            else:
                log.warning("unknown frame from the host: %s", kind)
        disconnected.set()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def hook(self, number: int, name: str) -> None:
        """hook runs the plugin's hook `name` and answers `hooked` with None or the reason it failed."""
        assert self.plugin is not None
        try:
            await run_hook(self.plugin, name)
        except (PluginLoadError, ValueError) as exc:
            self.send("hooked", number, str(exc))
        else:
            self.send("hooked", number, None)
        await self.drain()

    async def health(self, number: int) -> None:
        """health runs the plugin's health check (`xcore.plugins.health.check`, its time limit included) and
        answers `healthy` with its status and detail."""
        assert self.plugin is not None
        found = await check(self.plugin)
        self.send("healthy", number, found.status, found.detail)
        await self.drain()

    async def task(self, number: int, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """task runs one run of the plugin's task `name` (the host's journal, retries and timeout are the host's)
        and answers `tasked` with None or the error, as `Type: message` and its traceback."""
        assert self.plugin is not None
        fn = self.plugin.tasks.get(name)
        try:
            if fn is None:
                raise LookupError(f"this version has no task {name!r}")
            args, kwargs = with_context(fn, args, kwargs, self.plugin.context)
            result = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            trace = "".join(traceback.format_exception(exc))
            self.send("tasked", number, [f"{type(exc).__name__}: {exc}", trace])
        else:
            self.send("tasked", number, None)
        await self.drain()

    async def http(self, number: int, fields: dict[str, Any], body: bytes, disconnected: asyncio.Event) -> None:
        """http runs one request through the plugin's app and answers with one `response` frame, or for a streamed
        answer its `start` and `body` frames; `error` when the app failed before it answered."""
        assert self.app is not None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": fields.get("http_version", "1.1"),
            "method": fields["method"],
            "scheme": fields.get("scheme", "http"),
            "path": fields["path"],
            "raw_path": fields["raw_path"],
            "root_path": "",
            "query_string": fields["query_string"],
            "headers": [(name, value) for name, value in fields["headers"]],
            "client": tuple(fields["client"]) if fields.get("client") else None,
            "server": tuple(fields["server"]) if fields.get("server") else None,
            "state": {"request_id": fields.get("request_id", "")},
            "user": principal(fields.get("user")),
        }
        sent_body = False
        start: list[Any] | None = None  # the response's start, held until its first body: one frame if it is all
        streaming = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal start, streaming
            kind = message["type"]
            if kind == "http.response.start":
                start = [message["status"], [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]]
            elif kind == "http.response.body" and start is not None:
                chunk, more = bytes(message.get("body", b"")), bool(message.get("more_body", False))
                if not streaming and not more:
                    self.send("response", number, start[0], start[1], chunk)
                    return
                if not streaming:
                    streaming = True
                    self.send("start", number, start[0], start[1])
                self.send("body", number, chunk, more)
                await self.drain()

        app: Any = self.app
        try:
            await app(scope, receive, send)
        except Exception as exc:
            log.error("the request %s %s failed", fields["method"], fields["path"], exc_info=exc)
            if streaming:
                self.send("body", number, b"", False)
            else:
                self.send("error", number, f"{type(exc).__name__}: {exc}")
        await self.drain()

    async def drain(self) -> None:
        """drain waits while the socket's send buffer is over its high-water mark (it costs nothing otherwise)."""
        assert self.writer is not None and self.outbox is not None
        if self.outbox.buffered() > DRAIN_ABOVE:
            self.flush()
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
