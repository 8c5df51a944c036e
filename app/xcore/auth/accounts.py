"""Managing accounts and roles, with the rules that stop privilege escalation.

- Nobody grants a role ranked above their own, or a role carrying a permission they do not hold.
- Admins manage only accounts ranked below their own; a superadmin manages everyone.
- The same holds for roles (`xcore.auth.roles`): only roles held by accounts below one's rank.
- The last active superadmin cannot be deleted, deactivated or demoted.

Every change is audited; changes that affect access call `AuthService.accounts_changed` after the commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from xcore.auth import audit
from xcore.auth.builtin import SUPERADMIN, USER
from xcore.auth.errors import Conflict, Forbidden, InvalidInput, NotFound
from xcore.auth.login import revoke_user_sessions
from xcore.auth.password_policy import check_password
from xcore.auth.rules import Principal
from xcore.auth.service import AuthService, Client
from xcore.db.models import RecoveryCode, Role, User, first_token_version

# \Z, not $: `$` also matches before a final newline, which would let "alice\n" through.
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}\Z")
USERNAME_RULE = "3 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
# No spaces and no control characters (C0, DEL, C1): an address is shown in lists, logs and the terminal.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL = re.compile(rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+\Z")


def rank_of(user: User) -> int:
    return max((r.rank for r in user.roles), default=0)


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise InvalidInput(f"a username has {USERNAME_RULE}", field="username")
    return username


def check_email(email: str | None) -> str | None:
    if email is None or email == "":
        return None
    if len(email) > 254 or not EMAIL.match(email):
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    return email


def ensure_name_free(session: Session, username: str, email: str | None, except_id: int | None = None) -> None:
    same = select(User).where(func.lower(User.username) == username.casefold())
    if except_id is None and session.scalar(same) is not None:
        raise Conflict(f"the username {username!r} is taken", field="username")
    if email:
        other = session.scalar(select(User).where(func.lower(User.email) == email.casefold()))
        if other is not None and other.id != except_id:
            raise Conflict(f"the email address {email!r} belongs to another account", field="email")


def find_roles(session: Session, names: Sequence[str], field: str = "roles") -> list[Role]:
    roles = {r.name: r for r in session.scalars(select(Role).where(Role.name.in_(list(names))))}
    for name in names:
        if name not in roles:
            known = ", ".join(session.scalars(select(Role.name).order_by(Role.rank.desc(), Role.name)))
            raise InvalidInput(f"there is no role {name!r} (roles: {known})", field=field)
    return [roles[n] for n in dict.fromkeys(names)]


def check_grantable(actor: Principal | None, roles: Sequence[Role]) -> None:
    """check_grantable refuses roles ranked above the actor's, or carrying permissions the actor lacks.

    `actor` None is the command line of the machine's owner, which may grant anything.
    """
    if actor is None or actor.is_superadmin:
        return
    for role in roles:
        if role.rank > actor.rank:
            raise Forbidden(f"you cannot grant the role {role.name!r}: it ranks above your own")
        lacking = sorted(p.name for p in role.permissions if not actor.holds(p.name))
        if lacking:
            raise Forbidden(
                f"you cannot grant the role {role.name!r}: it carries permissions you lack ({', '.join(lacking)})"
            )


def check_manageable(actor: Principal | None, target: User) -> None:
    """check_manageable refuses an admin acting on an account ranked at or above their own (themselves too)."""
    if actor is None or actor.is_superadmin:
        return
    if rank_of(target) >= actor.rank:
        raise Forbidden(
            f"you can only manage accounts ranked below your own; {target.username!r} is not"
            + (" (use /api/me for your own account)" if target.id == actor.id else "")
        )


def _keep_a_superadmin(session: Session, user: User, what: str) -> None:
    """_keep_a_superadmin raises Conflict when `user` is the last active superadmin."""
    if not user.is_active or SUPERADMIN not in {r.name for r in user.roles}:
        return
    others = session.scalar(
        select(func.count(User.id))
        .join(User.roles)
        .where(Role.name == SUPERADMIN, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise Conflict(
            f"{user.username!r} is the last active superadmin and cannot be {what}; make another superadmin first"
        )


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"there is no user with id {user_id}")
    return user


def create_user(
    svc: AuthService,
    actor: Principal | None,
    client: Client,
    *,
    username: str,
    password: str,
    email: str | None = None,
    roles: Sequence[str] = (USER,),
    is_active: bool = True,
    action: str = "user.created",
) -> User:
    """create_user checks the name, the password and the roles, then creates the account."""
    check_username(username)
    email = check_email(email)
    check_password(password, svc.secure.password, username=username, email=email, field="password")
    password_hash = svc.hashing.hash(password)  # before the transaction: no connection waits on argon2
    with svc.transaction() as session:
        ensure_name_free(session, username, email)
        granted = find_roles(session, roles or [USER])
        check_grantable(actor, granted)
        user = User(
            username=username,
            email=email,
            password_hash=password_hash,
            is_active=is_active,
            token_version=first_token_version(),
            totp_enabled=False,
            roles=granted,
        )
        session.add(user)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"the username {username!r} or its email address is taken", field="username") from None
        audit.record(
            session,
            action,
            actor=actor.username if actor else (username if action == "setup.completed" else "command line"),
            target=username,
            ip=client.ip,
            roles=[r.name for r in granted],
        )
    svc.accounts_changed()
    return user


def update_user(
    svc: AuthService,
    actor: Principal,
    client: Client,
    user_id: int,
    *,
    email: str | None = None,
    clear_email: bool = False,
    is_active: bool | None = None,
    password: str | None = None,
) -> User:
    """update_user changes an account below the actor's rank; deactivating ends its sessions."""
    with svc.transaction() as session:
        user = get_user(session, user_id)
        check_manageable(actor, user)
        changed: dict[str, Any] = {}
        if clear_email or email is not None:
            new_email = None if clear_email else check_email(email)
            ensure_name_free(session, user.username, new_email, except_id=user.id)
            user.email = new_email
            changed["email"] = new_email
        if password is not None:
            replace_password(svc, session, user, password, field="password")
            changed["password"] = "changed"
        if is_active is not None and is_active != user.is_active:
            if not is_active:
                _keep_a_superadmin(session, user, "deactivated")
                revoke_user_sessions(session, user)
            user.is_active = is_active
            changed["is_active"] = is_active
        if changed:
            audit.record(session, "user.updated", actor=actor.username, target=user.username, ip=client.ip, **changed)
    svc.accounts_changed()
    return user


