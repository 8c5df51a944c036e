"""The wire between the host and a sandboxed plugin's worker process: frames on one stream socket.

The host makes a socket pair and hands one end to the worker it starts (an inherited file descriptor: no path
in the filesystem, so nothing else can connect). Each frame is a 4-byte big-endian length and a MessagePack
array whose first item names the message. Both sides read and write frames with `read` and `frame`; a frame
longer than MAX_FRAME, or one that does not decode to an array, is a `WireError` and ends the conversation.

Host to worker:

- `["load", {id, version, entry, prefix, folder, data_dir, config, limits, network}]`: the first frame; the
  worker confines itself, imports the plugin and answers `["ready", {openapi, tasks, confinement}]` or
  `["failed", reason]`.
- `["hook", n, name]`: run the plugin's `on_load` or `on_unload`; answered `["hooked", n, error or None]`.
- `["http", n, scope, body]`: one HTTP request (the scope's plain fields, the principal as `user`, the whole
  body); answered by `["response", n, status, headers, body]`, or for a streamed answer by `["start", n, status,
  headers]` and one or more `["body", n, chunk, more]`, or by `["error", n, reason]` when the app failed before
  it answered.
- `["stop"]`: run nothing more; the worker exits.

The worker's log records travel on its stderr, as JSON lines (see `xcore.plugin_worker`).

A second socket pair carries the calls the worker makes of the host, one at a time and blocking (`call`), so
that plugin code can make them from any thread, the event loop's included, as it would in process:

- `["enqueue", name, args, kwargs, delay, eta]`: queue a run of one of the plugin's own tasks; answered
  `["enqueued", run id]` or `["refused", reason]`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import msgspec

MAX_FRAME = 64 * 1024 * 1024  # a request or response body travels in one frame

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class WireError(Exception):
    """WireError is a frame that cannot be read: too long, cut short, or not a MessagePack array."""


def frame(*message: Any) -> bytes:
    """frame is `message` (its name first) as one frame: the length, then the MessagePack array."""
    data = _encode(message)
    if len(data) > MAX_FRAME:
        raise WireError(f"a {message[0]} frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    return len(data).to_bytes(4, "big") + data


async def read(reader: asyncio.StreamReader) -> list[Any]:
    """read returns the next frame's array; raises EOFError at a clean end and WireError for a bad frame."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("the other side closed the connection") from None
        raise WireError("a frame's length was cut short") from None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
    try:
        message = _decode(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise WireError("a frame was cut short") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"a frame does not decode: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise WireError("a frame is not an array that starts with its name")
    return message


def receive(sock: socket.socket) -> list[Any]:
    """receive reads the next frame from a blocking socket; raises EOFError at the end, WireError for a bad frame."""
    size = int.from_bytes(_exactly(sock, 4, first=True), "big")
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
    try:
        message = _decode(_exactly(sock, size))
    except msgspec.DecodeError as exc:
        raise WireError(f"a frame does not decode: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise WireError("a frame is not an array that starts with its name")
    return message


def _exactly(sock: socket.socket, size: int, *, first: bool = False) -> bytes:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = sock.recv(min(missing, 1 << 20))
        if not chunk:
            if first and missing == size:
                raise EOFError("the other side closed the connection")
            raise WireError("a frame was cut short")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


class Outbox:
    """Outbox writes frames to a stream with the other frames of the same turn of the event loop: under load, many
    requests (or answers) go in one system call. Use it from the event loop's thread only."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        """send queues one frame (`frame(...)`); the loop writes the queue at its next turn."""
        self.pending.append(data)
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """flush writes what is queued now."""
        data, self.pending = b"".join(self.pending), []
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def buffered(self) -> int:
        """buffered is how many bytes wait: queued here, and in the stream's own buffer."""
        return sum(map(len, self.pending)) + self.writer.transport.get_write_buffer_size()


class Caller:
    """Caller makes calls on a blocking socket, one at a time whatever the thread: a frame out, a frame back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def call(self, *message: Any) -> list[Any]:
        """call sends `message` and returns the answer; raises EOFError or WireError when the host is gone."""
        with self._lock:
            self.sock.sendall(frame(*message))
            return receive(self.sock)
