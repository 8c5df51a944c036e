"""The access guard: every route, core or plugin, passes ACCESS_RULES before its handler runs.

For each request the guard finds the deciding rule (`xcore.auth.rules`). A public rule lets the request
through untouched. Otherwise, until the first account exists the answer is 503 "setup required"; then the
request needs a valid access token, as a Bearer header (API clients) or the `xcore_access` cookie (the
browser UI), from an active user who has what the rule requires. Cookie-authenticated requests also pass
Litestar's CSRF middleware: unsafe methods need the `X-CSRF-Token` header matching the `xcore_csrf` cookie.

The hot path costs a rule lookup, a dict lookup for the verified token, one `stat` for the accounts epoch
and a dict lookup for the user; the database is read only when an account changed (see `auth.principals`).
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from typing import Any

import anyio.to_thread
from litestar.config.csrf import CSRFConfig
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from xcore.auth.errors import Forbidden, NotAuthenticated, SetupRequired
from xcore.auth.rules import Principal
from xcore.auth.service import AuthService
from xcore.auth.tokens import AccessClaims

ACCESS_COOKIE = "xcore_access"
REFRESH_COOKIE = "xcore_refresh"
CSRF_COOKIE = "xcore_csrf"
CSRF_HEADER = "x-csrf-token"


SETUP_MESSAGE = "setup required: create the first account with POST /api/setup (the token is in <data>/setup-token)"


def csrf_config(auth: AuthService) -> CSRFConfig:
    """csrf_config is Litestar's double-submit CSRF setup for cookie sessions, keyed off the data-dir secret."""
    secret = hmac.new(auth.signer_secret.encode(), b"xcore/csrf/v1", hashlib.sha256).hexdigest()
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_samesite="strict",
        cookie_httponly=False,  # the UI's script reads it and echoes it in the header
        cookie_path="/",
    )


def access_guard(auth: AuthService) -> Any:
    """access_guard returns the Litestar middleware factory that guards every route with `auth`'s rules."""
    config = csrf_config(auth)

    def middleware(app: ASGIApp) -> ASGIApp:
        csrf = CSRFMiddleware(app=app, config=config)

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope["path"]
            if "//" in path or (path.endswith("/") and path != "/"):
                path = normalize_path(path)  # exactly as Litestar's router sees it
            # Websockets carry no method: they are checked as GET.
            method: str = scope.get("method", "GET")  # type: ignore[assignment]
            rule = auth.rules.match(path, method)
            if rule.public:
                await app(scope, receive, send)
                return
            if not auth.setup_done and await anyio.to_thread.run_sync(auth.setup_required):
                raise SetupRequired(SETUP_MESSAGE)
            principal, claims, via_cookie = await authenticate(auth, scope)
            if principal.needs_totp_enrollment and not _enrolling(path):
                raise Forbidden(
                    "your role requires two-factor login: enroll with POST /api/me/totp/setup and /api/me/totp/confirm",
                    extra={"totp_enrollment_required": True},
                )
            missing = principal.missing(rule)
            if missing:
                raise Forbidden(
                    f"{method} {path} needs {rule.requirement} "
                    f"(access rule {rule.pattern or 'default: login required'}); you lack {', '.join(missing)}"
                )
            scope["user"] = principal
            scope["auth"] = claims
            if via_cookie:
                await csrf(scope, receive, send)
            else:
                await app(scope, receive, send)

        return guarded

    return middleware


def _enrolling(path: str) -> bool:
    return path == "/api/me" or path.startswith("/api/me/totp/")


async def authenticate(auth: AuthService, scope: Scope) -> tuple[Principal, AccessClaims, bool]:
    """authenticate returns (principal, claims, came_from_cookie) or raises NotAuthenticated saying why."""
    token, via_cookie = credentials(scope)
    if token is None:
        raise NotAuthenticated("log in first: send an access token as 'Authorization: Bearer <token>'")
    claims = auth.signer.verify(token)
    hit, principal = auth.principals.cached(claims.user_id)
    if not hit:
        principal = await anyio.to_thread.run_sync(auth.principals.load, claims.user_id)
    if principal is None:
        raise NotAuthenticated("the account no longer exists or is deactivated")
    if principal.token_version != claims.version:
        raise NotAuthenticated("the session has ended (logout, password change or revocation); log in again")
    if claims.family in principal.revoked_families:
        raise NotAuthenticated("this login was ended because its refresh token was used twice; log in again")
    return principal, claims, via_cookie


def credentials(scope: Scope) -> tuple[str | None, bool]:
    """credentials finds the access token: the Authorization header first, else the access cookie."""
    cookie_header = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthenticated("the Authorization header must be 'Bearer <access token>'")
            return token.strip(), False
        if name == b"cookie":
            cookie_header = value
    if cookie_header is not None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header.decode("latin-1"))
        except Exception:  # http.cookies raises CookieError, or worse, on hostile headers
            return None, False
        morsel = jar.get(ACCESS_COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value, True
    return None, False
