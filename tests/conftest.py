"""Shared fixtures: temporary data directories, runtimes, free ports and real `xcore` processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from xcore.logs.setup import forget_configuration
from xcore.runtime import Runtime, open_runtime

# Tests never read the developer's own settings or data.
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith("XCORE_") and k not in ("DATABASE_URL", "REDIS_URL")
}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("XCORE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that configure logging (open_runtime does) leave the process's logging as they found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    forget_configuration()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory that does not exist yet, as on a first run."""
    return tmp_path / "data"


@pytest.fixture
def runtime(data_dir: Path) -> Iterator[Runtime]:
    """A migrated Runtime on a fresh data directory, with logging to its own log file."""
    from xcore.server import prepare_database

    rt = open_runtime(data_dir, environ={})
    prepare_database(rt)
    yield rt
    rt.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def xcore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "xcore", *args]


def run_xcore(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `xcore` CLI to completion and capture its output."""
    return subprocess.run(
        xcore_command(*args),
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class XcoreServer:
    """A real `xcore serve` process on a free port, with its output captured to a file."""

    def __init__(self, data_dir: Path, port: int, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.output_path = data_dir.parent / f"serve-{port}.out"
        self._output = self.output_path.open("w")
        self.process = subprocess.Popen(
            xcore_command("serve", "--port", str(port), "--data-dir", str(data_dir), *extra),
            env={**CLEAN_ENV, **(env or {})},
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def output(self) -> str:
        if not self._output.closed:
            self._output.flush()
        return self.output_path.read_text()

    def wait_ready(self, timeout: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"xcore exited with {self.process.returncode}:\n{self.output}")
            try:
                response = httpx.get(self.url + "/health", timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"xcore did not become healthy in {timeout}s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
            raise AssertionError(f"xcore did not stop within {timeout}s after signal {sig}:\n{self.output}") from None
        self._output.close()
        return code


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """start_server(data_dir=None, *extra_args) starts a real xcore and stops it at the end of the test."""
    started: list[XcoreServer] = []

    def start(data_dir: Path | None = None, *extra: str, env: dict[str, str] | None = None) -> XcoreServer:
        server = XcoreServer(data_dir or tmp_path / "data", free_port(), extra, env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
