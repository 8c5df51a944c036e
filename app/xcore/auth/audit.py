"""The audit trail: security events go to the `audit_event` table and to the log, with context `auth`."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from xcore.db.models import AuditEvent

log = logging.getLogger("xcore.auth")


def record(
    session: Session,
    action: str,
    *,
    actor: str | None,
    target: str | None = None,
    ip: str | None = None,
    level: int = logging.INFO,
    **detail: Any,
) -> None:
    """record adds one audit event to `session` (committed with the change it describes) and logs it."""
    session.add(AuditEvent(action=action, actor=actor, target=target, ip=ip, detail=detail))
    log.log(
        level,
        "%s by %s%s",
        action,
        actor or "anonymous",
        f" on {target}" if target else "",
        extra={"data": {"action": action, "actor": actor, "target": target, "ip": ip, **detail}},
    )
