"""The access guard: every route, core or plugin, passes ACCESS_RULES before its handler runs.

For each request the guard finds the deciding rule (`xcore.auth.rules`). A public rule lets the request
through untouched. Otherwise, until the first account exists the answer is 503 "setup required"; then the
request needs a valid access token, as a Bearer header (API clients) or the `xcore_access` cookie (the
browser UI), from an active user who has what the rule requires. Cookie-authenticated requests with an unsafe
method also need the `X-CSRF-Token` header to hold their login's CSRF token (`check_csrf`): it is derived from
the session family (`TokenSigner.csrf_token`), so a token of another session, or one set by another site, does
not pass. The login answer gives it, and the readable `xcore_csrf` cookie carries it for the UI's script.
Public routes that act on a cookie session (logout, refresh) check it themselves. On /metrics alone, a scraper
token (`xcore.auth.scrapers`) is accepted too, as a principal that holds `metrics.read` only.

The hot path costs a rule lookup, a dict lookup for the verified token, an 8-byte read of the memory-mapped
accounts epoch and a dict lookup for the user; the database is read only when an account changed (see
`auth.principals`). A Bearer token the guard has admitted before costs less still (`AccessGuard.__call__`): it
remembers the token's claims and the account it was checked against, and while the token has not expired and
the account cache still holds that same account, only the rule is checked again. A cookie session's Cookie
header is parsed once for all its requests (`parse_cookies`), and its login's CSRF token made once
(`AccessGuard.csrf_token`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

import anyio.to_thread
import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from xcore.auth.errors import AuthError, Forbidden, NotAuthenticated, SetupRequired
from xcore.auth.rules import Principal, Rule, request_path
from xcore.auth.scrapers import PATH as SCRAPER_PATH
from xcore.auth.scrapers import PREFIX as SCRAPER_PREFIX
from xcore.auth.service import AuthService
from xcore.auth.tokens import AccessClaims
from xcore.metrics.tally import REFUSED
from xcore.web.bodylimits import BODY_METHODS, shape_checked
from xcore.web.calls import direct
from xcore.web.problems import PROBLEM_JSON, error_problem

ACCESS_COOKIE = "xcore_access"
REFRESH_COOKIE = "xcore_refresh"
CSRF_COOKIE = "xcore_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


BEARERS_KEPT = 10_000  # Bearer tokens a guard remembers (see `AccessGuard.remember`); then it starts again
SETUP_MESSAGE = "setup required: create the first account with POST /api/setup (the token is in <data>/setup-token)"


class AccessGuard:
    """AccessGuard is the ASGI layer in front of Litestar's router that applies ACCESS_RULES to every request.

    It sits before routing, so no route can escape it: core, plugin, static, mounted ASGI apps and websockets
    alike, and a path no route serves is refused like any other path no rule opens. (As Litestar middleware it
    would also work, but Litestar then adds a second exception layer to every route, which measurably slowed
    the cheapest routes.) A refusal is answered here, as an RFC 9457 problem document.
    """

    def __init__(self, app: ASGIApp, auth: AuthService) -> None:
        self.inner = app  # what an admitted request goes to
        self.app: ASGIApp = direct(app)
        self.auth = auth
        self.decided = auth.rules.decided
        self.signer = auth.signer
        self.principals = auth.principals
        # The Authorization header of each Bearer token admitted from memory: its claims and the account it was
        # checked against (see `remember`).
        self.bearers: dict[bytes, tuple[AccessClaims, Principal]] = {}
        self.csrf_tokens: dict[str, str] = {}  # by login family (see `csrf_token`)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The fast path: a path seen before, already normalized, has its deciding rule on record. A public one,
        # and a Bearer token that memory decides (see `admit`), hand the request on without a coroutine of the
        # guard's own: this returns the next layer's awaitable, or the refusal's. `decided` holds only keys in
        # `request_path` form, so the raw path finds a rule only when it is already in that form.
        path = scope["path"]
        method: str = scope.get("method", "GET")  # type: ignore[assignment]  # websockets have none: as GET
        if method in BODY_METHODS:
            receive = shape_checked(receive)  # every JSON body, core or plugin, within web.bodylimits' limits
        rule = self.decided.get((path, method))
        if rule is not None and scope.get("root_path"):
            rule = None
        if rule is not None:
            if rule.public:
                return self.app(scope, receive, send)
            # A Bearer token admitted before (`remember`): what `admit` would check again gives the same answer
            # while the token has not expired and the account cache holds the very account it was checked
            # against (an account change, in any process, or MAX_AGE drops that one), so only the rule is left.
            # The first Authorization header is the one `credentials` reads; anything else goes the long way.
            for name, value in scope["headers"]:
                if name == b"authorization":
                    known = self.bearers.get(value)
                    if known is not None:
                        claims, principal = known
                        if (
                            claims.expires > self.signer.clock()
                            and self.principals.cached(claims.user_id)[1] is principal
                            and not principal.missing(rule)
                        ):
                            scope["user"] = principal
                            scope["auth"] = claims
                            return self.app(scope, receive, send)
                    break
        try:
            admitted = self.admit(scope, path, method, rule)
        except AuthError as exc:
            return refuse(scope, send, exc)
        if admitted is False:
            if "auth" in scope:
                self.remember(scope)
            return self.app(scope, receive, send)
        return self.guarded(scope, receive, send, admitted)

    def remember(self, scope: Scope) -> None:
        """remember keeps the Bearer token of a request just admitted from memory, with the claims and account it
        was checked against, for `__call__` to admit its next requests sooner. An account that must still enroll
        in two-factor login is not kept: what it may reach depends on the path."""
        principal: Principal = scope["user"]
        if principal.needs_totp_enrollment:
            return
        for name, value in scope["headers"]:
            if name == b"authorization":
                if len(self.bearers) >= BEARERS_KEPT:
                    self.bearers.clear()
                self.bearers[value] = (scope["auth"], principal)
                return

    async def guarded(self, scope: Scope, receive: Receive, send: Send, admitted: bool | Awaitable[bool]) -> None:
        """guarded finishes what `admit` started: a cookie session passes the CSRF check, and an answer that needs
        the database is awaited. The request is then passed on, or refused.

        A safe request of a cookie session whose `xcore_csrf` cookie is missing or stale gets it set again."""
        try:
            via_cookie = admitted if type(admitted) is bool else await admitted
            if via_cookie and scope["type"] == ScopeType.HTTP:
                family = scope["auth"].family
                if scope.get("method") not in SAFE_METHODS:
                    check_csrf(self.auth, scope, family)
                elif cookie_value(scope, CSRF_COOKIE) != (token := self.csrf_token(family)):
                    send = with_cookie(send, csrf_cookie(token, scope.get("scheme") == "https"))
        except AuthError as exc:
            await refuse(scope, send, exc)
            return
        await self.app(scope, receive, send)

    def csrf_token(self, family: str) -> str:
        """csrf_token is the signer's CSRF token of the login `family` (`TokenSigner.csrf_token`), remembered: a
        cookie session's every request compares its `xcore_csrf` cookie with it, and an HMAC costs more than
        the rest of the check."""
        token = self.csrf_tokens.get(family)
        if token is None:
            if len(self.csrf_tokens) >= BEARERS_KEPT:
                self.csrf_tokens.clear()
            token = self.csrf_tokens[family] = self.signer.csrf_token(family)
        return token

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
            path = request_path(path)  # exactly as Litestar's router serves it; raises PathRefused
            rule = auth.rules.match(path, method)
            if rule.public:
                return False
        if path == SCRAPER_PATH:
            scraper = self.scraper(scope)
            if scraper is not None:
                return self._allow_scraper(scope, path, method, rule, scraper)
        if not auth.setup_done:
            return self._admit_from_database(scope, path, method, rule)
        claims, via_cookie, hit, principal = identify(auth, scope)
        if not hit:
            return self._admit_from_database(scope, path, method, rule)
        return self._allow(scope, path, method, rule, checked(principal, claims), claims, via_cookie)

    def scraper(self, scope: Scope) -> Principal | None:
        """scraper is the principal of the request's scraper token (`xcore.auth.scrapers`), or None when its
        Authorization header holds none. Raises NotAuthenticated for a scraper token that is not (or no longer)
        valid. Only /metrics asks: anywhere else a scraper token is not an access token."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value[7:].strip() if value[:7].lower() == b"bearer " else b""
                if not token.startswith(SCRAPER_PREFIX.encode()):
                    return None
                principal = self.auth.scrapers.principal(token.decode("latin-1"))
                if principal is None:
                    raise NotAuthenticated(
                        "this scraper token is not valid: revoked, or never made here; make one with "
                        "`xcore metrics token new NAME`"
                    )
                return principal
        return None

    def _allow_scraper(self, scope: Scope, path: str, method: str, rule: Rule, scraper: Principal) -> bool:
        """_allow_scraper raises Forbidden unless the scraper token's principal has what `rule` requires; else it
        puts it in the scope. No claims: the token is neither remembered nor a session."""
        missing = scraper.missing(rule)
        if missing:
            raise Forbidden(
                f"{method} {path} needs {rule.requirement} (access rule {rule.pattern or 'default: login required'}); "
                f"a scraper token holds {', '.join(sorted(scraper.permissions))} only"
            )
        scope["user"] = scraper
        return False

    async def _admit_from_database(self, scope: Scope, path: str, method: str, rule: Rule) -> bool:
        auth = self.auth
        if not auth.setup_done and (auth.setup_still_required() or await anyio.to_thread.run_sync(auth.setup_required)):
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


