"""Windows on the log for the admin API: the newest entries, the entries after a cursor, and counts.

Each reads a bounded number of bytes (READ_BUDGET): the end of the current file, and of the rotated ones only
while too few entries matched, never the whole rotated history; a live tail's poll costs about what was written
since the previous one, and counts are kept per process and brought up to date (Tally).
Parsing and filtering are `xcore.logs.reader`'s, as for `xcore logs`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from xcore.logs.reader import LogFilter, log_files, parse_line

_decode = msgspec.json.Decoder(dict).decode

READ_BUDGET = 8 * 1024 * 1024  # bytes a window reads at most
COUNT_WINDOW = 32 * 1024 * 1024  # bytes at the end of the current file that counts cover at most
_BLOCK = 256 * 1024
_JSON_ESCAPED = frozenset('"\\') | frozenset(map(chr, range(32)))


@dataclass(frozen=True)
class Cursor:
    """Cursor is a place in the log: a file's identity (device, inode) and a byte offset just after a whole line.

    Its text form is opaque to clients. A file rotated since (renamed to `xcore.log.1`) keeps its identity, so a
    cursor into it still finds the lines written after it.
    """

    device: int
    inode: int
    offset: int

    def encode(self) -> str:
        return f"{self.device:x}-{self.inode:x}-{self.offset:x}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """decode reads a cursor's text form. Raises ValueError when it is not one."""
        parts = text.split("-")
        if len(parts) != 3 or not all(0 < len(p) <= 16 for p in parts):
            raise ValueError(f"not a log cursor: {text[:40]!r}")
        device, inode, offset = (int(p, 16) for p in parts)
        return cls(device, inode, offset)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def parse_raw(line: bytes) -> dict[str, Any]:
    """parse_raw is parse_line for a line read as bytes (without its newline)."""
    try:
        return _decode(line)
    except msgspec.DecodeError:
        return parse_line(line.decode("utf-8", "replace"))


def _may_match(keep: Callable[[dict[str, Any]], bool], line: bytes) -> bool:
    """A cheap test on the raw line that rules out most non-matches of a text search before the line is decoded.

    The line is the entry's JSON, so a needle without characters JSON escapes appears in it as typed.
    """
    search = keep.search if isinstance(keep, LogFilter) else None
    if not search or not search.isascii() or _JSON_ESCAPED.intersection(search):
        return True  # bytes.lower() folds ASCII only, and JSON escapes quotes, backslashes and control characters
    return search.lower().encode() in line.lower()


def _lines_backwards(handle: Any, end: int, budget: int) -> Iterator[bytes]:
    """Yields the whole lines of `handle` before `end`, newest first, reading at most `budget` bytes."""
    position, carry = end, b""
    while position > 0 and budget > 0:
        size = min(_BLOCK, position, budget)
        position -= size
        budget -= size
        handle.seek(position)
        block = handle.read(size) + carry
        lines = block.split(b"\n")
        carry = lines[0]  # may continue in the block before
        for line in reversed(lines[1:]):
            if line.strip():
                yield line
    if position == 0 and carry.strip():
        yield carry


def _whole_lines_end(handle: Any, size: int) -> int:
    """The offset just after the last newline before `size`: a line still being written is left for later."""
    position = size
    while position > 0:
        start = max(0, position - 4096)
        handle.seek(start)
        found: int = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def latest(
    current: Path, keep: Callable[[dict[str, Any]], bool], limit: int, budget: int = READ_BUDGET
) -> tuple[list[dict[str, Any]], Cursor]:
    """latest returns the newest `limit` entries that pass `keep`, oldest first, and the cursor after them.

    It reads the current file backwards, then the rotated ones, newest first, while it has found fewer than
    `limit`, at most `budget` bytes in all. The cursor is at the end of the current file's last whole line.
    """
    found: list[dict[str, Any]] = []
    try:
        handle = current.open("rb")
    except FileNotFoundError:
        return [], Cursor(0, 0, 0)
    with handle:
        device, inode = _identity(os.fstat(handle.fileno()))
        end = _whole_lines_end(handle, os.fstat(handle.fileno()).st_size)
        spent = _collect_backwards(handle, end, keep, limit, budget, found)
    for older in reversed([p for p in log_files(current) if p != current]):  # the newest rotated file first
        if len(found) >= limit or spent >= budget:
            break
        try:
            with older.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                spent += _collect_backwards(handle, size, keep, limit, budget - spent, found)
        except FileNotFoundError:  # rotated away meanwhile
            continue
    found.reverse()
    return found, Cursor(device, inode, end)


def _collect_backwards(
    handle: Any, end: int, keep: Callable[[dict[str, Any]], bool], limit: int, budget: int, found: list[Any]
) -> int:
    """Appends matching entries to `found`, newest first, until it holds `limit`; returns the bytes it read."""
    spent = 0
    for line in _lines_backwards(handle, end, budget):
        spent += len(line) + 1
        if len(found) >= limit:
            break
        if _may_match(keep, line):
            entry = parse_raw(line)
            if keep(entry):
                found.append(entry)
    return min(spent, budget)


