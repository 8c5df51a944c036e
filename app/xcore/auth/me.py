"""What a logged-in user does to their own account: profile, password and two-factor enrollment."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from xcore.auth import audit
from xcore.auth.accounts import check_email, clear_totp, ensure_name_free, get_user, replace_password
from xcore.auth.errors import Conflict, Forbidden, InvalidInput
from xcore.auth.passwords import verify_password
from xcore.auth.service import AuthService, Client
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
    """change_password needs the current password; every session of the user ends, this one included."""
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if not verify_password(user.password_hash, current)[0]:
            raise Forbidden("the current password is wrong", field="current_password")
        if verify_password(user.password_hash, new)[0]:
            raise InvalidInput("the new password must differ from the current one", field="new_password")
        replace_password(svc, session, user, new, field="new_password")
        audit.record(session, "password.changed", actor=user.username, target=user.username, ip=client.ip)
    svc.accounts_changed()


def start_totp(svc: AuthService, user_id: int, client: Client) -> Enrollment:
    """start_totp makes a new secret for the user to scan. 2FA is not on until `confirm_totp`."""
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
    """disable_totp needs the password and a current code (a recovery code works too)."""
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if not user.totp_enabled:
            raise Conflict("two-factor login is not on")
        if not verify_password(user.password_hash, password)[0]:
            raise Forbidden("the password is wrong", field="password")
        secret = svc.box.open(user.totp_secret or "")
        step = match_step(secret, code, user.totp_last_step) if secret else None
        if step is None:
            used = session.query(RecoveryCode).filter(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == hash_recovery_code(code),
                RecoveryCode.used_at.is_(None),
            )
            if used.first() is None:
                raise Forbidden("the code is wrong, expired or already used", field="code")
        clear_totp(session, user)
        audit.record(session, "totp.disabled", actor=user.username, target=user.username, ip=client.ip)
    svc.accounts_changed()
