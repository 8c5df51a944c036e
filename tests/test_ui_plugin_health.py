"""The admin UI flags a plugin whose health() fails: its row in the Plugins list, its own page and the dashboard
say "health failing: <detail>", while it keeps serving. A real `xcore serve` and a real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browser import UiServer, shot, zip_bytes
from conftest import until

pytestmark = pytest.mark.e2e

FAILING = """
from xcore.sdk import get


@get("/hello", sync_to_thread=False)
def hello() -> dict:
    return {"hello": "still serving"}


def health(ctx):
    return {"ok": False, "detail": "disk full"}


router = [hello]
"""


def install(ui: UiServer, plugin_id: str, source: str) -> None:
    bundle = zip_bytes({"plugin.json": json.dumps({"id": plugin_id, "version": "1.0.0"}), "run.py": source})
    response = ui.api.post("/api/admin/plugins", files={"data": (f"{plugin_id}.zip", bundle, "application/zip")})
    assert response.status_code == 201, response.text


def test_a_failing_health_is_flagged_in_the_list_the_page_and_the_dashboard(
    ui_server: UiServer, admin_page: Any, screenshots: Path
) -> None:
    install(ui_server, "ailing", FAILING)

    def failing() -> bool:
        views = {v["id"]: v for v in ui_server.api.get("/api/admin/plugins").json()}
        return views["ailing"]["health"]["status"] == "failing"

    until(failing, "the plugin's health check to fail")
    assert ui_server.api.get("/app/ailing/hello").json() == {"hello": "still serving"}
    assert ui_server.api.get("/health").json()["plugin_health"]["failing"] == 1

    page = admin_page
    page.goto(ui_server.url + "/admin/plugins")
    row = page.locator('tr[data-plugin="ailing"]')
    expect(row.locator(".health-failing")).to_have_text("health failing: disk full")
    expect(row).to_contain_text("active")
    shot(page, screenshots, "plugins-health-failing")

    page.goto(ui_server.url + "/admin/plugins/ailing")
    expect(page.locator(".health-failing")).to_have_text("health failing: disk full")

    page.goto(ui_server.url + "/admin")
    expect(page.locator("ul.health-failing")).to_contain_text("ailing: health failing: disk full")
