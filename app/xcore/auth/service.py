"""AuthService: the accounts and security machinery of one process, built once per Runtime.

It outlives app rebuilds (a plugin reload builds a new app, not a new AuthService), so its caches stay warm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from xcore.auth.hashing import HashPool
from xcore.auth.principals import Epoch, Principals
from xcore.auth.rules import AccessTable
from xcore.auth.setup import SetupToken
from xcore.auth.throttle import Throttle
from xcore.auth.tokens import TokenSigner
from xcore.auth.totp import SecretBox
from xcore.db.models import User

if TYPE_CHECKING:
    from xcore.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Client:
    """Client is where a request comes from, for the audit log and the address lockout."""

    ip: str | None = None
    user_agent: str | None = None


class AuthService:
    """AuthService holds the signer, the caches, the rule table, the password-hashing pool and the database of the
    accounts."""

    def __init__(self, runtime: Runtime) -> None:
        secure = runtime.config.secure
        self.secure = secure
        self.sessions = runtime.sessions
        self.signer = TokenSigner(runtime.secret, secure.access_ttl)
        self.box = SecretBox(runtime.secret)
        self.epoch = Epoch(runtime.data.root / "auth-epoch")
        self.principals = Principals(self.sessions, self.epoch, secure.access_ttl)
        self.throttle = Throttle(secure.lockout)
        self.hashing = HashPool(secure.hashing)
        self.rules = AccessTable(runtime.config.xcore.middleware.ACCESS_RULES)
        self.setup_token = SetupToken(runtime.data.root)
        self.setup_done = False

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """transaction yields a session that commits on success and rolls back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def setup_required(self) -> bool:
        """setup_required is true while no account exists. Once false it stays false for this process."""
        if self.setup_done:
            return False
        with self.sessions() as session:
            self.setup_done = bool(session.scalar(select(exists().where(User.id.is_not(None)))))
        return not self.setup_done

    def accounts_changed(self) -> None:
        """accounts_changed makes every process drop its cached principals (call after the commit)."""
        self.epoch.bump()
