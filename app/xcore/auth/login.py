"""Logging in, refreshing, logging out and revoking sessions.

A login returns a short-lived access JWT and a refresh token. Refresh tokens are stored as their SHA-256,
rotate on every use, and belong to a family (one login). Presenting a refresh token that was already
rotated is a sign of theft: the whole family is revoked.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from xcore.auth import audit
from xcore.auth.errors import InvalidInput, NotAuthenticated
from xcore.auth.service import AuthService, Client
from xcore.auth.throttle import account_key, address_key
from xcore.auth.totp import hash_recovery_code, match_step
from xcore.db.models import RecoveryCode, RefreshToken, User, as_utc
from xcore.metrics import tally
from xcore.metrics.families import LOGIN_FAILURES

WRONG_CREDENTIALS = "wrong username or password"


class TotpRequired(NotAuthenticated):
    """TotpRequired means the password was right and the account needs its two-factor code too."""

    def __init__(self) -> None:
        super().__init__(
            "this account uses two-factor login: send the code from the authenticator app as totp",
            field="totp",
            extra={"totp_required": True},
        )


@dataclass(frozen=True, slots=True)
class Tokens:
    """Tokens is what a login or a refresh hands out."""

    user_id: int
    username: str
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_expires: datetime


def login(
    svc: AuthService,
    name: str,
    password: str,
    client: Client,
    totp: str | None = None,
    recovery_code: str | None = None,
) -> Tokens:
    """login checks the password (and the second factor) and opens a session.

    Raises Busy at once while the password-hashing pool is full, TooManyAttempts while the account (every name of
    it) or the address is locked, NotAuthenticated with the same message for an unknown name, an inactive account
    and a wrong password, and TotpRequired when a code is missing.
    """
    with svc.hashing.reserve():  # before any database work: a flood is turned away for the price of a lock
        with svc.sessions() as session:  # apart: admit's transaction must write first to queue for SQLite's lock
            user = find_user(session, name)
            user_id, stored = (user.id, user.password_hash) if user else (None, None)
        keys = [account_key(user_id, name), address_key(client.ip)]
        with svc.transaction() as session:
            svc.throttle.admit(session, keys)  # counted as a failure until it succeeds
        # No database connection or transaction is held while argon2 runs.
        matches, needs_rehash = svc.hashing.verify(stored, password)
        with svc.sessions() as session:
            user = session.get(User, user_id) if matches and user_id is not None else None
            if user is None or not user.is_active or user.password_hash != stored:
                _fail(session, name, client, "password")
                raise NotAuthenticated(WRONG_CREDENTIALS)
            if user.totp_enabled:
                if not totp and not recovery_code:
                    svc.throttle.refund(session, keys)  # neither right nor wrong; clearing would reset 2FA guesses
                    session.commit()
                    raise TotpRequired()
                if not _second_factor(svc, session, user, totp, recovery_code, client):
                    _fail(session, name, client, "recovery code" if recovery_code else "totp")
                    raise NotAuthenticated("the two-factor code is wrong, expired or already used", field="totp")
            user.last_login_at = datetime.now(UTC)
            svc.throttle.succeeded(session, keys)
            tokens = _open_session(svc, session, user, secrets.token_hex(16))
            audit.record(session, "login.succeeded", actor=user.username, ip=client.ip, rehashed=needs_rehash)
            session.commit()
        if needs_rehash and user_id is not None and stored is not None:
            _rehash(svc, user_id, stored, password)
    return tokens


def _rehash(svc: AuthService, user_id: int, old_hash: str, password: str) -> None:
    """_rehash stores the password's hash with the current parameters, unless the password changed meanwhile."""
    new_hash = svc.hashing.hash(password)
    with svc.transaction() as session:
        session.execute(
            update(User)
            .where(User.id == user_id, User.password_hash == old_hash)
            .values(password_hash=new_hash)
            .execution_options(synchronize_session=False)
        )


def find_user(session: Session, name: str) -> User | None:
    """find_user finds an account by username or email address, ignoring case."""
    name = name.strip().casefold()
    return session.scalar(select(User).where(or_(func.lower(User.username) == name, func.lower(User.email) == name)))


def _fail(session: Session, name: str, client: Client, what: str) -> None:
    """_fail audits a failed attempt, and counts it for the metrics; the throttle counted it already, when it was
    admitted."""
    tally.count(LOGIN_FAILURES, what.replace(" ", "_"))
    session.rollback()
    audit.record(session, "login.failed", actor=name[:100], ip=client.ip, level=logging.WARNING, reason=f"wrong {what}")
    session.commit()


