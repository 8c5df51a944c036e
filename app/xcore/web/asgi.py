"""The ASGI entry of a Granian worker: `xcore.web.asgi:create_switch` (a factory).

The parent process (`xcore serve`) has validated the settings, prepared the data directory and migrated the
database before it starts the workers; it passes the data directory in XCORE_DATA_DIR and its command-line
settings as XCORE_<SECTION>__<KEY> variables, so each worker opens the same Runtime.
"""

from __future__ import annotations

from xcore.logs.setup import forget_configuration
from xcore.runtime import open_runtime
from xcore.web.app import build_app
from xcore.web.switch import Switch


def create_switch() -> Switch:
    """create_switch opens this worker's Runtime and returns the Switch that will serve its apps."""
    # Granian has just applied the logging config in this worker; apply it as ours, so that the request
    # log's fast path writes to this process's handlers, not to copies inherited from the parent.
    forget_configuration()
    runtime = open_runtime()
    return Switch(lambda: build_app(runtime))
