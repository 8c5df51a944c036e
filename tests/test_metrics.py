"""Metrics (issue 28): GET /metrics in the Prometheus text format, its access, and GET /api/admin/metrics.

In-process tests run what a worker serves (the Switch, its plugin manager and task host: `plugin_host`), so every
request passes the request log that counts it, with a real plugin zip, real task runs on the embedded queue and
real logins. The exposition is parsed with prometheus-client's own parser. Multi-process mode (several workers'
files under PROMETHEUS_MULTIPROC_DIR) is checked in fresh processes, and end to end, with a real Prometheus server
scraping a real `xcore serve` with two workers, in tests/test_metrics_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from litestar import Litestar, asgi
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import CLEAN_ENV, PASSWORDS, Api, create_account, plugin_host, prepare_from_template, run_xcore, until
from xcore.auth.scrapers import FILE_NAME, PREFIX
from xcore.errors import ConfigError
from xcore.metrics import export, families, history, tally
from xcore.metrics.families import FAMILIES, LATENCY_BUCKETS
from xcore.plugins.store import plugins_dir, settled
from xcore.runtime import Runtime, open_runtime
from xcore.web.metrics import _health
from xcore.web.requestlog import count_requests
from xcore.web.switch import Switch

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "packaging" / "grafana-dashboard.json"

RUN_PY = """
from xcore.sdk import FromPath, get, task


@task(retries=0)
def ok():
    return None


@task(retries=1, retry_delay=0)
def fails():
    raise RuntimeError("fails on purpose")


@get("/items/{item_id:int}")
async def item(item_id: FromPath[int]) -> dict:
    return {"id": item_id}


@get("/boom")
async def boom() -> dict:
    raise RuntimeError("a bug in the plugin")


@get("/enqueue/{name:str}", sync_to_thread=True)
def enqueue(name: FromPath[str]) -> dict:
    return {"run": {"ok": ok, "fails": fails}[name].enqueue()}


router = [item, boom, enqueue]
"""


def install_plugin(runtime: Runtime, plugin_id: str = "mx") -> None:
    """install_plugin drops the test plugin's zip into the plugins folder."""
    target = plugins_dir(runtime) / f"{plugin_id}-1.0.0.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": plugin_id, "version": "1.0.0"}))
        archive.writestr("run.py", RUN_PY)
    settled(target)


def login(client: Any, username: str) -> dict[str, str]:
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORDS[username]})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """parse is every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: Any, headers: dict[str, str]) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """value sums the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


@pytest.fixture
def host(runtime: Runtime) -> Iterator[Any]:
    """host: a worker's Switch with the test plugin and a task host; root (superadmin), ada (admin), bob (user)."""
    create_account(runtime, "root", ["superadmin"])
    create_account(runtime, "ada", ["admin"])
    create_account(runtime, "bob", ["user"])
    install_plugin(runtime)
    with plugin_host(runtime, tasks=True) as client:
        client.root = login(client, "root")
        yield client


# --- what /metrics exposes ----------------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_method_status_and_plugin(host: Any) -> None:
    before = scrape(host, host.root)
    for item in (3, 3, 4):
        assert host.get(f"/app/mx/items/{item}", headers=host.root).status_code == 200
    assert host.get("/app/mx/boom", headers=host.root).status_code == 500
    assert host.get("/api/version").status_code == 200
    assert host.get("/no/such/path").status_code == 401  # refused by the guard before any routing
    assert host.get("/api/no-such-route", headers=host.root).status_code == 404  # let in, no route matched
    after = scrape(host, host.root)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "xcore_http_requests_total"
    route = "/app/mx/items/{item_id}"  # the template, never the raw path: /app/mx/items/3 is no label
    assert grew(requests, route=route, method="GET", status="200", plugin="mx") == 3
    assert grew(requests, route="/app/mx/boom", status="500", plugin="mx") == 1
    assert grew(requests, route="/api/version", method="GET", status="200", plugin="") == 1
    assert grew(requests, route="<refused>", status="401") >= 1
    assert grew(requests, route="<unmatched>", status="404") == 1
    assert not any(name == requests and ("route", "/app/mx/items/3") in labels for name, labels in after)
    # The latency histogram: cumulative buckets up to +Inf, which is the count.
    labels = {"route": route, "method": "GET", "plugin": "mx"}
    buckets = [grew("xcore_http_request_duration_seconds_bucket", le=str(b), **labels) for b in LATENCY_BUCKETS]
    total = grew("xcore_http_request_duration_seconds_bucket", le="+Inf", **labels)
    assert buckets == sorted(buckets) and buckets[-1] <= total == 3
    assert grew("xcore_http_request_duration_seconds_count", **labels) == 3
    assert 0 < grew("xcore_http_request_duration_seconds_sum", **labels) < 3 * 10


