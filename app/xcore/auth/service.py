"""AuthService: the accounts and security machinery of one process, built once per Runtime (`Runtime.auth`).

It outlives app rebuilds (a plugin reload builds a new app, not a new AuthService), so its caches stay warm.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from xcore.auth.hashing import HashPool
from xcore.auth.principals import Epoch, Principals
from xcore.auth.rules import AccessTable
from xcore.auth.scrapers import FILE_NAME as SCRAPER_TOKENS
from xcore.auth.scrapers import ScraperTokens
from xcore.auth.setup import SetupToken
from xcore.auth.throttle import Throttle
from xcore.auth.tokens import TokenSigner
from xcore.auth.totp import SecretBox
from xcore.config.schema import AccessRule, SecureConfig
from xcore.db import notify
from xcore.db.models import User

SETUP_RECHECK = 0.25  # seconds a check that found no account answers for (`setup_still_required`)


@dataclass(frozen=True, slots=True)
class Client:
    """Client is where a request comes from, for the audit log and the address lockout."""

    ip: str | None = None
    user_agent: str | None = None


class AuthService:
    """AuthService holds the signer, the caches, the rule table, the password-hashing pool and the database of the
    accounts."""

    def __init__(
        self,
        secure: SecureConfig,
        access_rules: Mapping[str, AccessRule],
        sessions: sessionmaker[Session],
        secret: str,
        shared_dir: Path,
    ) -> None:
        """AuthService takes the `secure` settings, the ACCESS_RULES, the sessions of the accounts' database, the
        secret that signs tokens and encrypts TOTP secrets, and `shared_dir`, where the files every worker of the
        data directory shares live (the accounts' epoch, the setup token). Raises ConfigError for a malformed
        access rule."""
        self.secure = secure
        self.sessions = sessions
        self.signer = TokenSigner(secret, secure.access_ttl)
        self.box = SecretBox(secret)
        self.epoch = Epoch(shared_dir / "auth-epoch")
        self.principals = Principals(sessions, self.epoch, secure.access_ttl)
        self.throttle = Throttle(secure.lockout)
        self.hashing = HashPool(secure.hashing)
        self.rules = AccessTable(access_rules)
        self.setup_token = SetupToken(shared_dir)
        self.scrapers = ScraperTokens(shared_dir / SCRAPER_TOKENS)  # the tokens that read /metrics only
        self.setup_done = False
        self._required_until = 0.0  # time.monotonic(): a check found no account, and that answer holds until then

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
        if not self.setup_done:
            self._required_until = time.monotonic() + SETUP_RECHECK
        return not self.setup_done

    def setup_still_required(self) -> bool:
        """setup_still_required says, from memory, that `setup_required` found no account less than SETUP_RECHECK
        seconds ago. Until setup, every request the access guard cannot let through checks for an account; this
        spares the database a query per request from whoever floods the server meanwhile. An account another
        process makes is seen that much later; one made through this process, at once (`setup_completed`)."""
        return not self.setup_done and time.monotonic() < self._required_until

    def setup_completed(self) -> None:
        """setup_completed records that the first account exists (this process has just made it)."""
        self.setup_done = True

    def accounts_changed(self) -> None:
        """accounts_changed makes every process drop its cached principals (call after the commit): this node's
        through the epoch file, the other nodes' on a shared PostgreSQL database through a notification."""
        self.epoch.bump()
        notify.publish(self.sessions.kw["bind"], notify.ACCOUNTS)
