"""Signals between the nodes that share a PostgreSQL core database, through its LISTEN/NOTIFY.

On one machine a signal between xcore's processes is a file in the data directory (`<data>/auth-epoch`,
`<plugins>/.xcore-state`); each node has its own data directory, so on several machines the node that makes a
change also sends a notification on the database (`publish`), and every process of every node listens
(`Listener`) and raises the same local signal. A notification reaches the listeners within milliseconds.

A listener that loses its connection reconnects (waiting a little longer each time, up to 10 s) and then raises
every signal once, as notifications sent while it was away are lost. As a safety net it also raises every signal
each `SAFETY_NET` seconds (a reconcile that finds nothing changed costs a few queries). On SQLite there is nothing
to do: one machine, one data directory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from xcore.db.serving import is_postgres

log = logging.getLogger("xcore.db")

ACCOUNTS = "xcore_accounts"  # an account, role, session or permission changed: drop the cached principals
PLUGINS = "xcore_plugins"  # a plugin's state (enabled, settings) changed: reconcile the plugins
WAIT = 1.0  # seconds a listener blocks before it looks whether it should stop
RETRY_MAX = 10.0
SAFETY_NET = 60.0  # seconds between two raises of every signal, whatever the notifications said


def publish(engine: Any, channel: str) -> None:
    """publish notifies every listener of `channel` (after the change it signals has committed). Does nothing
    unless `engine` is on PostgreSQL; a failure is logged, not raised: the change itself is done, and the nodes'
    periodic reconcile and cache lifetimes still catch up with it."""
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})
    except Exception as exc:
        log.warning("could not tell the other nodes of a change (%s): %s", channel, exc)


class Listener:
    """Listener runs the handlers of the channels it listens to, in a thread of its own, on a connection of its
    own to the PostgreSQL database at `url`."""

    def __init__(self, url: str, handlers: Mapping[str, Callable[[], None]], every: float = SAFETY_NET) -> None:
        self.url = url
        self.handlers = dict(handlers)
        self.every = every
        self.listening = threading.Event()  # set while LISTEN is in force
        self._stop = threading.Event()
        self._wake = f"xcore_wake_{os.getpid()}_{id(self)}"  # this listener's own channel, for `stop`
        self._thread = threading.Thread(target=self._run, name="xcore-notify", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        """stop ends the listener: a notification on its own channel wakes it at once, rather than at its next
        look (up to WAIT later), so a worker's shutdown does not wait for it."""
        self._stop.set()
        if self.listening.is_set():
            import psycopg

            from xcore.db.engine import libpq_url

            try:
                with psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"NOTIFY {self._wake}")
            except Exception:  # it stops at its next look anyway
                pass
        self._thread.join(WAIT * 3)

    def _run(self) -> None:
        delay, missed = 0.5, False
        while not self._stop.is_set():
            try:
                self._listen(missed)
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                log.warning("lost the database's notifications (%s); connecting again in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay, missed = min(delay * 2, RETRY_MAX), True

    def _listen(self, missed: bool) -> None:
        import psycopg

        from xcore.db.engine import libpq_url

        with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
            for channel in [*self.handlers, self._wake]:
                conn.execute(f"LISTEN {channel}")  # channel names are xcore's own
            self.listening.set()
            if missed:  # what was sent while this listener was away is lost: act as if it all changed
                log.info("receiving the database's notifications again")
                self._raise_all()
            next_net = time.monotonic() + self.every
            while not self._stop.is_set():
                for notification in conn.notifies(timeout=WAIT):
                    if self._stop.is_set():
                        return
                    if notification.channel in self.handlers:
                        self._call(self.handlers[notification.channel])
                if time.monotonic() >= next_net:
                    self._raise_all()
                    next_net = time.monotonic() + self.every

    def _raise_all(self) -> None:
        for handler in self.handlers.values():
            self._call(handler)

    def _call(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        except Exception:
            log.exception("a handler of the database's notifications failed")


def listen(url: str, handlers: Mapping[str, Callable[[], None]]) -> Listener | None:
    """listen starts a Listener when the database at `url` is PostgreSQL; None for SQLite."""
    return Listener(url, handlers).start() if is_postgres(url) else None
