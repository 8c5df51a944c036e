"""Every route, fed what a careless or hostile client sends, answers with a 4xx problem, never a 500.

The routes come from the served OpenAPI document (the core's and the example plugins'), so a new route is
covered without editing this file. Each is called as the superadmin, so the access guard lets the request reach
the handler: malformed JSON, JSON of the wrong shape, bytes that are not UTF-8, an empty body, a 100 kB
string; path parameters out of every range (a number past SQLite's 64 bits once reached the database and
came back as a 500); and odd query values on every GET.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account, plugin_host
from xcore.runtime import open_runtime
from xcore.server import prepare_database

ROOT = Path(__file__).resolve().parent.parent
BODIES = [
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b'{"unknown": 1}',
    b"",
    json.dumps({"username": "x" * 100_000, "title": "x" * 100_000}).encode(),
    b"\xff\xfe",
    b'{"roles": [1, 2], "data": {}, "overrides": []}',
    b"1e999",
    b'{"args": "not a list", "kwargs": []}',
]
PATH_VALUES = ["0", "-1", "99999999999999999999", "%00", "..", "a" * 300, "%ff", "x y", "1.5"]
QUERY_VALUES = ["0", "-1", "99999999999999999999", "1e999", "", "x" * 3000, "\x00", "[]", "true", "2026-13-45T99:99"]
SKIPPED = {("post", "/api/auth/logout")}  # it would end the session the rest of the calls use


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str], dict[str, Any]]]:
    """host: a worker's app (the Switch with plugins and tasks) serving the example plugins, the superadmin's
    headers, and the served OpenAPI document."""
    tmp = tmp_path_factory.mktemp("bad-input")
    dev = tmp / "dev"
    shutil.copytree(ROOT / "plugins", dev, ignore=shutil.ignore_patterns("*.md", "__pycache__", "tests"))
    runtime = open_runtime(tmp / "data", environ={}, logs=False)
    prepare_database(runtime)
    create_account(runtime, "root", ["superadmin"])
    with plugin_host(runtime, [dev], tasks=True) as client:
        login = client.post("/api/auth/login", json={"username": "root", "password": "first-owner-secret-1"})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        document = client.get("/openapi.json").json()
        assert any(path.startswith("/app/notes") for path in document["paths"]), "the example plugins are served"
        yield client, headers, document
    runtime.close()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if method in ("get", "post", "put", "patch", "delete") and (method, path) not in SKIPPED:
                yield method, path, op


def test_malformed_bodies_and_path_values_get_a_4xx(host: tuple[Any, dict[str, str], dict[str, Any]]) -> None:
    client, headers, document = host
    failures, calls = [], 0
    for method, path, _ in operations(document):
        urls = [re.sub(r"\{[^}]+\}", value, path) for value in PATH_VALUES] if "{" in path else [path]
        bodies: list[bytes | None] = list(BODIES) if method in ("post", "put", "patch") else [None]
        for url in urls:
            for body in bodies:
                for content_type in ("application/json", "text/plain") if body is not None else (None,):
                    sent = dict(headers, **({"content-type": content_type} if content_type else {}))
                    response = client.request(method.upper(), url, content=body, headers=sent)
                    calls += 1
                    if response.status_code >= 500:
                        failures.append(
                            f"{method.upper()} {url[:80]} {body!r:.40} {content_type}: {response.text[:200]}"
                        )
    assert calls > 1000
    assert not failures, "\n".join(failures[:20])
    assert client.get("/api/me", headers=headers).status_code == 200, "the session survived"


def test_odd_query_values_get_a_4xx(host: tuple[Any, dict[str, str], dict[str, Any]]) -> None:
    client, headers, document = host
    failures, calls = [], 0
    for method, path, op in operations(document):
        if method != "get" or "{" in path:
            continue
        for parameter in (p for p in op.get("parameters", []) if p.get("in") == "query"):
            name = parameter["name"]
            for value in QUERY_VALUES:
                response = client.get(path, params={name: value}, headers=headers)
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"GET {path}?{name}={value[:20]!r}: {response.text[:200]}")
            for query in (f"{name}=1&{name}=2", name, f"{name}=%ZZ", f"{name}[]=1"):  # repeated, bare, bad escape
                response = client.get(f"{path}?{query}", headers=headers)
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"GET {path}?{query}: {response.text[:200]}")
    assert calls > 100
    assert not failures, "\n".join(failures[:20])


def test_an_id_past_64_bits_is_a_400_that_says_so(host: tuple[Any, dict[str, str], dict[str, Any]]) -> None:
    client, headers, _ = host
    huge = "99999999999999999999"
    core = client.get(f"/api/admin/users/{huge}", headers=headers)
    assert core.status_code == 400, core.text
    assert core.json()["errors"][0]["field"] == "user_id"
    # A plugin's plain `{note_id:int}` parameter: the host answers for it.
    plugin = client.delete(f"/app/notes/{huge}", headers=headers)
    assert plugin.status_code == 400, plugin.text
    assert plugin.json()["detail"] == "a number in the request is out of range (the largest is 9223372036854775807)"


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"data": (None, b"not a file")}, "expected a file, got text (field 'data')"),
        ([("data", ("a.zip", b"PK")), ("data", ("b.zip", b"PK"))], "expected one file, got several (field 'data')"),
        ({"bundle": ("a.zip", b"PK")}, "missing required field `data` (field 'data')"),
    ],
    ids=["text-field", "two-files", "other-field"],
)
def test_an_upload_form_without_one_file_in_data_is_a_400(
    host: tuple[Any, dict[str, str], dict[str, Any]], form: Any, detail: str
) -> None:
    client, headers, _ = host
    response = client.post("/api/admin/plugins", files=form, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].endswith(detail)
