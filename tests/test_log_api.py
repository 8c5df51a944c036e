"""The logs admin API (GET /api/admin/logs and /api/admin/logs/download) on real log files written by xcore's
own logging setup (open_runtime configures it: JSON lines through the shared rotating handler), through the
in-process app: filters, counts, the live-tail cursor across rotations, the download, bad parameters, who may
read, and bounded reads of a 10 MB log.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import Api, create_account, prepare_from_template
from xcore.logs.reader import log_files
from xcore.logs.window import Cursor
from xcore.runtime import open_runtime
from xcore.web.app import build_app

PROBLEM_JSON = "application/problem+json"


def marker() -> str:
    """A word no other line of the log contains, so a test finds its own lines whatever else is logged."""
    return "m" + uuid.uuid4().hex[:10]


def read(api: Api, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api.client.get("/api/admin/logs", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def messages(window: dict[str, Any]) -> list[str]:
    return [item["message"] for item in window["items"]]


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    return dict(response.json())


@pytest.fixture
def admin(accounts_api: Api) -> dict[str, str]:
    return accounts_api.login("ada")


@contextmanager
def small_log_api(data_dir: Path, **environ: str) -> Iterator[Api]:
    """An app on its own data directory, with these settings and the accounts root and ada."""
    runtime = open_runtime(data_dir, environ=environ)
    try:
        prepare_from_template(runtime)
        create_account(runtime, "root", ["superadmin"])
        create_account(runtime, "ada", ["admin"])
        with TestClient(build_app(runtime)) as client:
            yield Api(client, runtime)
    finally:
        runtime.close()


@pytest.fixture
def rotating_api(tmp_path: Path) -> Iterator[Api]:
    """An app whose log file rotates at 10 kB (the smallest size allowed), keeping two rotated files."""
    with small_log_api(
        tmp_path / "data", XCORE_XCORE__LOGS__MAX_BYTES="10000", XCORE_XCORE__LOGS__BACKUP_COUNT="2"
    ) as api:
        yield api


# Filters and counts


def test_the_newest_entries_oldest_first_with_level_context_and_text_filters(
    accounts_api: Api, admin: dict[str, str]
) -> None:
    word = marker()
    logging.getLogger("xcore.plugins.notes").info("%s alpha one", word)
    logging.getLogger("xcore.plugins.notes").info("%s alpha two", word)
    logging.getLogger("xcore.auth").warning("%s beta", word, extra={"data": {"user": "mallory"}})
    logging.getLogger("xcore.tasks").error("%s gamma", word, extra={"data": {"run": 42}})

    everything = read(accounts_api, admin, q=word)
    assert messages(everything) == [f"{word} alpha one", f"{word} alpha two", f"{word} beta", f"{word} gamma"]
    gamma = everything["items"][-1]
    assert (gamma["level"], gamma["context"], gamma["logger"], gamma["run"]) == ("ERROR", "tasks", "xcore.tasks", 42)
    assert gamma["ts"].endswith("Z") and isinstance(gamma["pid"], int)
    assert everything["file"] == str(accounts_api.runtime.log_file)

    assert messages(read(accounts_api, admin, q=word, level="warning")) == [f"{word} beta", f"{word} gamma"]
    assert messages(read(accounts_api, admin, q=word, level="ERROR")) == [f"{word} gamma"]
    assert messages(read(accounts_api, admin, q=word, context="plugins")) == [f"{word} alpha one", f"{word} alpha two"]
    assert messages(read(accounts_api, admin, q=word, context="auth", level="INFO")) == [f"{word} beta"]
    # The text search is case-insensitive and looks at the structured fields too.
    assert messages(read(accounts_api, admin, q=f"{word.upper()} ALPHA TWO")) == [f"{word} alpha two"]
    assert messages(read(accounts_api, admin, q="MALLORY")) == [f"{word} beta"]
    assert read(accounts_api, admin, q=word, context="nothing-logs-here")["items"] == []


def test_limit_keeps_the_newest_matches(accounts_api: Api, admin: dict[str, str]) -> None:
    word = marker()
    for i in range(10):
        logging.getLogger("xcore.plugins").info("%s delta-%d", word, i)
    assert messages(read(accounts_api, admin, q=word, limit=3)) == [f"{word} delta-{i}" for i in (7, 8, 9)]
    assert len(read(accounts_api, admin, q=word, limit=1000)["items"]) == 10


def test_counts_cover_the_whole_current_file_whatever_the_filters(accounts_api: Api, admin: dict[str, str]) -> None:
    for _ in range(3):
        logging.getLogger("xcore.plugins").warning("%s plugin trouble", marker())
    logging.getLogger("xcore.tasks").critical("%s task disaster", marker())
    path = accounts_api.runtime.log_file
    assert path is not None

    unfiltered = read(accounts_api, admin)["counts"]
    filtered = read(accounts_api, admin, level="CRITICAL", context="tasks", q="disaster")["counts"]
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for counts in (unfiltered, filtered):
        # Request lines (context api) may be written between the requests; the others are fixed.
        assert counts["levels"]["CRITICAL"] == sum(e["level"] == "CRITICAL" for e in entries) == 1
        assert counts["contexts"]["plugins"] == sum(e["context"] == "plugins" for e in entries) >= 3
        assert counts["contexts"]["tasks"] == sum(e["context"] == "tasks" for e in entries)
    assert unfiltered["levels"]["WARNING"] >= 3


# The live tail: a cursor


def test_a_cursor_returns_only_what_was_written_after_it(accounts_api: Api, admin: dict[str, str]) -> None:
    word = marker()
    logging.getLogger("xcore.plugins").info("%s before", word)
    first = read(accounts_api, admin, q=word)
    assert messages(first) == [f"{word} before"]

    logging.getLogger("xcore.plugins").info("%s new-1", word)
    logging.getLogger("xcore.tasks").warning("%s new-2", word)
    second = read(accounts_api, admin, q=word, after=first["cursor"])
    assert messages(second) == [f"{word} new-1", f"{word} new-2"]
    assert second["truncated"] is False

    third = read(accounts_api, admin, q=word, after=second["cursor"])
    assert messages(third) == []

    logging.getLogger("xcore.tasks").error("%s new-3", word)
    fourth = read(accounts_api, admin, q=word, level="ERROR", after=third["cursor"])
    assert messages(fourth) == [f"{word} new-3"]
    # The same cursor with other filters: the filters apply to the new lines only.
    assert messages(read(accounts_api, admin, q=word, level="WARNING", after=second["cursor"])) == [f"{word} new-3"]
    assert "counts" in fourth and fourth["file"] == first["file"]


def test_a_cursor_with_more_new_matches_than_the_limit_returns_the_newest(
    accounts_api: Api, admin: dict[str, str]
) -> None:
    word = marker()
    start = read(accounts_api, admin, q=word)["cursor"]
    for i in range(5):
        logging.getLogger("xcore.plugins").info("%s burst-%d", word, i)
    window = read(accounts_api, admin, q=word, after=start, limit=2)
    assert messages(window) == [f"{word} burst-3", f"{word} burst-4"]
    assert window["truncated"] is True


def test_the_cursor_follows_the_log_through_a_rotation(rotating_api: Api) -> None:
    admin = rotating_api.login("ada")
    path = rotating_api.runtime.log_file
    assert path is not None
    word = marker()
    logging.getLogger("xcore.plugins").info("%s start", word)
    start = read(rotating_api, admin, q=word)
    identity_before = path.stat().st_ino

    padding = "x" * 120
    for i in range(80):  # about 16 kB: the file rotates once at 10 kB
        logging.getLogger("xcore.plugins").info("%s line-%02d %s", word, i, padding)
    assert path.stat().st_ino != identity_before, "the log should have rotated"
    assert len(log_files(path)) >= 2

    after = read(rotating_api, admin, q=word, after=start["cursor"], limit=1000)
    assert messages(after) == [f"{word} line-{i:02d} {padding}" for i in range(80)], "no line lost, none twice"
    assert Cursor.decode(after["cursor"]).inode == path.stat().st_ino, "the cursor is now in the new file"

    # Without a cursor right after a rotation, the newest lines come from the rotated file too.
    everything = read(rotating_api, admin, q=word, limit=1000)
    assert messages(everything)[0] == f"{word} start" and len(everything["items"]) == 81
    assert everything["cursor"] == after["cursor"] or Cursor.decode(everything["cursor"]).inode == path.stat().st_ino
    logging.getLogger("xcore.plugins").info("%s after the rotation", word)
    assert messages(read(rotating_api, admin, q=word, after=everything["cursor"])) == [f"{word} after the rotation"]

    # A cursor into a file that is gone (rotated out of the kept ones) starts at the current file's beginning.
    gone = Cursor(1, 1, 10).encode()
    current_lines = [json.loads(line)["message"] for line in path.read_text().splitlines() if word in line]
    assert messages(read(rotating_api, admin, q=word, after=gone, limit=1000)) == current_lines


def test_counts_start_again_after_a_rotation(rotating_api: Api) -> None:
    admin = rotating_api.login("ada")
    path = rotating_api.runtime.log_file
    assert path is not None
    read(rotating_api, admin)  # counted up to here
    identity_before = path.stat().st_ino
    for _ in range(70):
        logging.getLogger("xcore.tasks").warning("%s %s", marker(), "y" * 150)
    assert path.stat().st_ino != identity_before, "the log should have rotated"
    counts = read(rotating_api, admin)["counts"]
    in_current = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert counts["contexts"]["tasks"] == sum(e["context"] == "tasks" for e in in_current) < 70


# Bad parameters: a 400 that names the parameter


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "LOUD"}, "level"),
        ({"level": "5"}, "level"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "zz-zz-zz"}, "after"),
        ({"after": "1-2-3-4"}, "after"),
        ({"q": "x" * 201}, "q"),
        ({"context": "c" * 101}, "context"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    accounts_api: Api, admin: dict[str, str], params: dict[str, str], field: str
) -> None:
    body = problem(accounts_api.client.get("/api/admin/logs", headers=admin, params=params), 400)
    assert [e["field"] for e in body["errors"]] == [field], body
    assert field in body["detail"], body


# The download


def test_download_is_the_current_log_file_as_an_attachment(accounts_api: Api, admin: dict[str, str]) -> None:
    word = marker()
    logging.getLogger("xcore.plugins").warning("%s for the download", word)
    path = accounts_api.runtime.log_file
    assert path is not None
    response = accounts_api.client.get("/api/admin/logs/download", headers=admin)
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="xcore-') and disposition.endswith('.log"'), disposition
    assert int(response.headers["content-length"]) == len(response.content)
    assert path.read_bytes().startswith(response.content), "the file as it was when the download started"
    lines = [json.loads(line) for line in response.content.decode().splitlines()]
    assert any(e["message"] == f"{word} for the download" for e in lines)

    root = accounts_api.login("root")
    audit = accounts_api.client.get("/api/admin/audit", headers=root, params={"action": "logs.download"}).json()
    assert [(e["actor"], e["target"]) for e in audit["items"]] == [("ada", "xcore.log")]


def test_without_a_log_file_the_api_says_which_setting_turns_it_off(tmp_path: Path) -> None:
    with small_log_api(tmp_path / "data", XCORE_XCORE__LOGS__FILE="") as api:
        admin = api.login("ada")
        for url in ("/api/admin/logs", "/api/admin/logs/download"):
            body = problem(api.client.get(url, headers=admin), 404)
            assert "xcore.logs.file" in body["detail"]


def test_before_the_first_line_is_written_the_window_is_empty_and_the_cursor_works(tmp_path: Path) -> None:
    with small_log_api(tmp_path / "data") as api:
        admin = api.login("ada")
        path = api.runtime.log_file
        assert path is not None
        path.unlink()  # as on a fresh data directory, before anything was logged
        window = read(api, admin)
        assert (window["items"], window["counts"]) == ([], {"levels": {}, "contexts": {}})
        problem(api.client.get("/api/admin/logs/download", headers=admin), 404)
        # Another process (a Granian worker) starts the file; this one's handler follows it within a second.
        first = {"ts": "2026-01-01T00:00:00.000Z", "level": "INFO", "context": "system", "message": "the first line"}
        with path.open("a") as handle:
            handle.write(json.dumps(first) + "\n")
        assert "the first line" in messages(read(api, admin, after=window["cursor"]))


# Who may read


@pytest.mark.parametrize("url", ["/api/admin/logs", "/api/admin/logs/download"])
def test_admins_read_the_logs_users_and_strangers_do_not(accounts_api: Api, url: str) -> None:
    assert accounts_api.client.get(url).status_code == 401
    assert problem(accounts_api.client.get(url, headers=accounts_api.login("bob")), 403)
    assert accounts_api.client.get(url, headers=accounts_api.login("ada")).status_code == 200
    assert accounts_api.client.get(url, headers=accounts_api.login("root")).status_code == 200


# Bounded reads of a large log


def test_a_10_mb_log_is_read_in_bounded_time_and_a_poll_reads_only_the_new_lines(
    accounts_api: Api, admin: dict[str, str]
) -> None:
    path = accounts_api.runtime.log_file
    assert path is not None
    line = {"ts": "2026-01-01T00:00:00.000Z", "level": "INFO", "context": "api", "logger": "xcore.api", "pid": 1}
    block = "".join(
        json.dumps({**line, "message": f"GET /bulk/{i} 200 1.0ms", "level": "ERROR" if i % 1000 == 0 else "INFO"})
        + "\n"
        for i in range(50_000)
    )
    with path.open("a") as handle:
        while path.stat().st_size < 9_500_000:  # under the 10 MB rotation size
            handle.write(block)
            handle.flush()
    started = time.perf_counter()
    first = read(accounts_api, admin)  # counts the whole file once
    first_took = time.perf_counter() - started
    assert len(first["items"]) == 200
    assert sum(first["counts"]["levels"].values()) >= sum(1 for _ in path.open("rb")) - 50

    started = time.perf_counter()
    rare = read(accounts_api, admin, q="no line has this text")  # the worst case: the whole read budget
    rare_took = time.perf_counter() - started
    assert rare["items"] == []

    logging.getLogger("xcore.plugins").warning("after the bulk")
    started = time.perf_counter()
    poll = read(accounts_api, admin, after=first["cursor"], context="plugins")
    poll_took = time.perf_counter() - started
    assert messages(poll) == ["after the bulk"]
    # Generous bounds for a shared, slow test machine; typical: 0.5 s, 0.4 s and a few ms.
    print(f"10 MB log: first read {first_took:.3f}s, no match {rare_took:.3f}s, poll {poll_took:.3f}s")
    assert first_took < 10 and rare_took < 10 and poll_took < 2, (first_took, rare_took, poll_took)
    assert poll_took < first_took


@pytest.mark.e2e
def test_live_tail_polls_stay_out_of_the_request_log_unless_they_fail(start_server: Any) -> None:
    """A live tail polls every two seconds: its successful polls are not request lines (they would fill the log it
    shows); a failed one is. Other requests to the same route are logged as usual."""
    import httpx

    from browser import OWNER, OWNER_PASSWORD

    server = start_server()
    server.wait_ready()
    token = (server.data_dir / "setup-token").read_text().strip()
    client = httpx.Client(base_url=server.url, timeout=30)
    user = {"username": OWNER, "password": OWNER_PASSWORD}
    assert client.post("/api/setup", json={"token": token, **user}).status_code == 201
    bearer = client.post("/api/auth/login", json=user).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {bearer}"
    log_file = server.data_dir / "logs" / "xcore.log"

    def request_lines() -> list[int]:
        lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
        return [e["status"] for e in lines if e.get("context") == "api" and e.get("path") == "/api/admin/logs"]

    cursor = client.get("/api/admin/logs").json()["cursor"]
    for _ in range(3):
        answer = client.get("/api/admin/logs", params={"after": cursor})
        assert answer.status_code == 200
        cursor = answer.json()["cursor"]
    assert client.get("/api/admin/logs", params={"after": "not-a-cursor"}).status_code == 400
    deadline = time.monotonic() + 10
    while request_lines() != [200, 400] and time.monotonic() < deadline:
        time.sleep(0.1)  # request lines are written in batches, at most 0.1 s late
    assert request_lines() == [200, 400]
    client.close()
    assert server.stop() == 0