def delete_user(svc: AuthService, actor: Principal, client: Client, user_id: int) -> None:
    with svc.transaction() as session:
        user = get_user(session, user_id)
        check_manageable(actor, user)
        _keep_a_superadmin(session, user, "deleted")
        session.delete(user)
        audit.record(session, "user.deleted", actor=actor.username, target=user.username, ip=client.ip)
    svc.accounts_changed()


def set_roles(svc: AuthService, actor: Principal | None, client: Client, user_id: int, names: Sequence[str]) -> User:
    """set_roles replaces a user's roles. The actor must outrank the user and be allowed every role given."""
    if not names:
        raise InvalidInput("give at least one role (user is the least)", field="roles")
    with svc.transaction() as session:
        user = get_user(session, user_id)
        check_manageable(actor, user)
        granted = find_roles(session, names)
        check_grantable(actor, granted)
        before = sorted(r.name for r in user.roles)
        if SUPERADMIN in before and SUPERADMIN not in names:
            _keep_a_superadmin(session, user, "demoted")
        user.roles = granted
        audit.record(
            session,
            "user.roles_changed",
            actor=actor.username if actor else "command line",
            target=user.username,
            ip=client.ip,
            before=before,
            after=sorted(r.name for r in granted),
        )
    svc.accounts_changed()
    return user


def revoke_sessions(svc: AuthService, actor: Principal, client: Client, user_id: int) -> None:
    with svc.transaction() as session:
        user = get_user(session, user_id)
        if user.id != actor.id:
            check_manageable(actor, user)
        revoke_user_sessions(session, user)
        audit.record(session, "sessions.revoked", actor=actor.username, target=user.username, ip=client.ip)
    svc.accounts_changed()


def reset_totp(svc: AuthService, actor: Principal, client: Client, user_id: int) -> None:
    """reset_totp turns 2FA off for a user who lost their device; they enroll again at their next login."""
    with svc.transaction() as session:
        user = get_user(session, user_id)
        check_manageable(actor, user)
        clear_totp(session, user)
        revoke_user_sessions(session, user)
        audit.record(session, "totp.reset", actor=actor.username, target=user.username, ip=client.ip)
    svc.accounts_changed()


def clear_totp(session: Session, user: User) -> None:
    user.totp_enabled, user.totp_secret, user.totp_last_step = False, None, None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def replace_password(svc: AuthService, session: Session, user: User, password: str, *, field: str) -> None:
    """replace_password checks the new password against the policy, stores its hash and ends every session."""
    check_password(password, svc.secure.password, username=user.username, email=user.email, field=field)
    user.password_hash = svc.hashing.hash(password)
    revoke_user_sessions(session, user)


def set_password(svc: AuthService, client: Client, username: str, password: str) -> None:
    """set_password is `xcore user passwd`: the machine's owner sets a password; all sessions end."""
    with svc.transaction() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"there is no user {username!r}")
        replace_password(svc, session, user, password, field="password")
        audit.record(session, "password.changed", actor="command line", target=user.username, ip=client.ip)
    svc.accounts_changed()


def complete_setup(
    svc: AuthService, client: Client, token: str | None, *, username: str, password: str, email: str | None = None
) -> User:
    """complete_setup creates the first superadmin, once. `token` None is `xcore user create` on the machine.

    The token file is claimed by renaming it, so of two racing setups only one proceeds; a failed creation
    (a weak password, say) puts the token back, so the person can try again.
    """
    if not svc.setup_required():
        raise Conflict("setup is already done; log in instead")
    claimed = None
    if token is not None:
        claimed = svc.setup_token.claim(token)
        if claimed is None:
            raise Forbidden("the setup token is wrong or was already used; see <data>/setup-token", field="token")
    try:
        user = create_user(
            svc,
            None,
            client,
            username=username,
            password=password,
            email=email,
            roles=[SUPERADMIN],
            action="setup.completed",
        )
    except BaseException:
        if claimed is not None:
            svc.setup_token.unclaim(claimed)
        raise
    svc.setup_completed()
    if claimed is not None:
        claimed.unlink(missing_ok=True)
    svc.setup_token.remove()
    return user
