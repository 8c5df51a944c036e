"""The admin UI's operations pages against a real xcore with the notes plugin: tasks (run now, with arguments,
pause, resume), the run history and a run's detail, the logs (filters, counts, live tail, download) and the
audit log. Data is arranged through the real API; everything is checked through the page (and the API)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import expect

from browser import SIZES, UiServer, one_h1, pack_example, shot, unlabelled_controls, zip_bytes
from conftest import until as wait_for

pytestmark = pytest.mark.e2e
T = TypeVar("T")
TASK = "notes.purge_empty"
# A task that fails whenever it runs (arguments the function cannot take are refused before a run is queued).
FAILING = "failing.refuse"
FAILING_PLUGIN = {
    "plugin.json": json.dumps({"id": "failing", "version": "1.0.0", "name": "Failing"}),
    "run.py": (
        "from xcore.sdk import task\n\n\n@task()\ndef refuse(ctx, arranged=0):\n"
        "    raise RuntimeError(f\"refused 'arranged'={arranged}\")\n"
    ),
}
PERIODIC = "notes.hourly_purge"
CORE_TASKS = ("xcore.prune_sessions", "xcore.prune_history")
SLOW = 45_000  # ms: a run that fails is retried (3 times, 2 s apart) before it is journalled `failed`


def until(check: Callable[[], T], what: str, timeout: float = 45) -> T:
    return wait_for(check, what, timeout, interval=0.2)


def run_of(server: UiServer, run_id: int) -> dict[str, Any]:
    response = server.api.get(f"/api/admin/tasks/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def enqueue(server: UiServer, name: str, **kwargs: Any) -> int:
    response = server.api.post(f"/api/admin/tasks/{name}/run", json={"args": [], "kwargs": kwargs})
    assert response.status_code == 201, response.text
    return int(response.json()["run"])


def task_of(server: UiServer, name: str) -> dict[str, Any]:
    tasks = server.api.get("/api/admin/tasks").json()
    return next(t for t in tasks if t["name"] == name)


@pytest.fixture(scope="module")
def ops(ui_server: UiServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ops: the module's server with the notes plugin installed (uploaded through the API), one run that succeeded
    and one that failed (wrong keyword argument), so history, logs (warnings of the tasks context) have content."""
    bundle = pack_example("notes", tmp_path_factory.mktemp("bundle"))
    uploaded = ui_server.api.post(
        "/api/admin/plugins", files={"data": (bundle.name, bundle.read_bytes(), "application/zip")}
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["state"] == "active", uploaded.text
    until(lambda: TASK in {t["name"] for t in ui_server.api.get("/api/admin/tasks").json()}, "the notes tasks")
    failing = zip_bytes(FAILING_PLUGIN)
    files = {"data": ("failing-1.0.0.zip", failing, "application/zip")}
    uploaded = ui_server.api.post("/api/admin/plugins", files=files)
    assert uploaded.status_code == 201 and uploaded.json()["state"] == "active", uploaded.text
    until(lambda: FAILING in {t["name"] for t in ui_server.api.get("/api/admin/tasks").json()}, "the failing task")
    good = enqueue(ui_server, TASK)
    bad = enqueue(ui_server, FAILING, arranged=1)
    until(lambda: run_of(ui_server, good)["status"] == "succeeded", f"run {good} to succeed")
    until(lambda: run_of(ui_server, bad)["status"] == "failed", f"run {bad} to fail")
    return {"server": ui_server, "succeeded": good, "failed": bad}


def open_page(page: Any, server: UiServer, path: str, heading: str) -> None:
    page.goto(server.url + path)
    page.get_by_role("heading", level=1, name=heading).wait_for()
    assert one_h1(page) == heading
    assert unlabelled_controls(page) == []


def row(page: Any, text: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_text(text, exact=True))


# --- tasks, runs, run detail ---------------------------------------------------------------------------------------


def test_tasks_page_runs_a_task_and_follows_it(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    open_page(page, server, "/admin/tasks", "Tasks")
    for name in (TASK, PERIODIC, *CORE_TASKS):
        expect(row(page, name)).to_have_count(1)
    periodic = row(page, PERIODIC)
    expect(periodic).to_contain_text("every hour")
    expect(periodic.get_by_role("cell").nth(1)).to_contain_text("periodic")
    expect(periodic.get_by_role("cell").nth(2)).to_contain_text(re.compile(r"^in (\d+ min|1 h)"))
    expect(row(page, TASK).get_by_role("cell").nth(1)).to_have_text("on demandtask")
    expect(row(page, TASK).get_by_role("cell").first).to_have_text(f"{TASK}plugin notes")
    plugin_link = row(page, TASK).get_by_role("link", name="notes", exact=True)
    expect(plugin_link).to_have_attribute("href", "/admin/plugins/notes")
    expect(row(page, CORE_TASKS[0]).get_by_role("cell").first).to_have_text(f"{CORE_TASKS[0]}core")
    # The last run of the failing task is the failed one the fixture arranged, linked to its detail page.
    expect(row(page, FAILING).get_by_role("link", name=f"Run {ops['failed']} of {FAILING}: failed")).to_be_visible()
    shot(page, screenshots, "ops-tasks")
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "ops-tasks-large")
    page.set_viewport_size(SIZES["desktop"])

    row(page, TASK).get_by_role("button", name="Run now").click()
    notice = page.get_by_role("status").filter(has_text="is queued")
    notice.wait_for()
    run_id = int(re.search(r"Run (\d+) of", notice.inner_text()).group(1))  # type: ignore[union-attr]
    assert run_of(server, run_id)["name"] == TASK  # the API journalled the run the page announced

    # The history of the task: the new row reaches `succeeded` on its own (the page refreshes while runs are under
    # way; the server's consumer runs it).
    notice.get_by_role("link", name=f"History of {TASK}").click()
    page.get_by_role("heading", level=1, name="Task runs").wait_for()
    assert page.url.endswith(f"/admin/tasks/runs?name={TASK}")
    expect(page.get_by_label("Task", exact=True)).to_have_value(TASK)
    new_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Run {run_id}", exact=True))
    expect(new_row.locator(".badge")).to_have_text("succeeded", timeout=SLOW)
    assert one_h1(page) == "Task runs"
    assert unlabelled_controls(page) == []
    shot(page, screenshots, "ops-runs")

    new_row.get_by_role("link", name=f"Run {run_id}", exact=True).click()
    page.get_by_role("heading", level=1, name=f"Run {run_id}").wait_for()
    assert one_h1(page) == f"Run {run_id}"
    assert unlabelled_controls(page) == []
    facts = page.locator("dl.stats")
    expect(facts).to_contain_text(TASK)
    expect(facts.locator(".badge")).to_have_text("succeeded")
    expect(page.get_by_role("heading", name="Error")).to_have_count(0)
    shot(page, screenshots, "ops-run")
    page.get_by_role("link", name=f"All runs of {TASK}").click()
    page.wait_for_url(f"**/admin/tasks/runs?name={TASK}")


def test_a_run_with_wrong_arguments_shows_its_error(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    open_page(page, server, "/admin/tasks", "Tasks")
    row(page, TASK).get_by_role("button", name="Run with arguments").click()
    dialog = page.get_by_role("dialog", name=f"Run {TASK} with arguments")
    dialog.wait_for()
    assert unlabelled_controls(page) == []
    # Not JSON, or not an object: said under the field, the dialog stays open, nothing is queued.
    dialog.get_by_label("Keyword arguments (JSON object)").fill("{days: 7")
    dialog.get_by_role("button", name="Run", exact=True).click()
    expect(dialog.get_by_text("Keyword arguments: not valid JSON")).to_be_visible()
    dialog.get_by_label("Keyword arguments (JSON object)").fill("[1]")
    dialog.get_by_role("button", name="Run", exact=True).click()
    expect(dialog.get_by_text("Keyword arguments: must be a JSON object")).to_be_visible()
    shot(page, screenshots, "ops-run-arguments")
    # A keyword the task does not take: refused at once (422), said in the dialog, nothing is queued.
    runs_before = server.api.get("/api/admin/tasks/runs", params={"name": TASK}).json()["total"]
    dialog.get_by_label("Keyword arguments (JSON object)").fill(json.dumps({"no_such_option": True}))
    dialog.get_by_role("button", name="Run", exact=True).click()
    expect(dialog.get_by_role("alert")).to_contain_text("unexpected keyword argument 'no_such_option'")
    assert server.api.get("/api/admin/tasks/runs", params={"name": TASK}).json()["total"] == runs_before
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    # A run that fails in the consumer: queued, retried, then failed with its error and traceback.
    row(page, FAILING).get_by_role("button", name="Run with arguments").click()
    dialog = page.get_by_role("dialog", name=f"Run {FAILING} with arguments")
    dialog.get_by_label("Keyword arguments (JSON object)").fill(json.dumps({"arranged": 2}))
    dialog.get_by_role("button", name="Run", exact=True).click()
    expect(dialog).to_have_count(0)
    notice = page.get_by_role("status").filter(has_text="is queued")
    notice.wait_for()
    run_id = int(re.search(r"Run (\d+) of", notice.inner_text()).group(1))  # type: ignore[union-attr]
    notice.get_by_role("link", name=f"Open run {run_id}").click()
    page.get_by_role("heading", level=1, name=f"Run {run_id}").wait_for()
    expect(page.locator("pre.run-args")).to_have_text("arranged=2")
    # The detail page follows the run until it is failed (after its retries), then shows the error and traceback.
    expect(page.locator("dl.stats .badge")).to_have_text("failed", timeout=SLOW)
    error = page.locator("pre.run-error-text")
    expect(error).to_contain_text("RuntimeError: refused 'arranged'=2")
    expect(page.locator("pre.traceback")).to_contain_text("Traceback (most recent call last)")
    assert run_of(server, run_id)["error"] == error.inner_text()
    assert one_h1(page) == f"Run {run_id}"
    shot(page, screenshots, "ops-run-failed")
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "ops-run-failed-large")


def test_runs_filter_by_status_survives_reload(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    open_page(page, server, "/admin/tasks/runs", "Task runs")
    expect(page.get_by_role("link", name=f"Run {ops['succeeded']}", exact=True)).to_be_visible()
    page.get_by_label("Status", exact=True).select_option("failed")
    page.wait_for_url("**/admin/tasks/runs?status=failed")
    failed = page.get_by_role("link", name=f"Run {ops['failed']}", exact=True)
    expect(failed).to_be_visible()
    expect(page.get_by_role("link", name=f"Run {ops['succeeded']}", exact=True)).to_have_count(0)
    badges = page.locator("tbody .badge")
    assert set(badges.all_inner_texts()) == {"failed"}
    expect(page.get_by_role("row").filter(has=failed)).to_contain_text("refused 'arranged'=1")

    page.get_by_label("Task", exact=True).select_option(FAILING)
    page.wait_for_url(f"**/admin/tasks/runs?name={FAILING}&status=failed")
    page.reload()
    page.get_by_role("heading", level=1, name="Task runs").wait_for()
    expect(page.get_by_label("Status", exact=True)).to_have_value("failed")
    expect(page.get_by_label("Task", exact=True)).to_have_value(FAILING)
    expect(failed).to_be_visible()
    api_total = server.api.get("/api/admin/tasks/runs", params={"name": FAILING, "status": "failed"}).json()["total"]
    expect(page.locator("tbody tr")).to_have_count(api_total)
    shot(page, screenshots, "ops-runs-filtered")

    # A run number that does not exist: the server's problem shows inline.
    page.goto(server.url + "/admin/tasks/runs/999999")
    expect(page.get_by_role("alert")).to_contain_text("there is no task run 999999")
    assert one_h1(page) == "Run 999999"


def test_pause_and_resume_a_task_then_audit(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    open_page(page, server, "/admin/tasks", "Tasks")
    task = row(page, PERIODIC)
    task.get_by_role("button", name="Pause").click()
    expect(task.get_by_role("button", name="Resume")).to_be_visible()
    expect(task).to_contain_text("paused by owner")
    expect(task.get_by_role("button", name="Resume")).to_be_focused()  # the keyboard stays on the row
    state = task_of(server, PERIODIC)
    assert (state["paused"], state["paused_reason"], state["next_run"]) == (True, "paused by owner", None)
    shot(page, screenshots, "ops-tasks-paused")
    page.reload()  # the state is the server's, not the page's
    expect(row(page, PERIODIC).get_by_role("button", name="Resume")).to_be_visible()
    row(page, PERIODIC).get_by_role("button", name="Resume").click()
    expect(row(page, PERIODIC).get_by_role("button", name="Pause")).to_be_visible()
    expect(row(page, PERIODIC)).not_to_contain_text("paused by owner")
    assert task_of(server, PERIODIC)["paused"] is False

    # The audit log has both, newest first; the action filter and the user filter work and live in the URL.
    open_page(page, server, "/admin/audit", "Audit log")
    events = page.locator("tbody tr")
    expect(events.first).to_contain_text("task.resume")
    expect(events.nth(1)).to_contain_text("task.pause")
    expect(events.nth(1)).to_contain_text(PERIODIC)
    shot(page, screenshots, "ops-audit")
    page.get_by_label("Action", exact=True).fill("task.pause")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**/admin/audit?action=task.pause")
    expect(events).to_have_count(1)
    expect(events.first).to_contain_text(PERIODIC)
    expect(events.first).to_contain_text("owner")
    page.get_by_label("Action", exact=True).fill("task.*")
    page.get_by_label("Action", exact=True).press("Enter")
    page.wait_for_url("**/admin/audit?action=task.*")
    expect(events).to_have_count(2)
    page.reload()
    expect(page.get_by_label("Action", exact=True)).to_have_value("task.*")
    expect(events).to_have_count(2)
    # An actor is a link that filters by that user; the setup event is about the owner too.
    api_total = server.api.get("/api/admin/audit", params={"user": "owner"}).json()["total"]
    page.get_by_role("button", name="Clear filters").click()
    page.wait_for_url(re.compile(r"/admin/audit$"))
    events.first.get_by_role("link", name="owner").click()
    page.wait_for_url("**/admin/audit?user=owner")
    expect(page.get_by_label("User", exact=True)).to_have_value("owner")
    expect(page.get_by_text(f"{api_total} events")).to_be_visible()
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "ops-audit-large")


# --- logs ----------------------------------------------------------------------------------------------------------


def test_logs_filters_and_counts(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    open_page(page, server, "/admin/logs", "Logs")
    lines = page.locator("li.log-line")
    expect(lines.first).to_be_visible()
    counts = server.api.get("/api/admin/logs", params={"limit": 1}).json()["counts"]
    assert counts["levels"].get("WARNING"), counts  # the failed run's attempts
    levels = page.get_by_role("group", name="Entries per level")
    expect(levels.get_by_role("button", name=re.compile(r"^INFO \d+$"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^tasks \d+$"))).to_be_visible()
    shot(page, screenshots, "ops-logs")

    page.get_by_label("Minimum level", exact=True).select_option("WARNING")
    page.wait_for_url("**/admin/logs?level=WARNING")
    expect(lines.first).to_be_visible()
    expect(page.locator("li.log-line .badge").filter(has_text=re.compile("^(DEBUG|INFO)$"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile(r"^WARNING \d+$"))).to_have_attribute("aria-pressed", "true")

    page.get_by_label("Context", exact=True).select_option("tasks")
    page.wait_for_url("**/admin/logs?level=WARNING&context=tasks")
    expect(lines.filter(has_text="attempt 1 failed").first).to_be_visible()
    assert set(page.locator("li.log-line .log-context").all_inner_texts()) == {"tasks"}

    page.get_by_label("Search", exact=True).fill("'arranged'=1")
    page.wait_for_url(re.compile(r"q=%27arranged%27%3D1"))
    expect(lines).to_have_count(4)  # the arranged run: three attempts retried (WARNING), the last failed (ERROR)
    page.get_by_label("Search", exact=True).fill("no line says this")
    expect(page.get_by_text("No entry matches these filters.")).to_be_visible()
    page.get_by_label("Search", exact=True).fill("arranged")
    expect(lines.first).to_be_visible()

    page.reload()  # the filters live in the URL
    page.get_by_role("heading", level=1, name="Logs").wait_for()
    expect(page.get_by_label("Minimum level", exact=True)).to_have_value("WARNING")
    expect(page.get_by_label("Context", exact=True)).to_have_value("tasks")
    expect(page.get_by_label("Search", exact=True)).to_have_value("arranged")
    expect(lines.first).to_contain_text("arranged")

    # The counts are buttons: one filters by its context, pressing it again shows every context.
    page.get_by_label("Search", exact=True).fill("")
    page.get_by_label("Minimum level", exact=True).select_option("")
    api_button = page.get_by_role("button", name=re.compile(r"^api \d+$"))
    api_button.click()
    page.wait_for_url("**/admin/logs?context=api")
    expect(page.get_by_label("Context", exact=True)).to_have_value("api")
    expect(api_button).to_have_attribute("aria-pressed", "true")
    expect(lines.first).to_be_visible()
    assert set(page.locator("li.log-line .log-context").all_inner_texts()) == {"api"}
    expect(lines.first).to_contain_text("request_id=")  # a request line's own fields, shown muted
    api_button.click()
    page.wait_for_url(re.compile(r"/admin/logs$"))
    expect(page.get_by_label("Context", exact=True)).to_have_value("")
    assert unlabelled_controls(page) == []
    page.set_viewport_size(SIZES["large"])
    shot(page, screenshots, "ops-logs-large")


def test_logs_live_tail_and_download(ops: dict[str, Any], admin_page: Any, screenshots: Path) -> None:
    page, server = admin_page, ops["server"]
    marker = 700_000 + int(time.time()) % 100_000
    open_page(page, server, f"/admin/logs?context=api&q={marker}", "Logs")
    expect(page.get_by_text("No entry matches these filters.")).to_be_visible()
    page.evaluate("() => { window.sameDocument = true; }")
    live = page.get_by_label("Live", exact=True)
    live.check()
    page.wait_for_url(re.compile(r"live=1"))
    # Cause a new line: a request the server logs (in the `api` context) with the marker in its path.
    assert server.api.get(f"/api/admin/tasks/runs/{marker}").status_code == 404
    line = page.locator("li.log-line").filter(has_text=f"/api/admin/tasks/runs/{marker} 404")
    expect(line).to_have_count(1, timeout=15_000)
    assert page.evaluate("() => window.sameDocument") is True  # appended without a reload
    expect(page.get_by_text("No entry matches these filters.")).to_have_count(0)
    shot(page, screenshots, "ops-logs-live")
    live.uncheck()
    page.wait_for_url(re.compile(r"/admin/logs\?context=api&q=\d+$"))
    assert server.api.get(f"/api/admin/tasks/runs/{marker}").status_code == 404
    page.wait_for_timeout(2500)  # longer than a poll period: checks an absence, which no locator can wait for
    expect(line).to_have_count(1)

    with page.expect_download() as info:
        page.get_by_role("link", name="Download the current log file").click()
    download = info.value
    assert re.fullmatch(r"xcore-\d{8}T\d{6}Z\.log", download.suggested_filename), download.suggested_filename
    text = Path(download.path()).read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(str(marker) in e.get("message", "") for e in entries)
    audit = server.api.get("/api/admin/audit", params={"action": "logs.download"}).json()["items"]
    assert audit and audit[0]["actor"] == "owner"