def since(
    current: Path, cursor: Cursor, keep: Callable[[dict[str, Any]], bool], limit: int, budget: int = READ_BUDGET
) -> tuple[list[dict[str, Any]], Cursor, bool]:
    """since returns the entries written after `cursor` that pass `keep`, oldest first, the cursor after them,
    and whether some were left out.

    When the cursor's file was rotated, the rest of it is read (found among the rotated files by its identity),
    then the files rotated after it and the current one, whole; when it is gone, or the file shrank, reading
    starts at the current file's start. At most `budget` bytes are read and `limit` entries returned: the newest
    ones, which is what a live tail wants after falling behind.
    """
    try:
        info = os.stat(current)
    except FileNotFoundError:
        return [], cursor, False
    wanted = (cursor.device, cursor.inode)
    paths: list[tuple[Path, int, tuple[int, int] | None]] = []  # (file, start, its identity when listed)
    if _identity(info) == wanted:
        paths.append((current, cursor.offset if cursor.offset <= info.st_size else 0, None))
    else:
        newer: list[tuple[Path, int, tuple[int, int] | None]] = []
        for rotated in reversed([p for p in log_files(current) if p != current]):  # the newest rotated file first
            try:
                identity = _identity(os.stat(rotated))
            except FileNotFoundError:
                continue
            if identity == wanted:
                paths.append((rotated, cursor.offset, identity))
                paths.extend(reversed(newer))  # the files rotated after it, whole
                break
            newer.append((rotated, 0, identity))
        paths.append((current, 0, None))
    with contextlib.ExitStack() as stack:
        opened: list[tuple[Any, tuple[int, int], int, int]] = []  # (handle, identity, start, end), oldest first
        for path, start, listed in paths:
            try:
                handle = stack.enter_context(path.open("rb"))
            except FileNotFoundError:
                continue
            identity = _identity(os.fstat(handle.fileno()))
            if listed is not None and identity != listed:
                continue  # rotated on while we looked: skipped rather than read twice
            if listed is None and identity != wanted:
                start = 0  # the current file is a new one
            end = _whole_lines_end(handle, os.fstat(handle.fileno()).st_size)
            opened.append((handle, identity, min(start, end), end))
        if not opened:
            return [], cursor, False
        plan, remaining, skipped = [], budget, False
        for handle, _, start, end in reversed(opened):  # the budget goes to the newest lines first
            partial = end - start > remaining
            if partial:
                start, skipped = end - remaining, True
            remaining -= end - start
            plan.append((handle, start, end, partial))
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        matched = 0
        for handle, start, end, partial in reversed(plan):
            for line in _lines_forward(handle, start, end, skip_first=partial):
                if _may_match(keep, line):
                    entry = parse_raw(line)
                    if keep(entry):
                        kept.append(entry)
                        matched += 1
        _, identity, _, end = opened[-1]
    return list(kept), Cursor(*identity, end), skipped or matched > limit


def _lines_forward(handle: Any, start: int, end: int, skip_first: bool = False) -> Iterator[bytes]:
    """Yields the lines of `handle` between `start` and `end` (just after a newline); `skip_first` drops the
    first one, which started before `start`."""
    handle.seek(start)
    carry = b""
    position = start
    while position < end:
        block = handle.read(min(_BLOCK, end - position))
        if not block:
            break
        position += len(block)
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        for line in lines:
            if skip_first:
                skip_first = False
                continue
            if line.strip():
                yield line
    if carry.strip() and not skip_first:
        yield carry


class _Tallied(msgspec.Struct):
    level: str = "?"
    context: str = "?"


_decode_tallied = msgspec.json.Decoder(_Tallied).decode


class Tally:
    """Tally counts the current log file's entries by level and by context, for every caller of one process.

    It remembers how far it has counted in which file, so each call reads only the lines added since; a rotated
    or truncated file starts a new count. A file larger than `window` bytes is counted over its last `window`.
    Thread-safe: handlers call it from worker threads.
    """

    def __init__(self, window: int = COUNT_WINDOW) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._counted: dict[Path, tuple[tuple[int, int], int, Counter[str], Counter[str]]] = {}

    def counts(self, current: Path) -> tuple[dict[str, int], dict[str, int]]:
        """counts returns ({level: n}, {context: n}) for the current file's whole lines."""
        with self._lock:
            try:
                handle = current.open("rb")
            except FileNotFoundError:
                self._counted.pop(current, None)
                return {}, {}
            with handle:
                identity = _identity(os.fstat(handle.fileno()))
                end = _whole_lines_end(handle, os.fstat(handle.fileno()).st_size)
                known = self._counted.get(current)
                if known is not None and known[0] == identity and known[1] <= end and end - known[1] <= self.window:
                    _, start, levels, contexts = known
                    partial = False
                else:
                    start, levels, contexts = max(0, end - self.window), Counter(), Counter()
                    partial = start > 0
                for line in _lines_forward(handle, start, end, skip_first=partial):
                    level, context = _level_and_context(line)
                    levels[level] += 1
                    contexts[context] += 1
            self._counted[current] = (identity, end, levels, contexts)
            return dict(levels), dict(contexts)


def _level_and_context(line: bytes) -> tuple[str, str]:
    try:
        tallied = _decode_tallied(line)
        return tallied.level, tallied.context
    except msgspec.DecodeError:  # not JSON, or odd types: as `xcore logs --stats` counts it
        entry = parse_raw(line)
        return str(entry.get("level", "?")), str(entry.get("context", "?"))
