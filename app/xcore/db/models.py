"""The core tables. Later features add theirs here, each with an Alembic revision in `migrations/versions/`.

Unlike the rest of xcore, this module does not use `from __future__ import annotations`: SQLAlchemy would then
evaluate each `Mapped[...]` string with `eval` as it maps the classes, which slowed importing this module on
every worker's start. The two forward references are quoted.
"""

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Table, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """as_utc makes a datetime read back from SQLite (which drops the zone) aware again; they are stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base is the declarative base of every core table; `Base.metadata` is Alembic's target."""


class PluginState(Base):
    """PluginState is what the host remembers about one plugin id across restarts."""

    __tablename__ = "plugin_state"

    plugin_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(64))
    # active | disabled | failed | superseded (plugins/README.md, "Lifecycle")
    state: Mapped[str] = mapped_column(String(16), default="active")
    enabled: Mapped[bool] = mapped_column(default=True)
    error: Mapped[str | None] = mapped_column(Text)
    bundle_sha256: Mapped[str | None] = mapped_column(String(64))
    # Each version the server last saw: [{version, file, sha256, dev, state, error}], as in the admin API.
    versions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class PluginBundle(Base):
    """PluginBundle is one zip of the plugins folder, stored where every node fetches it: used when several nodes
    share a PostgreSQL database (`xcore.plugins.shared`); empty on SQLite."""

    __tablename__ = "plugin_bundles"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # its file name in the plugins folder
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stored_by: Mapped[str | None] = mapped_column(String(255))  # the node (its data directory) that stored it


class PluginValue(Base):
    """PluginValue is one key of a plugin's key-value store (`ctx.kv`, `xcore.plugins.kv`): in the core database,
    so every node of several sees the same values."""

    __tablename__ = "plugin_kv"

    plugin_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)  # JSON null is stored as "null"
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class SettingOverride(Base):
    """SettingOverride is a setting changed by an admin: for the core (scope "core") or for a plugin (its id)."""

    __tablename__ = "setting_override"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """AuditEvent records who did what to which thing, for the admin's audit trail."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[Any] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


user_roles = Table(
    "user_roles",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

role_permissions = Table(
    "role_permissions",
    Base.metadata,
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column("permission_id", ForeignKey("permissions.id", ondelete="CASCADE"), primary_key=True),
)


def first_token_version() -> int:
    """first_token_version is a new account's token version: a random number, not 1.

    A token names its user by id, and ids come back: SQLite gives the newest account's id to the next account
    once it is deleted, and a restore can bring back an id that another account used meanwhile. A deleted
    account's unexpired access token then carries the new account's id; with every account starting at 1, its
    version would match too, and it would act as the new account until it expires.
    """
    return secrets.randbelow(2**30) + 1  # far below 2**31, PostgreSQL's INTEGER, for the bumps to come


class User(Base):
    """User is one account. `token_version` is in every token; bumping it revokes all of the user's sessions."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    token_version: Mapped[int] = mapped_column(Integer, default=first_token_version)
    # The TOTP secret, encrypted (Fernet, key derived from the data-dir secret); set from enrollment on.
    totp_secret: Mapped[str | None] = mapped_column(String(300))
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    # The last 30 s step whose code was accepted: a code for that step or an earlier one is a replay.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)

    roles: Mapped[list["Role"]] = relationship(secondary=user_roles, lazy="selectin", order_by="Role.rank.desc()")


class Role(Base):
    """Role is a named set of permissions. Built-in roles have a rank; a user's rank is their highest."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    builtin: Mapped[bool] = mapped_column(default=False)
    rank: Mapped[int] = mapped_column(Integer, default=10)
    require_totp: Mapped[bool] = mapped_column(default=False)
    # The rank of whoever last created or changed the role (0: nobody since xcore made it). Only that rank or a
    # higher one may change it again, so an admin cannot undo what a superadmin set.
    changed_by_rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    permissions: Mapped[list["Permission"]] = relationship(
        secondary=role_permissions, lazy="selectin", order_by="Permission.name"
    )


class Permission(Base):
    """Permission is a named right: a core one from `xcore.auth.permissions`, or `<plugin_id>.<name>`."""

    __tablename__ = "permissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # None for the core's permissions; the plugin id for the ones a plugin's manifest declares.
    plugin_id: Mapped[str | None] = mapped_column(String(40))


class RefreshToken(Base):
    """RefreshToken is one refresh token, stored as its SHA-256. Tokens of one login share a `family`."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # Set when the token was exchanged for a new one; using it again is a reuse and revokes the family.
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RecoveryCode(Base):
    """RecoveryCode is one of a user's one-time 2FA recovery codes, stored as its SHA-256."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginThrottle(Base):
    """LoginThrottle counts failed logins for one key (`account:<name>` or `ip:<address>`) and its lock."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskRun(Base):
    """TaskRun is one run of a task, journalled by xcore: Huey forgets a task when it dequeues it, this does not.

    status: queued → started → succeeded | failed | dropped | interrupted (and `retrying` between attempts).
    """

    __tablename__ = "task_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)  # Huey's id of the queued message
    name: Mapped[str] = mapped_column(String(200), index=True)
    plugin_id: Mapped[str | None] = mapped_column(String(40), index=True)
    args: Mapped[str] = mapped_column(Text, default="")  # a summary, at most 500 characters
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)  # the pickled (args, kwargs), to run it again
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)


class TaskState(Base):
    """TaskState is what the host remembers about one task name: paused or not, and why."""

    __tablename__ = "task_state"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(Text)  # why it was paused: by whom, or after which failures
    auto_paused: Mapped[bool] = mapped_column(default=False)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed runs
    # What the running server registered under this name, for `xcore tasks list` (which loads no plugin).
    plugin_id: Mapped[str | None] = mapped_column(String(40))
    schedule: Mapped[str | None] = mapped_column(String(100))  # "every 30s", "cron */5 * * * *", or None
    registered: Mapped[bool] = mapped_column(default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
