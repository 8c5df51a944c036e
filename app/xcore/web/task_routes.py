"""The tasks admin API: the registered tasks, running one now, and the run journal (with errors and tracebacks,
which is why all of it is for admins)."""

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, get, post
from litestar.params import FromQuery, JSONBody, Parameter
from litestar.status_codes import HTTP_201_CREATED
from msgspec import Meta, Struct
from sqlalchemy import func, select

from xcore.auth import audit
from xcore.auth.principals import Principal
from xcore.db.models import TaskRun, as_utc
from xcore.plugins.errors import PluginUnavailable
from xcore.tasks.host import Entry, TaskError, TaskHost
from xcore.tasks.schedule import cron_check, next_cron
from xcore.web.context import actor, client_of, service
from xcore.web.schemas import ROW_ID_MAX, Page

TAGS = ["tasks"]
TaskName = Annotated[str, Parameter(max_length=200, description="The task's name, e.g. notes.purge_empty.")]
STATUSES = ("queued", "started", "retrying", "succeeded", "failed", "dropped", "interrupted")


class RunOut(Struct):
    id: int
    name: str
    plugin: str | None
    args: str
    status: str
    attempt: int
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    error: str | None
    pid: int | None


class TaskOut(Struct):
    name: str
    plugin: str | None
    kind: str  # task | periodic
    cron: str | None
    every: float | None
    retries: int | None
    timeout: float | None
    paused: bool
    paused_reason: str | None
    failures: int  # consecutive failed runs
    next_run: datetime | None  # for a periodic task that is not paused
    last_run: RunOut | None
    requires: list[str]  # permissions needed, besides tasks.manage, to run, pause or resume it
    allowed: bool  # whether the user asking may run, pause and resume it


class RunDetail(RunOut):
    traceback: str | None


class RunIn(Struct, forbid_unknown_fields=True):
    args: Annotated[list[Any], Meta(description="Positional arguments (JSON values).")] = []
    kwargs: Annotated[dict[str, Any], Meta(description="Keyword arguments (JSON values).")] = {}


class Queued(Struct):
    run: int


def host_of(request: Request[Any, Any, Any]) -> TaskHost:
    manager = request.app.state.plugins
    tasks: TaskHost | None = manager.tasks if manager is not None else None
    if tasks is None:
        raise PluginUnavailable("tasks are not run in this process")
    return tasks


def run_out(run: TaskRun) -> RunOut:
    return RunOut(
        run.id, run.name, run.plugin_id, run.args, run.status, run.attempt, as_utc(run.enqueued_at),
        _maybe(run.started_at), _maybe(run.finished_at), run.duration, run.error, run.pid,
    )  # fmt: skip


