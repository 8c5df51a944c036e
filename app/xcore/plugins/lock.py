"""A bundle's `wheels/lock.json`: the wheels it carries, each with its sha256 and size, as `xcore plugin pack`
writes it; and the parts of a wheel's file name (PEP 427)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

from xcore.plugins.contract import WHEELS_LOCK

LOCK_FORMAT = 1


class WheelError(Exception):
    """WheelError is a wheel that breaks a rule: `rule` names it, `wheel` the file, `entry` the entry at fault."""

    def __init__(self, wheel: str, rule: str, reason: str, entry: str | None = None) -> None:
        where = f" (entry {entry!r})" if entry else ""
        super().__init__(f"wheel {wheel}: {rule}: {reason}{where}")
        self.wheel, self.rule, self.reason, self.entry = wheel, rule, reason, entry


def parse_wheel_name(file: str) -> tuple[str, Version, frozenset[Tag]]:
    """parse_wheel_name is (distribution, version, tags) of a wheel's file name; raises WheelError (rule
    `wheel-name`) for a name that is not a wheel's."""
    try:
        name, version, _build, tags = parse_wheel_filename(file)
    except InvalidWheelFilename as exc:
        raise WheelError(file, "wheel-name", f"not a wheel's file name ({exc})") from None
    return name, version, tags


def make_lock(wheels: Iterable[tuple[str, bytes]]) -> bytes:
    """make_lock is the text of `wheels/lock.json` for these (file name, bytes), sorted by file name."""
    listed = [
        {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for file, data in sorted(wheels, key=lambda w: w[0])
    ]
    return (json.dumps({"lock": LOCK_FORMAT, "wheels": listed}, indent=2) + "\n").encode()


def read_lock(raw: bytes) -> list[tuple[str, str, int]]:
    """read_lock is the (file, sha256, size) of each wheel `wheels/lock.json` lists; raises ValueError saying what
    is wrong with it."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{WHEELS_LOCK} is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("lock") != LOCK_FORMAT or not isinstance(data.get("wheels"), list):
        raise ValueError(f'{WHEELS_LOCK} must be {{"lock": {LOCK_FORMAT}, "wheels": [...]}}, as the pack step writes')
    listed = []
    for item in data["wheels"]:
        ok = isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("sha256"), str)
        if not ok or not isinstance(item.get("size"), int) or "/" in item["file"] or "\\" in item["file"]:
            raise ValueError(f"{WHEELS_LOCK}: each wheel must be {{file, sha256, size}}; this one is not: {item!r}")
        listed.append((item["file"], item["sha256"].lower(), item["size"]))
    return listed
