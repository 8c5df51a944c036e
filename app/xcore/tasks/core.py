"""The core's own tasks: housekeeping that keeps a long-running xcore small and recoverable.

They are periodic tasks like a plugin's, named `xcore.<function>`, with intervals from `manager.tasks`:

- `xcore.prune_sessions`: refresh tokens past their expiry and login-throttle records no longer in force;
- `xcore.prune_history`: task runs older than `manager.tasks.history_days` and audit events older than
  `manager.tasks.audit_days`;
- `xcore.backup`: a complete backup (`xcore.db.archive`: the database, the plugins, their data and the settings)
  into `migration.backup.backup_directory`, encrypted as `migration.backup.encryption` says, keeping the newest
  `migration.backup.max_backup_files` scheduled ones (a backup of another kind is never pruned to make room;
  not registered when `manager.tasks.backup_every` is 0, or when the database is neither SQLite nor PostgreSQL).
  When the encryption's passphrase or key is missing it fails, saying so, and writes nothing: never a backup in
  the clear instead;
- `xcore.plugin_cache`: deletes extracted bundles no worker has used for a while.

Each requires, to be run, paused or resumed by a user, the permission that guards what it acts on (besides
`tasks.manage`): `xcore.backup` needs `backups.manage` like `POST /api/admin/backups`, and so on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Delete, delete, or_

from xcore.db.models import AuditEvent, LoginThrottle, RefreshToken, TaskRun
from xcore.runtime import Runtime
from xcore.sdk import periodic
from xcore.tasks.host import TaskHost

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
FINISHED = ("succeeded", "failed", "dropped", "interrupted")


def register_core_tasks(host: TaskHost, collect_cache: Callable[[], Any] | None = None) -> None:
    """register_core_tasks adds the core's periodic tasks to `host`."""
    runtime = host.runtime
    settings = runtime.config.manager.tasks
    every = settings.maintenance_every

    @periodic(every=every, retries=0, requires="users.manage")
    def prune_sessions() -> int:
        now = datetime.now(UTC)
        window = timedelta(seconds=runtime.config.secure.lockout.max_delay)
        expired = delete(RefreshToken).where(RefreshToken.expires_at < now)
        stale = delete(LoginThrottle).where(
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
            LoginThrottle.last_failure_at < now - window,
        )
        tokens, throttles = _delete(runtime, expired, stale)
        if tokens or throttles:
            log.info("pruned %d expired refresh token(s), %d login throttle(s)", tokens, throttles, extra=CONTEXT)
        return tokens + throttles

    @periodic(every=every, retries=0, requires="audit.read")
    def prune_history() -> int:
        now = datetime.now(UTC)
        old_runs = delete(TaskRun).where(
            TaskRun.status.in_(FINISHED), TaskRun.enqueued_at < now - timedelta(days=settings.history_days)
        )
        old_events = delete(AuditEvent).where(AuditEvent.at < now - timedelta(days=settings.audit_days))
        runs, events = _delete(runtime, old_runs, old_events)
        if runs or events:
            log.info("pruned %d task run(s), %d audit event(s) past their retention", runs, events, extra=CONTEXT)
        return runs + events

    host.register("xcore.prune_sessions", prune_sessions)
    host.register("xcore.prune_history", prune_history)
    from xcore.db.backup import backup_source

    db = backup_source(runtime.database_url, runtime.database_file)
    if settings.backup_every and db is not None:
        from xcore.db.archive import BackupRefused, configured_secret

        try:
            configured_secret(runtime.config.migration.backup, runtime.data, os.environ)
        except BackupRefused as exc:  # said at the start, and again by every run, which fails
            log.error("scheduled backups will fail: %s", exc, extra=CONTEXT)

        @periodic(every=settings.backup_every, retries=1, requires="backups.manage")
        def backup() -> str:
            from xcore.db.archive import make_archive, places
            from xcore.db.revisions import current_revision

            backups = runtime.config.migration.backup
            try:
                secret = configured_secret(backups, runtime.data, os.environ)
            except BackupRefused as exc:
                log.error("scheduled backup refused: %s", exc, extra=CONTEXT)
                raise
            where = places(runtime.data, runtime.config, db)
            revision = current_revision(runtime.engine)
            # make_archive logs the backup itself
            return str(
                make_archive(where, runtime.backups_dir, revision, backups.max_backup_files, "scheduled", secret).path
            )

        host.register("xcore.backup", backup)
    if collect_cache is not None:

        @periodic(every=every, retries=0, requires="plugins.manage")
        def plugin_cache() -> Any:
            return collect_cache()

        host.register("xcore.plugin_cache", plugin_cache)


def _delete(runtime: Runtime, *statements: Delete) -> list[int]:
    """_delete runs the DELETE statements in one transaction; returns how many rows each removed."""
    with runtime.sessions.begin() as session:
        return [session.execute(statement).rowcount for statement in statements]  # type: ignore[attr-defined]
