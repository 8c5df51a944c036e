"""Brute-force protection: failed logins and 2FA codes lock an account name and a client address for a while.

Counts live in the database (`login_throttle`), so every worker sees the same numbers. Keys are the account
and the client address. The account is keyed by its id once the name typed is resolved, so its username and
email address in any case or spacing share one counter; a name that matches no account is counted under the
name (case-folded) and locked exactly like an account, so the answers never tell them apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from xcore.auth.errors import TooManyAttempts
from xcore.config.schema import LockoutConfig
from xcore.db.models import LoginThrottle, as_utc
from xcore.metrics import tally
from xcore.metrics.families import LOGIN_LOCKOUTS, LOGIN_REFUSED


def account_key(user_id: int | None, login: str) -> str:
    """account_key is the lockout key of the account `login` resolved to (`user_id`), or of `login` itself when it
    names no account. The two kinds never collide: a name cannot pass for an account id."""
    if user_id is not None:
        return f"user:{user_id}"
    return f"name:{login.strip().casefold()[:280]}"


def address_key(address: str | None) -> str:
    return f"ip:{address or 'unknown'}"


class Throttle:
    """Throttle admits login attempts for account and address keys, and locks keys that fail too often.

    Every attempt is counted as a failure when it is admitted, in a transaction that holds the write lock,
    so parallel guesses cannot all slip past the check before any failure is recorded. A success takes the
    account's failures away (and this attempt's count on the address); an attempt that was neither right nor
    wrong (a password without its 2FA code) takes back only its own count. The time of attempts and locks is the
    throttle's `clock` (POSIX seconds), which a test moves forward instead of waiting for a lock to end.
    """

    def __init__(self, config: LockoutConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock

    def limit(self, key: str) -> int:
        return self.config.ip_max_failures if key.startswith("ip:") else self.config.max_failures

    def admit(self, session: Session, keys: list[str]) -> None:
        """admit counts one attempt on each key, or raises TooManyAttempts (counting nothing) while one is locked.

        Reaching the limit locks the key from now on for `base_delay`, doubled for each attempt over the
        limit, up to `max_delay`. Counts older than `max_delay` start over.
        """
        now = datetime.fromtimestamp(self.clock(), UTC)
        insert: Any = sqlite_insert
        if session.get_bind().dialect.name != "sqlite":  # imported here: only PostgreSQL needs it, not every start
            from sqlalchemy.dialects.postgresql import insert
        # A write first: SQLite takes its write lock here, so concurrent attempts queue up behind this one.
        session.execute(
            insert(LoginThrottle).values([{"key": k, "failures": 0} for k in keys]).on_conflict_do_nothing()
        )
        rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)).with_for_update()).all()
        waits = [as_utc(r.locked_until) - now for r in rows if r.locked_until and as_utc(r.locked_until) > now]
        if waits:
            seconds = math.ceil(max(waits).total_seconds())
            tally.count(LOGIN_REFUSED)
            raise TooManyAttempts(f"too many failed attempts; try again in {seconds} seconds", retry_after=seconds)
        for row in rows:
            if row.last_failure_at and (now - as_utc(row.last_failure_at)).total_seconds() > self.config.max_delay:
                row.failures = 0
            row.failures += 1
            row.last_failure_at = now
            over = row.failures - self.limit(row.key)
            if over >= 0:
                delay = min(self.config.base_delay * 2 ** min(over, 30), self.config.max_delay)
                row.locked_until = now + timedelta(seconds=delay)
                tally.count(LOGIN_LOCKOUTS, "address" if row.key.startswith("ip:") else "account")
        session.flush()

    def refund(self, session: Session, keys: list[str]) -> None:
        """refund takes back one admitted attempt on each key, and the lock that attempt may have started."""
        for row in session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)).with_for_update()):
            row.failures = max(0, row.failures - 1)
            if row.failures < self.limit(row.key):
                row.locked_until = None

    def succeeded(self, session: Session, keys: list[str]) -> None:
        """succeeded forgets the account's failures and refunds this attempt on the other keys."""
        account, *others = keys
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == account))
        self.refund(session, others)
