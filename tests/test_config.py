"""Configuration: layering (defaults < data-dir file < environment < flags) and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_xcore
from xcore.config import load_config
from xcore.errors import ConfigError


def write_config(data_dir: Path, document: object) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "config.json"
    path.write_text(json.dumps(document))
    return path


def test_defaults_come_from_the_shipped_config(data_dir: Path) -> None:
    loaded = load_config(data_dir, environ={})
    assert loaded.config.server.port == 8000
    assert loaded.config.server.host == "127.0.0.1"
    assert loaded.config.manager.plugins.entry_point == "run"
    assert loaded.source_of(("server", "port")) == "default"


def test_layers_later_wins(data_dir: Path) -> None:
    file = write_config(data_dir, {"server": {"port": 8100, "workers": 2, "host": "0.0.0.0"}})
    env = {"XCORE_SERVER__PORT": "8200", "XCORE_SERVER__WORKERS": "3"}
    cli = {("server", "port"): ("--port", 8300), ("server", "workers"): ("--workers", None)}
    loaded = load_config(data_dir, environ=env, cli=cli)
    assert loaded.config.server.port == 8300
    assert loaded.source_of(("server", "port")) == "command-line flag --port"
    assert loaded.config.server.workers == 3  # an unset flag does not override
    assert loaded.source_of(("server", "workers")) == "environment variable XCORE_SERVER__WORKERS"
    assert loaded.config.server.host == "0.0.0.0"
    assert loaded.source_of(("server", "host")) == str(file)
    assert loaded.config.manager.tasks.max_retries == 3  # untouched keys keep their defaults
    assert loaded.source_of(("manager", "tasks", "max_retries")) == "default"


def test_access_rules_merge_rule_by_rule_and_null_removes_one(data_dir: Path) -> None:
    write_config(
        data_dir,
        {"xcore": {"middleware": {"ACCESS_RULES": {"/reports*": {"permissions": ["reports.view"]}, "/docs": None}}}},
    )
    env = {"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/api/admin/*": {"roles": ["superadmin"]}}'}
    loaded = load_config(data_dir, environ=env)
    rules = loaded.config.xcore.middleware.ACCESS_RULES
    assert rules["/reports*"].permissions == ["reports.view"], "a user's rule is added to the defaults"
    assert "/docs" not in rules, "a rule set to null removes the default one"
    assert rules["/health"].public, "defaults the user did not mention stay"
    assert rules["/api/admin/*"].roles == ["superadmin"], "a later layer replaces one rule"
    source = loaded.source_of(("xcore", "middleware", "ACCESS_RULES"))
    assert source == "environment variable XCORE_XCORE__MIDDLEWARE__ACCESS_RULES"


def test_environment_values_are_typed_by_the_schema(data_dir: Path) -> None:
    env = {
        "XCORE_XCORE__LOGS__CONSOLE": "false",
        "XCORE_MANAGER__PLUGINS__INTERVAL": "0.5",
        "XCORE_XCORE__LOGS__FILE": "123",  # a string setting keeps the text, even when it looks like a number
        "XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/x": {"roles": ["admin"], "method": "DELETE"}}',
    }
    config = load_config(data_dir, environ=env).config
    assert config.xcore.logs.console is False
    assert config.manager.plugins.interval == 0.5
    assert config.xcore.logs.file == "123"
    assert config.xcore.middleware.ACCESS_RULES["/x"].method == "DELETE"


def test_null_text_means_null_for_optional_settings(data_dir: Path) -> None:
    write_config(data_dir, {"xcore": {"data": {"url": "sqlite:////somewhere/else.db"}}})
    config = load_config(data_dir, environ={"XCORE_XCORE__DATA__URL": "null", "XCORE_XCORE__LOGS__FILE": "null"}).config
    assert config.xcore.data.url is None, "null resets an optional setting to its default"
    assert config.xcore.logs.file == "null", "a plain string setting keeps the text"


def test_database_and_redis_url_aliases(data_dir: Path) -> None:
    env = {"DATABASE_URL": "postgresql://u:pw@db/x", "REDIS_URL": "redis://cache:6379/1"}
    loaded = load_config(data_dir, environ=env)
    assert loaded.config.xcore.data.url == "postgresql://u:pw@db/x"
    assert loaded.source_of(("xcore", "data", "url")) == "environment variable DATABASE_URL"
    assert loaded.config.redis.url == "redis://cache:6379/1"
    assert loaded.config.redis.active


def test_keys_starting_with_dollar_are_ignored(data_dir: Path) -> None:
    write_config(data_dir, {"$schema": "./schema.json", "server": {"port": 9000}})
    assert load_config(data_dir, environ={}).config.server.port == 9000


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"server": {"prot": 80}}, ["unknown key 'server.prot'", "did you mean 'port'", "config.json"]),
        ({"nosuch": {}}, ["unknown key 'nosuch'", "known keys at the top level"]),
        ({"server": {"port": "80"}}, ["server.port", "Expected int, got str", "it takes integer"]),
        ({"server": {"port": 70000}}, ["server.port", "<= 65535"]),
        ({"server": 80}, ["server must be an object"]),
        ({"xcore": {"logs": {"level": "LOUD"}}}, ["xcore.logs.level", "LOUD", "one of"]),
        (
            {"xcore": {"middleware": {"ACCESS_RULES": {"/a": {"roles": "admin"}}}}},
            ["ACCESS_RULES['/a'].roles", "Expected array, got str", "list of string"],
        ),
        (
            {"xcore": {"middleware": {"ACCESS_RULES": {"/ok": {}, "/b*": {"rolez": []}}}}},
            ["ACCESS_RULES['/b*']", "unknown field rolez", "roles, permissions, method"],
        ),
        ({"secure": {"secret_key": "short"}}, ["secure.secret_key", "length >= 32"]),
    ],
)
def test_file_errors_name_key_file_and_expectation(data_dir: Path, document: object, expected: list[str]) -> None:
    path = write_config(data_dir, document)
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={})
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"server": {"port": 80,}}', "invalid JSON at line 1, column 24"),
        ("[1, 2]", "expected a JSON object at the top, got list"),
        ("", "invalid JSON at line 1, column 1"),
    ],
)
def test_bad_json_names_file_and_position(data_dir: Path, text: str, expected: str) -> None:
    data_dir.mkdir()
    (data_dir / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=r"config file .*config\.json") as caught:
        load_config(data_dir, environ={})
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"XCORE_SERVER__PORT": "abc"},
            "environment variable XCORE_SERVER__PORT: server.port: Expected int, got str",
        ),
        (
            {"XCORE_SERVER__PORTT": "1"},
            "environment variable XCORE_SERVER__PORTT: unknown key 'server.portt'",
        ),
        ({"XCORE_NOPE__X": "1"}, "environment variable XCORE_NOPE__X: unknown key 'nope'"),
        (
            {"XCORE_SERVER": "1"},
            "environment variable XCORE_SERVER: settings are named XCORE_<SECTION>__<KEY>",
        ),
        ({"XCORE_SERVER__PORT__X": "1"}, "server.port is a single setting, not a section"),
        ({"XCORE_XCORE__LOGS__CONSOLE": "maybe"}, "xcore.logs.console: Expected bool, got str"),
        ({"DATABASE_URL": ""}, "environment variable DATABASE_URL: xcore.data.url"),
    ],
)
def test_environment_errors_name_the_variable(data_dir: Path, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ=env)
    assert expected in str(caught.value)


# redis.TTL was in the shipped config.json until issue 22; a config copied from it is told why the key went.
RETIRED_TTL = (
    "'redis.TTL' is no longer a setting: it was to be the lifetime of entries cached in Redis, and xcore caches "
    "nothing there, so it never had an effect"
)


def test_a_retired_key_in_the_file_is_refused_with_its_reason(data_dir: Path) -> None:
    path = write_config(data_dir, {"redis": {"host": "cache", "TTL": 60}})
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={})
    assert str(caught.value) == f"{path}: {RETIRED_TTL}; delete the key"


def test_keys_in_the_file_are_case_sensitive_so_ttl_is_an_unknown_key(data_dir: Path) -> None:
    path = write_config(data_dir, {"redis": {"ttl": 60}})
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={})
    assert str(caught.value).startswith(f"{path}: unknown key 'redis.ttl'")


@pytest.mark.parametrize("name", ["XCORE_REDIS__TTL", "XCORE_REDIS__ttl"])
def test_a_retired_key_in_the_environment_is_refused_with_its_reason(data_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={name: "60"})
    assert str(caught.value) == f"environment variable {name}: {RETIRED_TTL}; unset the variable"


def test_cli_refuses_a_retired_key_in_one_line(data_dir: Path) -> None:
    write_config(data_dir, {"redis": {"TTL": 60}})
    for command in (["config", "check"], ["serve"]):
        result = run_xcore(*command, "--data-dir", str(data_dir))
        assert result.returncode == 2, result
        assert result.stderr.splitlines() == [
            f"xcore: error: {data_dir / 'config.json'}: {RETIRED_TTL}; delete the key"
        ]


def test_data_dir_variable_is_not_a_setting(data_dir: Path) -> None:
    load_config(data_dir, environ={"XCORE_DATA_DIR": str(data_dir)})


def test_xcore_debug_is_not_a_setting(data_dir: Path) -> None:
    # An internal error of the CLI says "run again with XCORE_DEBUG=1": that must not be refused as a setting.
    result = run_xcore("config", "check", "--data-dir", str(data_dir), env={"XCORE_DEBUG": "1"})
    assert result.returncode == 0, result.stderr


def test_flag_errors_name_the_flag(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"command-line flag --workers: server\.workers: Expected int >= 1"):
        load_config(data_dir, environ={}, cli={("server", "workers"): ("--workers", 0)})


# Every layer is validated on its own: a later layer setting the same key does not hide a wrong value below it.
PORT_ENV = {"XCORE_SERVER__PORT": "8001"}
PORT_FLAG = {("server", "port"): ("--port", 8002)}


@pytest.mark.parametrize(
    ("document", "env", "flags", "expected"),
    [
        ({"server": {"port": "eighty"}}, PORT_ENV, {}, "server.port: Expected int, got str"),
        ({"server": {"port": "eighty"}}, {}, PORT_FLAG, "server.port: Expected int, got str"),
        ({"server": {"port": 70000}}, PORT_ENV, PORT_FLAG, "server.port: Expected int <= 65535"),
        ({"server": {"trusted_proxies": ["*"]}}, {"XCORE_SERVER__TRUSTED_PROXIES": ""}, {}, "trusted_proxies[0]"),
        ({"xcore": {"logs": {"level": "LOUD"}}}, {"XCORE_XCORE__LOGS__LEVEL": "INFO"}, {}, "xcore.logs.level"),
        (
            {"xcore": {"middleware": {"ACCESS_RULES": {"/a": {"roles": "admin"}}}}},
            {"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/a": {"roles": ["admin"]}}'},
            {},
            "ACCESS_RULES['/a'].roles",
        ),
        (
            {"xcore": {"middleware": {"ACCESS_RULES": {"/b": {"method": "FETCH"}}}}},
            {"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/b": null}'},
            {},
            "ACCESS_RULES['/b'].method: unknown HTTP method",
        ),
    ],
)
def test_a_wrong_value_in_the_file_is_refused_even_when_overridden(
    data_dir: Path,
    document: object,
    env: dict[str, str],
    flags: dict[tuple[str, ...], tuple[str, object]],
    expected: str,
) -> None:
    path = write_config(data_dir, document)
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ=env, cli=flags)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_wrong_environment_variable_is_refused_even_when_a_flag_overrides_it(data_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={"XCORE_SERVER__PORT": "abc"}, cli=PORT_FLAG)
    assert str(caught.value).startswith("environment variable XCORE_SERVER__PORT: server.port: Expected int, got str")


def test_null_in_a_layer_removes_a_rule_and_is_not_a_wrong_rule(data_dir: Path) -> None:
    write_config(data_dir, {"xcore": {"middleware": {"ACCESS_RULES": {"/docs": None, "/x": {"roles": ["admin"]}}}}})
    env = {"XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": '{"/x": null, "/redoc": null}'}
    rules = load_config(data_dir, environ=env).config.xcore.middleware.ACCESS_RULES
    assert "/docs" not in rules and "/redoc" not in rules and "/x" not in rules


def test_cli_refuses_an_overridden_wrong_value_in_one_line(data_dir: Path) -> None:
    write_config(data_dir, {"server": {"workers": "two"}})
    result = run_xcore("config", "check", "--data-dir", str(data_dir), env={"XCORE_SERVER__WORKERS": "2"})
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"xcore: error: {data_dir / 'config.json'}: server.workers: Expected int, got str; it takes integer"
    ]


def test_cli_config_error_is_one_line_exit_2(data_dir: Path) -> None:
    write_config(data_dir, {"server": {"port": "eighty"}})
    for command in (["config", "check"], ["serve"], ["config", "show"]):
        result = run_xcore(*command, "--data-dir", str(data_dir))
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("xcore: error: ")
        assert "server.port" in lines[0]
        assert str(data_dir / "config.json") in lines[0]


def test_cli_environment_error_exit_2(data_dir: Path) -> None:
    result = run_xcore("config", "check", "--data-dir", str(data_dir), env={"XCORE_SERVER__WORKERS": "none"})
    assert result.returncode == 2
    assert "environment variable XCORE_SERVER__WORKERS" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_ok(data_dir: Path) -> None:
    result = run_xcore("config", "check", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_config_show_sources_and_masks_secrets(data_dir: Path) -> None:
    write_config(data_dir, {"redis": {"password": "hunter2-redis"}, "server": {"workers": 2}})
    env = {
        "DATABASE_URL": "postgresql://admin:pg-secret-pw@db.example:5432/xcore",
        "XCORE_SECURE__SECRET_KEY": "k" * 40,
        "XCORE_SERVER__PORT": "8123",
    }
    result = run_xcore("config", "show", "--json", "--data-dir", str(data_dir), env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["server.port"] == {"value": 8123, "source": "environment variable XCORE_SERVER__PORT"}
    assert shown["server.workers"] == {"value": 2, "source": str(data_dir / "config.json")}
    assert shown["server.host"]["source"] == "default"
    assert shown["secure.secret_key"]["value"] == "********"
    assert shown["redis.password"]["value"] == "********"
    assert shown["xcore.data.url"]["value"] == "postgresql://admin:***@db.example:5432/xcore"
    assert shown["redis.url"]["value"] is None
    for secret in ("pg-secret-pw", "hunter2-redis", "k" * 40):
        assert secret not in result.stdout
    text = run_xcore("config", "show", "--data-dir", str(data_dir), env=env)
    assert "pg-secret-pw" not in text.stdout and "k" * 40 not in text.stdout
    assert "(environment variable XCORE_SERVER__PORT)" in text.stdout


def test_config_schema_is_json_schema() -> None:
    result = run_xcore("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "$defs" in schema and "XcoreConfig" in schema["$defs"]
