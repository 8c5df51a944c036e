"""The core tables. Later features add theirs here, each with an Alembic revision in `migrations/versions/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base is the declarative base of every core table; `Base.metadata` is Alembic's target."""


class PluginState(Base):
    """PluginState is what the host remembers about one plugin id across restarts."""

    __tablename__ = "plugin_state"

    plugin_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(64))
    # active | disabled | failed | superseded (DESIGN.md, "Lifecycle and guarantees")
    state: Mapped[str] = mapped_column(String(16), default="active")
    enabled: Mapped[bool] = mapped_column(default=True)
    error: Mapped[str | None] = mapped_column(Text)
    bundle_sha256: Mapped[str | None] = mapped_column(String(64))
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
