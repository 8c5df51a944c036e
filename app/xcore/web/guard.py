"""The access guard: every route, core or plugin, passes ACCESS_RULES before its handler runs.

For each request the guard finds the deciding rule (`xcore.auth.rules`). A public rule lets the request
through untouched. Otherwise, until the first account exists the answer is 503 "setup required"; then the
request needs a valid access token, as a Bearer header (API clients) or the `xcore_access` cookie (the
browser UI), from an active user who has what the rule requires. Cookie-authenticated requests also pass
Litestar's CSRF middleware: unsafe methods need the `X-CSRF-Token` header matching the `xcore_csrf` cookie.

The hot path costs a rule lookup, a dict lookup for the verified token, an 8-byte read of the memory-mapped
accounts epoch and a dict lookup for the user; the database is read only when an account changed (see
`auth.principals`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable
from http.cookies import SimpleCookie

import anyio.to_thread
import msgspec
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send
from litestar.utils import normalize_path

from xcore.auth.errors import AuthError, Forbidden, NotAuthenticated, SetupRequired
from xcore.auth.rules import Principal, Rule
from xcore.auth.service import AuthService
from xcore.auth.tokens import AccessClaims
from xcore.web.calls import direct
from xcore.web.problems import PROBLEM_JSON, auth_problem

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
        exclude_from_csrf_key="",  # the guard runs before routing: there is no route handler to ask
    )


class AccessGuard:
    """AccessGuard is the ASGI layer in front of Litestar's router that applies ACCESS_RULES to every request.

    It sits before routing, so no route can escape it: core, plugin, static, mounted ASGI apps and websockets
    alike, and a path no route serves is refused like any other path no rule opens. (As Litestar middleware it
    would also work, but Litestar then adds a second exception layer to every route, which cost 5% of the
    throughput of the cheapest routes.) A refusal is answered here, as an RFC 9457 problem document.
    """

    def __init__(self, app: ASGIApp, auth: AuthService) -> None:
        self.inner = app  # what an admitted request goes to
        self.app = direct(app)
        self.auth = auth
        self.csrf = CSRFMiddleware(app=app, config=csrf_config(auth))
        self.decided = auth.rules.decided

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The fast path: a path seen before, already normalized, has its deciding rule on record. A public one,
        # and a Bearer token that memory decides (see `admit`), hand the request on without a coroutine of the
        # guard's own: this returns the next layer's awaitable, or the refusal's.
        path = scope["path"]
        method: str = scope.get("method", "GET")  # type: ignore[assignment]  # websockets have none: as GET
        rule = self.decided.get((path, method))
        if rule is not None and (scope.get("root_path") or "//" in path):
            rule = None
        if rule is not None and rule.public:
            return self.app(scope, receive, send)
        try:
            admitted = self.admit(scope, path, method, rule)
        except (AuthError, PermissionDeniedException) as exc:
            return refuse(scope, send, exc)
        if admitted is False:
            return self.app(scope, receive, send)
        return self.guarded(scope, receive, send, admitted)

    async def guarded(self, scope: Scope, receive: Receive, send: Send, admitted: bool | Awaitable[bool]) -> None:
        """guarded finishes what `admit` started: a cookie session passes the CSRF check, and an answer that needs
        the database is awaited. The request is then passed on, or refused."""
        try:
            via_cookie = admitted if type(admitted) is bool else await admitted
            if via_cookie:
                # Litestar's CSRF middleware: safe methods pass (and get the cookie), unsafe ones need the header.
                await self.csrf(scope, receive, send)
                return
        except (AuthError, PermissionDeniedException) as exc:
            await refuse(scope, send, exc)
            return
        await self.app(scope, receive, send)

    def admit(self, scope: Scope, path: str, method: str, rule: Rule | None) -> bool | Awaitable[bool]:
        """admit raises AuthError unless the request may proceed; returns whether it came with a cookie session.

        What memory decides (a verified token of a cached account, after setup) is answered at once, with no
        coroutine of its own; otherwise the answer is an awaitable that reads the database in a thread first.
        `rule` is the deciding rule when the fast path found it, else None and it is found here.
        """
        auth = self.auth
        if rule is None:
            if root := scope.get("root_path"):
                path = path.split(root, maxsplit=1)[-1]
            if "//" in path or (path.endswith("/") and path != "/") or not path.startswith("/"):
                path = normalize_path(path)  # exactly as Litestar's router sees it
            rule = auth.rules.match(path, method)
            if rule.public:
                return False
        if not auth.setup_done:
            return self._admit_from_database(scope, path, method, rule)
        claims, via_cookie, hit, principal = identify(auth, scope)
        if not hit:
            return self._admit_from_database(scope, path, method, rule)
        return self._allow(scope, path, method, rule, checked(principal, claims), claims, via_cookie)

    async def _admit_from_database(self, scope: Scope, path: str, method: str, rule: Rule) -> bool:
        auth = self.auth
        if not auth.setup_done and await anyio.to_thread.run_sync(auth.setup_required):
            raise SetupRequired(SETUP_MESSAGE)
        principal, claims, via_cookie = await authenticate(auth, scope)
        return self._allow(scope, path, method, rule, principal, claims, via_cookie)

    def _allow(
        self, scope: Scope, path: str, method: str, rule: Rule, principal: Principal, claims: AccessClaims, cookie: bool
    ) -> bool:
        """_allow raises Forbidden unless `principal` has what `rule` requires; else it puts the user in the scope."""
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
        return cookie


async def refuse(scope: Scope, send: Send, exc: Exception) -> None:
    """refuse answers a refused request: a problem document over HTTP, a policy-violation close on a websocket."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
        return
    if not isinstance(exc, AuthError):  # the CSRF check
        exc = Forbidden(f"{exc}: send the xcore_csrf cookie's value in the X-CSRF-Token header")
    status, document, headers = auth_problem(exc)
    body = msgspec.json.encode(document)
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _enrolling(path: str) -> bool:
    return path == "/api/me" or path.startswith("/api/me/totp/")