def test_unusual_methods_are_counted_as_other_and_never_remembered_by_name(host: Any) -> None:
    kept = len(tally.lookup)
    for method in ("BREW", "WHEN", "PROPFIND"):
        host.request(method, "/api/version")
    samples = scrape(host, host.root)
    assert value(samples, "xcore_http_requests_total", method="OTHER") >= 3
    assert not any(("method", "BREW") in labels for _, labels in samples)
    assert len(tally.lookup) <= kept + 1  # the scrape's own key at most: a client cannot grow the table


def test_a_mount_is_labelled_with_its_path() -> None:
    @asgi("/files", is_mount=True, copy_scope=False)
    async def files(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = Litestar([files])
    with TestClient(Switch(lambda: app)) as client:
        assert client.get("/files/a/b.txt").status_code == 200
    assert tally.cells[("/files", "GET", 200)][-1] > 0  # the mount's path, not the file's, and not <unmatched>


def test_task_runs_are_counted_by_task_plugin_and_outcome(host: Any, runtime: Runtime) -> None:
    ok = host.get("/app/mx/enqueue/ok", headers=host.root).json()["run"]
    fails = host.get("/app/mx/enqueue/fails", headers=host.root).json()["run"]

    def finished() -> bool:
        runs = host.get("/api/admin/tasks/runs", headers=host.root).json()["items"]
        status = {run["id"]: run["status"] for run in runs}
        return status.get(ok) == "succeeded" and status.get(fails) == "failed"

    until(finished, "both runs finished")
    samples = scrape(host, host.root)
    runs = "xcore_task_runs_total"
    assert value(samples, runs, task="mx.ok", plugin="mx", outcome="succeeded") == 1
    assert value(samples, runs, task="mx.fails", plugin="mx", outcome="retrying") == 1  # its first attempt
    assert value(samples, runs, task="mx.fails", plugin="mx", outcome="failed") == 1  # its last
    assert value(samples, "xcore_task_duration_seconds_count", task="mx.fails", plugin="mx") == 2
    assert value(samples, runs, plugin="", outcome="succeeded") >= 1  # the core's housekeeping at the start
    # The queue, read when scraped.
    assert value(samples, "xcore_tasks_queued") == 0
    assert value(samples, "xcore_tasks_consumer_up") == 1
    assert ("xcore_tasks_oldest_queued_age_seconds", frozenset()) in samples


def test_plugin_states_reloads_and_their_durations(host: Any) -> None:
    samples = scrape(host, host.root)
    assert value(samples, "xcore_plugin_state", plugin="mx", state="active") == 1
    assert value(samples, "xcore_plugin_state", plugin="mx", state="failed") == 0
    reloads = value(samples, "xcore_plugin_reloads_total")
    assert reloads >= 1  # the worker's start
    assert host.post("/api/admin/plugins/mx/reload", headers=host.root).status_code == 200
    assert host.post("/api/admin/plugins/mx/disable", headers=host.root).status_code == 200
    until(lambda: host.manager.views["mx"].state == "disabled", "mx disabled")
    after = scrape(host, host.root)
    assert value(after, "xcore_plugin_reloads_total") == reloads + 2
    assert value(after, "xcore_plugin_reload_duration_seconds_count") == value(after, "xcore_plugin_reloads_total")
    assert value(after, "xcore_plugin_state", plugin="mx", state="disabled") == 1
    assert value(after, "xcore_plugin_state", plugin="mx", state="active") == 0


def test_plugin_health_is_exported_from_the_views_health_when_there_is_one() -> None:
    views = [
        SimpleNamespace(id="good", health=SimpleNamespace(status="ok")),
        SimpleNamespace(id="bad", health={"status": "failing", "detail": "no disk"}),
        SimpleNamespace(id="unsure", health=SimpleNamespace(status="unknown")),
        SimpleNamespace(id="silent", health=None),
        SimpleNamespace(id="older"),  # a view from before plugins had health checks
    ]
    assert _health(views) == [(("good",), 1.0), (("bad",), 0.0)]


def test_login_failures_lockouts_and_refusals(data_dir: Path) -> None:
    limits = {"XCORE_SECURE__LOCKOUT__MAX_FAILURES": "2", "XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES": "1000"}
    runtime = open_runtime(data_dir, environ=limits)
    prepare_from_template(runtime)
    create_account(runtime, "root", ["superadmin"])
    create_account(runtime, "bob", ["user"])
    try:
        with plugin_host(runtime) as client:
            root = login(client, "root")
            before = scrape(client, root)
            wrong = {"username": "bob", "password": "not-bobs-password"}
            assert [client.post("/api/auth/login", json=wrong).status_code for _ in range(3)] == [401, 401, 429]
            after = scrape(client, root)
    finally:
        runtime.close()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("xcore_login_failures_total", reason="password") == 2
    assert grew("xcore_login_lockouts_total", key="account") == 1  # the second failure reached the limit
    assert grew("xcore_login_locked_refusals_total") == 1


def test_database_backups_process_and_build(host: Any, runtime: Runtime) -> None:
    made = host.post("/api/admin/backups", headers=host.root)
    assert made.status_code == 201, made.text
    samples = scrape(host, host.root)
    assert value(samples, "xcore_database_up") == 1
    assert value(samples, "xcore_database_revision_current") == 1
    assert value(samples, "xcore_backups", kind="manual") >= 1
    assert time.time() - 120 < value(samples, "xcore_backup_newest_timestamp_seconds") <= time.time() + 1
    assert value(samples, "xcore_process_resident_memory_bytes") > 10_000_000
    assert value(samples, "xcore_process_cpu_seconds") > 0
    assert value(samples, "xcore_build_info", version=runtime.version) == 1


def test_every_family_is_exposed_with_its_help_and_type(host: Any) -> None:
    text = host.get("/metrics", headers=host.root).text
    for family in FAMILIES:
        assert f"# TYPE {family.name} {family.kind}" in text, family.name
        assert f"# HELP {family.name} " in text, family.name


# --- several workers: prometheus-client's multi-process files ------------------------------------------------

WORKER = """
import os, sys, time
from xcore.metrics import export, tally
from xcore.metrics.families import TASK_RUNS
key = ("/a", "GET", 200)
cell = tally.request_cell(key, "/a")
for seconds in [float(s) for s in sys.argv[2].split(",")]:
    cell[tally.bucket(tally.BOUNDS, seconds)] += 1
    cell[-1] += seconds
tally.count(TASK_RUNS, "t", "", "succeeded")
export.start(interval=0.1)  # a flush every 0.05 s
time.sleep(0.2)
if sys.argv[1] == "stop":
    export.stop()
else:
    sys.stdout.write(export.exporter().exposition().decode())
print(os.getpid(), file=sys.stderr)
"""


def test_several_processes_add_up_and_a_stopped_one_leaves_its_counts_not_its_gauges(tmp_path: Path) -> None:
    folder = export.prepare_directory(tmp_path / "metrics")
    env = {**CLEAN_ENV, export.ENV: str(folder)}

    def worker(mode: str, durations: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, mode, durations], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done

    stopped = worker("stop", "0.003,0.003,0.2").stderr.split()[-1]
    running = worker("scrape", "0.003,20")
    samples = parse(running.stdout)
    live = running.stderr.split()[-1]
    assert value(samples, "xcore_http_requests_total", route="/a", method="GET", status="200") == 5
    assert value(samples, "xcore_http_request_duration_seconds_bucket", route="/a", le="0.005") == 3
    assert value(samples, "xcore_http_request_duration_seconds_bucket", route="/a", le="0.25") == 4
    assert value(samples, "xcore_http_request_duration_seconds_bucket", route="/a", le="+Inf") == 5
    assert value(samples, "xcore_http_request_duration_seconds_sum", route="/a") == pytest.approx(20.209)
    assert value(samples, "xcore_task_runs_total", task="t", outcome="succeeded") == 2
    pids = {dict(labels).get("pid") for name, labels in samples if name == "xcore_process_resident_memory_bytes"}
    assert pids == {live}, f"the stopped worker {stopped}'s gauges are gone; the live one {live}'s are there"
    # A new server start empties the folder: an earlier run's counts do not add to the next one's.
    assert list(folder.glob("*.db"))
    export.prepare_directory(folder)
    assert not list(folder.glob("*.db"))


# --- the dashboard's window ----------------------------------------------------------------------------------


def test_quantile_interpolates_within_its_bucket_like_histogram_quantile() -> None:
    bounds = (0.1, 0.2, 0.4)
    assert history.quantile(0.5, bounds, [0.0, 10.0, 10.0, 10.0]) == pytest.approx(0.15)
    assert history.quantile(0.95, bounds, [10.0, 10.0, 10.0, 10.0]) == pytest.approx(0.095)
    assert history.quantile(0.95, bounds, [0.0, 0.0, 0.0, 10.0]) == 0.4  # above every bound: the largest
    assert history.quantile(0.95, bounds, [0.0, 0.0, 0.0, 0.0]) is None


def test_history_samples_rates_and_keeps_one_hour() -> None:
    kept = history.History(interval=10, window=60)
    buckets = tuple([0.0] * 3 + [100.0] * (len(LATENCY_BUCKETS) - 2))  # every request took 5-10 ms
    kept.add(1000, history.Totals())
    kept.add(1010, history.Totals(100, 5, buckets, 3, 1, 2))
    [sample] = kept.window()
    assert sample == {
        "t": 1010,
        "requests_per_second": 10.0,
        "errors_per_second": 0.5,
        "latency_p95_ms": pytest.approx(9.75),
        "tasks_succeeded": 3,
        "tasks_failed": 1,
        "reloads": 2,
    }
    for n in range(2, 20):
        kept.add(1000 + 10 * n, history.Totals(100, 5, buckets, 3, 1, 2))
    assert len(kept.window()) == 6 and kept.window()[-1]["requests_per_second"] == 0.0


def test_the_dashboard_window_is_drawn_from_the_same_counts(host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    export.stop()  # the worker's own flushes would take samples on the real clock meanwhile
    current = export.exporter()
    monkeypatch.setattr(current, "history", history.History())
    now = time.time()
    current.tick(now - 20)
    for _ in range(20):
        host.get("/api/version")
    current.tick(now - 10)
    body = host.get("/api/admin/metrics", headers=host.root).json()
    assert body["interval_seconds"] == 10 and body["window_seconds"] == 3600
    first = body["samples"][0]
    assert set(first) == {
        "t", "requests_per_second", "errors_per_second", "latency_p95_ms", "tasks_succeeded", "tasks_failed", "reloads"
    }  # fmt: skip
    assert first["t"] == round(now - 10)
    assert first["requests_per_second"] >= 2.0  # 20 requests (and a few of the host's) in 10 s
    assert first["latency_p95_ms"] is not None and first["latency_p95_ms"] < 10_000


# --- access ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/api/admin/metrics"])
def test_metrics_need_metrics_read(accounts_api: Api, path: str) -> None:
    client = accounts_api.client
    anonymous = client.get(path)
    assert anonymous.status_code == 401
    assert client.get(path, headers=accounts_api.login("bob")).status_code == 403
    assert "metrics.read" in client.get(path, headers=accounts_api.login("bob")).json()["detail"]
    assert client.get(path, headers=accounts_api.login("ada")).status_code == 200  # admins hold metrics.read
    assert client.get(path, headers=accounts_api.login("root")).status_code == 200


def test_a_scraper_token_reads_metrics_and_nothing_else_until_revoked(accounts_api: Api) -> None:
    client, data = accounts_api.client, str(accounts_api.runtime.data.root)
    made = run_xcore("metrics", "token", "new", "prometheus", "--data-dir", data)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith(PREFIX) and "only time it is shown" in made.stderr
    stored = (accounts_api.runtime.data.root / FILE_NAME).read_text()
    assert token not in stored and token[len(PREFIX) :] not in stored  # only its hash is kept
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/metrics", headers=bearer).status_code == 200
    for method, path in [("GET", "/api/admin/metrics"), ("GET", "/api/me"), ("GET", "/api/admin/users")]:
        assert client.request(method, path, headers=bearer).status_code == 401, path
    listed = run_xcore("metrics", "token", "list", "--data-dir", data)
    assert listed.returncode == 0 and "prometheus" in listed.stdout and token not in listed.stdout
    taken = run_xcore("metrics", "token", "new", "prometheus", "--data-dir", data)
    assert taken.returncode != 0 and "exists already" in taken.stderr
    revoked = run_xcore("metrics", "token", "revoke", "prometheus", "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr
    refused = client.get("/metrics", headers=bearer)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    made_up = client.get("/metrics", headers={"Authorization": f"Bearer {PREFIX}made-up"})
    assert made_up.status_code == 401


def test_a_scraper_token_written_to_a_file_for_prometheus(accounts_api: Api, tmp_path: Path) -> None:
    out = tmp_path / "xcore.token"
    data = str(accounts_api.runtime.data.root)
    made = run_xcore("metrics", "token", "new", "prom", "--out", str(out), "--data-dir", data)
    assert made.returncode == 0, made.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    token = out.read_text().strip()
    assert token.startswith(PREFIX) and token not in made.stdout
    bearer = {"Authorization": f"Bearer {token}"}
    assert accounts_api.client.get("/metrics", headers=bearer).status_code == 200
    again = run_xcore("metrics", "token", "new", "prom2", "--out", str(out), "--data-dir", data)
    assert again.returncode != 0 and "exists already" in again.stderr  # a token file is never written over
    bad = run_xcore("metrics", "token", "new", "no spaces", "--data-dir", data)
    assert bad.returncode != 0 and "not a token name" in bad.stderr


@contextmanager
def root_host(data_dir: Path, environ: dict[str, str]) -> Iterator[tuple[Any, dict[str, str]]]:
    """root_host is a worker's Switch on a runtime made with `environ` (settings), and root's (superadmin) headers."""
    runtime = open_runtime(data_dir, environ=environ)
    prepare_from_template(runtime)
    create_account(runtime, "root", ["superadmin"])
    try:
        with plugin_host(runtime) as client:
            yield client, login(client, "root")
    finally:
        runtime.close()


def test_with_metrics_off_nothing_is_counted_and_both_routes_answer_404(data_dir: Path) -> None:
    try:
        with root_host(data_dir, {"XCORE_SERVER__METRICS": "false"}) as (client, root):
            before = {key: list(cell) for key, cell in tally.cells.items()}
            for _ in range(5):
                client.get("/api/version")
            assert {key: list(cell) for key, cell in tally.cells.items()} == before
            for path in ("/metrics", "/api/admin/metrics"):
                off = client.get(path, headers=root)
                assert off.status_code == 404 and "server.metrics" in off.json()["detail"]
    finally:
        count_requests(True)


def test_the_dashboard_samples_every_server_metrics_interval_seconds(data_dir: Path) -> None:
    """server.metrics_interval sets the sampling of the worker's history (and its flushes, half of it when that is
    sooner than every 5 seconds), and the API says it; out of its range (1-300 seconds), the config is refused."""
    export.stop()  # the flushes of another test's worker in this process: this worker starts its own
    try:
        with root_host(data_dir, {"XCORE_SERVER__METRICS_INTERVAL": "1.5"}) as (client, root):
            assert export.exporter().history.interval == 1.5

            def two_samples() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get("/api/admin/metrics", headers=root).json()
                return body if len(body["samples"]) >= 2 else None

            body = until(two_samples, "two samples", 10)
            assert body["interval_seconds"] == 1.5
            first, second = body["samples"][-2:]
            assert 1 <= second["t"] - first["t"] <= 3, "a sample every 1.5 s (whole seconds of Unix time)"
    finally:
        export.stop()
        export.exporter().history = history.History()
    for wrong in ("0.5", "301", "often"):
        with pytest.raises(ConfigError, match=r"server\.metrics_interval"):
            open_runtime(data_dir, environ={"XCORE_SERVER__METRICS_INTERVAL": wrong})


# --- the Grafana dashboard ------------------------------------------------------------------------------------


def test_the_grafana_dashboard_queries_only_metrics_that_are_exposed(host: Any) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\bxcore_[a-z0-9_]+\b", expr)}
    exposed = {name for family in FAMILIES for name in family.exposed_names()}
    assert used <= exposed, f"the dashboard queries metrics /metrics does not expose: {sorted(used - exposed)}"
    text = host.get("/metrics", headers=host.root).text
    for name in used:
        family = next(f for f in FAMILIES if name in f.exposed_names())
        assert f"# TYPE {family.name} " in text, name
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("requests", "error", "latency", "task", "queue", "reload", "plugin", "memory", "cpu"):
        assert topic in titles, topic


def test_the_families_are_named_for_prometheus() -> None:
    names = [family.name for family in FAMILIES]
    assert len(names) == len(set(names))
    for family in FAMILIES:
        assert re.fullmatch(r"xcore_[a-z0-9_]+", family.name), family.name
        assert family.name.endswith("_total") == (family.kind == "counter"), family.name
    assert families.HTTP_DURATION.buckets == tally.BOUNDS
    assert os.environ.get(export.ENV) is None  # the tests' own process counts in memory
