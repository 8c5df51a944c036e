"""A fork server for the `xcore` commands the tests run (`run_xcore` in tests/conftest.py).

Most of what a short command such as `xcore user list` costs is its imports: SQLAlchemy, Alembic, click and
xcore's own modules, about 0.4 of its 0.45 CPU-seconds. The unit tier runs some two hundred commands, so each test
process starts one server (`python tests/forked_cli.py SOCKET`) that imports those modules once and then forks a
child for each command. The child is a process of its own, like `python -m xcore ARGS` would be: it runs
`xcore.__main__` as `-m` does, in the caller's working directory and environment, with the caller's input (or
/dev/null) as its standard input and the caller's files as its standard output and error, and its exit status is
the command's. What it does not do is start the interpreter and import those modules afresh: tests that check what
a command imports, or how a fresh interpreter starts, use `fresh_python` or `run_xcore(..., fresh=True)`.

The protocol, on a Unix socket, one connection per command: the client sends an 8-byte length with its file
descriptors (standard output and error, then standard input if it gives one: a file holding the command's input),
then that many bytes of JSON (`args`, `env`, `cwd`); the server answers with a line holding the child's pid, and,
once the child has ended, a line holding its exit status as `subprocess` gives it (negative: killed by that
signal).
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

# Imported once by the server: what the commands import before they do anything (see the module's docstring).
# A name missing here only costs its command the import; a name that does not exist fails the server's start.
PRELOAD = (
    "xcore.cli",
    "xcore.server",
    "xcore.db.migrate",
    "xcore.auth.service",
    "alembic.command",
    "alembic.runtime.migration",
    "alembic.script",
)
_LENGTH = 8


def serve(path: str) -> None:
    """serve imports PRELOAD, listens on `path` and forks a child per connection, until its parent is gone."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import gc

    gc.collect()
    gc.freeze()  # the children share the imported modules' pages instead of copying them when a collection runs
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select below
    waiting: dict[int, socket.socket] = {}  # child pid → the connection waiting for its status
    print("ready", flush=True)
    while os.getppid() == parent:
        readable, _, _ = select.select([listener, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 4096)
        if listener in readable:
            conn, _ = listener.accept()
            pid = _fork(conn, listener, (wake_r, wake_w), waiting)
            if pid:
                waiting[pid] = conn
        _reap(waiting)


def _fork(
    conn: socket.socket, listener: socket.socket, wake: tuple[int, int], waiting: dict[int, socket.socket]
) -> int:
    """_fork reads one request from `conn` and forks its child; returns the child's pid (0 for a bad request)."""
    fds: list[int] = []
    try:
        header, fds, _, _ = socket.recv_fds(conn, _LENGTH, 3)
        size = int.from_bytes(header, "big")
        payload = b""
        while len(payload) < size:
            chunk = conn.recv(size - len(payload))
            if not chunk:
                raise ConnectionError("the request ended early")
            payload += chunk
        request = json.loads(payload)
        if len(fds) not in (2, 3):
            raise ValueError(f"expected 2 or 3 file descriptors, got {len(fds)}")
    except (OSError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        with suppress(OSError):
            conn.sendall(f"error {exc}\n".encode())
        conn.close()
        return 0
    pid = os.fork()
    if pid == 0:
        listener.close()
        for other in waiting.values():
            other.close()
        _run_child(conn, wake, fds, request)  # never returns
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    return pid


def _reap(waiting: dict[int, socket.socket]) -> None:
    for pid in list(waiting):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn = waiting.pop(pid)
            with suppress(OSError):  # the client gave up on it
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def _run_child(conn: socket.socket, wake: tuple[int, int], fds: list[int], request: dict[str, Any]) -> None:
    """_run_child becomes `python -m xcore ARGS` as far as the command can tell, and exits with its status."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        conn.close()
        os.setpgid(0, 0)  # its own process group, so a timeout ends what it started too
        stdin = fds[2] if len(fds) == 3 else os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in {stdin, *fds}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-m", *request["args"]]  # runpy puts xcore/__main__.py first, as `python -m xcore` has it
        sys.path[0] = request["cwd"]  # `-m` puts the working directory first
        try:
            runpy.run_module("xcore", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        # What the interpreter does at its end: wait for the threads that are not daemons, then run atexit's
        # functions (logging's shutdown among them).
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                code = code or 120  # as CPython does when flushing its standard streams fails
    finally:
        os._exit(code)


def _exit_code(value: object) -> int:
    """_exit_code is the status `sys.exit(value)` gives a process: an int as it is, None 0, anything else printed
    to standard error and 1."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


class Server:
    """The client: one server per test process, started on first use and ended with the process."""

    def __init__(self, env: dict[str, str]):
        self._env = env
        self._process: subprocess.Popen[str] | None = None
        self._folder = tempfile.mkdtemp(prefix="xcore-forks-")
        self._path = str(Path(self._folder) / "socket")
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _started(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                with suppress(FileNotFoundError):
                    os.unlink(self._path)
                self._process = subprocess.Popen(
                    [sys.executable, __file__, self._path],
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # a Ctrl-C at the terminal is for the tests, not for it
                )
                assert self._process.stdout is not None
                ready = self._process.stdout.readline()
                if ready.strip() != "ready":
                    raise RuntimeError(f"the xcore fork server did not start (exit {self._process.wait()})")
            return self._path

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)

    def run(
        self, args: list[str], env: dict[str, str], timeout: float, command: list[str], cwd: str, input: str | None
    ) -> subprocess.CompletedProcess[str]:
        """run runs `xcore ARGS` in a forked child, in `cwd` with `input` (None: nothing) on its standard input, and
        returns what `subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)` would;
        raises subprocess.TimeoutExpired (the child killed) past `timeout`."""
        path = self._started()
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn,
            ExitStack() as given,
        ):
            fds = [out.fileno(), err.fileno()]
            if input is not None:
                stdin = given.enter_context(tempfile.TemporaryFile())
                stdin.write(input.encode(locale.getpreferredencoding(False)))
                stdin.seek(0)
                fds.append(stdin.fileno())
            conn.connect(path)
            payload = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
            socket.send_fds(conn, [len(payload).to_bytes(_LENGTH, "big")], fds)
            conn.sendall(payload)
            answers = _Lines(conn)
            first = answers.next()
            if not first.isdigit():
                raise RuntimeError(f"the xcore fork server refused the command: {first or 'no answer'}")
            pid = int(first)
            conn.settimeout(timeout)
            try:
                status = answers.next()
            except TimeoutError:
                with suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                conn.settimeout(None)
                answers.next()  # the server has reaped it
                raise subprocess.TimeoutExpired(command, timeout, _text(out), _text(err)) from None
            if not status:
                raise RuntimeError("the xcore fork server ended while a command ran")
            return subprocess.CompletedProcess(command, int(status), _text(out), _text(err))


class _Lines:
    """_Lines reads the server's answers, a line at a time (a socket's file object cannot go on after a timeout)."""

    def __init__(self, conn: socket.socket):
        self._conn = conn
        self._buffer = b""

    def next(self) -> str:
        """next is the next line without its newline, or "" once the server has closed the connection."""
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(256)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()


def _text(file: Any) -> str:
    """_text is what `subprocess` with text=True makes of a child's output: decoded, with universal newlines."""
    file.seek(0)
    return file.read().decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


if __name__ == "__main__":
    serve(sys.argv[1])
