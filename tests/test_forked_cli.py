"""The fork server that runs the tests' `xcore` commands (tests/forked_cli.py) answers as `python -m xcore` does."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import database_env, free_port, run_xcore, until


@pytest.mark.parametrize(
    "args",
    [
        ("config", "show", "--json", "--data-dir", "{d}"),  # success, on standard output
        ("plugin", "lst"),  # a usage error: exit 2 and one line on standard error
        ("user", "create", "root", "--role", "nosuchrole", "--data-dir", "{d}"),  # refused after a migration
        ("config", "check", "--data-dir", "{d}/config.json/x"),  # an error that names a path
    ],
)
def test_a_forked_command_answers_as_a_fresh_one(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Exit status, standard output and standard error are the same, byte for byte, as a new interpreter's."""
    answers = []
    for fresh in (True, False):
        folder = tmp_path / ("fresh" if fresh else "forked")
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "config.json").write_text(json.dumps({"server": {"port": 8123}}))
        argv = [a.format(d=folder / "data") for a in args]
        done = run_xcore(*argv, fresh=fresh)
        # The two folders' names, and on PostgreSQL their databases' (`config show` names it), are all that differ.
        names = {"forked": "fresh", **dict.fromkeys(database_env(argv).values(), "DATABASE_URL")}
        answers.append((done.returncode, *(_replace(text, names) for text in (done.stdout, done.stderr))))
    assert answers[0] == answers[1]
    assert answers[0][0] in (0, 1, 2) and (answers[0][1] or answers[0][2])


def test_a_forked_command_has_the_callers_directory_and_only_the_given_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "config.json").write_text(json.dumps({"server": {"port": 8123}}))
    monkeypatch.setenv("XCORE_SERVER__HOST", "0.0.0.0")  # the test process's own environment reaches no command
    done = run_xcore("config", "show", "--json", "--data-dir", "here", env={"XCORE_SERVER__WORKERS": "3"})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["server.workers"] == {"value": 3, "source": "environment variable XCORE_SERVER__WORKERS"}
    assert shown["server.host"] == {"value": "127.0.0.1", "source": "default"}
    assert shown["server.port"] == {"value": 8123, "source": str(tmp_path / "here" / "config.json")}


@pytest.mark.parametrize("fresh", [False, True])
def test_a_command_reads_the_input_it_is_given_and_nothing_without(tmp_path: Path, fresh: bool) -> None:
    """`user create` reads a password from standard input: the one given, or none (end of input) without one."""
    data = ["--data-dir", str(tmp_path / "data")]
    made = run_xcore("user", "create", "ada", "--superadmin", "--password-stdin", *data, input="a long passphrase\n",
                     fresh=fresh)  # fmt: skip
    assert made.returncode == 0, made.stderr
    none = run_xcore("user", "create", "bob", "--superadmin", "--password-stdin", *data, fresh=fresh)
    assert none.returncode != 0 and "Traceback" not in none.stderr, none.stderr
    assert "ada" in run_xcore("user", "list", *data).stdout


@pytest.mark.parametrize("fresh", [False, True])
def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path, fresh: bool) -> None:
    """A command still running at its timeout raises TimeoutExpired, and its process group is gone: a `serve`
    leaves no worker behind, forked or fresh."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        run_xcore("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), timeout=3, fresh=fresh)
    assert time.monotonic() - started < 15
    assert raised.value.cmd[-5:] == ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    again = run_xcore("config", "check", "--data-dir", str(tmp_path / "data"))
    assert again.returncode == 0, again.stderr
    until(lambda: not _listening(port), f"nothing listens on {port}: the server's workers died with it", 10)


def _replace(text: str, names: dict[str, str]) -> str:
    for name, by in names.items():
        text = text.replace(name, by)
    return text


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
