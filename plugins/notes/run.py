"""notes: notes with a title and a body in the plugin's own database, behind the `notes.write` permission.

Reading needs a login (the host's access rules); writing (add, change, delete) also needs `notes.write`, which
the `requires` guard checks on the server whatever a client shows. The page (static/notes.js) lists the notes
for every logged-in user and offers the form and the Delete buttons only to users who hold `notes.write`.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar.exceptions import NotFoundException, ValidationException

from xcore.sdk import Ctx, FromPath, JSONBody, PluginContext, Router, delete, get, periodic, post, put, requires, task

TITLE_MAX = 200
WRITE = [requires("notes.write")]


@dataclass
class NoteIn:
    """NoteIn is the body of POST and PUT: a title (required, not blank) and a body."""

    title: str
    body: str = ""


def on_load(ctx: PluginContext) -> None:
    """on_load creates the notes table on first load; later versions find it with its rows."""
    ctx.db["notes"].create(
        {"id": int, "title": str, "body": str, "created_at": str}, pk="id", not_null={"title"}, if_not_exists=True
    )
    ctx.logger.info("notes %s loaded: %d notes", ctx.version, ctx.db["notes"].count)


@get("/", sync_to_thread=True)
def list_notes(ctx: Ctx) -> list[dict[str, Any]]:
    """list_notes returns every note, oldest first."""
    return list(ctx.db["notes"].rows_where(order_by="id"))


@get("/{note_id:int}", sync_to_thread=True)
def read_note(ctx: Ctx, note_id: FromPath[int]) -> dict[str, Any]:
    """read_note returns one note; 404 when there is none with this id."""
    return _find(ctx, note_id)


@post("/", guards=WRITE, sync_to_thread=True)
def create_note(ctx: Ctx, data: JSONBody[NoteIn]) -> dict[str, Any]:
    """create_note stores a new note and answers 201 with it."""
    row = {**_checked(data), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    note_id = ctx.db["notes"].insert(row).last_pk
    return _find(ctx, note_id)


@put("/{note_id:int}", guards=WRITE, sync_to_thread=True)
def update_note(ctx: Ctx, note_id: FromPath[int], data: JSONBody[NoteIn]) -> dict[str, Any]:
    """update_note replaces a note's title and body; 404 when there is none with this id."""
    _find(ctx, note_id)
    ctx.db["notes"].update(note_id, _checked(data))
    return _find(ctx, note_id)


@delete("/{note_id:int}", guards=WRITE, sync_to_thread=True)
def delete_note(ctx: Ctx, note_id: FromPath[int]) -> None:
    """delete_note deletes a note and answers 204; 404 when there is none with this id."""
    _find(ctx, note_id)
    ctx.db["notes"].delete(note_id)


@task()
def purge_empty(ctx: PluginContext) -> int:
    """purge_empty deletes the notes whose body is blank; returns how many it deleted."""
    return _purge_empty(ctx)


@periodic(every=3600)
def hourly_purge(ctx: PluginContext) -> int:
    """hourly_purge runs purge_empty's cleanup every hour."""
    return _purge_empty(ctx)


def _purge_empty(ctx: PluginContext) -> int:
    with ctx.db.conn:
        cursor = ctx.db.execute("DELETE FROM notes WHERE trim(coalesce(body, '')) = ''")
    return int(cursor.rowcount)


def _find(ctx: PluginContext, note_id: int) -> dict[str, Any]:
    for row in ctx.db["notes"].rows_where("id = ?", [note_id]):
        return dict(row)
    raise NotFoundException(f"there is no note {note_id}")


def _checked(data: NoteIn) -> dict[str, str]:
    """_checked refuses a blank or too long title with 400; the problem's `errors` names the field, so that a
    form shows the message next to it."""
    title = data.title.strip()
    if not title:
        raise _invalid("title", "must not be blank")
    if len(title) > TITLE_MAX:
        raise _invalid("title", f"at most {TITLE_MAX} characters, got {len(title)}")
    return {"title": title, "body": data.body}


def _invalid(field: str, message: str) -> ValidationException:
    return ValidationException(f"{field}: {message}", extra=[{"key": field, "message": message, "source": "body"}])


router = Router("/", route_handlers=[list_notes, read_note, create_note, update_note, delete_note])
