"""`ctx.cache` (`xcore.plugins.cache`): each plugin's entries with a lifetime, on Litestar's memory, file and Redis
stores. The same behaviour is checked on each store (a real redis-server on 127.0.0.1 for Redis), then through real
plugins, in process and sandboxed, and the choice `manager.plugins.cache` makes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account, free_port
from test_plugin_manager import Host, configured_runtime, make_zip, open_host
from test_tasks_redis import redis_url  # noqa: F401  (the module's redis-server, a fixture)
from xcore.config.schema import RedisConfig
from xcore.plugins import cache as cache_module
from xcore.plugins.cache import BoundedMemoryStore, CacheStores, PluginCache, backend_for
from xcore.plugins.contract import CACHE_KEY_MAX, CACHE_TTL, CACHE_TTL_MAX, CACHE_VALUE_MAX
from xcore.runtime import Runtime, open_runtime

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["memory", "file", "redis"]


def make_stores(backend: str, folder: Path, url: str) -> CacheStores:
    return CacheStores(backend, folder=folder, redis=RedisConfig(url=url))


@pytest.fixture
def clean_redis(redis_url: str) -> str:  # noqa: F811
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheStores]:
    url = request.getfixturevalue("clean_redis") if request.param == "redis" else "redis://127.0.0.1:1/0"
    found = make_stores(request.param, tmp_path / "store", url)
    yield found
    found.close()


# --- the behaviour, on every store ------------------------------------------------------------------------------


def test_values_are_kept_by_key_as_json_or_bytes(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    assert cache.get("missing") is None and cache.get("missing", 7) == 7
    cache.set("doc", {"list": [1, 2.5, "three", None, True], "nested": {"x": "é"}})
    cache.set("pair", (1, 2))  # a tuple comes back as JSON reads it: a list
    cache.set("raw", b"\x00\xffbytes")
    cache.set("null", None)
    assert cache.get("doc") == {"list": [1, 2.5, "three", None, True], "nested": {"x": "é"}}
    assert cache.get("pair") == [1, 2] and cache.get("raw") == b"\x00\xffbytes"
    assert cache.get("null", "default") is None, "a stored null is not a miss"
    cache.set("doc", "replaced")
    assert cache.get("doc") == "replaced"
    cache.delete("doc")
    cache.delete("doc")  # deleting what is not there is no error
    assert cache.get("doc", "gone") == "gone"


def test_get_or_set_makes_the_value_once(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    calls: list[int] = []

    def make() -> tuple[int, str]:
        calls.append(1)
        return (len(calls), "made")

    assert cache.get_or_set("made", make, ttl=60) == [1, "made"], "returned as a later get reads it"
    assert cache.get_or_set("made", make) == [1, "made"] and len(calls) == 1


def test_callers_that_miss_at_once_wait_for_one_make(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    calls: list[int] = []
    entered = threading.Event()

    def slow() -> dict[str, list[int]]:
        calls.append(1)
        entered.set()
        time.sleep(0.5)  # the others miss meanwhile
        return {"made": [len(calls)]}

    results: list[Any] = []

    def caller() -> None:
        results.append(cache.get_or_set("expensive", slow, ttl=60))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    threads[0].start()
    assert entered.wait(5)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and results == [{"made": [1]}] * 8
    assert len({id(result) for result in results}) == 8, "each caller gets its own copy to change"

    async def scenario() -> list[Any]:
        async def make() -> str:
            calls.append(1)
            await asyncio.sleep(0.5)  # longer than any caller's lookup takes, even on a loaded machine
            return "made once"

        return list(await asyncio.gather(*(cache.aget_or_set("async", make) for _ in range(8))))

    calls.clear()
    assert asyncio.run(scenario()) == ["made once"] * 8 and len(calls) == 1


def test_when_the_first_make_fails_the_next_caller_makes_it(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    attempts: list[str] = []
    entered = threading.Event()

    def flaky() -> str:
        attempts.append("try")
        if len(attempts) == 1:
            entered.set()
            time.sleep(0.2)
            raise RuntimeError("upstream down")
        return "second try"

    outcome: dict[str, Any] = {}

    def first() -> None:
        try:
            cache.get_or_set("flaky", flaky)
        except RuntimeError as exc:
            outcome["first"] = str(exc)

    leader = threading.Thread(target=first)
    leader.start()
    assert entered.wait(5)
    assert cache.get_or_set("flaky", flaky) == "second try"
    leader.join(5)
    assert outcome == {"first": "upstream down"} and attempts == ["try", "try"]

    async def scenario() -> list[Any]:
        making = asyncio.Event()

        async def failing() -> str:
            making.set()
            await asyncio.sleep(0.1)
            raise RuntimeError("async upstream down")

        leader = asyncio.create_task(cache.aget_or_set("aflaky", failing))
        await making.wait()  # the first caller is making it: the second one waits for it, then makes it itself
        second = await cache.aget_or_set("aflaky", lambda: "made after")
        first = (await asyncio.gather(leader, return_exceptions=True))[0]
        return [str(first), second]

    assert asyncio.run(scenario()) == ["async upstream down", "made after"]


def test_the_async_twins_do_the_same(stores: CacheStores) -> None:
    cache = stores.plugin("notes")

    async def make() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"n": 1}

    async def scenario() -> list[Any]:
        await cache.aset("a", [1, "two"], ttl=60)
        seen = [await cache.aget("a"), await cache.aget("b", "absent")]
        seen.append(await cache.aget_or_set("b", make))
        seen.append(await cache.aget_or_set("b", lambda: {"n": 2}))  # a hit: make is not called
        await cache.adelete("a")
        seen.append(await cache.aget("a", "deleted"))
        return seen

    assert asyncio.run(scenario()) == [[1, "two"], "absent", {"n": 1}, {"n": 1}, "deleted"]
    assert cache.get("b") == {"n": 1}, "sync and async calls reach the same entries"


def test_a_plugin_sees_only_its_own_entries(stores: CacheStores) -> None:
    notes, todo = stores.plugin("notes"), stores.plugin("todo")
    notes.set("shared-name", "notes'")
    assert todo.get("shared-name") is None
    todo.set("shared-name", "todo's")
    notes.delete("other")
    assert (notes.get("shared-name"), todo.get("shared-name")) == ("notes'", "todo's")
    todo.delete("shared-name")
    assert notes.get("shared-name") == "notes'"
    # An id that starts like another one is still another namespace.
    stores.plugin("notes_v2").set("shared-name", "v2")
    assert notes.get("shared-name") == "notes'"


def test_clear_removes_every_entry_of_the_plugin_and_no_other(stores: CacheStores, tmp_path: Path) -> None:
    notes, todo, notes_v2 = stores.plugin("notes"), stores.plugin("todo"), stores.plugin("notes_v2")
    for cache in (notes, todo, notes_v2):
        cache.set("a", "kept?")
        cache.set("b", b"raw")
    responses = stores.registry().get("response_cache")  # a plugin route's response cache: another namespace
    asyncio.run(responses.set("GET/app/notes", b"cached page"))
    notes.clear()
    assert (notes.get("a", "gone"), notes.get("b", "gone")) == ("gone", "gone")
    assert todo.get("a") == "kept?" and notes_v2.get("b") == b"raw", "an id that starts like it is another plugin"
    assert asyncio.run(responses.get("GET/app/notes")) == b"cached page"
    notes.clear()  # clearing an empty cache is no error
    notes.set("a", "again")
    assert notes.get("a") == "again", "the cache works on after a clear"

    async def scenario() -> list[Any]:
        await todo.aclear()
        return [await todo.aget("a", "gone"), await notes.aget("a")]

    assert asyncio.run(scenario()) == ["gone", "again"]
    if stores.backend == "file":  # the folder is emptied, not made anew: it keeps its owner-only mode
        folder = tmp_path / "store" / "plugins" / "notes"
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700


def test_an_entry_expires_after_its_ttl(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    cache.set("short", "soon gone", ttl=1)
    cache.set("long", "stays", ttl=60)
    cache.set("default", "an hour")
    assert cache.get("short") == "soon gone"
    time.sleep(1.3)
    assert cache.get("short", "expired") == "expired"
    assert (cache.get("long"), cache.get("default")) == ("stays", "an hour")


def test_what_the_file_and_redis_stores_hold_is_shared_by_processes(stores: CacheStores, tmp_path: Path) -> None:
    """Another CacheStores on the same folder or Redis stands for another worker process (or node, for Redis)."""
    url = stores.redis.url or ""
    other = make_stores(stores.backend, tmp_path / "store", url)
    try:
        stores.plugin("notes").set("k", "from one process")
        seen = other.plugin("notes").get("k")
    finally:
        other.close()
    assert seen == (None if stores.backend == "memory" else "from one process")


def test_expired_entries_are_swept(stores: CacheStores) -> None:
    cache = stores.plugin("notes")
    cache.set("short", "x", ttl=1)
    cache.set("long", "y", ttl=60)
    time.sleep(1.3)
    asyncio.run_coroutine_threadsafe(stores.sweep(), stores._ready()).result(10)
    if stores.backend == "file":
        assert stores.folder is not None
        assert len(list((stores.folder / "plugins" / "notes").iterdir())) == 1, "the expired file is deleted"
    if stores.backend == "memory":
        store = stores.store(("plugins", "notes"))
        assert isinstance(store, BoundedMemoryStore) and list(store._store) == ["long"]
    assert cache.get("long") == "y"


# --- limits ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "ttl", "says"),
    [
        (7, "v", None, "a key is text, not int"),
        ("", "v", None, f"a key has 1 to {CACHE_KEY_MAX} characters, not 0"),
        ("k" * (CACHE_KEY_MAX + 1), "v", None, f"not {CACHE_KEY_MAX + 1}"),
        ("a\x00b", "v", None, "NUL"),
        ("k", {1, 2}, None, "a value must be bytes or JSON"),
        ("k", float("nan"), None, "a value must be bytes or JSON"),
        ("k", object(), None, "a value must be bytes or JSON"),
        ("k", "x" * CACHE_VALUE_MAX, None, f"at most {CACHE_VALUE_MAX} bytes, this one {CACHE_VALUE_MAX + 2}"),
        ("k", b"x" * (CACHE_VALUE_MAX + 1), None, f"at most {CACHE_VALUE_MAX} bytes"),
        ("k", "v", 0, f"ttl is 1 to {CACHE_TTL_MAX} seconds"),
        ("k", "v", CACHE_TTL_MAX + 1, "not 2592001"),
        ("k", "v", 1.5, "ttl is a whole number of seconds, not float"),
        ("k", "v", True, "not bool"),
    ],
    ids=[
        "int-key",
        "empty-key",
        "long-key",
        "nul-key",
        "set",
        "nan",
        "object",
        "large-json",
        "large-bytes",
        "ttl-zero",
        "ttl-too-long",
        "ttl-float",
        "ttl-bool",
    ],
)
def test_a_wrong_key_value_or_ttl_is_a_value_error_that_says_why_and_stores_nothing(
    tmp_path: Path, key: Any, value: Any, ttl: Any, says: str
) -> None:
    stores = make_stores("memory", tmp_path, "")
    cache = stores.plugin("notes")
    try:
        with pytest.raises(ValueError, match=r"^ctx\.cache: ") as caught:
            cache.set(key, value, ttl)
        assert says in str(caught.value)
        with pytest.raises(ValueError, match=r"^ctx\.cache: "):
            asyncio.run(cache.aset(key, value, ttl))
        if isinstance(key, str) and 1 <= len(key) <= CACHE_KEY_MAX and "\x00" not in key:
            assert cache.get(key, "nothing") == "nothing"
    finally:
        stores.close()


def test_the_largest_value_fits(tmp_path: Path) -> None:
    stores = make_stores("file", tmp_path, "")
    try:
        stores.plugin("notes").set("big", b"x" * CACHE_VALUE_MAX)
        assert stores.plugin("notes").get("big") == b"x" * CACHE_VALUE_MAX
    finally:
        stores.close()


def test_a_memory_cache_over_its_budget_drops_the_entries_set_longest_ago() -> None:
    async def scenario() -> tuple[list[str], int]:
        store = BoundedMemoryStore(budget=250)
        for key in "abcd":
            await store.set(key, b"x" * 100, 60)
        await store.set("a", b"y" * 100, 60)  # setting an entry again makes it the newest
        await store.set("e", b"x" * 100, 60)
        return list(store._store), store._size

    held, size = asyncio.run(scenario())
    assert held == ["a", "e"] and size == 200


def test_a_store_that_cannot_be_reached_answers_misses_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores = make_stores("redis", tmp_path, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    cache = stores.plugin("notes")
    try:
        with caplog.at_level(logging.WARNING, logger="xcore.plugins"):
            cache.set("k", "v")
            assert cache.get("k", "miss") == "miss"
            assert cache.get_or_set("k", lambda: "made") == "made"
            assert asyncio.run(cache.aget("k", "miss")) == "miss"
            cache.clear()  # nothing to clear where nothing is reachable: no error for the plugin either
            asyncio.run(cache.aclear())
    finally:
        stores.close()
    warned = [r.getMessage() for r in caplog.records if "ctx.cache (redis)" in r.getMessage()]
    assert len(warned) == 1 and "answering misses meanwhile" in warned[0], "one warning a minute, not one a call"


# --- the choice of store ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "redis_active", "desktop", "chosen"),
    [
        ("auto", False, False, "memory"),
        ("auto", False, True, "file"),
        ("auto", True, False, "redis"),
        ("auto", True, True, "redis"),
        ("memory", True, True, "memory"),
        ("file", False, False, "file"),
        ("redis", False, False, "redis"),
    ],
)
def test_the_setting_picks_the_store(setting: str, redis_active: bool, desktop: bool, chosen: str) -> None:
    assert backend_for(setting, redis_active, desktop) == chosen


def test_a_runtime_picks_its_store_from_its_settings(data_dir: Path) -> None:
    def chosen(environ: dict[str, str], desktop: bool = False) -> tuple[str, Path | None]:
        runtime = open_runtime(data_dir, environ=environ, logs=False)
        runtime.desktop = desktop
        stores = CacheStores.for_runtime(runtime)
        return stores.backend, stores.folder

    assert chosen({})[0] == "memory"
    assert chosen({}, desktop=True) == ("file", data_dir.resolve() / "cache" / "store")
    assert chosen({"REDIS_URL": "redis://127.0.0.1:6390/0"})[0] == "redis"
    assert chosen({"REDIS_URL": "redis://127.0.0.1:6390/0", "XCORE_MANAGER__PLUGINS__CACHE": "file"})[0] == "file"
    with pytest.raises(Exception, match=r"manager\.plugins\.cache"):
        chosen({"XCORE_MANAGER__PLUGINS__CACHE": "disk"})


# --- through plugins -------------------------------------------------------------------------------------------

CACHE_PLUGIN = """
from xcore.sdk import Ctx, FromPath, JSONBody, get, post


