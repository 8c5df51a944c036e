"""Access tokens (JWT, HS256, via PyJWT, which Litestar's JWT support uses too) and their verification cache.

An access token carries `sub` (the user id), `exp`, `iat`, `jti`, `ver` (the user's token version), `iss`
("xcore") and `fam` (the login's refresh-token family). A verified token is cached until it expires, so the
signature is checked once per token, not once per request; the token version is checked on every request
(see `xcore.auth.principals`). A cookie session's CSRF token is derived from its family (`csrf_token`), so it is
bound to that login: another login's token, or one made up, does not pass.

PyJWT is imported where a token is made or read, not with this module: with cryptography it is a large import,
and `xcore serve`'s main process (which prepares the database and watches over the workers) never needs it. Each
worker imports it in the background a second after it starts serving (`xcore.web.asgi.warm_up_later`).

Every time the signer reads (issued at, expiry, now) comes from its `clock`, so a test moves time forward instead of
waiting for a token to expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from xcore.auth.errors import NotAuthenticated

ISSUER = "xcore"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "iss", "ver")
CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """AccessClaims are the verified claims of one access token."""

    user_id: int
    version: int
    jti: str
    family: str
    expires: float  # POSIX seconds


class TokenSigner:
    """TokenSigner issues and verifies access tokens with one secret, telling the time by `clock` (POSIX seconds)."""

    def __init__(self, secret: str, access_ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.clock = clock
        self._verified: dict[str, AccessClaims] = {}

    def issue(self, user_id: int, version: int, family: str) -> tuple[str, datetime]:
        """issue returns a new access token for the user and its expiry time."""
        now = datetime.fromtimestamp(int(self.clock()), UTC)
        expires = now + timedelta(seconds=self.access_ttl)
        claims = {
            "sub": str(user_id),
            "exp": expires,
            "iat": now,
            "iss": ISSUER,
            "jti": secrets.token_urlsafe(12),
            "ver": version,
            "fam": family,
        }
        import jwt  # see the module's docstring

        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def csrf_token(self, family: str) -> str:
        """csrf_token is the CSRF token of the login `family`: the same for all of its access and refresh tokens,
        different for every other login, and unforgeable without the secret. Raises NotAuthenticated for a token
        without a family (none is issued any more): such a session cannot pass a CSRF check.

        (HMAC with this secret, over a message that never is a JWT's signing input: a JWT's has no NUL.)
        """
        if not family:
            raise NotAuthenticated("this session is bound to no login; log in again")
        digest = hmac.new(self._secret.encode(), b"xcore/csrf/v2\0" + family.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, encoded: str) -> AccessClaims:
        """verify returns the token's claims. Raises NotAuthenticated for a forged, tampered or expired token.

        Only HS256 with this signer's secret is accepted: `alg: none` and other algorithms fail. A token is expired
        from its `exp` on, and not valid yet before its `iat`, by the signer's clock.
        """
        claims = self._verified.get(encoded)
        now = self.clock()
        if claims is not None:
            if claims.expires > now:
                return claims
            del self._verified[encoded]
            raise NotAuthenticated("the access token has expired; refresh it or log in again")
        if len(encoded) > 4096:
            raise NotAuthenticated("the access token is not valid")
        import jwt  # see the module's docstring; verified tokens are cached, so this runs once per token

        # PyJWT reads the system clock for exp and iat, so the signer checks both itself, by its own clock.
        try:
            payload = jwt.decode(
                encoded,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
            )
            if int(payload["exp"]) <= now:
                raise jwt.ExpiredSignatureError("Signature has expired")
            if int(payload["iat"]) > now:
                raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
            claims = AccessClaims(
                user_id=int(payload["sub"]),
                version=int(payload["ver"]),
                jti=str(payload["jti"]),
                family=str(payload.get("fam", "")),
                expires=float(payload["exp"]),
            )
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError, OverflowError):
            raise NotAuthenticated(
                "the access token is not valid (expired, malformed, or not signed by this xcore)"
            ) from None
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.clear()
        self._verified[encoded] = claims
        return claims
