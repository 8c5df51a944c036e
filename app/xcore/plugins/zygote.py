"""The host's side of the sandbox's fork server (`xcore.plugin_zygote`): one a server worker, started at its first
sandboxed plugin, which forks each plugin worker already holding what it imports.

`Zygote.fork(data_dir, fds)` asks for one worker and returns it as a `Child`: its pid, `wait()` for its exit code
(which the zygote reports), `kill()`. A zygote that ends (it should not) takes its children with it; every
`Child` of it then reads as killed, and the next fork starts a new zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from xcore.build import frozen, self_command
from xcore.plugins.confine import scrubbed_environment

log = logging.getLogger("xcore.plugins")
MAX_MESSAGE = 64 * 1024
START_TIMEOUT = 30.0  # seconds the zygote has to answer its first fork

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class ZygoteError(Exception):
    """ZygoteError: the fork server could not start a worker (it is not running, or fork failed)."""


def zygote_command(fd: int) -> list[str]:
    """zygote_command runs the fork server with this same executable: `xcore plugin-zygote --fd N` in a frozen
    build, `python -m xcore.plugin_zygote --fd N` otherwise."""
    command = [*self_command(), "plugin-zygote"] if frozen() else [sys.executable, "-m", "xcore.plugin_zygote"]
    return [*command, "--fd", str(fd)]


class Child:
    """Child is one plugin worker the zygote forked: its pid and, once it has ended, its exit code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def ended(self, code: int) -> None:
        if not self._ended.done():
            self.returncode = code
            self._ended.set_result(code)

    async def wait(self) -> int:
        """wait returns the exit code once the worker has ended (negative: the signal that ended it)."""
        return await asyncio.shield(self._ended)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Zygote:
    """Zygote is the running fork server of this process, with the workers it forked."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.children: dict[int, Child] = {}
        self.waiting: deque[asyncio.Future[list[Any]]] = deque()
        self.lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def fork(self, data_dir: Path, fds: Sequence[int]) -> Child:
        """fork starts a plugin worker working in `data_dir` with `fds` (its two sockets and its stderr, which
        the caller closes afterwards); raises ZygoteError when it cannot."""
        async with self.lock:
            if self.sock is None:
                await self._start(data_dir)
            assert self.sock is not None
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self.waiting.append(answer)
            try:
                socket.send_fds(self.sock, [_encode(["fork", str(data_dir)])], list(fds))
            except OSError as exc:
                self.waiting.remove(answer)
                raise ZygoteError(f"the sandbox's fork server cannot be reached: {exc}") from None
            try:
                reply = await asyncio.wait_for(answer, START_TIMEOUT)
            except TimeoutError:
                raise ZygoteError("the sandbox's fork server did not answer") from None
        if reply[0] != "forked":
            raise ZygoteError(f"the sandbox's fork server could not start a worker: {reply[1:]}")
        child = self.children[reply[1]] = Child(reply[1])
        return child

    async def _start(self, data_dir: Path) -> None:
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *zygote_command(child.fileno()),
                pass_fds=(child.fileno(),),
                env=scrubbed_environment(os.environ, data_dir.parent),
                cwd=data_dir.parent,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            host.close()
            raise ZygoteError(f"the sandbox's fork server could not be started: {exc}") from None
        finally:
            child.close()
        host.setblocking(False)
        self.sock = host
        self._reader = asyncio.ensure_future(self._read(host))

    async def _read(self, sock: socket.socket) -> None:
        """_read hands the zygote's answers to the forks waiting for them, and its exit reports to the children."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(sock, MAX_MESSAGE)
                if not data:
                    break
                try:
                    message = _decode(data)
                except msgspec.DecodeError:
                    continue
                if message[0] == "exited" and len(message) == 3:
                    found = self.children.pop(message[1], None)
                    if found is not None:
                        found.ended(message[2])
                elif self.waiting:
                    waiter = self.waiting.popleft()
                    if not waiter.done():
                        waiter.set_result(message)
        except OSError:
            pass
        self._lost()

    def _lost(self) -> None:
        """_lost: the zygote has ended; its children died with it, and the next fork starts another."""
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        for child in self.children.values():
            child.ended(-signal.SIGKILL)
        self.children.clear()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(["failed", "the fork server ended"])
        if self.proc is not None and self.proc.returncode is None:
            log.warning("the sandbox's fork server ended; it is started again at the next sandboxed plugin")


_zygotes: dict[asyncio.AbstractEventLoop, Zygote] = {}


def zygote() -> Zygote:
    """zygote is the fork server of the running event loop's process (one a server worker)."""
    loop = asyncio.get_running_loop()
    found = _zygotes.get(loop)
    if found is None:
        found = _zygotes[loop] = Zygote()
    return found