@post("/cache/{key:str}", sync_to_thread=True)
def put(ctx: Ctx, key: FromPath[str], data: JSONBody[dict]) -> dict:
    try:
        ctx.cache.set(key, data["value"], ttl=data.get("ttl"))
    except ValueError as exc:
        return {"refused": str(exc)}
    return {"stored": key}


@get("/cache/{key:str}", sync_to_thread=True)
def read(ctx: Ctx, key: FromPath[str]) -> dict:
    return {"value": ctx.cache.get(key, "absent")}


@get("/bytes", sync_to_thread=True)
def raw(ctx: Ctx) -> dict:
    made = ctx.cache.get_or_set("raw", lambda: b"\\x00\\x01", ttl=60)
    return {"bytes": list(made), "again": list(ctx.cache.get("raw"))}


@get("/async/{key:str}")
async def read_async(ctx: Ctx, key: FromPath[str]) -> dict:
    async def make():
        return {"made": key}

    made = await ctx.cache.aget_or_set("async-" + key, make, ttl=60)
    await ctx.cache.aset("touched", True)
    return {"value": await ctx.cache.aget(key, "absent"), "made": made}


@post("/cache/{key:str}/delete", sync_to_thread=True)
def remove(ctx: Ctx, key: FromPath[str]) -> dict:
    ctx.cache.delete(key)
    return {"deleted": key}


