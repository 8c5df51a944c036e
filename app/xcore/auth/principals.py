"""Who a user id acts as, cached per process and dropped at once when any process changes an account.

Every change that affects access (roles, role grants, token version, deactivation, 2FA) calls `Epoch.bump`,
which rewrites the memory-mapped `<data>/auth-epoch`. Each request compares those bytes with the last ones it
saw, so all workers of one machine see the change on their next request. Entries also expire after `MAX_AGE`
seconds, which bounds staleness when several machines share one PostgreSQL database and no data directory.
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from xcore.auth.rules import Principal as Principal  # re-exported: defined beside the Rule it is checked against
from xcore.db.models import RefreshToken, User

MAX_AGE = 10.0


class Epoch:
    """Epoch is the cross-process "accounts changed" signal: 8 bytes of `<data>/auth-epoch`, memory-mapped.

    Every process maps the same file, so a bump by one is visible to the others at their next read: a read
    is a memory access, where a `stat` per request cost more than the rest of the access check.
    """

    SIZE = 8

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._seen: bytes | None = None

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < self.SIZE:
                    os.ftruncate(fd, self.SIZE)
                self._map = mmap.mmap(fd, self.SIZE)
            finally:
                os.close(fd)
        return self._map

    def bump(self) -> None:
        """bump tells every process that cached accounts are stale."""
        self._mapping()[: self.SIZE] = secrets.token_bytes(self.SIZE)

    def changed(self) -> bool:
        """changed is true once after each bump (by any process) since the last call."""
        now = self._mapping()[: self.SIZE]
        if now != self._seen:
            self._seen = now
            return True
        return False


class Principals:
    """Principals loads and caches Principal objects by user id."""

    def __init__(self, sessions: sessionmaker[Session], epoch: Epoch, access_ttl: int) -> None:
        self.sessions = sessions
        self.epoch = epoch
        self.access_ttl = access_ttl
        self._cache: dict[int, tuple[float, Principal | None]] = {}

    def cached(self, user_id: int) -> tuple[bool, Principal | None]:
        """cached returns (hit, principal) without touching the database; a miss needs `load`."""
        if self.epoch.changed():
            self._cache.clear()
            return False, None
        entry = self._cache.get(user_id)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def load(self, user_id: int) -> Principal | None:
        """load reads the user from the database (None when missing or inactive) and caches the result."""
        with self.sessions() as session:
            principal = load_principal(session, user_id, self.access_ttl)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[user_id] = (time.monotonic() + MAX_AGE, principal)
        return principal

    def get(self, user_id: int) -> Principal | None:
        hit, principal = self.cached(user_id)
        return principal if hit else self.load(user_id)


def load_principal(session: Session, user_id: int, access_ttl: int) -> Principal | None:
    """load_principal reads an active user, with the families revoked recently enough to have live access tokens."""
    user = session.scalar(select(User).where(User.id == user_id))
    if user is None or not user.is_active:
        return None
    since = datetime.now(UTC) - timedelta(seconds=access_ttl)
    revoked = session.scalars(
        select(RefreshToken.family).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at > since).distinct()
    )
    return principal_of(user, frozenset(revoked))


def principal_of(user: User, revoked_families: frozenset[str] = frozenset()) -> Principal:
    """principal_of turns a loaded user into the Principal that access checks use."""
    return Principal(
        id=user.id,
        username=user.username,
        roles=frozenset(r.name for r in user.roles),
        permissions=frozenset(p.name for r in user.roles for p in r.permissions),
        token_version=user.token_version,
        totp_enabled=user.totp_enabled,
        totp_required=any(r.require_totp for r in user.roles),
        revoked_families=revoked_families,
    )