def _maybe(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


@get("/api/admin/tasks", tags=TAGS, summary="List tasks")
async def list_tasks(request: Request[Any, Any, Any]) -> list[TaskOut]:
    """Every registered task, core and plugin, with its schedule and its latest run."""
    who = actor(request, "tasks.read")
    tasks = host_of(request)
    entries = sorted(tasks.registry.values(), key=lambda e: e.name)
    last = await anyio.to_thread.run_sync(lambda: latest_runs(request))
    await anyio.to_thread.run_sync(tasks.refresh_states)
    return [task_out(tasks, entry, last.get(entry.name), who) for entry in entries]


def latest_runs(request: Request[Any, Any, Any], name: str | None = None) -> dict[str, RunOut]:
    """latest_runs maps each task name (or only `name`) to its newest run in the journal."""
    with service(request).sessions() as session:
        newest = select(TaskRun.name, func.max(TaskRun.id))
        if name is not None:
            newest = newest.where(TaskRun.name == name)
        subquery = newest.group_by(TaskRun.name).subquery()
        runs = session.scalars(select(TaskRun).join(subquery, TaskRun.id == subquery.c[1]))
        return {run.name: run_out(run) for run in runs}


def task_out(tasks: TaskHost, entry: Entry, last: RunOut | None, user: Principal) -> TaskOut:
    spec = entry.spec
    state = tasks.states.get(entry.name)
    paused = bool(state and state.paused)
    next_run = None
    if not paused and spec.cron:
        next_run = datetime.fromtimestamp(next_cron(cron_check(spec.cron), time.time()), UTC)
    elif not paused and spec.every:
        start = last.enqueued_at.timestamp() + spec.every if last else time.time()
        next_run = datetime.fromtimestamp(max(start, time.time()), UTC)
    return TaskOut(
        entry.name, entry.plugin_id, "periodic" if spec.cron or spec.every else "task", spec.cron, spec.every,
        spec.retries, spec.timeout, paused, state.reason if state else None, state.failures if state else 0,
        next_run, last, list(spec.requires), may_manage(user, spec.requires),
    )  # fmt: skip


def may_manage(user: Principal, requires: tuple[str, ...]) -> bool:
    """may_manage says whether `user` holds `tasks.manage` and every permission in `requires`."""
    return all(user.holds(permission) for permission in ("tasks.manage", *requires))


@post("/api/admin/tasks/{name:str}/pause", tags=TAGS, summary="Pause a task", status_code=200)
async def pause_task(request: Request[Any, Any, Any], name: TaskName) -> TaskOut:
    """A paused periodic task is not scheduled, and queued runs of a paused task wait. Survives restarts.
    A task that acts on something guarded (`requires`, e.g. xcore.backup and `backups.manage`) needs that
    permission too, here, to resume and to run it."""
    return await _set_paused(request, name, True)


@post("/api/admin/tasks/{name:str}/resume", tags=TAGS, summary="Resume a task", status_code=200)
async def resume_task(request: Request[Any, Any, Any], name: TaskName) -> TaskOut:
    return await _set_paused(request, name, False)


async def _set_paused(request: Request[Any, Any, Any], name: str, paused: bool) -> TaskOut:
    who = actor(request, "tasks.manage")
    tasks = host_of(request)
    entry = tasks.authorize(name, who)

    def store() -> RunOut | None:
        if paused:
            tasks.pause(name, f"paused by {who.username}")
        else:
            tasks.resume(name)
        with service(request).transaction() as session:
            audit.record(
                session, "task.pause" if paused else "task.resume", actor=who.username, target=name,
                ip=client_of(request).ip,
            )  # fmt: skip
        return latest_runs(request, name).get(name)

    last = await anyio.to_thread.run_sync(store)
    return task_out(tasks, entry, last, who)


@post("/api/admin/tasks/{name:str}/run", tags=TAGS, summary="Run a task now", status_code=HTTP_201_CREATED)
async def run_task(request: Request[Any, Any, Any], name: TaskName, data: JSONBody[RunIn | None] = None) -> Queued:
    """Queues one run of the task with these arguments; the answer is the run's id in the journal. 403 when the
    task `requires` a permission the user does not hold."""
    who = actor(request, "tasks.manage")
    tasks = host_of(request)
    tasks.authorize(name, who)
    body = data or RunIn()
    run = await anyio.to_thread.run_sync(lambda: tasks.enqueue(name, body.args, body.kwargs))
    return Queued(run)


@get("/api/admin/tasks/runs", tags=TAGS, summary="The run journal", sync_to_thread=True)
def list_runs(
    request: Request[Any, Any, Any],
    name: Annotated[str | None, Parameter(max_length=200, description="Runs of this task")] = None,
    status: Annotated[str | None, Parameter(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
    since: FromQuery[datetime | None] = None,
    until: FromQuery[datetime | None] = None,
    page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> Page:
    """Runs, newest first, filtered by task name, status and the time they were queued (ISO 8601)."""
    actor(request, "tasks.read")
    query = select(TaskRun)
    if name:
        query = query.where(TaskRun.name == name)
    if status:
        query = query.where(TaskRun.status == status)
    if since:
        query = query.where(TaskRun.enqueued_at >= as_utc(since))
    if until:
        query = query.where(TaskRun.enqueued_at <= as_utc(until))
    with service(request).sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        runs = session.scalars(query.order_by(TaskRun.id.desc()).offset((page - 1) * per_page).limit(per_page))
        items = [run_out(run) for run in runs]
    return Page(items, total, page, per_page)


@get("/api/admin/tasks/runs/{run_id:int}", tags=TAGS, summary="One run, with its traceback", sync_to_thread=True)
def show_run(request: Request[Any, Any, Any], run_id: Annotated[int, Parameter(ge=1, le=ROW_ID_MAX)]) -> RunDetail:
    actor(request, "tasks.read")
    with service(request).sessions() as session:
        run = session.get(TaskRun, run_id)
        if run is None:
            raise TaskError(f"there is no task run {run_id}")
        return RunDetail(**{f: getattr(run_out(run), f) for f in RunOut.__struct_fields__}, traceback=run.traceback)


def task_handlers() -> list[Any]:
    return [list_tasks, run_task, pause_task, resume_task, list_runs, show_run]
