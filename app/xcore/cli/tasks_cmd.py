"""`xcore tasks list | run | history`: the task scheduler from the command line, while the server runs or not.

They read and write the data directory's database and task queue directly. `list` shows what the server
registered the last time it ran (the CLI loads no plugin); `run` queues a run that the server's consumer picks up
within a fraction of a second (or at its next start).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from xcore.cli.options import data_dir_option, echo_table, migrated_runtime
from xcore.cli.output import echo

if TYPE_CHECKING:
    from xcore.db.models import TaskRun

# SQLAlchemy and the models are imported inside the commands, so `xcore --help` stays fast.

STATUSES = ("queued", "started", "retrying", "succeeded", "failed", "dropped", "interrupted")


@click.group()
def tasks() -> None:
    """See, run and follow tasks."""


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@data_dir_option
def list_tasks(as_json: bool, data_dir: str | None) -> None:
    """The tasks the server registered, with their schedule, paused state and latest run."""
    from sqlalchemy import func, select

    from xcore.db.models import TaskRun, TaskState, as_utc

    runtime = migrated_runtime(data_dir)
    with runtime.sessions() as session:
        states = list(session.scalars(select(TaskState).where(TaskState.registered).order_by(TaskState.name)))
        newest = select(TaskRun.name, func.max(TaskRun.id).label("id")).group_by(TaskRun.name).subquery()
        last = {r.name: r for r in session.scalars(select(TaskRun).join(newest, TaskRun.id == newest.c.id))}
    if not states:
        echo("no tasks registered yet: they are recorded when `xcore serve` starts")
        return
    rows: list[dict[str, Any]] = []
    for state in states:
        run = last.get(state.name)
        rows.append(
            {
                "name": state.name,
                "plugin": state.plugin_id,
                "schedule": state.schedule,
                "paused": state.paused,
                "paused_reason": state.reason,
                "last_status": run.status if run else None,
                "last_queued_at": as_utc(run.enqueued_at).isoformat(timespec="seconds") if run else None,
            }
        )
    if as_json:
        echo(json.dumps(rows, indent=2), lines=True)
        return
    echo_table(
        ["NAME", "PLUGIN", "SCHEDULE", "PAUSED", "LAST RUN"],
        [
            [
                r["name"],
                r["plugin"] or "(core)",
                r["schedule"] or "-",
                "yes" if r["paused"] else "no",
                f"{r['last_status']} {r['last_queued_at']}" if r["last_status"] else "-",
            ]
            for r in rows
        ],
    )


@tasks.command("run")
@click.argument("name")
@click.option("--args", "args_json", default="[]", help="Positional arguments as a JSON list, e.g. '[\"a\", 2]'.")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object, e.g. '{\"n\": 2}'.")
@data_dir_option
def run_task(name: str, args_json: str, kwargs_json: str, data_dir: str | None) -> None:
    """Queue a run of task NAME; prints the run id (see `xcore tasks history`)."""
    from xcore.db.models import TaskState
    from xcore.tasks.host import TaskHost

    args = _json(args_json, "--args", list)
    kwargs = _json(kwargs_json, "--kwargs", dict)
    runtime = migrated_runtime(data_dir)
    with runtime.sessions() as session:
        state = session.get(TaskState, name)
    if state is None or not state.registered:
        raise click.UsageError(f"no task named {name!r} is registered; `xcore tasks list` shows the names")
    host = TaskHost(runtime)
    try:
        run = host.submit(name, state.plugin_id, args, kwargs)
    finally:
        host.huey.storage.close()
    echo(f"queued {name} as run {run}")


@tasks.command("history")
@click.option("--name", default=None, help="Runs of this task only.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Runs with this status only.")
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@data_dir_option
def history(name: str | None, status: str | None, limit: int, as_json: bool, data_dir: str | None) -> None:
    """The latest runs, newest first, with their status, duration and error."""
    from sqlalchemy import select

    from xcore.db.models import TaskRun, as_utc

    runtime = migrated_runtime(data_dir)
    query = select(TaskRun)
    if name:
        query = query.where(TaskRun.name == name)
    if status:
        query = query.where(TaskRun.status == status)
    with runtime.sessions() as session:
        runs = list(session.scalars(query.order_by(TaskRun.id.desc()).limit(limit)))
    if as_json:
        echo(json.dumps([_run_dict(r) for r in runs], indent=2), lines=True)
        return
    if not runs:
        echo("no runs")
        return
    echo_table(
        ["RUN", "NAME", "STATUS", "ATTEMPT", "QUEUED", "DURATION", "ERROR"],
        [
            [
                str(r.id),
                r.name,
                r.status,
                str(r.attempt),
                as_utc(r.enqueued_at).isoformat(timespec="seconds"),
                f"{r.duration:.3f}s" if r.duration is not None else "-",
                (r.error or "").splitlines()[0][:80] if r.error else "",
            ]
            for r in runs
        ],
    )


def _run_dict(run: TaskRun) -> dict[str, Any]:
    from xcore.db.models import as_utc

    def when(value: Any) -> str | None:
        return as_utc(value).isoformat() if value is not None else None

    return {
        "id": run.id, "name": run.name, "plugin": run.plugin_id, "args": run.args, "status": run.status,
        "attempt": run.attempt, "enqueued_at": when(run.enqueued_at), "started_at": when(run.started_at),
        "finished_at": when(run.finished_at), "duration": run.duration, "error": run.error, "pid": run.pid,
    }  # fmt: skip


def _json(text: str, option: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{option}: not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, kind):
        raise click.UsageError(f"{option}: must be a JSON {'list' if kind is list else 'object'}")
    return value
