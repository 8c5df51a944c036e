"""First-run setup, sessions and the account rules: /api/setup and /api/auth/{login,desktop,refresh,logout,policy}.
All public by rule."""

from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from xcore.auth import accounts
from xcore.auth import login as sessions
from xcore.auth.desktop import DesktopTokens, desktop_login
from xcore.auth.errors import AuthError, Forbidden, InvalidInput
from xcore.auth.password_policy import describe as describe_password_policy
from xcore.auth.roles import ROLE_NAME_RULE
from xcore.auth.totp import DIGITS as TOTP_DIGITS
from xcore.web.context import client_of, service
from xcore.web.guard import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE, authenticate, check_csrf
from xcore.web.schemas import (
    ROLE_DESCRIPTION_MAX,
    ROLE_NAME_MAX,
    USERNAME_MAX,
    DesktopLoginIn,
    LoginIn,
    NameRuleOut,
    PasswordPolicyOut,
    PolicyOut,
    RefreshIn,
    SessionOut,
    SetupIn,
    SetupState,
    UserOut,
)
from xcore.web.user_routes import user_out

TAGS = ["auth"]
# A request carrying one of these came through a proxy, so its loopback address says nothing of its origin.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


@get("/api/setup", sync_to_thread=True, tags=TAGS, summary="Whether first-run setup is needed")
def setup_state(request: Request[Any, Any, Any]) -> SetupState:
    """`required` is true until the first account exists."""
    auth = service(request)
    return SetupState(required=auth.setup_still_required() or auth.setup_required())


@get("/api/auth/policy", sync_to_thread=False, tags=TAGS, summary="The rules account forms must follow")
def policy(request: Request[Any, Any, Any]) -> PolicyOut:
    """The password policy (`secure.password`) and the rules for usernames, role names and 2FA codes, as the
    server checks them: forms show these instead of keeping their own copy. Public, for the setup page."""
    return PolicyOut(
        password=PasswordPolicyOut(**describe_password_policy(service(request).secure.password)),
        username=NameRuleOut(max_length=USERNAME_MAX, rule=accounts.USERNAME_RULE),
        role_name=NameRuleOut(max_length=ROLE_NAME_MAX, rule=ROLE_NAME_RULE),
        role_description_max_length=ROLE_DESCRIPTION_MAX,
        totp_digits=TOTP_DIGITS,
    )


@post("/api/setup", sync_to_thread=True, tags=TAGS, status_code=HTTP_201_CREATED, summary="Create the first superadmin")
def setup(request: Request[Any, Any, Any], data: JSONBody[SetupIn]) -> UserOut:
    """Creates the first superadmin with the one-time token from `<data>/setup-token`. Works once."""
    user = accounts.complete_setup(
        service(request),
        client_of(request),
        data.token,
        username=data.username,
        password=data.password,
        email=data.email,
    )
    return user_out(user)


@post("/api/auth/login", sync_to_thread=True, tags=TAGS, status_code=200, summary="Log in")
def login(request: Request[Any, Any, Any], data: JSONBody[LoginIn]) -> Response[SessionOut]:
    """Checks the username (or email) and password, and the 2FA code when the account has one.

    Returns an access token and a refresh token, or with `cookie: true` sets them as HttpOnly cookies (for the
    browser UI; send the `csrf_token` back as `X-CSRF-Token` on unsafe requests). 401 answers are the same for
    an unknown user and a wrong password; repeated failures answer 429 with Retry-After, and while the server is
    busy checking other passwords (`secure.hashing`) a login is answered 503 with Retry-After at once.
    """
    if data.totp and data.recovery_code:
        raise InvalidInput("send either totp or recovery_code, not both", field="recovery_code")
    tokens = sessions.login(
        service(request), data.username, data.password, client_of(request), data.totp, data.recovery_code
    )
    return session_response(request, tokens, data.cookie)


