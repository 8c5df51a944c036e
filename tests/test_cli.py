"""The command line's own contract: usage errors are one line, and global options work before or after a command.

The usage-error cases are generated from the command tree itself, so a new command or option is covered
without a new test: every command gets an unknown option, every group an unknown command, every required
argument goes missing, every integer and choice option gets a wrong value, and so on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from conftest import fresh_python, run_xcore
from xcore.cli import cli, main


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """walk yields every command of the tree with the words that reach it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(cli))
LEAVES = [(path, command) for path, command in COMMANDS if not isinstance(command, click.Group)]
GROUPS = [(path, command) for path, command in COMMANDS if isinstance(command, click.Group)]


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden and p.expose_value]


def required_arguments(command: click.Command) -> list[click.Argument]:
    return [p for p in command.params if isinstance(p, click.Argument) and p.required]


def usage_cases() -> Iterator[tuple[list[str], str, str]]:
    """usage_cases yields (argv, what the message must name, the help command it must point to)."""
    for path, command in COMMANDS:
        words = " ".join(("xcore", *path))
        yield [*path, "--no-such-option"], "'--no-such-option'", words
        if isinstance(command, click.Group):
            yield [*path, "no-such-command"], "'no-such-command'", words
            continue
        arguments = required_arguments(command)
        if arguments:
            yield list(path), f"'{arguments[0].human_readable_name}'", words
        if not any(isinstance(p, click.Argument) and p.nargs == -1 for p in command.params):
            filler = ["x"] * sum(1 for p in command.params if isinstance(p, click.Argument))
            yield [*path, *filler, "surplus"], "surplus", words
        for option in options(command):
            flag = option.opts[-1]
            if option.is_flag:
                continue
            yield [*path, flag], f"'{flag}'", words  # the option's value is missing
            if isinstance(option.type, click.types.IntParamType | click.types.FloatParamType):
                yield [*path, flag, "notanumber"], f"'{option.opts[0]}'", words
            if isinstance(option.type, click.Choice):
                yield [*path, flag, "notachoice"], "'notachoice'", words


CASES = list(usage_cases())


def test_the_cases_cover_every_kind_of_usage_error() -> None:
    argvs = [" ".join(argv) for argv, _, _ in CASES]
    assert len(LEAVES) > 20 and len(GROUPS) > 5
    assert "serve --port notanumber" in argvs  # a bad integer
    assert "tasks history --status notachoice" in argvs  # a bad choice
    assert "db restore" in argvs  # a missing argument
    assert "plugin no-such-command" in argvs and "no-such-command" in argvs  # unknown commands
    assert "plugin list surplus" in argvs  # an extra argument


@pytest.mark.parametrize(("argv", "named", "help_of"), CASES, ids=[" ".join(argv) for argv, _, _ in CASES])
def test_every_usage_error_is_one_line_naming_the_culprit_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str, help_of: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xcore: error: ")
    assert named in lines[0]
    assert lines[0].endswith(f" (see `{help_of} --help`)")
    assert "Usage:" not in err and "Traceback" not in err


def test_a_usage_error_of_the_real_program_is_one_line() -> None:
    result = run_xcore("serve", "--port", "eighty", fresh=True)
    assert result.returncode == 2
    assert result.stderr == (
        "xcore: error: serve: invalid value for '--port': 'eighty' is not a valid integer (see `xcore serve --help`)\n"
    )
    result = run_xcore("plugin", "lst", fresh=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "xcore: error: plugin: no such command 'lst'; did you mean 'list'? (see `xcore plugin --help`)"
    ], result.stderr


def test_a_group_alone_still_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plugin"])
    assert "Usage: xcore plugin" in capsys.readouterr().err


# Global options: --data-dir is accepted before the command, at any group level, and after it.


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "{d}", "config", "show", "--json"],
        ["config", "--data-dir", "{d}", "show", "--json"],
        ["config", "show", "--json", "--data-dir", "{d}"],
        ["--data-dir", "{d}", "config", "show", "--json", "--data-dir", "{d}"],
    ],
)
def test_data_dir_works_before_and_after_the_command(data_dir: Path, argv: list[str]) -> None:
    data_dir.mkdir()
    (data_dir / "config.json").write_text(json.dumps({"server": {"port": 8123}}))
    result = run_xcore(*[a.format(d=data_dir) for a in argv])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["server.port"] == {"value": 8123, "source": str(data_dir / "config.json")}


def parsed(path: tuple[str, ...], options_at: int, options: list[str]) -> click.Context:
    """parsed parses `xcore PATH` with `options` typed after its first `options_at` words, down to its last
    command, as `xcore` does, without running anything."""
    context = cli.make_context("xcore", options if options_at == 0 else [], resilient_parsing=True)
    command: click.Command = cli
    for depth, word in enumerate(path, start=1):
        assert isinstance(command, click.Group)
        command = command.commands[word]
        args = options if options_at == depth else []
        context = command.make_context(word, list(args), parent=context, resilient_parsing=True)
    return context


@pytest.mark.parametrize("at", ["before", "between", "after"])
def test_data_dir_reaches_every_command_that_reads_it(data_dir: Path, at: str) -> None:
    """Parsing only (nothing runs): every command that reads the data directory gets the one given before it,
    after its group, or after it."""
    reads = 0
    for path, command in LEAVES:
        where = {"before": 0, "between": min(1, len(path) - 1), "after": len(path)}[at]
        context = parsed(path, where, ["--data-dir", str(data_dir)])
        assert context.command is command
        if "data_dir" in context.params:
            reads += 1
            assert context.params["data_dir"] == str(data_dir), (path, at)
    assert reads > 15


def test_data_dir_given_twice_with_different_values_is_refused(tmp_path: Path) -> None:
    result = run_xcore("--data-dir", str(tmp_path / "a"), "config", "check", "--data-dir", str(tmp_path / "b"))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("xcore: error: config check: invalid value for '--data-dir': given twice")
    assert str(tmp_path / "a") in line and str(tmp_path / "b") in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_commands_without_a_data_directory_accept_it_anywhere() -> None:
    result = run_xcore("--data-dir", "/nonexistent/x", "config", "schema", "--data-dir", "/nonexistent/x")
    assert result.returncode == 0, result.stderr
    assert "XcoreConfig" in json.loads(result.stdout)["$defs"]


def test_commands_that_migrate_leave_the_server_out(tmp_path: Path) -> None:
    """A command that migrates the database (here `user list`, on a data directory it creates) goes through the
    server's prepare_database, without importing Granian and what it brings (uvloop, watchfiles): `serve` alone
    needs them."""
    probe = (
        "import sys\n"
        "from xcore.cli import cli\n"
        f"cli.main(['user', 'list', '--data-dir', {str(tmp_path / 'data')!r}], standalone_mode=False)\n"
        "print('MIGRATED', 'xcore.server' in sys.modules)\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'granian', 'uvloop', 'watchfiles'}))\n"
    )
    lines = fresh_python(probe).splitlines()
    assert "MIGRATED True" in lines and "LOADED []" in lines, lines
