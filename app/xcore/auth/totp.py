"""TOTP two-factor codes (pyotp): encrypted secrets, one-use codes with ±1 step drift, recovery codes.

The current step is read from `clock` (POSIX seconds, `time.time`), which tests replace to move between steps
instead of waiting for one to pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyotp

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

STEP = 30
DRIFT = 1  # steps accepted on either side of now, for clocks that are a little off
RECOVERY_CODES = 10
DIGITS = 6  # pyotp's default, and what authenticator apps show

clock: Callable[[], float] = time.time  # the time `match_step` judges codes by, unless it is given one


class SecretBox:
    """SecretBox encrypts TOTP secrets at rest with a key derived from the data directory's secret.

    cryptography is loaded at the first seal or open: `xcore serve`'s main process, which makes an AuthService to
    prepare the database but never reads a secret, stays smaller without it.
    """

    def __init__(self, master_secret: str) -> None:
        key = hmac.new(master_secret.encode(), b"xcore/totp-secret/v1", hashlib.sha256).digest()
        self._key = base64.urlsafe_b64encode(key)
        self._box: Fernet | None = None

    def _fernet(self) -> Fernet:
        if self._box is None:
            from cryptography.fernet import Fernet

            self._box = Fernet(self._key)
        return self._box

    def seal(self, totp_secret: str) -> str:
        return self._fernet().encrypt(totp_secret.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """open returns the secret, or None when it was sealed with another key (the secret.key changed)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet().decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning(secret: str, account: str, issuer: str = "xcore") -> tuple[str, str]:
    """provisioning returns the otpauth:// URI for an authenticator app and the same URI as a QR code in SVG."""
    import segno  # only for an enrollment, not at every start

    uri = pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=account, issuer_name=issuer)
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False, svgns=True)
    return uri, out.getvalue().decode()


def match_step(secret: str, code: str, last_step: int | None, now: float | None = None) -> int | None:
    """match_step returns the time step `code` belongs to, or None when it is wrong or already used.

    A code is accepted for the current step (at `now`, by default `clock()`) and `DRIFT` steps on either side;
    a step at or before `last_step` (the last accepted one) is refused, so a code works once only.
    """
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == DIGITS):  # "١٢٣٤٥٦" is digits too, but no code
        return None
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int((clock() if now is None else now) // STEP)
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(totp.at(step * STEP), code):
            return None if last_step is not None and step <= last_step else step
    return None


def new_recovery_codes() -> list[str]:
    """new_recovery_codes returns fresh codes such as `7KQ2-M9XD-4H3P` (60 bits each)."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: they are read off paper
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3)) for _ in range(RECOVERY_CODES)
    ]


def normalize_recovery_code(code: str) -> str:
    cleaned = "".join(ch for ch in code.upper() if ch.isascii() and ch.isalnum())  # codes are ASCII
    return "-".join(cleaned[i : i + 4] for i in range(0, len(cleaned), 4))


def hash_recovery_code(code: str) -> str:
    """hash_recovery_code is the SHA-256 of the normalized code. The codes are random (60 bits), so a fast hash
    is safe and lets a code be found by its hash."""
    return hashlib.sha256(normalize_recovery_code(code).encode()).hexdigest()
