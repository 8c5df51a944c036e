"""The ASGI entry of a Granian worker: `xcore.web.asgi:create_switch` (a factory).

The parent process (`xcore serve`) has validated the settings, prepared the data directory and migrated the
database before it starts the workers; it passes the data directory in XCORE_DATA_DIR and its command-line
settings as XCORE_<SECTION>__<KEY> variables, so each worker opens the same Runtime. `--plugins-dev` folders
come in XCORE_PLUGINS_DEV (separated by os.pathsep).

With `server.trusted_proxies` set, the Switch is served behind Granian's proxy-header wrapper, so everything
inside it (the request log, Litestar, the login throttle, the audit log) sees the client address and scheme a
trusted reverse proxy forwarded. Unset, nothing is wrapped.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import threading
from pathlib import Path
from typing import Any

from granian.utils.proxies import wrap_asgi_with_proxy_headers

from xcore.config.loader import ENV_PLUGINS_DEV
from xcore.logs.setup import forget_configuration
from xcore.plugins.manager import PluginManager
from xcore.runtime import Runtime, open_runtime
from xcore.tasks.core import register_core_tasks
from xcore.tasks.host import TaskHost
from xcore.web.calls import direct
from xcore.web.plugin_apps import plugin_switch
from xcore.web.switch import ASGIApp, Switch

WARM_UP_AFTER = 1.0  # seconds after a worker's start
WARM_UP = ("jwt",)  # PyJWT (with cryptography), which xcore.auth.tokens imports at the first token it handles


def warm_up_later(modules: tuple[str, ...] = WARM_UP, delay: float = WARM_UP_AFTER) -> threading.Timer:
    """warm_up_later imports `modules` in a background thread `delay` seconds from now: after the worker has
    started serving, and before anyone can have typed a password, so neither the start (PyJWT with cryptography
    is a slow import) nor the first login waits for them."""

    def load() -> None:
        for name in modules:
            importlib.import_module(name)

    timer = threading.Timer(delay, load)
    timer.name = "xcore-warm-up"
    timer.daemon = True
    timer.start()
    return timer


def create_switch() -> ASGIApp:
    """create_switch opens this worker's Runtime and returns the Switch its plugin manager drives (as its bound
    `__call__`, which Granian calls for every request: see `xcore.web.calls`), behind the trusted proxies
    (`behind_proxies`)."""
    # Granian has just applied the logging config in this worker; apply it as ours, so that the request
    # log's fast path writes to this process's handlers, not to copies inherited from the parent.
    forget_configuration()
    warm_up_later()
    runtime = open_runtime()
    dev = [Path(p) for p in os.environ.get(ENV_PLUGINS_DEV, "").split(os.pathsep) if p]
    return behind_proxies(direct(build_switch(runtime, dev)), runtime.config.server.trusted_proxies)


def build_switch(runtime: Runtime, dev: list[Path]) -> Switch:
    """build_switch is what one server process serves: the Switch, driven by a plugin manager (plugins from the
    data directory and the `dev` folders) that also starts and stops the task host with the core tasks.

    Used by every Granian worker of `xcore serve` and by the embedded server of `xcore desktop`.
    """
    tasks = TaskHost(runtime)
    manager = PluginManager(runtime, dev, tasks=tasks)
    register_core_tasks(tasks, manager.collect_garbage)
    return plugin_switch(runtime, manager)


def behind_proxies(app: ASGIApp, trusted: list[str]) -> ASGIApp:
    """behind_proxies returns `app` itself when `trusted` is empty; otherwise `app` wrapped so that a request whose
    peer is in `trusted` (addresses and networks, checked by the config loader) gets `scope["client"]` from its
    X-Forwarded-For header (the right-most address that is not trusted) and `scope["scheme"]` from
    X-Forwarded-Proto. The headers stay in the request, so a route can still tell that a proxy was involved.

    A forwarded value that is not an IP address (Granian's helper takes any text) is ignored: the request keeps
    its peer's address, so a client cannot put arbitrary text into the audit log or the throttle's keys."""
    if not trusted:
        return app

    async def checked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        client, peer = scope.get("client"), scope.get(PEER_KEY)
        if client is not None and client is not peer and not _is_ip(client[0]):
            scope["client"] = peer
        await app(scope, receive, send)

    forwarded: ASGIApp = wrap_asgi_with_proxy_headers(checked, trusted_hosts=list(trusted))

    async def remember_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope[PEER_KEY] = scope.get("client")
        await forwarded(scope, receive, send)

    return remember_peer


PEER_KEY = "xcore.peer"  # the direct peer's (host, port), before a trusted proxy's headers replace it


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
