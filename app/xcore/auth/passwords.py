"""Password hashing (argon2id via argon2-cffi). The password policy is `xcore.auth.password_policy`."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id with OWASP's first recommended setting: 46 MiB, one pass, one lane (the Password Storage Cheat
# Sheet rates it as strong as its 19 MiB / 2 passes and 12 MiB / 3 passes). argon2-cffi's default (RFC 9106's
# low-memory setting: 64 MiB, 3 passes, 4 lanes) took longer, on both cores, and 64 MiB a hash, more than a
# login flood may add to a worker (the target of benchmarks/logins.py: under 50 MB; its runs are in
# benchmarks/README.md). One lane keeps a hash on one core, so the other serves requests. Changing these makes
# every stored hash "need rehash", and the next login rehashes it.
HASHER = PasswordHasher(time_cost=1, memory_cost=47_104, parallelism=1)

# Verified against when the account does not exist, so "no such user" costs the same time as a wrong password:
# one per hasher (the tests' cheap one too, see `xcore.auth.hashing`), so it costs what that hasher's hashes cost.
_DUMMY_HASHES: dict[PasswordHasher, str] = {}


def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    """hash_password returns the argon2id hash of `password`, with a fresh salt."""
    return hasher.hash(password)


def verify_password(stored_hash: str | None, password: str, hasher: PasswordHasher = HASHER) -> tuple[bool, bool]:
    """verify_password returns (matches, needs_rehash). A None hash verifies against a dummy, and fails.

    A hash verifies whatever parameters it was made with (argon2 writes them into it); it needs a rehash when they
    are not `hasher`'s. Never raises for a wrong password or a corrupt hash: both are just "no match".
    """
    if stored_hash is None:
        if hasher not in _DUMMY_HASHES:
            _DUMMY_HASHES[hasher] = hasher.hash("no such account, but take the same time")
        stored_hash, real = _DUMMY_HASHES[hasher], False
    else:
        real = True
    try:
        hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return real, real and hasher.check_needs_rehash(stored_hash)
