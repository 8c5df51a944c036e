"""Logging: contexts, JSON lines, multi-process rotation, and `xcore logs` filtering."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import re
from pathlib import Path

import pytest

from conftest import run_xcore
from xcore.config.schema import LogsConfig
from xcore.logs import access
from xcore.logs.handler import SharedRotatingFileHandler
from xcore.logs.reader import LogFilter, format_entry, last_entries, log_files, read_entries, stats
from xcore.logs.setup import (
    JsonFormatter,
    build_logging_config,
    configure_logging,
    context_for,
)


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("xcore.api", "api"),
        ("xcore.plugins.weather", "plugins"),
        ("xcore.db", "db"),
        ("sqlalchemy.engine.Engine", "db"),
        ("alembic.runtime.migration", "db"),
        ("xcore.auth", "auth"),
        ("huey.consumer", "tasks"),
        ("xcore.tasks", "tasks"),
        ("_granian", "system"),
        ("xcore.system", "system"),
        ("somebody.else", "system"),
    ],
)
def test_every_record_gets_a_context(name: str, context: str) -> None:
    assert context_for(name) == context


def make_record(
    name: str = "xcore.api", level: int = logging.INFO, msg: str = "hello %s", **extra
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_context_and_structured_data() -> None:
    line = JsonFormatter().format(make_record(data={"status": 200, "request_id": "abc"}))
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["context"] == "api"
    assert entry["level"] == "INFO"
    assert entry["status"] == 200 and entry["request_id"] == "abc"
    assert entry["ts"].endswith("Z")


def test_explicit_context_wins() -> None:
    entry = json.loads(JsonFormatter().format(make_record(name="xcore.system", context="auth")))
    assert entry["context"] == "auth"


def test_exceptions_are_kept_in_the_file() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        import sys

        record = logging.LogRecord("xcore.api", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad thing" in entry["exc"]


def test_unserialisable_data_does_not_lose_the_line() -> None:
    entry = json.loads(JsonFormatter().format(make_record(data={"obj": object()})))
    assert entry["obj"].startswith("<object object")


def _write_lines(path: str, worker: int, count: int) -> None:
    handler = SharedRotatingFileHandler(path, max_bytes=20_000, backup_count=50)
    handler.setFormatter(JsonFormatter())
    for i in range(count):
        handler.emit(make_record(msg=f"worker {worker} line {i} %s"))
    handler.close()


def test_rotation_with_several_writer_processes_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "xcore.log"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_lines, args=(str(path), w, 1500)) for w in range(3)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    files = log_files(path)
    assert len(files) > 3, "the log was rotated"
    entries = list(read_entries(path))
    seen = {e["message"] for e in entries}
    assert len(entries) == 4500 and len(seen) == 4500, "every line is written exactly once, whole"
    # Other writers notice a rotation within about a second (they re-check the file then), so a rotated file
    # can take a little more than max_bytes, more on a loaded machine; a writer that never followed would push
    # its whole share (about 150 kB) into one file.
    for f in files[:-1]:
        assert f.stat().st_size < 20_000 * 5, f"{f.name} grew far past max_bytes"


def test_rotation_keeps_backup_count(tmp_path: Path) -> None:
    small = tmp_path / "small.log"
    handler = SharedRotatingFileHandler(str(small), max_bytes=10_000, backup_count=2)
    handler.setFormatter(JsonFormatter())
    for _ in range(500):
        handler.emit(make_record())
    handler.close()
    assert [p.name for p in log_files(small)] == ["small.log.2", "small.log.1", "small.log"]


def test_configure_logging_writes_console_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "logs" / "xcore.log"
    configure_logging(build_logging_config(LogsConfig(level="DEBUG"), log_file))
    logging.getLogger("xcore.plugins.demo").warning("plugin says %d", 42, extra={"data": {"plugin": "demo"}})
    logging.getLogger("xcore.db").debug("a debug line")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    demo = next(e for e in lines if e["message"] == "plugin says 42")
    assert demo["context"] == "plugins" and demo["plugin"] == "demo" and demo["level"] == "WARNING"
    assert any(e["message"] == "a debug line" and e["context"] == "db" for e in lines)
    err = capsys.readouterr().err
    assert "WARNING plugins  plugin says 42" in err


@pytest.fixture
def sample_log(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "logs" / "xcore.log"
    path.parent.mkdir(parents=True)
    rows = [
        ("INFO", "api", "GET /health 200"),
        ("WARNING", "auth", "wrong password for alice"),
        ("ERROR", "db", "database is locked"),
        ("INFO", "plugins", "weather 1.0.0 loaded"),
        ("DEBUG", "tasks", "tick"),
        ("CRITICAL", "system", "disk full"),
    ]
    older = path.with_name("xcore.log.1")
    older.write_text(
        json.dumps({"ts": "2026-01-01T00:00:00.000Z", "level": "INFO", "context": "system", "message": "started"})
        + "\n"
    )
    with path.open("w") as handle:
        for level, context, message in rows:
            handle.write(
                json.dumps(
                    {
                        "ts": "2026-01-02T00:00:00.000Z",
                        "level": level,
                        "context": context,
                        "message": message,
                        "pid": 1,
                    }
                )
                + "\n"
            )
        handle.write("not json at all\n")
    return path


def test_reader_filters(sample_log: Path) -> None:
    everything = list(read_entries(sample_log))
    assert everything[0]["message"] == "started", "rotated files come first"
    assert len(everything) == 8
    assert [e["message"] for e in everything if LogFilter(level="error")(e)] == [
        "database is locked",
        "disk full",
    ]
    assert [e["message"] for e in everything if LogFilter(context="auth")(e)] == ["wrong password for alice"]
    assert [e["message"] for e in everything if LogFilter(search="ALICE")(e)] == ["wrong password for alice"]
    assert [e["message"] for e in last_entries(sample_log, LogFilter(), 2)] == [
        "disk full",
        "not json at all",
    ]
    levels, contexts, total = stats(everything)
    assert total == 8 and levels["INFO"] == 4 and contexts["system"] == 3
    assert "GET /health 200" in format_entry(everything[1])


def test_cli_logs(sample_log: Path) -> None:
    data = str(sample_log.parent.parent)
    result = run_xcore("logs", "--data-dir", data, "--level", "warning", "-n", "10")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) == 3 and "wrong password" in out[0] and "disk full" in out[2]
    result = run_xcore("logs", "--data-dir", data, "--context", "db")
    assert result.stdout.count("\n") == 1 and "database is locked" in result.stdout
    result = run_xcore("logs", "--data-dir", data, "--search", "weather")
    assert "weather 1.0.0 loaded" in result.stdout and "health" not in result.stdout
    result = run_xcore("logs", "--data-dir", data, "--stats")
    assert "8 entries" in result.stdout
    assert "by level:   DEBUG 1, INFO 4, WARNING 1, ERROR 1, CRITICAL 1" in result.stdout
    assert "by context: api 1, auth 1, db 1, plugins 1, system 3, tasks 1" in result.stdout
    bad = run_xcore("logs", "--data-dir", data, "--context", "nope")
    assert bad.returncode == 2 and "xcore: error: logs: invalid value for '--context'" in bad.stderr


async def _request(path: str, status: int, request_id: str | None = None) -> None:
    """One request through the real wrapper, to an ASGI app that answers `status`."""
    from xcore.web.requestlog import logged
    from xcore.web.switch import Generation

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    headers = [(b"x-request-id", request_id.encode())] if request_id else []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    await logged(Generation(app, 0), scope, None, send)


async def test_request_fast_path_buffers_and_flushes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "logs" / "xcore.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    sink = access.sink()
    assert sink is not None and sink.file is not None and sink.console is not None
    await _request("/a", 200, "r1")
    assert not log_file.exists() or "/a" not in log_file.read_text(), "queued, not yet written"
    await _request('/b"\\\n', 500, "r2")
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [e["path"] for e in lines] == ["/a", '/b"\\\n'], "an error flushes at once, in order; odd paths stay JSON"
    first = lines[0]
    assert set(first) == {
        "ts", "level", "context", "logger", "message", "pid", "method", "path", "status", "duration_ms", "request_id"
    }  # fmt: skip
    assert first["ts"].endswith("Z") and first["ts"][:2] == "20"
    assert (first["level"], first["context"], first["logger"], first["pid"]) == (
        "INFO",
        "api",
        "xcore.api",
        os.getpid(),
    )
    assert (first["method"], first["status"], first["request_id"]) == ("GET", 200, "r1")
    assert first["message"] == f"GET /a 200 {first['duration_ms']:.1f}ms id=r1"
    assert lines[1]["level"] == "ERROR" and lines[1]["status"] == 500
    assert lines[1]["message"].startswith('GET /b"\\\n 500 '), "the message holds the same path, escaped once"
    err = capsys.readouterr().err
    assert "INFO    api      GET /a 200 " in err and "ERROR   api      GET /b" in err
    await _request("/c", 204)
    await asyncio.sleep(access.FLUSH_AFTER * 3)
    assert '"path":"/c"' in log_file.read_text(), "queued lines are written within FLUSH_AFTER"
    await _request("/d", 204)
    access.detach()
    assert '"path":"/d"' in log_file.read_text(), "detaching writes what is queued"


async def test_request_lines_keep_odd_paths_exact_and_bound_their_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines are made from per-(method, path, status) templates: a client's `%` and non-ASCII text come out as
    sent, and the templates a process keeps are bounded (paths are the client's to choose)."""
    monkeypatch.setattr(access, "TEMPLATES", 3)
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    odd = ["/50%off/%s%d", "/caf\u00e9/\u2603", "/a", "/b", "/c", "/50%off/%s%d"]
    for path in odd:
        await _request(path, 200, "same-id")
    access.flush()
    entries = [json.loads(x) for x in log_file.read_text(encoding="utf-8").splitlines()]
    assert [e["path"] for e in entries] == odd
    assert all(e["message"] == f"GET {e['path']} 200 {e['duration_ms']:.1f}ms id=same-id" for e in entries)
    err = capsys.readouterr().err
    assert "GET /50%off/%s%d 200 " in err and "GET /caf\u00e9/\u2603 200 " in err
    sink = access.sink()
    assert sink is not None and len(sink._templates) <= 3


