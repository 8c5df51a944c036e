"""Brute-force protection: failed logins and 2FA codes lock an account name and a client address for a while.

Counts live in the database (`login_throttle`), so every worker sees the same numbers. Keys are the login
name as typed (case-folded) and the client address: a name that does not exist is counted and locked
exactly like one that does, so the answers never tell them apart.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from xcore.auth.errors import TooManyAttempts
from xcore.config.schema import LockoutConfig
from xcore.db.models import LoginThrottle, as_utc


def account_key(login: str) -> str:
    return f"account:{login.strip().casefold()[:280]}"


def address_key(address: str | None) -> str:
    return f"ip:{address or 'unknown'}"


class Throttle:
    """Throttle checks and records failures for account and address keys."""

    def __init__(self, config: LockoutConfig) -> None:
        self.config = config

    def limit(self, key: str) -> int:
        return self.config.ip_max_failures if key.startswith("ip:") else self.config.max_failures

    def check(self, session: Session, keys: list[str]) -> None:
        """check raises TooManyAttempts when any key is locked now, saying how long to wait."""
        now = datetime.now(UTC)
        rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))
        waits = [as_utc(row.locked_until) - now for row in rows if row.locked_until and as_utc(row.locked_until) > now]
        if waits:
            seconds = math.ceil(max(waits).total_seconds())
            raise TooManyAttempts(f"too many failed attempts; try again in {seconds} seconds", retry_after=seconds)

    def fail(self, session: Session, keys: list[str]) -> None:
        """fail counts one failure for each key and locks the keys over their limit; the lock doubles each time."""
        now = datetime.now(UTC)
        for key in keys:
            row = session.get(LoginThrottle, key)
            if row is None:
                row = LoginThrottle(key=key, failures=0)
                session.add(row)
            row.failures += 1
            row.last_failure_at = now
            over = row.failures - self.limit(key)
            if over >= 0:
                delay = min(self.config.base_delay * 2 ** min(over, 30), self.config.max_delay)
                row.locked_until = now + timedelta(seconds=delay)
        session.flush()

    def clear(self, session: Session, key: str) -> None:
        """clear forgets the failures of a key after a successful login."""
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
