"""The errors of accounts and security. Each carries the HTTP status a web handler answers with.

They live in the core, not in the web layer: the CLI shows the same message as one line.
"""

from __future__ import annotations

from xcore.errors import XcoreError


class AuthError(XcoreError):
    """AuthError is a refused account or security operation; `status` is its HTTP status, `field` the input."""

    status = 400
    title = "Bad request"
    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


class InvalidInput(AuthError):
    """InvalidInput is input that breaks a rule: a weak password, a taken name, an unknown role."""

    status, title = 400, "Invalid input"


class NotAuthenticated(AuthError):
    """NotAuthenticated means no valid credentials: missing, expired, revoked or forged."""

    status, title = 401, "Not authenticated"


class Forbidden(AuthError):
    """Forbidden means valid credentials that do not allow this operation."""

    status, title = 403, "Forbidden"


class NotFound(AuthError):
    """NotFound names the account, role or permission that does not exist."""

    status, title = 404, "Not found"


class Conflict(AuthError):
    """Conflict is a request that cannot apply to the current state (setup already done, name taken)."""

    status, title = 409, "Conflict"


class TooManyAttempts(AuthError):
    """TooManyAttempts is a locked account or client address; `retry_after` says for how many seconds."""

    status, title = 429, "Too many attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class SetupRequired(AuthError):
    """SetupRequired answers every protected route until the first superadmin exists."""

    status, title = 503, "Setup required"


class Busy(AuthError):
    """Busy is a request refused at once because the server is at its limit (the password-hashing pool is full);
    `retry_after` says in how many seconds to try again."""

    status, title = 503, "Busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
