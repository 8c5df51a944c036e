"""attachment: a file as a download, exactly as it was when the request came (a log keeps growing meanwhile)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from litestar.response import Stream

from xcore.auth.errors import NotFound


def attachment(path: Path, filename: str, media_type: str) -> Stream:
    """attachment streams the first `size` bytes of `path`, its size when opened, under `filename`.

    Raises NotFound when the file does not exist. A rename (a log rotation, a backup pruned) during the
    download does not cut it short: the open file is read.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"{path.name} does not exist (any more)") from None
    size = os.fstat(handle.fileno()).st_size
    return Stream(
        _chunks(handle, size),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Length": str(size)},
    )


def _chunks(handle: IO[bytes], size: int) -> Iterator[bytes]:
    try:
        while size > 0:
            chunk = handle.read(min(1 << 20, size))
            if not chunk:
                break
            size -= len(chunk)
            yield chunk
    finally:
        handle.close()