async def test_request_lines_below_the_level_are_not_written(tmp_path: Path) -> None:
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(level="ERROR", console=False), log_file))
    await _request("/fine", 200)
    await _request("/broken", 503)
    access.flush()
    paths = [json.loads(x)["path"] for x in log_file.read_text().splitlines()]
    assert paths == ["/broken"]


def test_request_fast_path_stays_out_of_foreign_logging(tmp_path: Path) -> None:
    configure_logging(build_logging_config(LogsConfig(), tmp_path / "x.log"))
    assert access.sink() is not None
    logging.getLogger().addHandler(logging.NullHandler())
    access.attach()
    assert access.sink() is None


async def test_request_ids_are_unique_and_the_same_in_the_header_the_state_and_the_line(tmp_path: Path) -> None:
    """New ids are made in blocks of 256: across blocks they stay 24 hex digits with the process's prefix, never
    repeat, and each request's id is the one its response header, its handler's state and its log line carry."""
    from xcore.web.requestlog import logged
    from xcore.web.switch import Generation

    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(console=False), log_file))
    seen: list[str] = []  # the ids the handler saw
    sent: list[bytes] = []  # and the response headers carried

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        seen.append(scope["state"]["request_id"])

    async def send(message):  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.start":
            sent.append(dict(message["headers"])[b"x-request-id"])

    generation = Generation(app, 0)
    for _ in range(600):
        await logged(generation, {"type": "http", "method": "GET", "path": "/id", "headers": []}, None, send)
    access.flush()
    ids = seen
    assert len(set(ids)) == 600, "no id repeats, within a block or across blocks"
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert len({i[:12] for i in ids}) == 1, "one prefix per process"
    assert [s.decode() for s in sent] == ids
    assert [json.loads(x)["request_id"] for x in log_file.read_text().splitlines()] == ids