async def refuse(scope: Scope, send: Send, exc: AuthError) -> None:
    """refuse answers a refused request: a problem document over HTTP, a policy-violation close on a websocket."""
    if scope["type"] == ScopeType.WEBSOCKET:
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
        return
    scope["path_template"] = REFUSED  # the metrics' route label of a request refused before routing
    status, document, headers = error_problem(exc)
    body = msgspec.json.encode(document)
    raw = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def check_csrf(auth: AuthService, scope: Scope, family: str) -> None:
    """check_csrf raises Forbidden unless the request's X-CSRF-Token header holds the CSRF token of the login
    `family` (see `TokenSigner.csrf_token`). For requests that act on a cookie session."""
    expected = auth.signer.csrf_token(family).encode()
    sent = next((value for name, value in scope["headers"] if name == b"x-csrf-token"), None)
    if not sent:
        raise Forbidden(
            "this request uses the cookie session, so it needs the X-CSRF-Token header: send the csrf_token "
            "of the login answer (also in the xcore_csrf cookie)"
        )
    if not hmac.compare_digest(sent.strip(), expected):
        raise Forbidden(
            "the X-CSRF-Token header does not belong to this session: send the csrf_token of this login's answer "
            "(also in the xcore_csrf cookie), or log in again"
        )


def csrf_cookie(token: str, secure: bool) -> str:
    """csrf_cookie is the Set-Cookie value carrying `token` to the UI's script: readable, for the whole site."""
    return f"{CSRF_COOKIE}={token}; Path=/; SameSite=Strict" + ("; Secure" if secure else "")


