"""Huey without redis-py until the task queue is really on Redis.

Huey's storage module imports redis-py whenever it is installed, and xcore installs it (for the Redis queue), so
every worker paid for it in start time and memory (benchmarks/README.md), for a queue that is on SQLite unless
Redis is configured. `import_huey_without_redis` imports Huey's storage module while `import redis` is made to
fail, which Huey takes as "redis-py is not installed"; `redis_storage_ready` gives Huey's Redis storage its
redis-py names when a Redis queue is opened. Both check the names they touch, so a Huey that changed its
storage module fails with a clear error rather than silently.
"""

from __future__ import annotations

import sys

from xcore.errors import XcoreError

# The names huey.storage binds from redis-py (None when the import failed), and where they come from.
_REDIS_NAMES = {
    "ConnectionPool": ("redis", "ConnectionPool"),
    "Redis": ("redis", "Redis"),
    "ConnectionError": ("redis.exceptions", "ConnectionError"),
    "TimeoutError": ("redis.exceptions", "TimeoutError"),
}


def import_huey_without_redis() -> None:
    """import_huey_without_redis imports huey.storage without redis-py, unless either is imported already."""
    if "huey.storage" in sys.modules or "redis" in sys.modules:
        return
    sys.modules["redis"] = None  # type: ignore[assignment]  # `import redis` raises ImportError meanwhile
    try:
        import huey.storage  # noqa: F401
    finally:
        del sys.modules["redis"]


def redis_storage_ready() -> None:
    """redis_storage_ready gives huey.storage the redis-py names it would have bound, had redis-py been imported
    with it. Call it before opening a Redis queue."""
    import importlib

    import huey.storage as storage

    if storage.Redis is not None:
        return
    unexpected = [name for name in _REDIS_NAMES if not hasattr(storage, name) or getattr(storage, name) is not None]
    if unexpected or getattr(storage.RedisStorage, "redis_client", None) is not None:
        raise XcoreError(
            f"this Huey ({getattr(sys.modules.get('huey'), '__version__', '?')}) binds redis-py differently than "
            f"xcore expects ({', '.join(unexpected) or 'RedisStorage.redis_client'}); the Redis queue cannot start"
        )
    for name, (module, attribute) in _REDIS_NAMES.items():
        setattr(storage, name, getattr(importlib.import_module(module), attribute))
    storage.RedisStorage.redis_client = storage.Redis
