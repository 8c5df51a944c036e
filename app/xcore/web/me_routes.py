"""/api/me: the logged-in user's own account, password and two-factor login."""

from typing import Annotated, Any

from litestar import Request, get, patch, post
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from xcore.auth import accounts, me
from xcore.auth.errors import InvalidInput
from xcore.auth.rules import PathRefused, request_path
from xcore.web.context import actor, client_of, service
from xcore.web.schemas import (
    MeOut,
    MePatch,
    PasswordChange,
    PathAccessOut,
    RecoveryCodesOut,
    TotpConfirmIn,
    TotpDisableIn,
    TotpSetupIn,
    TotpSetupOut,
)
from xcore.web.user_routes import user_out

TAGS = ["me"]


def me_out(request: Request[Any, Any, Any], user_id: int) -> MeOut:
    with service(request).sessions() as session:
        user = accounts.get_user(session, user_id)
        base = user_out(user)
        permissions = sorted({p.name for r in user.roles for p in r.permissions})
        required = any(r.require_totp for r in user.roles)
    return MeOut(
        **{f: getattr(base, f) for f in base.__struct_fields__}, permissions=permissions, totp_required=required
    )


@get("/api/me", sync_to_thread=True, tags=TAGS, summary="My account")
def get_me(request: Request[Any, Any, Any]) -> MeOut:
    """The logged-in user's account, roles and permissions, and whether their roles require 2FA."""
    return me_out(request, actor(request).id)


@patch("/api/me", sync_to_thread=True, tags=TAGS, summary="Change my email address")
def patch_me(request: Request[Any, Any, Any], data: JSONBody[MePatch]) -> MeOut:
    user_id = actor(request).id
    me.change_email(service(request), user_id, client_of(request), data.email)
    return me_out(request, user_id)


@post("/api/me/password", sync_to_thread=True, tags=TAGS, status_code=HTTP_204_NO_CONTENT, summary="Change my password")
def change_password(request: Request[Any, Any, Any], data: JSONBody[PasswordChange]) -> None:
    """Needs the current password. Every session of the account ends, this one too: log in again."""
    me.change_password(
        service(request), actor(request).id, client_of(request), data.current_password, data.new_password
    )


@post("/api/me/totp/setup", sync_to_thread=True, tags=TAGS, status_code=HTTP_200_OK, summary="Start 2FA enrollment")
def totp_setup(request: Request[Any, Any, Any], data: JSONBody[TotpSetupIn]) -> TotpSetupOut:
    """Needs the password. A new TOTP secret, its otpauth:// URI and a QR code (SVG) to scan. 2FA is on after
    /confirm. A wrong password answers 403 and counts towards the lockout, as on the password change and /disable."""
    enrollment = me.start_totp(service(request), actor(request).id, client_of(request), data.password)
    return TotpSetupOut(enrollment.secret, enrollment.uri, enrollment.qr_svg)


@post("/api/me/totp/confirm", sync_to_thread=True, tags=TAGS, status_code=HTTP_200_OK, summary="Turn 2FA on")
def totp_confirm(request: Request[Any, Any, Any], data: JSONBody[TotpConfirmIn]) -> RecoveryCodesOut:
    """Turns 2FA on with a current code and returns 10 one-time recovery codes. They are shown only now."""
    codes = me.confirm_totp(service(request), actor(request).id, client_of(request), data.code)
    return RecoveryCodesOut(codes)


@post("/api/me/totp/disable", sync_to_thread=True, tags=TAGS, status_code=HTTP_204_NO_CONTENT, summary="Turn 2FA off")
def totp_disable(request: Request[Any, Any, Any], data: JSONBody[TotpDisableIn]) -> None:
    """Needs the password and a current code or an unused recovery code."""
    me.disable_totp(service(request), actor(request).id, client_of(request), data.password, data.code)


@get("/api/me/access", sync_to_thread=False, tags=TAGS, summary="Which paths the access rules open to me")
def my_access(
    request: Request[Any, Any, Any],
    path: Annotated[
        list[str],
        Parameter(min_items=1, max_items=50, description="Request paths (GET), e.g. /api/admin/backups; repeatable."),
    ],
) -> dict[str, PathAccessOut]:
    """For each path, whether ACCESS_RULES let the logged-in user GET it, and what its rule requires: the admin UI
    offers the pages whose API is open to the user, and keeps no copy of the rules. Handlers may still refuse
    finer things (an account ranked above yours)."""
    principal = actor(request)
    rules = service(request).rules
    answer: dict[str, PathAccessOut] = {}
    for asked in path:
        try:
            rule = rules.match(request_path(asked), "GET")
        except PathRefused as exc:
            raise InvalidInput(f"{asked[:100]!r}: {exc}", field="path") from None
        open_to_me = rule.public or (not principal.missing(rule) and not principal.needs_totp_enrollment)
        answer[asked] = PathAccessOut(open_to_me, rule.requirement)
    return answer


def me_handlers() -> list[Any]:
    return [get_me, patch_me, change_password, totp_setup, totp_confirm, totp_disable, my_access]
