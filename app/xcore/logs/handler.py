"""A size-rotated log file that several processes (Granian's workers and their parent) write at once.

The standard RotatingFileHandler assumes one writer: with several, each process rotates on its own count and
they rename each other's files away. Here:

- every line is one `write` to a file opened with O_APPEND, so lines from different processes never mix;
- a process notices within `check_interval` seconds when another one has rotated the file, and follows it
  to the new file (as WatchedFileHandler does, but without a `stat` call per line);
- rotation happens under a cross-process lock, after checking that nobody rotated first.

Requests are logged on the hot path, so the per-line cost matters: no `tell()` on a text stream, no `stat`
per line, one system call per line.
"""

from __future__ import annotations

import logging
import os
import time

from filelock import FileLock


class SharedRotatingFileHandler(logging.Handler):
    """SharedRotatingFileHandler appends to `filename`, rotating it at `max_bytes` and keeping `backup_count`."""

    def __init__(
        self,
        filename: str,
        max_bytes: int,
        backup_count: int,
        encoding: str = "utf-8",
        check_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.baseFilename = os.path.abspath(filename)
        os.makedirs(os.path.dirname(self.baseFilename), mode=0o700, exist_ok=True)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.encoding = encoding
        self.check_interval = check_interval
        self._rotation_lock = FileLock(self.baseFilename + ".lock")
        self._fd = -1
        self._identity: tuple[int, int] = (0, 0)
        self._size = 0
        self._next_check = 0.0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        info = os.fstat(self._fd)
        self._identity = (info.st_dev, info.st_ino)
        self._size = info.st_size
        self._next_check = time.monotonic() + self.check_interval

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _follow(self) -> None:
        """Reopen when the path no longer names our file (another process rotated it), and refresh the size."""
        self._next_check = time.monotonic() + self.check_interval
        try:
            info = os.stat(self.baseFilename)
        except FileNotFoundError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != self._identity:
            self._close_fd()
            self._open()
        else:
            self._size = info.st_size  # counts the other processes' lines too

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line((self.format(record) + "\n").encode(self.encoding, "replace"))
        except Exception:
            self.handleError(record)

    def write_line(self, data: bytes) -> None:
        """write_line appends one formatted line (ending in a newline) in a single write."""
        with self.lock:  # type: ignore[union-attr]
            if self._fd < 0:
                self._open()
            elif time.monotonic() >= self._next_check:
                self._follow()
            if self.max_bytes and self._size >= self.max_bytes:
                self.rotate()
            os.write(self._fd, data)
            self._size += len(data)

    def rotate(self) -> None:
        """rotate renames xcore.log to xcore.log.1 (and so on), unless another process just did."""
        with self._rotation_lock:
            self._follow()
            if self._size < self.max_bytes:
                return  # someone else rotated while we waited: their new file is ours now
            self._close_fd()
            base = self.baseFilename
            if self.backup_count > 0:
                for i in range(self.backup_count - 1, 0, -1):
                    if os.path.exists(f"{base}.{i}"):
                        os.replace(f"{base}.{i}", f"{base}.{i + 1}")
                os.replace(base, f"{base}.1")
            else:
                os.remove(base)
            self._open()

    def flush(self) -> None:
        """Every line is written when it is logged; nothing is buffered."""

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._close_fd()
        super().close()
