"""End to end: a real Prometheus server scrapes a real `xcore serve` with two Granian workers (issue 28).

Prometheus is Debian's (`/usr/bin/prometheus`, installed by `python3 tasks.py test` from APT_FOR_TEST), run here
on 127.0.0.1 with a temporary configuration and storage (never its packaged service): it scrapes /metrics every
second with a scraper token made by the real CLI (`xcore metrics token new --out`) as its `credentials_file`.
The test makes requests and runs a plugin's tasks, then asks Prometheus's HTTP API (`/api/v1/query`) for the
request rate and the task outcomes, and checks the series and labels that come back: the counts of both
workers, added up through prometheus-client's multi-process files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import free_port, run_xcore, until

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
OWNER, OWNER_PASSWORD = "root", "first-owner-secret-1"
DEADLINE = 30.0

RUN_PY = """
from xcore.sdk import FromPath, get, task


@task(retries=0)
def ok():
    return None


@task(retries=0)
def fails():
    raise RuntimeError("fails on purpose")


@get("/items/{item_id:int}")
async def item(item_id: FromPath[int]) -> dict:
    return {"id": item_id}


@get("/enqueue/{name:str}", sync_to_thread=True)
def enqueue(name: FromPath[str]) -> dict:
    return {"run": {"ok": ok, "fails": fails}[name].enqueue()}


router = [item, enqueue]
"""

CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: xcore
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:{port}"]
    authorization:
      type: Bearer
      credentials_file: {token}
"""


class Prometheus:
    """Prometheus is a real Prometheus server on a free port of 127.0.0.1, with its storage in `folder`."""

    def __init__(self, folder: Path, xcore_port: int, token_file: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(CONFIG.replace("{port}", str(xcore_port)).replace("{token}", str(token_file)))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "prometheus.log"
        self._output = self.log.open("w")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """query is the result of an instant query: a list of {"metric": labels, "value": [time, "value"]}."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()


@pytest.fixture
def prometheus_server() -> Iterator[Any]:
    """prometheus_server(folder, xcore_port, token_file) starts a Prometheus server, stopped at the end."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed: `python3 tasks.py test` installs it (apt package prometheus)")
    started: list[Prometheus] = []

    def start(folder: Path, xcore_port: int, token_file: Path) -> Prometheus:
        server = Prometheus(folder, xcore_port, token_file)
        started.append(server)
        until(lambda: httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200, "prometheus ready",
              DEADLINE, alive=server.alive)  # fmt: skip
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_the_request_rate_and_task_outcomes(
    start_server: Any, prometheus_server: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    plugins = data / "plugins"
    plugins.mkdir(parents=True)
    data.chmod(0o700)
    with zipfile.ZipFile(plugins / "mx-1.0.0.zip", "w") as archive:
        archive.writestr("plugin.json", json.dumps({"id": "mx", "version": "1.0.0"}))
        archive.writestr("run.py", RUN_PY)
    token_file = tmp_path / "xcore.token"
    made = run_xcore("metrics", "token", "new", "prometheus", "--out", str(token_file), "--data-dir", str(data))
    assert made.returncode == 0, made.stderr

    server = start_server(data, "--workers", "2")
    server.wait_ready(timeout=DEADLINE)
    # No keep-alive: each request opens a connection, so the requests spread over both workers.
    http = httpx.Client(base_url=server.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
    setup_token = (data / "setup-token").read_text().strip()
    setup = http.post("/api/setup", json={"token": setup_token, "username": OWNER, "password": OWNER_PASSWORD})
    assert setup.status_code == 201, setup.text
    login = http.post("/api/auth/login", json={"username": OWNER, "password": OWNER_PASSWORD})
    owner = {"Authorization": f"Bearer {login.json()['access_token']}"}

    prometheus = prometheus_server(tmp_path / "prometheus", server.port, token_file)
    target = until(lambda: prometheus.query('up{job="xcore"} == 1'), "Prometheus scraping xcore", DEADLINE,
                   interval=0.5, alive=prometheus.alive)  # fmt: skip
    assert target[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"

    runs = [http.get(f"/app/mx/enqueue/{name}", headers=owner).json()["run"] for name in ("ok", "fails")]

    def traffic_rate() -> set[tuple[str, ...]]:
        # Requests between scrapes, until the rate over the last seconds shows them. (Prometheus leaves out an
        # empty label: the core's routes have no `plugin`.)
        for n in range(10):
            assert http.get("/api/version").status_code == 200
            assert http.get(f"/app/mx/items/{n}", headers=owner).status_code == 200
        time.sleep(0.5)
        rates = prometheus.query("sum by (route, method, status, plugin) (rate(xcore_http_requests_total[15s])) > 0")
        labels = [r["metric"] for r in rates]
        found = {(m["route"], m["method"], m["status"], m.get("plugin", "")) for m in labels}
        wanted = {("/api/version", "GET", "200", ""), ("/app/mx/items/{item_id}", "GET", "200", "mx")}
        return found if wanted <= found else set()

    series = until(traffic_rate, "a request rate from Prometheus", DEADLINE, interval=0.1, alive=prometheus.alive)
    # Route templates, never raw paths: /app/mx/items/3 is no series of its own.
    assert all(route.startswith(("/", "<")) and "/items/3" not in route for route, *_ in series)

    def finished() -> bool:
        listed = http.get("/api/admin/tasks/runs", headers=owner).json()["items"]
        status = {run["id"]: run["status"] for run in listed}
        return status.get(runs[0]) == "succeeded" and status.get(runs[1]) == "failed"

    until(finished, "both task runs finished", DEADLINE)

    def outcomes() -> dict[tuple[str, str], float]:
        found = prometheus.query('sum by (task, plugin, outcome) (xcore_task_runs_total{plugin="mx"})')
        return {(r["metric"]["task"], r["metric"]["outcome"]): float(r["value"][1]) for r in found}

    seen = until(lambda: len(outcomes()) >= 2 and outcomes(), "the task outcomes in Prometheus", DEADLINE,
                 interval=0.5)  # fmt: skip
    assert seen == {("mx.ok", "succeeded"): 1.0, ("mx.fails", "failed"): 1.0}
    # Both workers report their memory, each as its own series.
    workers = until(lambda: prometheus.query("count(xcore_process_resident_memory_bytes) == 2"), "two workers",
                    DEADLINE, interval=0.5)  # fmt: skip
    assert workers
    buckets = 'xcore_http_request_duration_seconds_bucket{route="/api/version"}'
    latency = prometheus.query(f"histogram_quantile(0.95, sum by (le) (rate({buckets}[15s])))")
    assert latency and 0 < float(latency[0]["value"][1]) < 10

    prometheus.stop()
    assert server.stop() == 0
    # Each worker removed its own memory and CPU series as it stopped; the counts stay until the next start.
    metrics = data / "metrics"
    assert not list(metrics.glob("gauge_live*")), sorted(p.name for p in metrics.iterdir())
    assert list(metrics.glob("counter_*.db"))
