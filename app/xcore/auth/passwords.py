"""Password hashing (argon2id via argon2-cffi) and the password policy."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from xcore.auth.errors import InvalidInput

# argon2-cffi's defaults follow RFC 9106's second recommendation (argon2id, 64 MiB, 3 passes). Changing them
# here makes every stored hash "need rehash", and the next login rehashes it.
HASHER = PasswordHasher()

# Verified against when the account does not exist, so "no such user" costs the same time as a wrong password.
_DUMMY_HASH: str | None = None


def hash_password(password: str) -> str:
    """hash_password returns the argon2id hash of `password`, with a fresh salt."""
    return HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, bool]:
    """verify_password returns (matches, needs_rehash). A None hash verifies against a dummy, and fails.

    Never raises for a wrong password or a corrupt hash: both are just "no match".
    """
    global _DUMMY_HASH
    if stored_hash is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = HASHER.hash("no such account, but take the same time")
        stored_hash, real = _DUMMY_HASH, False
    else:
        real = True
    try:
        HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return real, real and HASHER.check_needs_rehash(stored_hash)


def check_password(password: str, *, min_length: int, username: str, email: str | None, field: str) -> None:
    """check_password raises InvalidInput, naming `field`, for a password too short or too close to the account."""
    if len(password) < min_length:
        raise InvalidInput(f"the password must have at least {min_length} characters", field=field)
    if len(password) > 1024:
        raise InvalidInput("the password must have at most 1024 characters", field=field)
    lowered = password.casefold()
    for what, value in (("username", username), ("email address", email), ("email name", _local_part(email))):
        if value and len(value) >= 3 and (value.casefold() in lowered or lowered in value.casefold()):
            raise InvalidInput(f"the password must not contain the {what} or be part of it", field=field)
    if len(set(password)) < 4:
        raise InvalidInput("the password needs more different characters", field=field)


def _local_part(email: str | None) -> str | None:
    return email.split("@", 1)[0] if email else None