def test_request_lines_carry_the_time_each_request_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch's lines are stamped from one reading of the clocks: each line with its own end, in local time on
    the console and in UTC with truncated milliseconds in the file, as the formatters write other records, also
    when the batch spans a second."""
    import time
    from datetime import UTC, datetime

    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    sink = access.sink()
    assert sink is not None
    capsys.readouterr()
    # perf_counter() 1000.0 is wall time 1765000000.5: ends at 1000.25 and 1000.625 are .750 and, a second later,
    # .125; each request took 1.2 ms.
    monkeypatch.setattr(time, "time", lambda: 1765000000.5)
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0)
    for end, rid in ((1000.25, b"first"), (1000.625, b"second")):
        sink.pending.append((end, end - 0.0012, 200, "GET", "/t", rid))
    sink.flush()
    monkeypatch.undo()
    entries = [json.loads(x) for x in log_file.read_text().splitlines()]
    walls = (1765000000.75, 1765000001.125)
    assert [e["ts"] for e in entries] == [
        datetime.fromtimestamp(w, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{round(w * 1000) % 1000:03d}Z" for w in walls
    ]
    assert [e["ts"][-5:] for e in entries] == [".750Z", ".125Z"]
    assert [e["message"] for e in entries] == ["GET /t 200 1.2ms id=first", "GET /t 200 1.2ms id=second"]
    assert [e["duration_ms"] for e in entries] == [1.2, 1.2]
    assert capsys.readouterr().err.splitlines() == [
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(int(w)))} INFO    api      GET /t 200 1.2ms id={rid}"
        for w, rid in zip(walls, ("first", "second"), strict=True)
    ]


def test_request_line_parts_stay_within_their_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A template keeps the parts of at most DURATIONS durations, and all of them at most TEMPLATE_BYTES: a
    duration or path past those is written exactly all the same."""
    monkeypatch.setattr(access, "DURATIONS", 2)
    monkeypatch.setattr(access, "TEMPLATE_BYTES", 1500)
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(console=False), log_file))
    sink = access.sink()
    assert sink is not None
    written = []
    for n in range(40):
        path, ms = f"/p{n % 7}", (n % 9) + 0.5  # 7 paths, 9 durations
        sink.pending.append((100.0, 100.0 - ms / 1000, 200, "GET", path, b"r%d" % n))
        written.append((path, ms))
        if n % 10 == 9:
            sink.flush()
            assert sink._templates.size <= 1500 and all(len(t) <= 2 for t in sink._templates.values())
    entries = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(e["path"], e["duration_ms"]) for e in entries] == written
    assert all(e["message"] == f"GET {e['path']} 200 {e['duration_ms']:.1f}ms id={e['request_id']}" for e in entries)


