"""A size-rotated log file that several processes (Granian's workers and their parent) write at once.

The standard RotatingFileHandler assumes one writer: with several, each process rotates on its own count and
they rename each other's files away. Here every process appends (O_APPEND keeps lines whole), follows the file
when another process has rotated it (as WatchedFileHandler does), and rotates under a cross-process lock after
checking that nobody rotated first.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import WatchedFileHandler

from filelock import FileLock


class SharedRotatingFileHandler(WatchedFileHandler):
    """SharedRotatingFileHandler appends to `filename`, rotating it at `max_bytes` and keeping `backup_count`."""

    def __init__(self, filename: str, max_bytes: int, backup_count: int, encoding: str = "utf-8") -> None:
        os.makedirs(os.path.dirname(os.path.abspath(filename)), mode=0o700, exist_ok=True)
        super().__init__(filename, mode="a", encoding=encoding)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._rotation_lock = FileLock(self.baseFilename + ".lock")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
            if self.max_bytes and self.stream is not None and self.stream.tell() >= self.max_bytes:
                self.rotate()
            logging.StreamHandler.emit(self, record)
        except Exception:
            self.handleError(record)

    def rotate(self) -> None:
        """rotate renames xcore.log to xcore.log.1 (and so on), unless another process just did."""
        with self._rotation_lock:
            self.reopenIfNeeded()  # someone else rotated while we waited: their new file is ours now
            try:
                size = os.stat(self.baseFilename).st_size
            except FileNotFoundError:
                size = 0
            if size >= self.max_bytes:
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None
                base = self.baseFilename
                if self.backup_count > 0:
                    for i in range(self.backup_count - 1, 0, -1):
                        if os.path.exists(f"{base}.{i}"):
                            os.replace(f"{base}.{i}", f"{base}.{i + 1}")
                    os.replace(base, f"{base}.1")
                else:
                    os.remove(base)
                self.stream = self._open()
                self._statstream()
