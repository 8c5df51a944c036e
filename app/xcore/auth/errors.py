"""The errors of accounts and security: `RequestError`s, each class setting the HTTP status it is answered with.

They live in the core, not in the web layer: the CLI shows the same message as one line.
"""

from __future__ import annotations

from xcore.errors import RequestError

CHALLENGE = 'Bearer realm="xcore"'
"""CHALLENGE is the WWW-Authenticate header of a 401: how to authenticate (RFC 9110)."""


class AuthError(RequestError):
    """AuthError is a refused account or security operation; `status` is its HTTP status, `field` the input."""


class InvalidInput(AuthError):
    """InvalidInput is input that breaks a rule: a weak password, a taken name, an unknown role."""

    status = 400


class NotAuthenticated(AuthError):
    """NotAuthenticated means no valid credentials: missing, expired, revoked or forged. The answer says how to
    authenticate (`WWW-Authenticate`)."""

    status = 401
    default_headers = {"WWW-Authenticate": CHALLENGE}


class Forbidden(AuthError):
    """Forbidden means valid credentials that do not allow this operation."""

    status = 403


class NotFound(AuthError):
    """NotFound names the account, role or permission that does not exist."""

    status = 404


class Conflict(AuthError):
    """Conflict is a request that cannot apply to the current state (setup already done, name taken)."""

    status = 409


class TooManyAttempts(AuthError):
    """TooManyAttempts is a locked account or client address; `retry_after` says for how many seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class SetupRequired(AuthError):
    """SetupRequired answers every protected route until the first superadmin exists."""

    status = 503


class Busy(AuthError):
    """Busy is a request refused at once because the server is at its limit (the password-hashing pool is full);
    `retry_after` says in how many seconds to try again."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