@post("/clear", sync_to_thread=True)
def clear(ctx: Ctx) -> dict:
    ctx.cache.clear()
    return {"cleared": True}


@post("/aclear")
async def aclear(ctx: Ctx) -> dict:
    await ctx.cache.aclear()
    return {"cleared": True}


router = [put, read, raw, read_async, remove, clear, aclear]
"""


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


def exercise(host: Host, plugin_id: str) -> None:
    """exercise uses ctx.cache through the routes of CACHE_PLUGIN installed as `plugin_id`."""
    post = host.client.post
    base = f"/app/{plugin_id}"
    for clearing in ("clear", "aclear"):
        post(f"{base}/cache/left", json={"value": "here"}, headers=host.root)
        assert host.get(f"{base}/cache/left").json() == {"value": "here"}
        assert post(f"{base}/{clearing}", headers=host.root).json() == {"cleared": True}
        assert host.get(f"{base}/cache/left").json() == {"value": "absent"}, clearing
    stored = post(f"{base}/cache/greeting", json={"value": {"hello": ["world", 1]}}, headers=host.root)
    assert stored.status_code == 201 and stored.json() == {"stored": "greeting"}, stored.text
    assert host.get(f"{base}/cache/greeting").json() == {"value": {"hello": ["world", 1]}}
    assert host.get(f"{base}/bytes").json() == {"bytes": [0, 1], "again": [0, 1]}
    assert host.get(f"{base}/async/greeting").json() == {
        "value": {"hello": ["world", 1]}, "made": {"made": "greeting"},
    }  # fmt: skip
    refused = post(f"{base}/cache/big", json={"value": "x" * CACHE_VALUE_MAX}, headers=host.root)
    assert f"at most {CACHE_VALUE_MAX} bytes" in refused.json().get("refused", ""), refused.text
    refused = post(f"{base}/cache/bad-ttl", json={"value": 1, "ttl": 0}, headers=host.root)
    assert "ttl is 1 to" in refused.json().get("refused", ""), refused.text
    post(f"{base}/cache/short", json={"value": "brief", "ttl": 1}, headers=host.root)
    assert post(f"{base}/cache/greeting/delete", headers=host.root).json() == {"deleted": "greeting"}
    assert host.get(f"{base}/cache/greeting").json() == {"value": "absent"}
    time.sleep(1.3)
    assert host.get(f"{base}/cache/short").json() == {"value": "absent"}, "expired"


@pytest.mark.parametrize("sandbox", [False, True], ids=["in-process", "sandboxed"])
def test_a_plugin_uses_ctx_cache_in_process_and_in_the_sandbox(host: Host, sandbox: bool) -> None:
    host.drop(make_zip(host.staging, "cachep", "1.0.0", CACHE_PLUGIN, sandbox=sandbox))
    host.wait_view("cachep", "active")
    exercise(host, "cachep")
    assert host.manager.stores.backend == "memory", "the default store of a server"
    assert host.manager.stores.plugin("cachep").get("touched") is True, "the host's store of that plugin"


def test_two_plugins_never_see_each_others_entries(host: Host) -> None:
    host.drop(make_zip(host.staging, "first", "1.0.0", CACHE_PLUGIN))
    host.drop(make_zip(host.staging, "second", "1.0.0", CACHE_PLUGIN, sandbox=True))
    host.wait_view("first", "active")
    host.wait_view("second", "active")
    post = host.client.post
    post("/app/first/cache/same", json={"value": "first's"}, headers=host.root)
    assert host.get("/app/second/cache/same").json() == {"value": "absent"}
    post("/app/second/cache/same", json={"value": "second's"}, headers=host.root)
    assert host.get("/app/first/cache/same").json() == {"value": "first's"}
    assert host.get("/app/second/cache/same").json() == {"value": "second's"}


def test_with_redis_configured_plugins_cache_in_redis_shared_by_every_node(
    data_dir: Path, tmp_path: Path, clean_redis: str
) -> None:
    import redis

    with configured_runtime(data_dir, REDIS_URL=clean_redis) as runtime, open_host(runtime, tmp_path / "s") as host:
        assert host.manager.stores.backend == "redis"
        host.drop(make_zip(host.staging, "cachep", "1.0.0", CACHE_PLUGIN, sandbox=True))
        host.wait_view("cachep", "active")
        exercise(host, "cachep")
        host.client.post("/app/cachep/cache/kept", json={"value": [1, 2]}, headers=host.root)
        other = make_stores("redis", tmp_path, clean_redis)  # another node's process
        try:
            assert other.plugin("cachep").get("kept") == [1, 2]
        finally:
            other.close()
    client = redis.Redis.from_url(clean_redis)
    keys = sorted(k.decode() for k in client.keys("*"))
    assert "xcore_cache_plugins.cachep:kept" in keys and all(k.startswith("xcore_cache_plugins.cachep:") for k in keys)
    assert 0 < client.ttl("xcore_cache_plugins.cachep:kept") <= CACHE_TTL, "an entry set without a ttl has the default"


def test_the_desktop_app_caches_in_files_under_the_data_directory(runtime: Runtime, tmp_path: Path) -> None:
    runtime.desktop = True
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as host:
        host.drop(make_zip(host.staging, "cachep", "1.0.0", CACHE_PLUGIN))
        host.wait_view("cachep", "active")
        host.client.post("/app/cachep/cache/kept", json={"value": "on disk"}, headers=host.root)
    folder = runtime.data.root / "cache" / "store" / "plugins" / "cachep"
    assert len(list(folder.iterdir())) == 1
    again = CacheStores("file", folder=runtime.data.root / "cache" / "store")
    try:
        assert again.plugin("cachep").get("kept") == "on disk", "kept across a restart"
    finally:
        again.close()


def test_the_readme_states_the_caches_limits() -> None:
    text = " ".join((ROOT / "plugins" / "README.md").read_text(encoding="utf-8").split())
    match = re.search(r"\*\*`ctx\.cache`\*\*(.+?)\*\*", text)
    assert match, "plugins/README.md has no **`ctx.cache`** paragraph"
    said = match[1]
    assert f"1 to {CACHE_KEY_MAX} characters" in said
    assert f"at most {CACHE_VALUE_MAX // (1024 * 1024)} MiB" in said
    assert f"{CACHE_TTL // 3600} hour" in said and f"{CACHE_TTL_MAX // 86400} days" in said
    for name in ("get", "set", "delete", "get_or_set", "clear", "aget", "aset", "adelete", "aget_or_set", "aclear"):
        assert f"`{name}(" in said or f"`{name}`" in said, name


def test_a_plugin_cache_and_the_sdk_agree_on_the_methods() -> None:
    def methods(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}

    documented = {"get", "set", "delete", "get_or_set", "clear", "aget", "aset", "adelete", "aget_or_set", "aclear"}
    assert documented <= methods(PluginCache)
    from xcore.plugin_worker import RemoteCache

    assert methods(RemoteCache) == methods(PluginCache), "a sandboxed plugin's ctx.cache has the host's methods"
    assert methods(PluginCache) - documented == {"lookup", "alookup"}, "and nothing undocumented but the lookups"
    assert json.dumps(cache_module.OPERATIONS) == '["get", "set", "delete", "clear"]'


COUNTED_PLUGIN = """
import itertools
from xcore.sdk import get

