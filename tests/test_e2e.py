"""End to end: the real `xcore serve` in a subprocess, on a free port, with a temporary data directory."""

from __future__ import annotations

import json
import signal
import socket
import stat

import httpx
import pytest

from conftest import free_port, fresh_python, run_xcore

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_then_stops_cleanly(start_server, sig: int) -> None:
    server = start_server()
    health = server.wait_ready()
    assert health.json()["database"]["status"] == "ok"
    assert f"serving at {server.url}" in server.output

    for path, kind in (("/docs", "text/html"), ("/redoc", "text/html"), ("/openapi.json", "application/")):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
    assert "/api/version" in httpx.get(server.url + "/openapi.json").json()["paths"]
    version = httpx.get(server.url + "/api/version", headers={"X-Request-ID": "e2e-check"})
    assert version.json()["name"] == "xcore" and version.headers["x-request-id"] == "e2e-check"

    assert server.stop(sig) == 0
    assert "xcore stopped cleanly" in server.output
    assert "Traceback" not in server.output

    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    assert (data / "secret.key").read_text().strip() not in server.output, "the signing key is never printed"
    entries = [json.loads(line) for line in (data / "logs" / "xcore.log").read_text().splitlines()]
    request = next(e for e in entries if e.get("request_id") == "e2e-check")
    assert request["context"] == "api" and request["path"] == "/api/version" and request["status"] == 200
    assert "duration_ms" in request and request["method"] == "GET"
    assert any(e["message"] == "xcore stopped cleanly" and e["context"] == "system" for e in entries)
    assert {e["context"] for e in entries} >= {"api", "db", "system"}


def test_the_main_process_of_serve_stays_out_of_the_web_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`xcore serve`'s main process prepares the database and watches over the workers: Litestar, PyJWT and
    cryptography are the workers' (about 20 MB of the main process's memory, and what it imports is only paid
    once more by each worker)."""
    probe = (
        "import sys, granian\n"
        "class Granian:  # everything `xcore serve` does up to starting the workers\n"
        "    def __init__(self, *args, **kwargs): pass\n"
        "    def serve(self):\n"
        "        heavy = {'litestar', 'jwt', 'cryptography', 'segno'}\n"
        "        print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
        "granian.Granian = Granian  # xcore.server imports it from there when it serves\n"
        "from xcore.cli import cli\n"
        f"cli.main(['serve', '--port', '{free_port()}', '--data-dir', {str(tmp_path)!r}], standalone_mode=False)\n"
    )
    assert "LOADED []" in fresh_python(probe).splitlines()


def test_a_worker_loads_pyjwt_after_its_start_not_during_it() -> None:
    """PyJWT (with cryptography) is not on a worker's way to serving; it is imported in the background
    WARM_UP_AFTER seconds later, before anyone can log in."""
    probe = (
        "import sys\n"
        "from xcore.web import asgi\n"
        "print('BEFORE', 'jwt' in sys.modules)\n"
        "timer = asgi.warm_up_later(delay=0.05)\n"
        "print('NAME', timer.name, timer.daemon)\n"
        "timer.join(30)\n"
        "print('AFTER', 'jwt' in sys.modules and 'jwt.algorithms' in sys.modules)\n"
    )
    lines = fresh_python(probe).splitlines()
    assert "BEFORE False" in lines and "NAME xcore-warm-up True" in lines and "AFTER True" in lines


def test_port_in_use_is_one_line_and_exit_2(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_xcore("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"xcore: error: port {port} on 127.0.0.1 is already in use; choose another with --port"
    assert "Traceback" not in result.stderr


def test_second_server_on_the_same_data_dir_is_refused(start_server) -> None:
    server = start_server()
    server.wait_ready()
    result = run_xcore("serve", "--port", str(free_port()), "--data-dir", str(server.data_dir))
    assert result.returncode == 2
    assert "another xcore server is already running" in result.stderr
    assert server.stop() == 0


def test_several_workers(start_server) -> None:
    server = start_server(None, "--workers", "2")
    server.wait_ready()
    statuses = {httpx.get(server.url + "/api/version").status_code for _ in range(20)}
    assert statuses == {200}
    assert server.output.count("Spawning worker-") == 2
    assert server.stop() == 0


def test_settings_from_the_data_dir_file_and_environment(start_server, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "config.json").write_text(json.dumps({"xcore": {"logs": {"file": "elsewhere/x.log"}}}))
    server = start_server(data, env={"XCORE_XCORE__LOGS__LEVEL": "WARNING"})
    server.wait_ready()
    httpx.get(server.url + "/api/version")
    assert server.stop() == 0
    assert (data / "elsewhere" / "x.log").exists()
    assert "GET /api/version" not in server.output, "INFO request lines are below the WARNING level"
