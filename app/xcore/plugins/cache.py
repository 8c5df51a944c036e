"""`ctx.cache`: each plugin's entries with a lifetime, on Litestar's stores (`litestar.stores`).

Where they live is `manager.plugins.cache` (`backend_for`):

- `memory`: a `MemoryStore` per plugin in each process (`BoundedMemoryStore`: at most MEMORY_BUDGET bytes of values
  per plugin, the entries set longest ago dropped first). A server with several workers (`server.workers`) has
  one such cache per worker process: what one worker stored, the others do not see.
- `file`: a `FileStore` per plugin under `<data>/cache/store/plugins/<id>/`, shared by the processes of this
  machine and kept across restarts; expired files are swept every SWEEP_EVERY seconds.
- `redis`: a `RedisStore` on the `redis` settings, namespaced `xcore_cache_plugins.<id>`, shared by every node
  that uses the same Redis.
- `auto` (the default): `redis` when Redis is on (`redis.enabled`, or a `redis.url` / REDIS_URL), `file` for
  `xcore desktop`, else `memory`.

A plugin sees only its own namespace. Keys are text of 1 to CACHE_KEY_MAX characters without NUL; values are
bytes (stored as they are) or anything JSON holds (a tuple comes back a list), at most CACHE_VALUE_MAX bytes; a
`ttl` is whole seconds from 1 to CACHE_TTL_MAX, CACHE_TTL when None (`xcore.plugins.contract`). A wrong one
raises ValueError saying which and why; nothing is stored then.

Litestar's stores are async and a plugin's code is often sync (handlers in a thread pool, tasks in the consumer's
threads). The file and Redis stores' I/O runs on one event loop in a thread of its own (`CacheStores`): sync calls
wait for it, async calls (`aget`...) await it, from any thread or loop; a Redis connection never crosses loops. The
memory store is read and written at once, from any thread, under a thread lock (`BoundedMemoryStore`): a hop to
another thread would cost a get a hundred times what it reads. A store that fails (Redis down, a full disk) answers
misses and stores nothing, logged at most once a minute: a cache that is gone must not take the plugin down with it.

A sandboxed plugin's worker has no store: its `ctx.cache` (`plugin_worker.RemoteCache`) asks the host, which
answers from the same cache (`answer`).

The plugins' Litestar apps get the same stores for what Litestar itself keeps by name (`CacheStores.registry`:
the response cache of a route declared with `cache=`), so a cached response is shared as `ctx.cache` is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from litestar.stores.base import StorageObject, Store
from litestar.stores.memory import MemoryStore
from litestar.stores.registry import StoreRegistry

from xcore.config.schema import RedisConfig
from xcore.plugins.contract import CACHE_KEY_MAX, CACHE_TTL, CACHE_TTL_MAX, CACHE_VALUE_MAX

if TYPE_CHECKING:
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.plugins")
T = TypeVar("T")

BACKENDS = ("auto", "memory", "file", "redis")
STORE_FOLDER = "cache/store"  # the file store's folder, under the data directory
REDIS_NAMESPACE = "xcore_cache"  # the prefix of every key xcore's cache writes to Redis
MEMORY_BUDGET = 64 * 1024 * 1024  # bytes of values one plugin's memory cache holds, in each process
SWEEP_EVERY = 300.0  # seconds between two sweeps of expired entries (memory and files; Redis expires its own)
CALL_TIMEOUT = 10.0  # seconds a call waits for its store before it is answered as a miss
REDIS_TIMEOUT = 2.0  # seconds to connect to Redis, and for one of its answers
REDIS_BATCH = 500  # keys a `clear` asks Redis for, and deletes, at a time
WARN_EVERY = 60.0  # seconds between two warnings that a store fails
MAKE_WAIT = 30.0  # seconds a sync get_or_set waits for another thread making the same value, then makes it itself
_BYTES, _JSON = b"b", b"j"  # the first byte of a stored value: what follows it


def backend_for(setting: str, redis_active: bool, desktop: bool) -> str:
    """backend_for is the store `manager.plugins.cache` picks: `auto` is redis when Redis is on, file for the
    desktop app, else memory; any other setting is itself."""
    if setting != "auto":
        return setting
    if redis_active:
        return "redis"
    return "file" if desktop else "memory"


def check_key(key: Any) -> str:
    """check_key returns `key` if it is a valid key; raises ValueError saying why not."""
    if not isinstance(key, str):
        raise ValueError(f"ctx.cache: a key is text, not {type(key).__name__}")
    if not 1 <= len(key) <= CACHE_KEY_MAX:
        raise ValueError(f"ctx.cache: a key has 1 to {CACHE_KEY_MAX} characters, not {len(key)}")
    if "\x00" in key:
        raise ValueError("ctx.cache: a key cannot hold a NUL character")
    return key


def check_ttl(ttl: Any) -> int:
    """check_ttl is the lifetime in seconds that `ttl` asks for (CACHE_TTL for None); raises ValueError saying
    why for one that is not a whole number of seconds from 1 to CACHE_TTL_MAX."""
    if ttl is None:
        return CACHE_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"ctx.cache: ttl is a whole number of seconds, not {type(ttl).__name__}")
    if not 1 <= ttl <= CACHE_TTL_MAX:
        raise ValueError(f"ctx.cache: ttl is 1 to {CACHE_TTL_MAX} seconds (30 days), not {ttl}")
    return ttl


def encode(value: Any) -> bytes:
    """encode is `value` as stored: bytes as they are, anything else as JSON, behind one byte saying which;
    raises ValueError when it is neither or over CACHE_VALUE_MAX bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = _BYTES + bytes(value)
    else:
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"ctx.cache: a value must be bytes or JSON (text, numbers, true/false, null, lists, objects): {exc}"
            ) from None
        data = _JSON + text.encode()
    if len(data) - 1 > CACHE_VALUE_MAX:
        raise ValueError(f"ctx.cache: a value is at most {CACHE_VALUE_MAX} bytes, this one {len(data) - 1}")
    return data


