"""The admin UI's Metrics page (issue 28) against a real xcore and Chromium: the five charts an operator looks at
first (requests/s, errors/s, latency p95, tasks, reloads) drawn as inline SVG by ui/admin/static/charts.js from
GET /api/admin/metrics, refreshed at the server's sample interval while the page is open (every 2 seconds on this
module's server, `server.metrics_interval`; every 10 by default) and no longer once it is left; the
accessibility sweep with screenshots (metrics-1024x700.png, metrics-1920x1080.png in the test artefacts); the
server's reason when metrics are off; and no Metrics page, nor any request for its numbers, for a user without
`metrics.read`. Every browser context fails its test on a request to another host, a script error or a
Content-Security-Policy violation (tests/browser.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from browser import UiServer, Watch, assert_window_shots, login, nav_link, one_h1, start_ui_server, sweep
from conftest import until

pytestmark = pytest.mark.e2e

METRICS_API = "/api/admin/metrics"
CHARTS = ("Requests per second", "Errors per second", "Latency p95", "Tasks", "Reloads")
TASK = "xcore.prune_sessions"
PASSWORD = "Amber-Kettle-Meadow-4"
REFRESH = 2  # seconds between the samples of this module's server, and the page's refreshes (pages/metrics.js)
DEFAULT = 10  # ... of a server on the defaults


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """ui_server: a real xcore with the owner account, taking a sample every REFRESH seconds."""
    env = {"XCORE_SERVER__METRICS_INTERVAL": str(REFRESH)}
    ui = start_ui_server(tmp_path_factory.mktemp("ui") / "data", env=env)
    yield ui
    ui.api.close()
    assert ui.server.stop() == 0, ui.server.output


@pytest.fixture
def traffic(ui_server: UiServer) -> Iterator[None]:
    """traffic keeps requests coming to the server (GET /api/version, five a second) while the test runs, so every
    sample has some."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=ui_server.url, timeout=10) as client:
            while not stop.wait(0.2):
                client.get("/api/version")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=15)


def window(server: UiServer) -> list[dict[str, Any]]:
    response = server.api.get(METRICS_API)
    assert response.status_code == 200, response.text
    samples: list[dict[str, Any]] = response.json()["samples"]
    return samples


def metrics_calls(watch: Watch, server: UiServer) -> int:
    return sum(1 for url in watch.requests if url.startswith(server.url + METRICS_API))