def with_cookie(send: Send, cookie: str) -> Callable[[Message], Awaitable[None]]:
    """with_cookie is `send` adding a Set-Cookie header with `cookie` to the response's start."""
    header = (b"set-cookie", cookie.encode("latin-1"))

    def sending(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        return send(message)

    return sending


def cookie_value(scope: Scope, name: str) -> str | None:
    """cookie_value is the value of the request's cookie `name`, or None (also for a Cookie header that does
    not parse)."""
    found = [value for header, value in scope["headers"] if header == b"cookie"]  # HTTP/2 may send several
    if not found:
        return None
    cookies = parse_cookies(found[0] if len(found) == 1 else b"; ".join(found))
    return cookies.get(name) if cookies is not None else None


COOKIE_HEADERS_KEPT = 512  # Cookie headers whose parse is remembered (see `parse_cookies`); then it starts again
COOKIE_HEADER_KEPT = 4096  # bytes: a longer header is parsed each time
_parsed_cookies: dict[bytes, dict[str, str] | None] = {}


def parse_cookies(header: bytes) -> dict[str, str] | None:
    """parse_cookies returns the cookies of a Cookie header by name, or None for a header that does not parse.
    Callers must not change the answer: it is remembered for the header's next requests.

    A browser sends the same header with each request, and `http.cookies` parses it about as slowly as Litestar
    serves a whole request, so the last COOKIE_HEADERS_KEPT headers (up to COOKIE_HEADER_KEPT bytes) keep their
    answer: it depends on the header's bytes alone.
    """
    try:
        return _parsed_cookies[header]
    except KeyError:
        pass
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header.decode("latin-1"))
    except Exception:  # http.cookies raises CookieError, or worse, on hostile headers
        cookies = None
    else:
        cookies = {name: morsel.value for name, morsel in jar.items()}
    if len(header) <= COOKIE_HEADER_KEPT:
        if len(_parsed_cookies) >= COOKIE_HEADERS_KEPT:
            _parsed_cookies.clear()
        _parsed_cookies[header] = cookies
    return cookies


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
        cookies = parse_cookies(cookie_header)
        access = cookies.get(ACCESS_COOKIE) if cookies is not None else None
        if access:
            return access, True
    return None, False