@post("/api/auth/desktop", sync_to_thread=True, tags=TAGS, status_code=200, summary="Sign in the desktop window")
def desktop(request: Request[Any, Any, Any], data: JSONBody[DesktopLoginIn]) -> Response[SessionOut]:
    """Signs the desktop owner (the oldest active superadmin) in with the one-time token `xcore desktop` passed
    to its window, and answers as a login with `cookie: true` does.

    Only from 127.0.0.1 or ::1 and never through a proxy (403); a token works once and for two minutes (401
    otherwise); 409 while no account exists.
    """
    if any(h in request.headers for h in PROXY_HEADERS):
        raise Forbidden("the desktop sign-in works only from this machine, not through a proxy")
    tokens = DesktopTokens(request.app.state.runtime.data.root)
    return session_response(request, desktop_login(service(request), tokens, data.token, client_of(request)), True)


@post("/api/auth/refresh", sync_to_thread=True, tags=TAGS, status_code=200, summary="Refresh a session")
def refresh(request: Request[Any, Any, Any], data: JSONBody[RefreshIn | None] = None) -> Response[SessionOut]:
    """Exchanges a refresh token (in the body, or the refresh cookie) for new tokens. Each works once.

    Through the cookie it needs the session's `X-CSRF-Token`, as every other unsafe request of a cookie session."""
    raw = data.refresh_token if data and data.refresh_token else request.cookies.get(REFRESH_COOKIE)
    via_cookie = not (data and data.refresh_token)
    if not raw:
        raise InvalidInput("send refresh_token in the body, or log in with cookie: true", field="refresh_token")
    if via_cookie:
        family = sessions.refresh_family(service(request), raw)
        if family is not None:  # an unknown token is refused by `refresh`, as through the body
            check_csrf(service(request), request.scope, family)
    tokens = sessions.refresh(service(request), raw, client_of(request))
    return session_response(request, tokens, via_cookie)


@post("/api/auth/logout", tags=TAGS, status_code=HTTP_204_NO_CONTENT, summary="Log out")
async def logout(request: Request[Any, Any, Any]) -> Response[None]:
    """Ends every session of the user behind the access token (Bearer or cookie) and clears the cookies.

    Through the cookie session it needs the session's `X-CSRF-Token` (403 without: nothing ends, nothing is
    cleared), so another site cannot log the user out."""
    auth = service(request)
    try:
        principal, claims, via_cookie = await authenticate(auth, request.scope)
    except AuthError:
        principal = None
    else:
        if via_cookie:
            check_csrf(auth, request.scope, claims.family)
    if principal is not None:
        await anyio.to_thread.run_sync(sessions.logout, auth, principal.id, client_of(request))
    response: Response[None] = Response(None, status_code=HTTP_204_NO_CONTENT)
    for name, path in ((ACCESS_COOKIE, "/"), (REFRESH_COOKIE, "/api/auth"), (CSRF_COOKIE, "/")):
        response.delete_cookie(name, path=path)
    return response


def session_response(request: Request[Any, Any, Any], tokens: sessions.Tokens, cookie: bool) -> Response[SessionOut]:
    now = datetime.now(UTC)
    expires_in = int((tokens.access_expires - now).total_seconds())
    refresh_in = int((tokens.refresh_expires - now).total_seconds())
    if not cookie:
        body = SessionOut(
            tokens.user_id, tokens.username, "Bearer", expires_in, refresh_in, tokens.access_token, tokens.refresh_token
        )
        return Response(body, headers={"Cache-Control": "no-store"})
    secure = request.url.scheme == "https"
    signer = service(request).signer
    csrf = signer.csrf_token(signer.verify(tokens.access_token).family)  # bound to this login (see check_csrf)
    strict: dict[str, Any] = {"samesite": "strict", "secure": secure}
    cookies = [
        Cookie(key=ACCESS_COOKIE, value=tokens.access_token, path="/", max_age=expires_in, httponly=True, **strict),
        Cookie(
            key=REFRESH_COOKIE,
            value=tokens.refresh_token,
            path="/api/auth",
            max_age=refresh_in,
            httponly=True,
            **strict,
        ),
        Cookie(key=CSRF_COOKIE, value=csrf, path="/", httponly=False, **strict),
    ]
    body = SessionOut(tokens.user_id, tokens.username, "cookie", expires_in, refresh_in, csrf_token=csrf)
    return Response(body, cookies=cookies, headers={"Cache-Control": "no-store"})


def auth_handlers() -> list[Any]:
    return [setup_state, setup, policy, login, desktop, refresh, logout]