def test_metrics_page_charts_the_last_hour(
    ui_server: UiServer,
    traffic: None,
    browser_context: tuple[Any, Watch],
    admin_page: Any,
    screenshots: Path,
) -> None:
    _, watch = browser_context
    page, server = admin_page, ui_server
    # The first sample comes REFRESH seconds after the first reading; a task run after it shows in the next sample.
    assert server.api.get(METRICS_API).json()["interval_seconds"] == REFRESH
    until(lambda: any(s["requests_per_second"] > 0 for s in window(server)), "a sample with requests", 30)
    run = server.api.post(f"/api/admin/tasks/{TASK}/run", json={"args": [], "kwargs": {}})
    assert run.status_code == 201, run.text
    until(lambda: sum(s["tasks_succeeded"] for s in window(server)) >= 1, "a sample with the task's run", 45)

    nav_link(page, "Metrics").click()
    page.get_by_role("heading", level=1, name="Metrics").wait_for()
    cards = page.locator("section.chart")
    expect(cards).to_have_count(len(CHARTS))
    assert cards.locator("h2").all_inner_texts() == list(CHARTS)
    for i in range(len(CHARTS)):
        card = cards.nth(i)
        plot = card.locator("svg[role='img']")
        expect(plot).to_have_count(1)
        label = plot.get_attribute("aria-label") or ""
        assert "latest" in label and "the axis runs from 0 to" in label, label
        assert card.locator("svg path").count() >= 1
        for axis in (".chart-max", ".chart-min", ".chart-from", ".chart-to"):
            assert card.locator(axis).inner_text().strip(), f"{CHARTS[i]} has no {axis} label"
        assert card.locator(".chart-value").first.inner_text().strip()

    requests_card = cards.filter(has=page.get_by_role("heading", name="Requests per second"))
    assert requests_card.locator("path.chart-line").get_attribute("d"), "the requests line is drawn"
    latest = requests_card.locator(".chart-value").inner_text()
    assert latest.endswith("/s") and float(latest.removesuffix("/s")) > 0, latest
    label = requests_card.locator("svg").get_attribute("aria-label") or ""
    assert label.startswith(f"Requests per second: latest {latest} at "), label
    latency = cards.filter(has=page.get_by_role("heading", name="Latency p95")).locator(".chart-value").inner_text()
    assert latency.endswith(" ms") and float(latency.removesuffix(" ms")) > 0, latency
    tasks = cards.filter(has=page.get_by_role("heading", name="Tasks"))
    assert [key.strip() for key in tasks.locator(".chart-key").all_inner_texts()] == ["succeeded", "failed"]
    assert tasks.locator("path.chart-tone-ok").get_attribute("d"), "the task's run is a bar"
    assert (
        float(
            cards.filter(has=page.get_by_role("heading", name="Errors per second"))
            .locator(".chart-value")
            .inner_text()
            .removesuffix("/s")
        )
        == 0
    )

    # The page refreshes itself, at the server's pace: a later sample shows without a reload.
    shown = page.locator(".metrics-status").inner_text()
    assert shown.startswith("Latest sample ") and shown.endswith(f"; the page refreshes every {REFRESH} seconds."), (
        shown
    )
    expect(page.locator("p.lead")).to_contain_text(f"one sample every {REFRESH} seconds")
    expect(page.locator(".metrics-status")).not_to_have_text(shown, timeout=(2 * REFRESH + 5) * 1000)

    sweep(page, "Metrics", screenshots, "metrics")
    assert_window_shots(screenshots, "metrics")
    # Everything the page loaded came from this server: the charts are drawn here, with no chart library.
    assert all(url.startswith(server.url) for url in watch.requests), watch.outside_hosts()
    assert page.locator("main img, main canvas, main iframe, main object").count() == 0

    # Left for another page, it asks no more.
    nav_link(page, "Dashboard").click()
    page.get_by_role("heading", level=1, name="Dashboard").wait_for()
    calls = metrics_calls(watch, server)
    page.wait_for_timeout((REFRESH + 2) * 1000)
    assert metrics_calls(watch, server) == calls


def test_metrics_off_shows_the_servers_reason(tmp_path: Path, page: Any, browser_context: tuple[Any, Watch]) -> None:
    _, watch = browser_context
    ui = start_ui_server(tmp_path / "data", env={"XCORE_SERVER__METRICS": "false"})
    try:
        login(page, ui.url)
        nav_link(page, "Metrics").click()
        page.get_by_role("heading", level=1, name="Metrics").wait_for()
        alert = page.get_by_role("alert").filter(has_text="metrics are off")
        expect(alert).to_have_text(
            "metrics are off on this server (the setting server.metrics is false); set it to true to collect them"
        )
        expect(page.locator("section.chart")).to_have_count(0)
        assert one_h1(page) == "Metrics"
        # The setting needs a restart, so the page does not keep asking (it would, at the default pace).
        page.wait_for_timeout((DEFAULT + 2) * 1000)
        assert metrics_calls(watch, ui) == 1
    finally:
        assert ui.server.stop() == 0


def test_no_metrics_for_a_user_without_metrics_read(
    ui_server: UiServer, page: Any, browser_context: tuple[Any, Watch]
) -> None:
    _, watch = browser_context
    created = ui_server.api.post("/api/admin/users", json={"username": "uli", "password": PASSWORD, "roles": ["user"]})
    assert created.status_code == 201, created.text
    login(page, ui_server.url, "uli", PASSWORD)
    page.get_by_role("heading", level=1, name="Home").wait_for()
    expect(nav_link(page, "Metrics")).to_have_count(0)
    page.goto(ui_server.url + "/admin/metrics")
    assert one_h1(page) == "No access"
    assert metrics_calls(watch, ui_server) == 0


