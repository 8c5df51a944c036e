"""The ASGI entry of a Granian worker: `xcore.web.asgi:create_switch` (a factory).

The parent process (`xcore serve`) has validated the settings, prepared the data directory and migrated the
database before it starts the workers; it passes the data directory in XCORE_DATA_DIR and its command-line
settings as XCORE_<SECTION>__<KEY> variables, so each worker opens the same Runtime. `--plugins-dev` folders
come in XCORE_PLUGINS_DEV (separated by os.pathsep).
"""

from __future__ import annotations

import os
from pathlib import Path

from xcore.logs.setup import forget_configuration
from xcore.plugins.manager import PluginManager
from xcore.runtime import Runtime, open_runtime
from xcore.tasks.core import register_core_tasks
from xcore.tasks.host import TaskHost
from xcore.web.switch import Switch

ENV_PLUGINS_DEV = "XCORE_PLUGINS_DEV"


def create_switch() -> Switch:
    """create_switch opens this worker's Runtime and returns the Switch its plugin manager drives."""
    # Granian has just applied the logging config in this worker; apply it as ours, so that the request
    # log's fast path writes to this process's handlers, not to copies inherited from the parent.
    forget_configuration()
    runtime = open_runtime()
    dev = [Path(p) for p in os.environ.get(ENV_PLUGINS_DEV, "").split(os.pathsep) if p]
    return build_switch(runtime, dev)


def build_switch(runtime: Runtime, dev: list[Path]) -> Switch:
    """build_switch is what one server process serves: the Switch, driven by a plugin manager (plugins from the
    data directory and the `dev` folders) that also starts and stops the task host with the core tasks.

    Used by every Granian worker of `xcore serve` and by the embedded server of `xcore desktop`.
    """
    tasks = TaskHost(runtime)
    manager = PluginManager(runtime, dev, tasks=tasks)
    register_core_tasks(tasks, manager.collect_garbage)
    return Switch(startup=manager.start, shutdown=manager.stop)
