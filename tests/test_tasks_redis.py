"""The task queue on Redis (the scale-out path): a real redis-server on 127.0.0.1, started for these tests.

With `REDIS_URL` set, the queue is Huey's Redis storage and the consumer's leader lock is a Redis lease; the
journal stays in the database, so everything else behaves as with SQLite.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import create_account, free_port, fresh_python, plugin_host
from test_tasks import Host, bundle, finished, install, until
from xcore.runtime import Runtime, open_runtime
from xcore.server import prepare_database
from xcore.tasks.host import TaskHost
from xcore.tasks.lazy_redis import redis_storage_ready


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: `python3 tasks.py test` installs it with apt"
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def redis_runtime(data_dir: Path, redis_url: str) -> Iterator[Runtime]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    runtime = open_runtime(data_dir, environ={"REDIS_URL": redis_url})
    prepare_database(runtime)
    yield runtime
    runtime.close()


def test_plugin_tasks_run_through_the_redis_queue_with_the_same_journal(redis_runtime: Runtime, tmp_path: Path) -> None:
    create_account(redis_runtime, "root", ["superadmin"])
    install(redis_runtime, bundle(tmp_path, "1.0.0"))
    with plugin_host(redis_runtime, tasks=True) as client:
        host = Host(client, redis_runtime)
        assert type(client.manager.tasks.huey).__name__ == "RedisHuey"
        run_id = host.enqueue("record", text="via redis", fail_first=1)
        run = until(lambda: finished(redis_runtime, run_id), "the run to finish")
        assert (run.status, run.attempt) == ("succeeded", 2)
        health = client.get("/health").json()["scheduler"]
        assert health["consumer"] == "running here" and health["status"] == "ok"
    assert not (redis_runtime.data.root / "tasks.db").exists(), "no SQLite queue when Redis is on"


def test_the_consumer_lease_on_redis_goes_to_one_process_and_passes_on(redis_runtime: Runtime) -> None:
    first, second = TaskHost(redis_runtime), TaskHost(redis_runtime)
    try:
        first.start()
        second.start()
        assert first.leading and not second.leading
        assert second.health()["consumer"] == "running in another process"
        first.stop()
        until(lambda: second.leading, "the second host to take the lease", timeout=6)
        assert second.health()["consumer"] == "running here"
    finally:
        first.stop()
        second.stop()


def test_a_worker_with_a_sqlite_queue_never_imports_redis_py(tmp_path: Path) -> None:
    """Huey imports redis-py whenever it is installed (0.1 s and 15-20 MB per worker); xcore keeps it out until a
    Redis queue opens. In a fresh process: a worker's modules and a SQLite queue leave redis-py unimported."""
    probe = (
        "import sys, pathlib; import xcore.web.asgi; from xcore.tasks.queue import make_queue; "
        f"make_queue(pathlib.Path({str(tmp_path / 'tasks.db')!r})); "
        "import huey.storage as s; print('redis' in sys.modules, s.Redis)"
    )
    assert fresh_python(probe).split() == ["False", "None"]


def test_redis_storage_ready_gives_huey_the_redis_py_names() -> None:
    import huey.storage as storage
    import redis

    redis_storage_ready()  # whichever order this process imported things in
    assert storage.Redis is redis.Redis and storage.ConnectionPool is redis.ConnectionPool
    assert storage.RedisStorage.redis_client is redis.Redis
    assert storage.TimeoutError is redis.exceptions.TimeoutError
