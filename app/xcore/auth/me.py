"""What a logged-in user does to their own account: profile, password and two-factor enrollment.

Every change that could lock the owner out of their account (a new password, 2FA turned on or off) needs the
password again, and a wrong one counts towards the lockout exactly like a failed login (`Throttle`), so a stolen
session cannot be used to guess the password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select

from xcore.auth import audit
from xcore.auth.accounts import check_email, clear_totp, ensure_name_free, get_user, replace_password
from xcore.auth.errors import Conflict, Forbidden, InvalidInput
from xcore.auth.service import AuthService, Client
from xcore.auth.throttle import account_key, address_key
from xcore.auth.totp import hash_recovery_code, match_step, new_recovery_codes, new_secret, provisioning
from xcore.db.models import RecoveryCode, User


@dataclass(frozen=True, slots=True)
class Enrollment:
    """Enrollment is what an authenticator app needs: the secret, its otpauth:// URI and that URI as a QR code."""

    secret: str
    uri: str
    qr_svg: str


def change_email(svc: AuthService, user_id: int, client: Client, email: str | None) -> User:
    with svc.transaction() as session:
        user = get_user(session, user_id)
        email = check_email(email)
        ensure_name_free(session, user.username, email, except_id=user.id)
        user.email = email
        audit.record(session, "user.updated", actor=user.username, target=user.username, ip=client.ip, email=email)
    return user


def change_password(svc: AuthService, user_id: int, client: Client, current: str, new: str) -> None:
    """change_password needs the current password (counted by the lockout); every session of the user ends, this
    one included."""
    with svc.hashing.reserve():
        keys, stored = _check_password(svc, user_id, client, current, field="current_password", what="password change")
        _passed(svc, keys)
        if svc.hashing.verify(stored, new)[0]:
            raise InvalidInput("the new password must differ from the current one", field="new_password")
        with svc.transaction() as session:
            user = get_user(session, user_id)
            if user.password_hash != stored:
                raise Conflict("the password was changed meanwhile; log in again with the new one")
            replace_password(svc, session, user, new, field="new_password")
            audit.record(session, "password.changed", actor=user.username, target=user.username, ip=client.ip)
    svc.accounts_changed()


def start_totp(svc: AuthService, user_id: int, client: Client, password: str) -> Enrollment:
    """start_totp makes a new secret for the user to scan, once the password (counted by the lockout) is right.
    2FA is not on until `confirm_totp`."""
    with svc.sessions() as session:
        if get_user(session, user_id).totp_enabled:
            raise Conflict("two-factor login is already on; disable it first to enroll a new device")
    keys, _ = _check_password(svc, user_id, client, password, field="password", what="2FA setup")
    _passed(svc, keys)
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if user.totp_enabled:
            raise Conflict("two-factor login is already on; disable it first to enroll a new device")
        secret = new_secret()
        user.totp_secret = svc.box.seal(secret)
        user.totp_last_step = None
        audit.record(session, "totp.setup_started", actor=user.username, target=user.username, ip=client.ip)
        uri, svg = provisioning(secret, user.email or user.username)
    return Enrollment(secret, uri, svg)


def confirm_totp(svc: AuthService, user_id: int, client: Client, code: str) -> list[str]:
    """confirm_totp turns 2FA on once a code from the new secret is right; returns the recovery codes, once."""
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if user.totp_enabled:
            raise Conflict("two-factor login is already on")
        secret = svc.box.open(user.totp_secret) if user.totp_secret else None
        if secret is None:
            raise Conflict("start with POST /api/me/totp/setup, then confirm a code from the authenticator app")
        step = match_step(secret, code, user.totp_last_step)
        if step is None:
            raise InvalidInput("the code is wrong or expired; type the current code from the app", field="code")
        codes = new_recovery_codes()
        user.totp_enabled, user.totp_last_step = True, step
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        session.add_all(RecoveryCode(user_id=user.id, code_hash=hash_recovery_code(c)) for c in codes)
        audit.record(session, "totp.enabled", actor=user.username, target=user.username, ip=client.ip)
    svc.accounts_changed()
    return codes


def disable_totp(svc: AuthService, user_id: int, client: Client, password: str, code: str) -> None:
    """disable_totp needs the password and a current code (a recovery code works too); a wrong one of either
    counts towards the lockout."""
    with svc.sessions() as session:
        if not get_user(session, user_id).totp_enabled:
            raise Conflict("two-factor login is not on")
    keys, _ = _check_password(svc, user_id, client, password, field="password", what="2FA disable")
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if not user.totp_enabled:
            raise Conflict("two-factor login is not on")
        secret = svc.box.open(user.totp_secret or "")
        step = match_step(secret, code, user.totp_last_step) if secret else None
        right = step is not None or (
            session.scalar(
                select(RecoveryCode.id).where(
                    RecoveryCode.user_id == user.id,
                    RecoveryCode.code_hash == hash_recovery_code(code),
                    RecoveryCode.used_at.is_(None),
                )
            )
            is not None
        )
        username = user.username
        if right:
            clear_totp(session, user)
            svc.throttle.succeeded(session, keys)
            audit.record(session, "totp.disabled", actor=user.username, target=user.username, ip=client.ip)
    if not right:
        _refused(svc, username, client, "2FA disable", "wrong totp")
        raise Forbidden("the code is wrong, expired or already used", field="code")
    svc.accounts_changed()


def _check_password(
    svc: AuthService, user_id: int, client: Client, password: str, *, field: str, what: str
) -> tuple[list[str], str]:
    """_check_password checks a signed-in user's password before `what`, counted as an attempt on the account's and
    the address's lockout keys until the caller calls `_passed` (or `Throttle.succeeded`) with the keys returned.

    Returns (keys, the stored hash). Raises Busy when the hashing pool is full, TooManyAttempts while a key is
    locked, and Forbidden naming `field` for a wrong password.
    """
    with svc.hashing.reserve():
        with svc.sessions() as session:
            user = get_user(session, user_id)
            username, stored = user.username, user.password_hash
        keys = [account_key(user_id, username), address_key(client.ip)]
        with svc.transaction() as session:
            svc.throttle.admit(session, keys)
        if not svc.hashing.verify(stored, password)[0]:
            _refused(svc, username, client, what, "wrong password")
            raise Forbidden("the password is wrong", field=field)
    return keys, stored


def _passed(svc: AuthService, keys: list[str]) -> None:
    with svc.transaction() as session:
        svc.throttle.succeeded(session, keys)


def _refused(svc: AuthService, username: str, client: Client, what: str, reason: str) -> None:
    with svc.transaction() as session:
        audit.record(
            session, "reauth.failed", actor=username, ip=client.ip, level=logging.WARNING, reason=reason, during=what
        )