calls = itertools.count(1)


@get("/counted", cache=60, sync_to_thread=False)
def counted() -> dict:
    return {"call": next(calls)}


router = [counted]
"""


def test_a_plugin_routes_response_cache_is_on_the_same_stores(runtime: Runtime, tmp_path: Path) -> None:
    """Litestar's response cache (`cache=` on a route) of a plugin's app uses the stores of ctx.cache: with the
    file store, what one process cached another finds."""
    runtime.desktop = True  # auto: the file store
    create_account(runtime, "root", ["superadmin"])
    with open_host(runtime, tmp_path / "staging") as host:
        host.drop(make_zip(host.staging, "counted", "1.0.0", COUNTED_PLUGIN))
        host.wait_view("counted", "active")
        assert host.get("/app/counted/counted").json() == {"call": 1}
        assert host.get("/app/counted/counted").json() == {"call": 1}, "the second answer is the cached one"
        other = CacheStores("file", folder=runtime.data.root / "cache" / "store")  # another worker process
        try:
            shared = other.registry().get("response_cache")
            cached = asyncio.run(shared.get("GET/app/counted/counted"))
        finally:
            other.close()
    assert cached is not None and b'{"call":1}' in cached


def test_a_closed_cache_answers_misses_and_starts_no_thread_again(tmp_path: Path) -> None:
    import threading

    stores = make_stores("memory", tmp_path, "")
    cache = stores.plugin("notes")
    cache.set("k", "v")
    stores.close()
    running = threading.active_count()
    assert cache.get("k", "miss") == "miss" and asyncio.run(cache.aget("k", "miss")) == "miss"
    cache.set("k", "v")  # stores nothing, raises nothing: a task thread may outlive its server's stop
    assert stores._thread is None and threading.active_count() == running, "no loop started again"