def test_cli_logs_follow_sees_new_lines_and_rotation(sample_log: Path) -> None:
    import subprocess
    import threading

    from conftest import CLEAN_ENV, until, xcore_command

    data = str(sample_log.parent.parent)
    follower = subprocess.Popen(
        xcore_command("logs", "-n", "0", "--follow", "--context", "auth", "--data-dir", data),
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    shown: list[str] = []
    reader = threading.Thread(target=lambda: shown.extend(follower.stdout or ()), daemon=True)
    reader.start()

    def append(path: Path, message: str, context: str = "auth") -> None:
        with path.open("a") as handle:
            handle.write(
                json.dumps({"ts": "2026-01-03T00:00:00.000Z", "level": "INFO", "context": context, "message": message})
                + "\n"
            )

    def probe() -> bool:
        """probe appends a line until the follower shows one: it has opened the file and reached its end."""
        append(sample_log, "probe")
        return any("probe" in line for line in shown)

    def showing(text: str) -> bool:
        return any(text in line for line in shown)

    try:
        until(probe, "the follower shows a line appended after it started", interval=0.2)
        append(sample_log, "bob logged in")
        append(sample_log, "a db line", context="db")
        until(lambda: showing("bob logged in"), "the follower shows the new line")
        sample_log.rename(sample_log.with_name("xcore.log.2"))  # rotation, as the handler does it
        append(sample_log, "carol logged in after rotation")
        until(lambda: showing("carol logged in after rotation"), "the follower shows a line of the new file")
    finally:
        follower.terminate()
        follower.wait(10)
        reader.join(10)  # the follower's output has ended with it
        err = follower.stderr.read() if follower.stderr else ""
    assert "a db line" not in "".join(shown)
    assert "Traceback" not in err


def test_console_shows_no_stack_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    try:
        raise KeyError("missing-thing")
    except KeyError:
        logging.getLogger("xcore.db").exception("migration step failed")
    err = capsys.readouterr().err
    assert "migration step failed (KeyError: 'missing-thing'; the traceback is in the log file)" in err
    assert "Traceback" not in err
    entry = json.loads(log_file.read_text().splitlines()[-1])
    assert "Traceback (most recent call last)" in entry["exc"]


# Control characters from users: every human-readable output shows them as escapes, the JSON file keeps them.
FORGED = "mallory\n2026-01-01 00:00:00 INFO    auth     login.succeeded by root"
HOSTILE = [
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\x1b[2J", "\\x1b[2J"),  # clear the screen
    ("\x9b31m", "\\x9b31m"),  # C1 CSI
    ("\x07", "\\x07"),
    ("\x7f", "\\x7f"),
    ("\u202e", "\\u202e"),  # right-to-left override
    ("\u2066", "\\u2066"),  # left-to-right isolate
    ("\u200b", "\\u200b"),  # zero-width space
    ("\u2028", "\\u2028"),  # line separator
    ("\ufeff", "\\ufeff"),
    ("\U000e0041", "\\U000e0041"),  # a tag character
]


@pytest.mark.parametrize(("raw", "shown"), HOSTILE, ids=[repr(r) for r, _ in HOSTILE])
def test_printable_escapes_controls_format_characters_and_separators(raw: str, shown: str) -> None:
    from xcore.terminal import printable

    assert printable(f"a{raw}b") == f"a{shown}b"
    assert printable(f"a{raw}b").isprintable()


def test_printable_keeps_ordinary_text_and_newlines_when_asked() -> None:
    from xcore.terminal import printable

    ordinary = "caf\u00e9 \u2603 \u4e2d\u6587 C:\\Users\\x 50% \u00a0nbsp \U0001f600 \ue000"
    assert printable(ordinary) == ordinary
    assert printable("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"


def test_console_lines_escape_what_users_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    logging.getLogger("xcore.auth").warning("login.failed by %s", FORGED + "\x1b[2J\u202e")
    try:
        raise ValueError("bad\nvalue\x1b]0;title\x07")
    except ValueError:
        logging.getLogger("xcore.db").exception("step %s failed", "x\ny")
    err = capsys.readouterr().err
    assert err.count("\n") == 2, err
    assert (
        "login.failed by mallory\\n2026-01-01 00:00:00 INFO    auth     login.succeeded by root\\x1b[2J\\u202e" in err
    )
    assert "step x\\ny failed (ValueError: bad\\nvalue\\x1b]0;title\\x07; the traceback is in the log file)" in err
    entries = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert entries[0]["message"] == "login.failed by " + FORGED + "\x1b[2J\u202e", "the file keeps the exact value"


async def test_request_lines_escape_control_characters_on_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "x.log"
    configure_logging(build_logging_config(LogsConfig(), log_file))
    await _request("/a\n2026-01-01 00:00:00 INFO    api      GET /admin 200\x1b[2J\u202e", 404)
    access.flush()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "GET /a\\n2026-01-01 00:00:00 INFO    api      GET /admin 200\\x1b[2J\\u202e 404 " in err
    entry = json.loads(log_file.read_text().splitlines()[-1])
    assert entry["path"] == "/a\n2026-01-01 00:00:00 INFO    api      GET /admin 200\x1b[2J\u202e"


def test_log_reader_escapes_every_field(tmp_path: Path) -> None:
    """`xcore logs` prints JSON records as text: messages, fields, unparsed lines and tracebacks are escaped, and a
    traceback's lines are indented so that none can pass for an entry."""
    path = tmp_path / "data" / "logs" / "xcore.log"
    path.parent.mkdir(parents=True)
    stamp = "2026-01-02T00:00:00.000Z"
    forged_traceback = (
        "Traceback (most recent call last):\nValueError: x\n2026-01-01 00:00:00 INFO    auth     forged\x1b[2J"
    )
    records = [
        {"ts": stamp, "level": "WARNING", "context": "auth", "message": "login.failed by " + FORGED,
         "actor": "eve\x1b[2J", "ip": "1.2.3.4"},
        {"ts": stamp, "level": "ERROR", "context": "api", "message": "boom", "exc": forged_traceback},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "raw \x1b[31mred\u202e line\n")
    entries = list(read_entries(path))
    first = format_entry(entries[0])
    assert "\n" not in first and "login.failed by mallory\\n2026-01-01" in first and "actor=eve\\x1b[2J" in first
    second = format_entry(entries[1]).split("\n")
    assert second[0].endswith("ERROR   api      boom")
    assert second[1:] == [
        "    Traceback (most recent call last):",
        "    ValueError: x",
        "    2026-01-01 00:00:00 INFO    auth     forged\\x1b[2J",
    ]
    assert format_entry(entries[2]) == "raw \\x1b[31mred\\u202e line"
    out = run_xcore("logs", "--data-dir", str(path.parent.parent), "-n", "10").stdout
    assert out.count("\n") == 6 and "\x1b" not in out and "\u202e" not in out, out
    assert all(line[:4] in ("2026", "    ", "raw ") for line in out.splitlines()), out


def test_cli_values_are_escaped(tmp_path: Path) -> None:
    """The CLI prints stored values (a plugin's file name, an account's email, a task's name) through one
    helper: a control character in them cannot start a line or drive the terminal, tables stay aligned."""
    import click
    from click.testing import CliRunner

    from xcore.cli.options import echo_table
    from xcore.cli.output import echo

    runner = CliRunner()

    @click.command()
    def show() -> None:
        echo("installed evil\n1.0\x1b[2J as /p/evil\u202e.zip")
        echo_table(("NAME", "STATE"), [("a\nb\x1b", "ok"), ("c", "x\u2028y")])
        echo('{\n  "name": "a\\nb"\n}\x1b', lines=True)

    out = runner.invoke(show).output
    assert out.splitlines() == [
        "installed evil\\n1.0\\x1b[2J as /p/evil\\u202e.zip",
        "NAME      STATE",
        "a\\nb\\x1b  ok",
        "c         x\\u2028y",
        "{",
        '  "name": "a\\nb"',
        "}\\x1b",
    ]


def test_the_cli_prints_only_through_its_escaping_helper() -> None:
    """Every CLI module prints through `xcore.cli.output.echo` (or echo_table): a direct click.echo or print
    would show stored values unescaped."""
    cli = Path(__file__).resolve().parent.parent / "app" / "xcore" / "cli"
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(cli.glob("*.py"))
        if path.name != "output.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "click.echo(" in line or "click.secho(" in line or line.strip().startswith("print(")
    ]
    assert not offenders