async def authenticate(auth: AuthService, scope: Scope) -> tuple[Principal, AccessClaims, bool]:
    """authenticate returns (principal, claims, came_from_cookie) or raises NotAuthenticated saying why."""
    claims, via_cookie, hit, principal = identify(auth, scope)
    if not hit:
        principal = await anyio.to_thread.run_sync(auth.principals.load, claims.user_id)
    return checked(principal, claims), claims, via_cookie


def identify(auth: AuthService, scope: Scope) -> tuple[AccessClaims, bool, bool, Principal | None]:
    """identify verifies the request's access token and looks its account up in memory: (claims, came from the
    cookie, found in memory, principal). Raises NotAuthenticated without a valid token."""
    token, via_cookie = credentials(scope)
    if token is None:
        raise NotAuthenticated("log in first: send an access token as 'Authorization: Bearer <token>'")
    claims = auth.signer.verify(token)
    hit, principal = auth.principals.cached(claims.user_id)
    return claims, via_cookie, hit, principal


def checked(principal: Principal | None, claims: AccessClaims) -> Principal:
    """checked returns `principal` if the session `claims` describe is still valid; raises NotAuthenticated."""
    if principal is None:
        raise NotAuthenticated("the account no longer exists or is deactivated")
    if principal.token_version != claims.version:
        raise NotAuthenticated("the session has ended (logout, password change or revocation); log in again")
    if claims.family in principal.revoked_families:
        raise NotAuthenticated("this login was ended because its refresh token was used twice; log in again")
    return principal


def credentials(scope: Scope) -> tuple[str | None, bool]:
    """credentials finds the access token: the Authorization header first, else the access cookie."""
    cookie_header = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value[7:].strip() if value[:7].lower() == b"bearer " else b""
            if not token:
                raise NotAuthenticated("the Authorization header must be 'Bearer <access token>'")
            return token.decode("latin-1"), False
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
