"""The binary's dataclasses without compiling: the methods `dataclasses` writes, compiled once at build time.

`@dataclass` writes the source of each class's `__init__`, `__repr__`, `__eq__` and the like, and compiles it
with `exec`. A start of xcore creates many dataclasses (Litestar's, xcore's own, annotated_types', AnyIO's and
more), and compiling their methods is a noticeable part of it (benchmarks/README.md). The binary ships them
compiled: `record` runs while the bundle is built, with the very Python the bundle holds, and writes what
`dataclasses` compiled while the start's modules were imported; the frozen entry point calls `install` before
anything else is imported, and `dataclasses` then takes a method's code from the file when its source is there,
and compiles as usual when it is not (a plugin's dataclasses, another code path).

Nothing else changes: a code object in the file is what `exec` compiles from the same text (the file name
"<string>", no flags inherited), so the classes get the same methods. A file written by another Python (its
bytecode magic number differs), a missing file and an unreadable one are ignored.

    python -m xcore.codecache OUT [MODULE ...]   # record (the start's modules by default)
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import importlib.util
import marshal
import sys
from pathlib import Path
from types import CodeType
from typing import Any

FILE_NAME = "dataclass-code.marshal"  # beside the xcore package in the bundle
# What a start imports (the server process, then its worker), and what it may import soon after.
START_MODULES = (
    "xcore.cli",
    "xcore.server",
    "granian.server.mp",
    "xcore.web.asgi",
    "xcore.web.app",
    "anyio._backends._asyncio",
    "xcore.sdk",
    "sqlite_utils",
)

_codes: dict[str, CodeType] = {}


def _cached_exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    if type(source) is str and (code := _codes.pop(source, None)) is not None:
        source = code  # each source is compiled for one class: what is used is let go
    builtins.exec(source, globals, locals)


def install(path: Path) -> int:
    """install makes `dataclasses` take the compiled methods in `path`; returns how many it holds (0, and nothing
    installed, when the file is missing, unreadable or written by another Python)."""
    try:
        magic, codes = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return 0
    if magic != importlib.util.MAGIC_NUMBER or not isinstance(codes, dict):
        return 0
    _codes.update(codes)
    dataclasses.exec = _cached_exec  # type: ignore[attr-defined]  # looked up in its module before the builtins
    return len(codes)


def release() -> None:
    """release lets go of what is left: `xcore serve`'s own process calls it once it has forked its worker,
    which took its own copy (with several workers, that process has made every class before forking them)."""
    _codes.clear()


def record(modules: tuple[str, ...] | list[str], path: Path) -> int:
    """record imports `modules` with what `dataclasses` compiles meanwhile collected, and writes it to `path`;
    returns how many sources it holds. Run it in a process of its own: the imports stay."""
    codes: dict[str, CodeType] = {}

    def recording_exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
        if type(source) is str:
            code = codes.get(source)
            if code is None:
                code = codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
            source = code
        builtins.exec(source, globals, locals)

    dataclasses.exec = recording_exec  # type: ignore[attr-defined]
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
    path.write_bytes(marshal.dumps((importlib.util.MAGIC_NUMBER, codes)))
    return len(codes)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m xcore.codecache OUT [MODULE ...]")
    count = record(sys.argv[2:] or START_MODULES, Path(sys.argv[1]))
    print(f"{count} dataclass methods compiled into {sys.argv[1]}")