def _second_factor(
    svc: AuthService, session: Session, user: User, totp: str | None, recovery_code: str | None, client: Client
) -> bool:
    if totp:
        secret = svc.box.open(user.totp_secret or "")
        step = match_step(secret, totp, user.totp_last_step) if secret else None
        if step is None:
            return False
        # Conditional update: of two logins racing with the same code, one wins.
        won = session.execute(
            update(User)
            .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        return bool(won.rowcount)  # type: ignore[attr-defined]
    assert recovery_code is not None
    code = session.scalar(
        select(RecoveryCode).where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == hash_recovery_code(recovery_code),
            RecoveryCode.used_at.is_(None),
        )
    )
    if code is None:
        return False
    code.used_at = datetime.now(UTC)
    session.flush()
    left = session.scalar(select(func.count()).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)))
    audit.record(session, "totp.recovery_code_used", actor=user.username, ip=client.ip, codes_left=left or 0)
    return True


def start_session(svc: AuthService, session: Session, user: User) -> Tokens:
    """start_session opens a new session (a new refresh family) for `user`, whom the caller has authenticated
    another way (the desktop token). The caller audits and commits."""
    return _open_session(svc, session, user, secrets.token_hex(16))


def _open_session(svc: AuthService, session: Session, user: User, family: str) -> Tokens:
    raw = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=svc.secure.session_ttl)
    session.add(
        RefreshToken(
            token_hash=_digest(raw),
            family=family,
            user_id=user.id,
            token_version=user.token_version,
            expires_at=expires,
        )
    )
    access, access_expires = svc.signer.issue(user.id, user.token_version, family)
    return Tokens(user.id, user.username, access, access_expires, raw, expires)


def refresh(svc: AuthService, raw: str, client: Client) -> Tokens:
    """refresh exchanges a refresh token for new tokens; the old one stops working.

    Raises NotAuthenticated for an unknown, expired or revoked token. A token that was already exchanged
    revokes its whole family first: whoever holds the newer token is logged out too.
    """
    if not raw or len(raw) > 200:
        raise InvalidInput("refresh_token is missing or malformed", field="refresh_token")
    now = datetime.now(UTC)
    with svc.sessions() as session:
        row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == _digest(raw)))
        if row is None:
            raise NotAuthenticated("the refresh token is not valid; log in again")
        if row.revoked_at is not None or as_utc(row.expires_at) <= now:
            raise NotAuthenticated("the session has ended; log in again")
        result = session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        claimed = bool(result.rowcount)  # type: ignore[attr-defined]
        user = session.get(User, row.user_id)
        if not claimed:
            revoke_family(session, row.family, now)
            audit.record(
                session,
                "session.refresh_reused",
                actor=user.username if user else None,
                ip=client.ip,
                level=logging.WARNING,
                family=row.family,
            )
            session.commit()
            svc.accounts_changed()  # the family's access tokens stop working too
            raise NotAuthenticated(
                "this refresh token was already used, so the session was ended in case it was stolen; log in again"
            )
        if user is None or not user.is_active or user.token_version != row.token_version:
            session.commit()
            raise NotAuthenticated("the session was revoked; log in again")
        tokens = _open_session(svc, session, user, row.family)
        session.commit()
    return tokens


def refresh_family(svc: AuthService, raw: str) -> str | None:
    """refresh_family is the login family of refresh token `raw` (used or not), or None for an unknown token: what
    a cookie refresh's CSRF token is checked against before the token is exchanged."""
    if not raw or len(raw) > 200:
        return None
    with svc.sessions() as session:
        return session.scalar(select(RefreshToken.family).where(RefreshToken.token_hash == _digest(raw)))


def revoke_family(session: Session, family: str, now: datetime | None = None) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now or datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def revoke_user_sessions(session: Session, user: User) -> None:
    """revoke_user_sessions ends every session of `user`: access tokens fail at once, refresh tokens too.

    The caller commits, then calls `AuthService.accounts_changed`.
    """
    user.token_version += 1
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def logout(svc: AuthService, user_id: int, client: Client) -> None:
    """logout ends all of the user's sessions (their token version is bumped)."""
    with svc.transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            return
        revoke_user_sessions(session, user)
        audit.record(session, "logout", actor=user.username, ip=client.ip)
    svc.accounts_changed()


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
