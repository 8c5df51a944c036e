"""Tasks: the embedded Huey queue and consumer, the registry of core and plugin tasks, and the run journal."""

from xcore.tasks.lazy_redis import import_huey_without_redis

import_huey_without_redis()  # before any module of this package imports Huey: see xcore.tasks.lazy_redis
