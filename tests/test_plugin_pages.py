"""Plugin pages (issue 25), the server's side: plugin.json's `pages` checked with the manifest and the bundle, and
GET /api/me/pages, which lists the pages each user may open. The browser side is tests/test_ui_pages.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account
from test_plugin_manager import Host, login, make_zip, open_host, route
from xcore import __version__
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.manifest import parse_manifest
from xcore.runtime import Runtime

PAGE_FILES = {"static/list.js": "export function render(ctx) {}\n", "static/icon.svg": "<svg/>"}


def pages_manifest(pages: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps(
        {"id": "memo", "version": "1.0.0", "permissions": ["memo.write"], "pages": pages, **extra}
    ).encode()


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ({"path": "List", "title": "x", "module": "static/a.js"}, "pages[0].path: 'List' must be lowercase letters"),
        ({"path": "a", "title": "", "module": "static/a.js"}, "pages[0].title: must be 1 to 60 characters"),
        ({"path": "a", "title": "A", "module": "a.js"}, "pages[0].module: 'a.js' must be a file in static/"),
        ({"path": "a", "title": "A", "module": "static/../run.py"}, "pages[0].module: 'static/../run.py' must be"),
        ({"path": "a", "title": "A", "module": "static/a.js", "icon": "static/a.gif"}, "pages[0].icon: 'static/a.gif'"),
        (
            {"path": "a", "title": "A", "module": "static/a.js", "permission": "x.y"},
            "pages[0].permission: 'x.y' is neither",
        ),
        ({"path": "a", "title": "A", "module": "static/a.js", "colour": "red"}, "colour"),
        ({"path": "a", "module": "static/a.js"}, "title"),
    ],
)
def test_a_page_that_breaks_a_rule_fails_the_manifest_naming_it(page: dict[str, Any], problem: str) -> None:
    manifest, why = parse_manifest(pages_manifest([page]))
    assert manifest is None and problem in why, why


def test_two_pages_with_one_path_fail_the_manifest() -> None:
    page = {"path": "a", "title": "A", "module": "static/a.js"}
    manifest, why = parse_manifest(pages_manifest([page, {**page, "title": "B"}]))
    assert manifest is None and "pages[1].path: two pages have the path 'a'" in why


def test_a_page_may_need_a_core_permission_or_one_of_the_plugins_own() -> None:
    pages = [
        {"path": "a", "title": "A", "module": "static/a.js", "permission": "memo.write", "icon": "static/i.svg"},
        {"path": "b", "title": "B", "module": "static/b.mjs", "permission": "plugins.read"},
    ]
    manifest, why = parse_manifest(pages_manifest(pages))
    assert manifest is not None, why
    assert [p.permission for p in manifest.pages] == ["memo.write", "plugins.read"]


def test_a_bundle_without_the_module_or_icon_a_page_names_is_refused(tmp_path: Path) -> None:
    pages = [{"path": "list", "title": "List", "module": "static/list.js", "icon": "static/gone.svg"}]
    path = make_zip(tmp_path, "memo", "1.0.0", "", extra_files=PAGE_FILES, pages=pages)
    with pytest.raises(BundleError) as caught:
        inspect_bundle(path, __version__)
    assert (caught.value.rule, caught.value.entry) == ("page-missing", "static/gone.svg")


@pytest.fixture
def host(runtime: Runtime, tmp_path: Path) -> Iterator[Host]:
    create_account(runtime, "root", ["superadmin"])
    create_account(runtime, "bob", ["user"])
    with open_host(runtime, tmp_path / "staging") as running:
        yield running


def my_pages(host: Host, username: str) -> dict[str, Any]:
    response = host.client.get("/api/me/pages", headers=login(host.client, username))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_me_pages_lists_the_pages_a_user_may_open_and_names_a_disabled_plugin(host: Host) -> None:
    pages = [
        {"path": "list", "title": "Memos", "module": "static/list.js", "icon": "static/icon.svg"},
        {"path": "admin", "title": "Memo admin", "module": "static/list.js", "permission": "memo.write"},
    ]
    host.drop(make_zip(host.staging, "memo", "1.0.0", route("x"), extra_files=PAGE_FILES, pages=pages,
                       permissions=["memo.write"], name="Memo"))  # fmt: skip
    view = host.wait_view("memo", "active")
    assert [p["href"] for p in view["pages"]] == ["/admin/apps/memo/list", "/admin/apps/memo/admin"]
    mine = my_pages(host, "bob")
    assert mine["unavailable"] == {}
    assert [(p["plugin"], p["path"], p["title"]) for p in mine["pages"]] == [("memo", "list", "Memos")]
    page = mine["pages"][0]
    assert page["module"] == "/app/memo/static/list.js" and page["icon"] == "/app/memo/static/icon.svg"
    assert (
        page["prefix"] == "/app/memo"
        and page["plugin_name"] == "Memo"
        and page["version"] == "1.0.0"
        and page["stamp"] == view["stamp"]
    )
    assert host.client.get(page["module"], headers=login(host.client, "bob")).status_code == 200
    assert [p["path"] for p in my_pages(host, "root")["pages"]] == ["admin", "list"], "root holds every permission"

    host.drop(make_zip(host.staging / "2", "memo", "1.1.0", route("y"), extra_files=PAGE_FILES, pages=pages,
                       permissions=["memo.write"], name="Memo"), "memo-1.0.0.zip")  # fmt: skip
    host.wait_view("memo", "active", serving="1.1.0")
    assert my_pages(host, "bob")["pages"][0]["stamp"] != page["stamp"], "a swap changes the stamp"

    assert host.client.post("/api/admin/plugins/memo/disable", headers=host.root).status_code == 200
    assert my_pages(host, "bob") == {"pages": [], "unavailable": {"memo": "disabled"}}


def test_me_pages_needs_a_login(host: Host) -> None:
    assert host.client.get("/api/me/pages").status_code == 401


def test_a_sandboxed_plugins_pages_are_not_offered_and_its_answers_are_isolated(host: Host) -> None:
    pages = [{"path": "list", "title": "Memos", "module": "static/list.js"}]
    host.drop(make_zip(host.staging, "boxed", "1.0.0", route("x"), extra_files=PAGE_FILES, pages=pages, sandbox=True))
    host.drop(make_zip(host.staging, "inproc", "1.0.0", route("y"), extra_files=PAGE_FILES, pages=pages))
    assert host.wait_view("boxed", "active")["sandbox"] is not None
    host.wait_view("inproc", "active")
    mine = my_pages(host, "bob")
    assert mine["unavailable"] == {"boxed": "sandboxed"}, "its module would run in the app with bob's rights"
    assert [p["plugin"] for p in mine["pages"]] == ["inproc"]
    # Whatever a sandboxed plugin serves, a page of its own included, runs in an opaque origin of its own.
    for path in ("/app/boxed/hello", "/app/boxed/static/list.js"):
        policies = host.get(path).headers.get_list("content-security-policy")
        assert any(p.startswith("sandbox allow-scripts") for p in policies), (path, policies)
        assert any("default-src 'self'" in p for p in policies), (path, policies)
    assert not any("sandbox" in p for p in host.get("/app/inproc/hello").headers.get_list("content-security-policy"))
