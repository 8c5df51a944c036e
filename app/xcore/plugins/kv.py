"""`ctx.kv`: each plugin's own keys and values, in the core database.

`ctx.db` is a SQLite file in the node's data directory; on several nodes each has its own. `ctx.kv` is stored in
the core database (table `plugin_kv`), so on PostgreSQL every node reads what any node wrote, at once. A plugin
sees only its own keys. Keys are text of 1 to 255 characters; values are anything JSON can hold, at most 1 MiB
once encoded; a plugin holds at most 10,000 keys. A wrong key or value raises ValueError saying which and why;
nothing is stored then.

A sandboxed plugin's worker has no database: its `ctx.kv` asks the host, which answers with the same store
(`answer`).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from xcore.db.models import PluginValue

KEY_MAX = 255
VALUE_MAX = 1024 * 1024  # bytes of JSON
KEYS_MAX = 10_000


def check_key(key: Any) -> str:
    """check_key returns `key` if it is a valid key; raises ValueError saying why not."""
    if not isinstance(key, str):
        raise ValueError(f"ctx.kv: a key is text, not {type(key).__name__}")
    if not 1 <= len(key) <= KEY_MAX:
        raise ValueError(f"ctx.kv: a key has 1 to {KEY_MAX} characters, not {len(key)}")
    if "\x00" in key:
        raise ValueError("ctx.kv: a key cannot hold a NUL character")
    return key


def check_value(value: Any) -> Any:
    """check_value returns `value` as JSON reads it back (tuples become lists); raises ValueError when it is not
    JSON or too large."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"ctx.kv: a value must be JSON (text, numbers, true/false, null, lists, objects): {exc}"
        ) from None
    if len(encoded.encode()) > VALUE_MAX:
        raise ValueError(f"ctx.kv: a value is at most {VALUE_MAX} bytes of JSON, this one {len(encoded.encode())}")
    if "\\u0000" in encoded or "\x00" in encoded:
        raise ValueError("ctx.kv: a value cannot hold a NUL character")
    return json.loads(encoded)


class KeyValue:
    """KeyValue is one plugin's store: `get`, `set`, `delete`, `keys`."""

    def __init__(self, sessions: sessionmaker[Session], plugin_id: str) -> None:
        self._sessions = sessions
        self._plugin = plugin_id

    def get(self, key: str, default: Any = None) -> Any:
        """get is the value of `key`, or `default` when it has none."""
        with self._sessions() as session:
            row = session.get(PluginValue, (self._plugin, check_key(key)))
            return default if row is None else row.value

    def set(self, key: str, value: Any) -> None:
        """set stores `value` under `key`, replacing what was there."""
        key, value = check_key(key), check_value(value)
        with self._sessions.begin() as session:
            row = session.get(PluginValue, (self._plugin, key))
            if row is not None:
                row.value = value
                return
            count = session.scalar(select(func.count()).where(PluginValue.plugin_id == self._plugin)) or 0
            if count >= KEYS_MAX:
                raise ValueError(f"ctx.kv: a plugin holds at most {KEYS_MAX} keys; delete some first")
            session.add(PluginValue(plugin_id=self._plugin, key=key, value=value))

    def delete(self, key: str) -> bool:
        """delete removes `key`; true when it had a value."""
        with self._sessions.begin() as session:
            done = session.execute(
                delete(PluginValue).where(PluginValue.plugin_id == self._plugin, PluginValue.key == check_key(key))
            )
            return bool(getattr(done, "rowcount", 0))

    def keys(self, prefix: str = "") -> list[str]:
        """keys lists the keys that start with `prefix`, sorted."""
        if not isinstance(prefix, str):
            raise ValueError(f"ctx.kv: a prefix is text, not {type(prefix).__name__}")
        with self._sessions() as session:
            found = session.scalars(
                select(PluginValue.key).where(PluginValue.plugin_id == self._plugin).order_by(PluginValue.key)
            )
            return [key for key in found if key.startswith(prefix)]


OPERATIONS = ("get", "set", "delete", "keys")


def answer(store: KeyValue, message: list[Any]) -> list[Any]:
    """answer is the host's answer to a sandboxed worker's `["kv", operation, *arguments]` call: `["kv", result]`,
    or `["refused", why]` (a ValueError's message, which the worker raises as ValueError)."""
    if len(message) < 2 or message[1] not in OPERATIONS:
        return ["refused", "ctx.kv: unknown operation"]
    operation, arguments = message[1], message[2:]
    try:
        return ["kv", getattr(store, operation)(*arguments)]
    except (ValueError, TypeError) as exc:
        return ["refused", str(exc)]
