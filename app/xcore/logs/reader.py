"""Read, filter and summarise xcore's JSON-lines log files: the engine of `xcore logs`.

It replaces the seed's makefile log targets: last N lines, follow, by level, by context, search, stats.
"""

from __future__ import annotations

import logging
import os
import textwrap
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from xcore.terminal import printable

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_decode = msgspec.json.Decoder(dict).decode


@dataclass(frozen=True)
class LogFilter:
    """LogFilter keeps entries at or above `level`, in `context`, whose text contains `search` (any case)."""

    level: str | None = None
    context: str | None = None
    search: str | None = None
    _min_level: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.level is not None:
            object.__setattr__(self, "_min_level", logging.getLevelName(self.level.upper()))

    def __call__(self, entry: dict[str, Any]) -> bool:
        if self._min_level and _level_number(entry) < self._min_level:
            return False
        if self.context is not None and entry.get("context") != self.context:
            return False
        if self.search is not None:
            needle = self.search.lower()
            if (
                needle not in str(entry.get("message", "")).lower()
                and needle not in msgspec.json.encode(entry).decode().lower()
            ):
                return False
        return True


def _level_number(entry: dict[str, Any]) -> int:
    value = logging.getLevelName(str(entry.get("level", "INFO")))
    return value if isinstance(value, int) else logging.INFO


def log_files(current: Path) -> list[Path]:
    """log_files lists the rotated files and the current one, oldest first."""
    rotated = []
    for candidate in current.parent.glob(current.name + ".*"):
        suffix = candidate.name[len(current.name) + 1 :]
        if suffix.isascii() and suffix.isdigit():
            rotated.append((int(suffix), candidate))
    return [p for _, p in sorted(rotated, reverse=True)] + ([current] if current.exists() else [])


def parse_line(line: str) -> dict[str, Any]:
    """parse_line decodes one JSON line; a line that is not JSON becomes an entry of its own, not an error."""
    try:
        entry = _decode(line)
    except msgspec.DecodeError:
        return {"level": "INFO", "context": "system", "message": line.rstrip("\n"), "unparsed": True}
    return entry


def read_entries(current: Path) -> Iterator[dict[str, Any]]:
    """read_entries yields every entry of the log, oldest first, across rotated files."""
    for path in log_files(current):
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.strip():
                        yield parse_line(line)
        except FileNotFoundError:  # rotated away while we read
            continue


def last_entries(current: Path, keep: Callable[[dict[str, Any]], bool], n: int) -> list[dict[str, Any]]:
    """last_entries returns the newest `n` entries that pass `keep`, oldest first."""
    return list(deque((e for e in read_entries(current) if keep(e)), maxlen=n))


def follow(
    current: Path,
    keep: Callable[[dict[str, Any]], bool],
    poll: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """follow yields new entries as they are written, following the file through rotations."""
    handle = None
    inode = None
    while not stop():
        if handle is None:
            try:
                handle = current.open(encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
                handle.seek(0, os.SEEK_END)
            except FileNotFoundError:
                time.sleep(poll)
                continue
        line = handle.readline()
        if line:
            if line.endswith("\n"):
                entry = parse_line(line)
                if keep(entry):
                    yield entry
            else:  # a line being written: read it whole next time
                handle.seek(handle.tell() - len(line.encode("utf-8")))
                time.sleep(poll)
            continue
        try:
            rotated = os.stat(current).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            handle.close()
            handle = None
            try:
                handle = current.open(encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                handle = None
            continue
        time.sleep(poll)
    if handle is not None:
        handle.close()


def stats(entries: Iterable[dict[str, Any]]) -> tuple[Counter[str], Counter[str], int]:
    """stats counts entries per level and per context, and returns the total."""
    levels: Counter[str] = Counter()
    contexts: Counter[str] = Counter()
    total = 0
    for entry in entries:
        levels[str(entry.get("level", "?"))] += 1
        contexts[str(entry.get("context", "?"))] += 1
        total += 1
    return levels, contexts, total


_STANDARD = {"ts", "level", "context", "logger", "message", "pid", "exc", "unparsed"}


def format_entry(entry: dict[str, Any]) -> str:
    """format_entry renders an entry as the console does, with structured fields after the message.

    Every value is shown through `printable`: a newline or a control character in a message, a field or a line
    that is not JSON is an escape, so an entry is one line and cannot forge another or drive the terminal.
    A traceback (`exc`) follows on its own lines, each indented, so none of them can pass for an entry.
    """
    if entry.get("unparsed"):
        return printable(str(entry["message"]))
    ts = str(entry.get("ts", "")).replace("T", " ").rstrip("Z")[:23]
    extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _STANDARD and k not in ("method", "path"))
    line = f"{ts} {entry.get('level', '?'):<7} {entry.get('context', '?'):<8} {entry.get('message', '')}"
    if extras:
        line += f"  [{extras}]"
    line = printable(line)
    if entry.get("exc"):
        line += "\n" + textwrap.indent(printable(str(entry["exc"]), keep_newlines=True), "    ", lambda _: True)
    return line