def test_a_role_with_metrics_read_alone_gets_the_page(tmp_path: Path, page: Any) -> None:
    """The page is offered by the permission, not by the admin role: a watcher holding `metrics.read` and nothing
    else has Metrics in the navigation but no Dashboard. On a server just started the window is empty, and the page
    says when the first sample comes; the charts show once it has come, without a reload."""
    ui = start_ui_server(tmp_path / "data")
    try:
        role = ui.api.post("/api/admin/roles", json={"name": "watchers", "permissions": ["metrics.read"]})
        assert role.status_code == 201, role.text
        wanda = {"username": "wanda", "password": PASSWORD, "roles": ["watchers"]}
        created = ui.api.post("/api/admin/users", json=wanda)
        assert created.status_code == 201, created.text
        login(page, ui.url, "wanda", PASSWORD)
        page.get_by_role("heading", level=1, name="Home").wait_for()
        expect(nav_link(page, "Dashboard")).to_have_count(0)
        nav_link(page, "Metrics").click()
        page.get_by_role("heading", level=1, name="Metrics").wait_for()
        # On the defaults, a fresh server's first sample needs two readings 10 seconds apart: the window is still
        # empty here.
        expect(page.locator(".metrics-empty")).to_have_text("No samples yet; the first comes within 10 seconds.")
        expect(page.locator("p.lead")).to_contain_text(f"one sample every {DEFAULT} seconds")
        expect(page.locator("section.chart")).to_have_count(len(CHARTS), timeout=(3 * DEFAULT) * 1000)
        expect(page.locator(".metrics-empty")).to_have_count(0)
    finally:
        assert ui.server.stop() == 0


CHART_CASES = """async () => {
  const { chart } = await import("/admin/static/charts.js");
  const d = (card) => [...card.querySelectorAll("svg path")].map((p) => p.getAttribute("d"));
  const label = (card) => card.querySelector("svg").getAttribute("aria-label");
  const broken = chart({ title: "Latency", unit: " ms", empty: "no requests", interval: 10,
    points: [{ t: 110, value: 4 }, { t: 120, value: 6 }, { t: 130, value: null }, { t: 140, value: 2 },
             { t: 170, value: 8 }, { t: 180, value: null }] });
  const single = chart({ title: "Requests", unit: "/s", interval: 10, points: [{ t: 200, value: 3.5 }] });
  const bars = chart({ title: "Tasks", kind: "bar", interval: 10, series: [
    { name: "succeeded", points: [{ t: 10, value: 2 }, { t: 20, value: 0 }], tone: "ok" },
    { name: "failed", points: [{ t: 10, value: 1 }, { t: 20, value: 1 }], tone: "danger" }] });
  const none = chart({ title: "Reloads", kind: "bar", points: [] });
  return {
    broken: { d: d(broken), latest: broken.querySelector(".chart-value").textContent,
              max: broken.querySelector(".chart-max").textContent, label: label(broken) },
    single: { d: d(single), latest: single.querySelector(".chart-value").textContent, label: label(single) },
    bars: { d: d(bars), max: bars.querySelector(".chart-max").textContent },
    none: { d: d(none), label: label(none) },
  };
}"""


def test_charts_module_draws_gaps_steps_and_stacks(admin_page: Any) -> None:
    """charts.js itself, in the browser: a null value or a missing sample breaks the line, each sample is flat over
    the interval it covers, bars stack (the axis' top is rounded up from the tallest stack), the latest value is the
    last sample's (null: the `empty` word), and an empty chart says it has no samples."""
    drawn = admin_page.evaluate(CHART_CASES)
    broken = drawn["broken"]
    # Three runs: 110-120 joined by a step, 140 alone (null before it), 170 alone (a gap of two samples before it).
    assert broken["d"] == ["M0.00,60.00H37.50V40.00H75.00M112.50,80.00H150.00M225.00,20.00H262.50"], broken
    assert broken["latest"] == "no requests" and broken["max"] == "10 ms"
    assert broken["label"].startswith("Latency: latest no requests at "), broken
    assert "over the last 80 seconds the axis runs from 0 to 10 ms" in broken["label"], broken
    single = drawn["single"]
    assert single["d"] == ["M0.00,30.00H300.00"] and single["latest"] == "3.5/s", single
    bars = drawn["bars"]
    assert bars["max"] == "5"  # the tallest stack is 3
    succeeded, failed = bars["d"]
    assert succeeded.count("M") == 1 and failed.count("M") == 2, bars  # a zero draws no bar
    # Sample 10's failed run stands on its two successes; sample 20's, with none, on the axis.
    assert failed == "M0.40,60.00V40.00H149.60V60.00ZM150.40,100.00V80.00H299.60V100.00Z", bars
    assert drawn["none"] == {"d": [""], "label": "Reloads: no samples yet."}
