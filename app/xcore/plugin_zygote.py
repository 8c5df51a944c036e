"""The sandbox's fork server: one process a server worker that has imported what a plugin worker needs, and forks
one for each sandboxed plugin (`xcore plugin-zygote --fd N`, hidden, or `python -m xcore.plugin_zygote --fd N`).

A plugin worker started from nothing spends most of its start importing Python, Litestar and xcore, and holds a
copy of all of it. Forked from here it starts with them imported, and shares their memory with its siblings
until it writes to it. The zygote itself runs no plugin code and never confines itself: each child confines
itself (`xcore.plugin_worker`) before it imports its plugin, as a worker started from nothing does.

The host (`xcore.plugins.zygote`) talks to it over a SOCK_SEQPACKET socket, one message a datagram:

- `["fork", data_dir]`, with three file descriptors (the worker's two sockets and its stderr): the zygote forks a
  child, which makes itself a new session, takes the descriptors, works in `data_dir` and runs the plugin worker;
  the zygote answers `["forked", pid]`, or `["failed", reason]`.
- `["exited", pid, code]`, unasked, when a child has ended (`code` as `subprocess` gives it: negative for a
  signal).

Each child dies with the zygote (PR_SET_PDEATHSIG), and the zygote with the server worker that started it, so
nothing outlives its host. The zygote asks for that before it imports anything heavy, and a child exits at once
when the zygote has already gone by the time it asks. The zygote exits when the host closes its end of the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import selectors
import signal
import socket
import sys
from typing import Any

import msgspec

from xcore.heap import freeze_startup_heap

PR_SET_PDEATHSIG = 1
MAX_MESSAGE = 64 * 1024
# Imported here so that a child does not import them itself (what plugin_worker imports, it already has).
PRELOADED = ("sqlite3", "sqlite_utils", "hashlib", "zlib", "uuid", "decimal", "email.message")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def main(argv: list[str]) -> int:
    """main serves the host on the socket whose file descriptor follows `--fd`; returns the exit code."""
    if len(argv) != 2 or argv[0] != "--fd" or not argv[1].isdigit():
        print("usage: xcore plugin-zygote --fd N (xcore starts it for its sandboxed plugins)", file=sys.stderr)
        return 2
    die_with_parent()  # first: imports take a while, and a host that dies meanwhile must take this process along
    from xcore import plugin_worker  # noqa: F401  # what every child runs, with Litestar and the SDK

    for name in PRELOADED:
        with contextlib.suppress(ImportError):  # a module missing from a build: the child imports what it can
            __import__(name)
    freeze_startup_heap()
    return Zygote(socket.socket(fileno=int(argv[1]))).serve()


def die_with_parent() -> None:
    """die_with_parent has the kernel kill this process when the one that started it ends (Linux)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Zygote:
    """Zygote forks plugin workers on the host's requests and tells it when they end."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()

    def serve(self) -> int:
        """serve answers the host until it closes the socket; then its children are killed, and it exits."""
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ)
        selector.register(self.wake_read, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self.control:
                        if not self.answer():
                            return 0
                    else:
                        self.reap()
        finally:
            for pid in self.children:
                with_ignored(os.kill, pid, signal.SIGKILL)

    def answer(self) -> bool:
        """answer reads one request of the host and acts on it; False when the host has gone."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 3)
        except ConnectionError:
            return False
        if not data:
            return False
        try:
            message = _decode(data)
            kind, data_dir = message[0], str(message[1])
        except (msgspec.DecodeError, IndexError, TypeError):
            kind, data_dir = "", ""
        if kind != "fork" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self.send(["failed", "the zygote answers `fork` with three file descriptors"])
            return True
        zygote = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            self.send(["failed", f"fork: {exc.strerror}"])
            return True
        if pid == 0:
            os._exit(self.child(fds, data_dir, zygote))
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self.send(["forked", pid])
        return True

    def child(self, fds: list[int], data_dir: str, zygote: int) -> int:
        """child becomes a plugin worker: a session of its own, the host's descriptors, `data_dir`; its code. It
        ends at once when its parent, the `zygote`, has ended before it asked to die with it."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.control.close()
            os.close(self.wake_read)
            os.close(self.wake_write)
            os.setsid()
            die_with_parent()
            if os.getppid() != zygote:
                return 1
            from xcore import plugin_worker  # imported by main(): already loaded

            sock, calls, stderr = fds
            os.dup2(stderr, 2)
            os.close(stderr)
            os.chdir(data_dir)
            os.environ["HOME"] = os.environ["TMPDIR"] = data_dir
            gc.collect(0)
            return plugin_worker.main(["--fd", str(sock), "--calls", str(calls)])
        except BaseException as exc:  # whatever happens, the child must not return into the zygote's loop
            with_ignored(os.write, 2, f"the plugin worker failed to start: {exc!r}\n".encode())
            return 1
        finally:
            with_ignored(sys.stderr.flush)

    def reap(self) -> None:
        """reap collects the children that have ended and tells the host."""
        while True:
            try:
                os.read(self.wake_read, 512)
            except BlockingIOError:
                break
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send(["exited", pid, os.waitstatus_to_exitcode(status)])

    def send(self, message: list[Any]) -> None:
        try:
            self.control.send(_encode(message))
        except OSError:
            logging.getLogger("xcore.plugins.zygote").warning("the host is gone; %s not sent", message[0])


def with_ignored(fn: Any, *args: Any) -> None:
    """with_ignored calls fn(*args), ignoring the OSError it may raise (a process already gone)."""
    with contextlib.suppress(OSError):
        fn(*args)


if __name__ == "__main__":  # from a checkout or an installation: `python -m xcore.plugin_zygote --fd N`
    sys.exit(main(sys.argv[1:]))
