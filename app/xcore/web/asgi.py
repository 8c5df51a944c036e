"""The ASGI entry of a Granian worker: `xcore.web.asgi:create_switch` (a factory).

The parent process (`xcore serve`) has validated the settings, prepared the data directory and migrated the
database before it starts the workers; it passes the data directory in XCORE_DATA_DIR and its command-line
settings as XCORE_<SECTION>__<KEY> variables, so each worker opens the same Runtime.
"""

from __future__ import annotations

from xcore.runtime import open_runtime
from xcore.web.app import build_app
from xcore.web.switch import Switch


def create_switch() -> Switch:
    """create_switch opens this worker's Runtime and returns the Switch that will serve its apps."""
    runtime = open_runtime()
    return Switch(lambda: build_app(runtime))