def decode(data: bytes) -> tuple[bool, Any]:
    """decode is (True, the value) of what `encode` stored; (False, None) for anything else (a miss)."""
    kind, body = data[:1], data[1:]
    if kind == _BYTES:
        return True, body
    if kind == _JSON:
        try:
            return True, json.loads(body)
        except ValueError:
            return False, None
    return False, None


class BoundedMemoryStore(MemoryStore):
    """BoundedMemoryStore is Litestar's MemoryStore holding at most `budget` bytes of values: past it, expired
    entries go first, then those set longest ago. Its dict is guarded by a thread lock rather than MemoryStore's
    anyio lock (no operation awaits while holding it), so a plugin's sync code reads and writes it at once, from
    any thread, without the hop to the cache's loop (`get_now`, `set_now`, `delete_now`); the async methods
    Litestar calls take the same lock."""

    __slots__ = ("_mutex", "_size", "budget")

    def __init__(self, budget: int = MEMORY_BUDGET) -> None:
        super().__init__()
        self.budget = budget
        self._mutex = threading.Lock()
        self._size = 0  # bytes of values held

    def get_now(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """get_now is the value of `key`, or None (an expired entry is dropped)."""
        with self._mutex:
            entry = self._store.get(key)
            if entry is None:
                return None
            if entry.expired:
                del self._store[key]
                self._size -= len(entry.data)
                return None
            if renew_for and entry.expires_at:
                self._store[key] = StorageObject.new(data=entry.data, expires_in=renew_for)
            return entry.data

    def set_now(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        """set_now stores `value` under `key`; it becomes the newest entry."""
        data = value.encode() if isinstance(value, str) else value
        with self._mutex:
            old = self._store.pop(key, None)
            self._store[key] = StorageObject.new(data=data, expires_in=expires_in)
            self._size += len(data) - (len(old.data) if old is not None else 0)
            if self._size > self.budget:
                self._trim()

    def delete_now(self, key: str) -> None:
        """delete_now removes `key`, if held."""
        with self._mutex:
            old = self._store.pop(key, None)
            if old is not None:
                self._size -= len(old.data)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return self.get_now(key, renew_for)

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        self.set_now(key, value, expires_in)

    async def delete(self, key: str) -> None:
        self.delete_now(key)

    def delete_all_now(self) -> None:
        """delete_all_now removes every entry."""
        with self._mutex:
            self._store.clear()
            self._size = 0

    async def delete_all(self) -> None:
        self.delete_all_now()

    async def delete_expired(self) -> None:
        with self._mutex:
            self._store = {key: entry for key, entry in self._store.items() if not entry.expired}
            self._size = sum(len(entry.data) for entry in self._store.values())

    async def exists(self, key: str) -> bool:
        return self.get_now(key) is not None

    async def expires_in(self, key: str) -> int | None:
        with self._mutex:
            entry = self._store.get(key)
            return None if entry is None else entry.expires_in

    def _trim(self) -> None:
        live = {key: entry for key, entry in self._store.items() if not entry.expired}
        size = sum(len(entry.data) for entry in live.values())
        for key in list(live):  # oldest first: a dict keeps the order of insertion
            if size <= self.budget:
                break
            size -= len(live.pop(key).data)
        self._store, self._size = live, size


class CacheStores:
    """CacheStores is one process's stores of one backend (`memory`, `file` or `redis`), one namespace each, and
    the event loop, in a thread of its own, on which all their I/O runs."""

    def __init__(self, backend: str, folder: Path | None = None, redis: RedisConfig | None = None) -> None:
        if backend not in BACKENDS[1:]:
            raise ValueError(f"unknown cache backend {backend!r}: one of {', '.join(BACKENDS[1:])}")
        self.backend = backend
        self.folder = folder
        self.redis = redis or RedisConfig()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stores: dict[tuple[str, ...], Store] = {}
        self._redis_root: Any = None
        self._redis_client: Any = None  # the root store's client, which every namespace's store shares
        self._warned = 0.0
        self._closed = False

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> CacheStores:
        """for_runtime is the stores `manager.plugins.cache` picks for this process (see `backend_for`)."""
        config = runtime.config
        backend = backend_for(config.manager.plugins.cache, config.redis.active, runtime.desktop)
        return cls(backend, folder=runtime.data.root / STORE_FOLDER, redis=config.redis)

    def describe(self) -> str:
        """describe says where the entries are, for the log."""
        if self.backend == "file":
            return f"files in {self.folder}"
        if self.backend == "redis":
            return "Redis, shared by every node"
        return "each process's memory"

    def plugin(self, plugin_id: str) -> PluginCache:
        """plugin is the `ctx.cache` of plugin `plugin_id`: its own namespace."""
        return PluginCache(self, ("plugins", plugin_id), plugin_id)

    def registry(self) -> StoreRegistry:
        """registry is a Litestar StoreRegistry on these stores, for the plugins' apps: what Litestar keeps in a
        store by name (the response cache of a route with `cache=`, say) goes to namespace `litestar.<name>`,
        so it is shared as `ctx.cache` is. Response cache keys hold the request's path, under the plugin's
        prefix, so plugins do not meet there either."""
        return StoreRegistry(default_factory=lambda name: SharedStore(self, ("litestar", name)))

    def store(self, namespace: tuple[str, ...]) -> Store:
        """store is the store of `namespace` (made at its first use in this process)."""
        self._ready()
        found = self._stores.get(namespace)
        if found is None:
            with self._lock:
                found = self._stores.get(namespace) or self._make(namespace)
                self._stores[namespace] = found
        return found

    def _make(self, namespace: tuple[str, ...]) -> Store:
        if self.backend == "memory":
            return BoundedMemoryStore()
        if self.backend == "file":
            from litestar.stores.file import FileStore

            if self.folder is None:
                raise ValueError("the file cache needs a folder")
            path = self.folder.joinpath(*namespace)
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            return FileStore(path)
        if self._redis_root is None:
            from litestar.stores.redis import RedisStore

            self._redis_client = _redis_client(self.redis)
            self._redis_root = RedisStore(self._redis_client, namespace=REDIS_NAMESPACE, handle_client_shutdown=True)
        store: Store = self._redis_root.with_namespace(".".join(namespace))
        return store

    # --- the loop ----------------------------------------------------------------------------------------------

    def _ready(self) -> asyncio.AbstractEventLoop:
        """_ready is the loop of the stores' I/O, started at the first use (again in a forked child, which has
        neither the parent's thread nor may use its connections)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        if self._closed:  # the manager has stopped: a call from a thread left behind is a miss
            raise RuntimeError("the cache is closed: its server is stopping")
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    self._stores, self._redis_root, self._redis_client = {}, None, None
                    self._pid = os.getpid()
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._serve, args=(self._loop,), name="xcore-cache", daemon=True)
                self._thread.start()
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        sweeper = loop.create_task(self._sweep_forever())
        try:
            loop.run_forever()
        finally:
            sweeper.cancel()
            loop.run_until_complete(asyncio.gather(sweeper, return_exceptions=True))
            loop.close()

    def call(self, operation: Callable[[Store], Awaitable[T]], namespace: tuple[str, ...]) -> T:
        """call runs `operation(store)` on the stores' loop and waits for it, at most CALL_TIMEOUT seconds; raises
        what it raised (TimeoutError past the time)."""
        loop = self._ready()
        future = asyncio.run_coroutine_threadsafe(_awaited(operation(self.store(namespace))), loop)
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the {self.backend} cache did not answer within {CALL_TIMEOUT:g} s") from None

    @property
    def closed(self) -> bool:
        """closed says whether `close` was called: the server is stopping."""
        return self._closed

    def on_own_thread(self) -> bool:
        """on_own_thread says whether the caller is the stores' loop (whose sync calls would wait for themselves)."""
        return self._thread is not None and threading.current_thread() is self._thread

    async def acall(self, operation: Callable[[Store], Awaitable[T]], namespace: tuple[str, ...]) -> T:
        """acall is `call` for async code: the caller's loop goes on meanwhile."""
        loop = self._ready()
        future = asyncio.run_coroutine_threadsafe(_awaited(operation(self.store(namespace))), loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(f"the {self.backend} cache did not answer within {CALL_TIMEOUT:g} s") from None

    def failed(self, what: str, exc: BaseException) -> None:
        """failed logs that a store failed (at most once every WARN_EVERY seconds): the call was answered as a
        miss, or stored nothing."""
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "ctx.cache (%s): %s failed: %s: %s; answering misses meanwhile",
                self.backend, what, type(exc).__name__, exc, extra={"context": "plugins"},
            )  # fmt: skip

    async def empty(self, store: Store) -> None:
        """empty removes every entry of one namespace's `store`, and nothing of another namespace.

        Litestar's own `delete_all` will not do: a Redis store's deletes every namespace that starts with this one's
        name (clearing plugin `notes` would clear `notes_v2`), and a file store's removes the folder and makes it
        anew, with the default mode, failing when another process writes into it meanwhile. So a file store's
        folder is emptied file by file and kept, and a Redis namespace's keys are found by `<namespace>:*`.
        """
        from litestar.stores.file import FileStore
        from litestar.stores.redis import RedisStore

        if isinstance(store, FileStore):
            await asyncio.to_thread(_empty_folder, Path(store.path))
        elif isinstance(store, RedisStore) and self._redis_client is not None and store.namespace:
            client = self._redis_client
            batch: list[bytes] = []
            async for key in client.scan_iter(match=_glob_escaped(store.namespace) + ":*", count=REDIS_BATCH):
                batch.append(key)
                if len(batch) >= REDIS_BATCH:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
        else:
            await store.delete_all()

    async def sweep(self) -> None:
        """sweep deletes the expired entries of the memory stores of this process, or of every plugin's files."""
        stores: list[Store] = list(self._stores.values()) if self.backend == "memory" else []
        if self.backend == "file" and self.folder is not None:
            from litestar.stores.file import FileStore

            roots = [self.folder / "plugins", self.folder / "litestar"]
            folders = sorted(p for root in roots if root.is_dir() for p in root.iterdir() if p.is_dir())
            stores = [FileStore(p) for p in folders]
        for store in stores:
            try:
                await store.delete_expired()  # type: ignore[attr-defined]
            except Exception as exc:  # a file half-written by another process, a folder removed meanwhile
                log.debug("cache sweep: %s", exc)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            await self.sweep()

    def close(self) -> None:
        """close disconnects from Redis and stops the loop (the stores' memory goes with it)."""
        with self._lock:
            loop, thread, root = self._loop, self._thread, self._redis_root
            self._loop = self._thread = self._redis_root = self._redis_client = None
            self._stores, self._closed = {}, True
        if loop is None or thread is None or self._pid != os.getpid():
            return
        if root is not None:
            with _suppressed():
                asyncio.run_coroutine_threadsafe(root.__aexit__(None, None, None), loop).result(CALL_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT)


def _redis_client(redis: RedisConfig) -> Any:
    """_redis_client is a Redis client on the `redis` settings (the URL when set, else host, port, db and password),
    with short time limits: a Redis that is gone is a miss, not a wait. The stores are the RedisStore of namespace
    REDIS_NAMESPACE on it, and namespaces within that (`CacheStores._make`)."""
    from redis.asyncio import Redis

    limits: dict[str, Any] = {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT}
    if redis.url:
        return Redis.from_url(redis.url, **limits)
    return Redis(host=redis.host, port=redis.port, db=redis.db, password=redis.password, **limits)


def _glob_escaped(text: str) -> str:
    """_glob_escaped is `text` as a Redis MATCH pattern that matches only itself."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _empty_folder(folder: Path) -> None:
    """_empty_folder removes the files of `folder` (a file store's entries), keeping the folder."""
    for entry in folder.iterdir():
        entry.unlink(missing_ok=True)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _suppressed:
    """_suppressed swallows any exception of its block: closing what may be gone already."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


_MISSING: Any = object()


class SharedStore(Store):
    """SharedStore is one namespace of a CacheStores as a Litestar Store (`CacheStores.registry`): each operation
    runs on the stores' loop. A store that fails answers as an empty one (logged), as `ctx.cache` does."""

    __slots__ = ("_namespace", "_stores")

    def __init__(self, stores: CacheStores, namespace: tuple[str, ...]) -> None:
        self._stores = stores
        self._namespace = namespace

    async def _run(self, operation: Callable[[Store], Awaitable[T]], fallback: T, what: str) -> T:
        try:
            return await self._stores.acall(operation, self._namespace)
        except Exception as exc:
            self._stores.failed(f"{what} in {'.'.join(self._namespace)}", exc)
            return fallback

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._run(lambda store: store.set(key, value, expires_in), None, "set")

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._run(lambda store: store.get(key, renew_for), None, "get")

    async def delete(self, key: str) -> None:
        await self._run(lambda store: store.delete(key), None, "delete")

    async def delete_all(self) -> None:
        await self._run(lambda store: store.delete_all(), None, "delete_all")

    async def exists(self, key: str) -> bool:
        return await self._run(lambda store: store.exists(key), False, "exists")

    async def expires_in(self, key: str) -> int | None:
        return await self._run(lambda store: store.expires_in(key), None, "expires_in")


class CacheMethods(ABC):
    """CacheMethods is what both sides of `ctx.cache`, the host's PluginCache and the sandbox worker's RemoteCache,
    build on their own `lookup`, `set`, `alookup` and `aset`: `get`, `get_or_set` and their async twins.

    `get_or_set` makes a missing value once in this process however many callers miss it at once: the first
    caller of a key calls `make`, the others wait for it (sync callers at most MAKE_WAIT seconds, then make it
    themselves) and get what it stored. Sync callers wait for sync callers, and async ones for the async ones of
    their event loop; if the first caller's `make` fails, the next one tries again."""

    def __init__(self) -> None:
        self._making = threading.Lock()  # guards the two tables below
        self._made_by_thread: dict[str, _Making] = {}
        self._made_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[bytes]]]
        self._made_by_loop = weakref.WeakKeyDictionary()

    @abstractmethod
    def lookup(self, key: str) -> tuple[bool, Any]:
        """lookup is (True, the value) of `key`, or (False, None) when the cache has none."""

    @abstractmethod
    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        """set stores `value` under `key` for `ttl` seconds (CACHE_TTL when None), replacing what was there."""

    @abstractmethod
    async def alookup(self, key: str) -> tuple[bool, Any]:
        """alookup is `lookup` for async code."""

    @abstractmethod
    async def aset(self, key: str, value: Any, ttl: int | None = None) -> None:
        """aset is `set` for async code."""

    def get(self, key: str, default: Any = None) -> Any:
        """get is the value of `key`, or `default` when the cache has none (never stored, expired, dropped)."""
        found, value = self.lookup(key)
        return value if found else default

    def get_or_set(self, key: str, make: Callable[[], Any], ttl: int | None = None) -> Any:
        """get_or_set is the value of `key`; on a miss, `make()` is called and what it returns stored (and
        returned as a later `get` reads it: a tuple as a list). Callers in other threads that miss the same key
        meanwhile wait for that value rather than make it again (see the class)."""
        found, value = self.lookup(key)
        if found:
            return value
        with self._making:
            making = self._made_by_thread.get(key)
            first = making is None
            if making is None:
                making = self._made_by_thread[key] = _Making()
            making.callers += 1
        try:
            if not first:
                if making.done.wait(MAKE_WAIT) and making.data is not None:
                    return decode(making.data)[1]
                found, value = self.lookup(key)  # the first caller failed, or is slow: its value may be there
                if found:
                    return value
            value = make()
            self.set(key, value, ttl)
            making.data = data = encode(value)
            return decode(data)[1]
        finally:
            if first:
                making.done.set()
            with self._making:
                making.callers -= 1
                if making.callers == 0 and self._made_by_thread.get(key) is making:
                    del self._made_by_thread[key]

    async def aget(self, key: str, default: Any = None) -> Any:
        """aget is `get` for async code."""
        found, value = await self.alookup(key)
        return value if found else default

    async def aget_or_set(self, key: str, make: Callable[[], Any], ttl: int | None = None) -> Any:
        """aget_or_set is `get_or_set` for async code: `make` may be sync or async. Callers on the same event loop
        that miss the same key meanwhile await that value rather than make it again."""
        found, value = await self.alookup(key)
        if found:
            return value
        loop = asyncio.get_running_loop()
        with self._making:
            pending = self._made_by_loop.setdefault(loop, {})
        waiting = pending.get(key)
        if waiting is not None:
            try:
                return decode(await asyncio.shield(waiting))[1]
            except Exception:  # the first caller's make failed, or it was cancelled: try again here
                found, value = await self.alookup(key)
                if found:
                    return value
        future = pending[key] = loop.create_future()
        try:
            value = make()
            if inspect.isawaitable(value):
                value = await value
            data = encode(value)
            await self.aset(key, value, ttl)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the first caller stopped"))
            future.exception()  # retrieved: nobody may be waiting for it
            raise
        else:
            future.set_result(data)
            return decode(data)[1]
        finally:
            if pending.get(key) is future:
                del pending[key]


class _Making:
    """_Making is one value a sync `get_or_set` is making: how many callers want it, and the value once made."""

    __slots__ = ("callers", "data", "done")

    def __init__(self) -> None:
        self.callers = 0
        self.data: bytes | None = None  # the value as encoded (`encode`), once stored
        self.done = threading.Event()


class PluginCache(CacheMethods):
    """PluginCache is one plugin's `ctx.cache`: `get`, `set`, `delete`, `get_or_set`, `clear` and their async twins
    `aget`, `aset`, `adelete`, `aget_or_set`, `aclear`, on its own namespace of the process's CacheStores."""

    def __init__(self, stores: CacheStores, namespace: tuple[str, ...], plugin_id: str) -> None:
        super().__init__()
        self._stores = stores
        self._namespace = namespace
        self._plugin = plugin_id

    @property
    def backend(self) -> str:
        """backend is where the entries live: memory, file or redis."""
        return self._stores.backend

    def _run(self, operation: Callable[[Store], Awaitable[T]], fallback: T, what: str) -> T:
        if self._stores.on_own_thread():
            raise RuntimeError("ctx.cache: a sync call from the cache's own loop would wait for itself")
        try:
            return self._stores.call(operation, self._namespace)
        except Exception as exc:
            self._stores.failed(f"{what} for plugin {self._plugin}", exc)
            return fallback

    async def _arun(self, operation: Callable[[Store], Awaitable[T]], fallback: T, what: str) -> T:
        try:
            return await self._stores.acall(operation, self._namespace)
        except Exception as exc:
            self._stores.failed(f"{what} for plugin {self._plugin}", exc)
            return fallback

    def _memory(self) -> BoundedMemoryStore | None:
        """_memory is the plugin's memory store, which sync and async code use at once, or None for another
        backend (reached on the cache's loop)."""
        if self._stores.backend != "memory" or self._stores.closed:
            return None  # a closed cache answers misses through the common path
        store = self._stores.store(self._namespace)
        return store if isinstance(store, BoundedMemoryStore) else None

    def lookup(self, key: str) -> tuple[bool, Any]:
        """lookup is (True, the value) of `key`, or (False, None) when the cache has none."""
        key = check_key(key)
        memory = self._memory()
        data = memory.get_now(key) if memory is not None else self._run(lambda store: store.get(key), None, "get")
        return (False, None) if data is None else decode(data)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        """set stores `value` under `key` for `ttl` seconds (CACHE_TTL when None), replacing what was there."""
        key, data, seconds = check_key(key), encode(value), check_ttl(ttl)
        memory = self._memory()
        if memory is not None:
            memory.set_now(key, data, seconds)
            return
        self._run(lambda store: store.set(key, data, seconds), None, "set")

    def delete(self, key: str) -> None:
        """delete removes `key`, if the cache has it."""
        key = check_key(key)
        memory = self._memory()
        if memory is not None:
            memory.delete_now(key)
            return
        self._run(lambda store: store.delete(key), None, "delete")

    async def alookup(self, key: str) -> tuple[bool, Any]:
        """alookup is `lookup` for async code."""
        key = check_key(key)
        memory = self._memory()
        if memory is not None:
            data = memory.get_now(key)
        else:
            data = await self._arun(lambda store: store.get(key), None, "get")
        return (False, None) if data is None else decode(data)

    async def aset(self, key: str, value: Any, ttl: int | None = None) -> None:
        """aset is `set` for async code."""
        key, data, seconds = check_key(key), encode(value), check_ttl(ttl)
        memory = self._memory()
        if memory is not None:
            memory.set_now(key, data, seconds)
            return
        await self._arun(lambda store: store.set(key, data, seconds), None, "set")

    async def adelete(self, key: str) -> None:
        """adelete is `delete` for async code."""
        key = check_key(key)
        memory = self._memory()
        if memory is not None:
            memory.delete_now(key)
            return
        await self._arun(lambda store: store.delete(key), None, "delete")

    def clear(self) -> None:
        """clear removes every entry of this plugin, in every process that shares its store; no other plugin's."""
        memory = self._memory()
        if memory is not None:
            memory.delete_all_now()
            return
        self._run(self._stores.empty, None, "clear")

    async def aclear(self) -> None:
        """aclear is `clear` for async code."""
        memory = self._memory()
        if memory is not None:
            memory.delete_all_now()
            return
        await self._arun(self._stores.empty, None, "clear")


OPERATIONS = ("get", "set", "delete", "clear")


def answer(cache: PluginCache, message: list[Any]) -> list[Any]:
    """answer is the host's answer to a sandboxed worker's `["cache", operation, *arguments]` call: `["cache",
    result]` (for get: [found, value]), or `["refused", why]` (a ValueError's message, which the worker raises as
    ValueError)."""
    if len(message) < 2 or message[1] not in OPERATIONS:
        return ["refused", "ctx.cache: unknown operation"]
    operation, arguments = message[1], message[2:]
    try:
        if operation == "get" and len(arguments) == 1:
            return ["cache", list(cache.lookup(arguments[0]))]
        if operation == "set" and len(arguments) == 3:
            cache.set(arguments[0], arguments[1], arguments[2])
            return ["cache", None]
        if operation == "delete" and len(arguments) == 1:
            cache.delete(arguments[0])
            return ["cache", None]
        if operation == "clear" and not arguments:
            cache.clear()
            return ["cache", None]
    except (ValueError, TypeError) as exc:
        return ["refused", str(exc)]
    return ["refused", f"ctx.cache: wrong arguments for {operation}"]
