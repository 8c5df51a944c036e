"""The account admin API: /api/admin/users. ACCESS_RULES require admin; handlers check the finer rules."""

from typing import Annotated, Any

from litestar import Request, delete, get, patch, post, put
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from msgspec import UNSET
from sqlalchemy import func, or_, select

from xcore.auth import accounts
from xcore.db.models import User, as_utc
from xcore.web.context import actor, client_of, service
from xcore.web.schemas import ROW_ID_MAX, Page, RolesIn, UserIn, UserOut, UserPatch

TAGS = ["users"]
UserId = Annotated[int, Parameter(ge=1, le=ROW_ID_MAX, description="The user's id.")]


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        is_active=user.is_active,
        roles=[r.name for r in user.roles],
        totp_enabled=user.totp_enabled,
        created_at=as_utc(user.created_at),
        last_login_at=as_utc(user.last_login_at) if user.last_login_at else None,
    )


@get("/api/admin/users", sync_to_thread=True, tags=TAGS, summary="List users")
def list_users(
    request: Request[Any, Any, Any],
    page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Parameter(ge=1, le=500)] = 50,
    q: Annotated[str | None, Parameter(max_length=100, description="Part of a username or email.")] = None,
) -> Page:
    """One page of accounts, by username; `q` filters on username and email."""
    actor(request, "users.read")
    query = select(User)
    if q:
        like = f"%{q.casefold()}%"
        query = query.where(or_(func.lower(User.username).like(like), func.lower(User.email).like(like)))
    with service(request).sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        users = session.scalars(query.order_by(User.username).offset((page - 1) * per_page).limit(per_page)).all()
        return Page([user_out(u) for u in users], total, page, per_page)


@post("/api/admin/users", sync_to_thread=True, tags=TAGS, status_code=HTTP_201_CREATED, summary="Create a user")
def create_user(request: Request[Any, Any, Any], data: JSONBody[UserIn]) -> UserOut:
    """Creates an account with the given roles (default `user`); nobody grants a role above their own."""
    user = accounts.create_user(
        service(request),
        actor(request, "users.manage"),
        client_of(request),
        username=data.username,
        password=data.password,
        email=data.email,
        roles=data.roles,
        is_active=data.is_active,
    )
    return user_out(user)


@get("/api/admin/users/{user_id:int}", sync_to_thread=True, tags=TAGS, summary="Get a user")
def get_user(request: Request[Any, Any, Any], user_id: UserId) -> UserOut:
    actor(request, "users.read")
    with service(request).sessions() as session:
        return user_out(accounts.get_user(session, user_id))


@patch("/api/admin/users/{user_id:int}", sync_to_thread=True, tags=TAGS, summary="Change a user")
def update_user(request: Request[Any, Any, Any], user_id: UserId, data: JSONBody[UserPatch]) -> UserOut:
    """Changes email, active flag or password of an account below your rank. Deactivating ends its sessions."""
    user = accounts.update_user(
        service(request),
        actor(request, "users.manage"),
        client_of(request),
        user_id,
        email=None if data.email is UNSET else data.email,
        clear_email=data.email is None,
        is_active=None if data.is_active is UNSET else data.is_active,
        password=None if data.password is UNSET else data.password,
    )
    return user_out(user)


@delete("/api/admin/users/{user_id:int}", sync_to_thread=True, tags=TAGS, status_code=HTTP_204_NO_CONTENT)
def delete_user(request: Request[Any, Any, Any], user_id: UserId) -> None:
    """Deletes an account below your rank. The last active superadmin cannot be deleted."""
    accounts.delete_user(service(request), actor(request, "users.manage"), client_of(request), user_id)


@put("/api/admin/users/{user_id:int}/roles", sync_to_thread=True, tags=TAGS, summary="Set a user's roles")
def set_roles(request: Request[Any, Any, Any], user_id: UserId, data: JSONBody[RolesIn]) -> UserOut:
    """Replaces the roles of an account below your rank, with roles at or below your own."""
    user = accounts.set_roles(service(request), actor(request, "users.manage"), client_of(request), user_id, data.roles)
    return user_out(user)


@post(
    "/api/admin/users/{user_id:int}/revoke-sessions",
    sync_to_thread=True,
    tags=TAGS,
    status_code=HTTP_204_NO_CONTENT,
    summary="End all sessions of a user",
)
def revoke_sessions(request: Request[Any, Any, Any], user_id: UserId) -> None:
    """Every access and refresh token of the user stops working at once."""
    accounts.revoke_sessions(service(request), actor(request, "users.manage"), client_of(request), user_id)


@post(
    "/api/admin/users/{user_id:int}/reset-totp",
    sync_to_thread=True,
    tags=TAGS,
    status_code=HTTP_204_NO_CONTENT,
    summary="Turn off a user's 2FA",
)
def reset_totp(request: Request[Any, Any, Any], user_id: UserId) -> None:
    """For a user who lost their authenticator: 2FA is off, recovery codes are gone, sessions end."""
    accounts.reset_totp(service(request), actor(request, "users.manage"), client_of(request), user_id)


def user_handlers() -> list[Any]:
    return [list_users, create_user, get_user, update_user, delete_user, set_roles, revoke_sessions, reset_totp]
