"""`server.trusted_proxies`: behind a trusted reverse proxy, the audit log, the login throttle and the cookies see the
client address and scheme the proxy forwarded; without the setting the headers change nothing; a bad entry stops
xcore with one line naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PASSWORDS, XcoreServer, create_account, free_port, run_xcore
from xcore.auth.desktop import DesktopTokens
from xcore.config import load_config
from xcore.errors import ConfigError
from xcore.runtime import open_runtime
from xcore.server import prepare_database
from xcore.web.asgi import behind_proxies

ROOT = {"username": "root", "password": PASSWORDS["root"]}
ADDRESS_LIMIT = 3  # secure.lockout.ip_max_failures in these servers: the 4th attempt from one address is refused


def owned_server(start_server: Any, data_dir: Path, server_settings: dict[str, Any]) -> XcoreServer:
    """A running `xcore serve` with the owner account root, at most ADDRESS_LIMIT failed logins per client address,
    and `server_settings` in its config.json."""
    data_dir.mkdir(mode=0o700)
    settings = {"server": server_settings, "secure": {"lockout": {"ip_max_failures": ADDRESS_LIMIT}}}
    (data_dir / "config.json").write_text(json.dumps(settings))
    runtime = open_runtime(data_dir, environ={}, logs=False)
    prepare_database(runtime)
    create_account(runtime, "root", ["superadmin"])
    runtime.close()
    server: XcoreServer = start_server(data_dir)
    server.wait_ready()
    return server


def bearer(http: httpx.Client) -> dict[str, str]:
    response = http.post("/api/auth/login", json=ROOT)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def fail_login(http: httpx.Client, name: str, forwarded_for: str) -> int:
    """fail_login tries a wrong password for `name` (each name once, so no account lock interferes) and returns
    the status: 401 while the address may still try, 429 once it is locked."""
    attempt = {"username": name, "password": "wrong-password"}
    return http.post("/api/auth/login", json=attempt, headers={"X-Forwarded-For": forwarded_for}).status_code


def audited_ip(http: httpx.Client, admin: dict[str, str], name: str) -> str | None:
    page = http.get("/api/admin/audit", params={"action": "login.failed", "user": name}, headers=admin)
    assert page.status_code == 200, page.text
    (event,) = page.json()["items"]
    ip: str | None = event["ip"]
    return ip


def secure_cookies(response: httpx.Response) -> list[bool]:
    """secure_cookies tells, for each cookie the response sets, whether it carries the Secure attribute."""
    cookies = response.headers.get_list("set-cookie")
    assert cookies, response.text
    return ["secure" in [part.strip().lower() for part in cookie.split(";")] for cookie in cookies]


@pytest.mark.e2e
def test_behind_a_trusted_proxy_the_forwarded_client_is_audited_throttled_and_its_scheme_honoured(
    start_server: Any, data_dir: Path
) -> None:
    server = owned_server(start_server, data_dir, {"trusted_proxies": ["127.0.0.1"]})
    assert "trusting X-Forwarded-For and X-Forwarded-Proto from 127.0.0.1" in server.output
    with httpx.Client(base_url=server.url, timeout=15) as http:
        admin = bearer(http)

        assert fail_login(http, "nobody-1", "203.0.113.7") == 401
        assert audited_ip(http, admin, "nobody-1") == "203.0.113.7"
        # nginx appends the address it saw to what the client sent: the right-most untrusted entry is the client.
        assert fail_login(http, "nobody-2", "198.51.100.66, 203.0.113.7") == 401
        assert audited_ip(http, admin, "nobody-2") == "203.0.113.7"

        # 203.0.113.7 has used up its attempts; another forwarded address has a bucket of its own.
        assert fail_login(http, "nobody-3", "203.0.113.7") == 401
        assert fail_login(http, "nobody-4", "203.0.113.7") == 429
        assert fail_login(http, "nobody-5", "192.0.2.20") == 401
        assert audited_ip(http, admin, "nobody-5") == "192.0.2.20"

        # X-Forwarded-Proto: https from the proxy: the session cookies are Secure, as over TLS.
        proxied_tls = {"X-Forwarded-For": "192.0.2.30", "X-Forwarded-Proto": "https"}
        over_tls = http.post("/api/auth/login", json={**ROOT, "cookie": True}, headers=proxied_tls)
        assert over_tls.status_code == 200, over_tls.text
        assert secure_cookies(over_tls) == [True, True, True]
        proxied_http = {"X-Forwarded-For": "192.0.2.30", "X-Forwarded-Proto": "http"}
        plain = http.post("/api/auth/login", json={**ROOT, "cookie": True}, headers=proxied_http)
        assert secure_cookies(plain) == [False, False, False]
        # HSTS exactly when the request came over https, on every answer, refusals and 404s too.
        for path in ("/health", "/api/admin/users", "/nowhere", "/docs", "/static/vendor/redoc/redoc.standalone.js"):
            answer = http.get(path, headers=proxied_tls)
            assert answer.headers["strict-transport-security"] == "max-age=31536000", (path, answer.status_code)
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "strict-transport-security" not in http.get(path, headers=proxied_http).headers
        assert "strict-transport-security" not in plain.headers

        # The desktop sign-in still refuses anything that came through a proxy, even when the proxy forwarded
        # a loopback address; the same token works from this machine directly.
        token = DesktopTokens(data_dir).issue()
        through_proxy = http.post("/api/auth/desktop", json={"token": token}, headers={"X-Forwarded-For": "127.0.0.1"})
        assert through_proxy.status_code == 403, through_proxy.text
        assert "not through a proxy" in through_proxy.json()["detail"]
        assert http.post("/api/auth/desktop", json={"token": token}).status_code == 200
    assert server.stop() == 0


@pytest.mark.e2e
def test_without_trusted_proxies_the_headers_are_ignored_and_the_address_cannot_be_spoofed(
    start_server: Any, data_dir: Path
) -> None:
    server = owned_server(start_server, data_dir, {})
    assert "trusting X-Forwarded-For" not in server.output
    with httpx.Client(base_url=server.url, timeout=15) as http:
        admin = bearer(http)
        spoofed_tls = {"X-Forwarded-For": "192.0.2.30", "X-Forwarded-Proto": "https"}
        plain = http.post("/api/auth/login", json={**ROOT, "cookie": True}, headers=spoofed_tls)
        assert secure_cookies(plain) == [False, False, False], "the scheme is the connection's: http"
        assert "strict-transport-security" not in plain.headers  # no HSTS on a client's word
        assert "strict-transport-security" not in http.get("/health", headers=spoofed_tls).headers

        assert fail_login(http, "nobody-1", "203.0.113.7") == 401
        assert audited_ip(http, admin, "nobody-1") == "127.0.0.1"
        # Every forwarded address counts against the one real peer.
        assert fail_login(http, "nobody-2", "198.51.100.1") == 401
        assert fail_login(http, "nobody-3", "198.51.100.2") == 401
        assert fail_login(http, "nobody-4", "198.51.100.3") == 429
    assert server.stop() == 0


@pytest.mark.parametrize("entry", ["10.0.0.300", "*"])
def test_a_bad_entry_stops_serve_with_one_line_naming_the_key(data_dir: Path, entry: str) -> None:
    data_dir.mkdir(mode=0o700)
    (data_dir / "config.json").write_text(json.dumps({"server": {"trusted_proxies": ["127.0.0.1", entry]}}))
    result = run_xcore("serve", "--port", str(free_port()), "--data-dir", str(data_dir))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"xcore: error: {data_dir / 'config.json'}: server.trusted_proxies[1]: '{entry}' ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["10.0.0.300"], "server.trusted_proxies[0]: '10.0.0.300' is not an IP address or network"),
        (["127.0.0.1", "nginx"], "server.trusted_proxies[1]: 'nginx' is not an IP address or network"),
        ([" 127.0.0.1"], "' 127.0.0.1' is not an IP address or network"),
        ([""], "server.trusted_proxies[0]: '' is not an IP address or network"),
        (["*"], "'*' would let every client name its own address; list the addresses of your reverse proxies"),
        (["10.0.0.0/33"], "'10.0.0.0/33' is not an IP address or network"),
        (["10.0.0.1/8"], "'10.0.0.1/8' has host bits set; write the network as 10.0.0.0/8"),
        ("127.0.0.1", "server.trusted_proxies: Expected array, got str; it takes list of string"),
    ],
)
def test_config_refuses_entries_that_are_not_addresses_or_networks(data_dir: Path, value: Any, expected: str) -> None:
    data_dir.mkdir()
    path = data_dir / "config.json"
    path.write_text(json.dumps({"server": {"trusted_proxies": value}}))
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_config_takes_addresses_and_networks_from_the_file_and_the_environment(data_dir: Path) -> None:
    assert load_config(data_dir, environ={}).config.server.trusted_proxies == [], "trust nobody by default"
    entries = ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "fe80::1%eth0"]
    data_dir.mkdir()
    (data_dir / "config.json").write_text(json.dumps({"server": {"trusted_proxies": entries}}))
    assert load_config(data_dir, environ={}).config.server.trusted_proxies == entries

    variable = "XCORE_SERVER__TRUSTED_PROXIES"
    for text, expected in [
        ('["192.168.1.2", "::1"]', ["192.168.1.2", "::1"]),  # JSON, as for every other setting
        ("192.168.1.2, ::1", ["192.168.1.2", "::1"]),  # or comma-separated text
        ("172.16.0.0/12", ["172.16.0.0/12"]),
        ("", []),  # empty: trust nobody, whatever the file says
    ]:
        loaded = load_config(data_dir, environ={variable: text})
        assert loaded.config.server.trusted_proxies == expected, text
        assert loaded.source_of(("server", "trusted_proxies")) == f"environment variable {variable}"
    with pytest.raises(ConfigError, match=rf"^environment variable {variable}: server\.trusted_proxies\[1\]: '\*'"):
        load_config(data_dir, environ={variable: "127.0.0.1,*"})


def test_without_trusted_proxies_the_served_app_is_not_wrapped() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    assert behind_proxies(app, []) is app
    assert behind_proxies(app, ["127.0.0.1"]) is not app


@pytest.mark.parametrize(
    ("peer", "forwarded", "seen"),
    [
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "' or 1=1; <script>", "127.0.0.1"),  # not an address: the peer stays
        ("127.0.0.1", "x" * 300, "127.0.0.1"),
        ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # the peer is no trusted proxy: the header is ignored
    ],
)
async def test_only_a_forwarded_ip_address_from_a_trusted_peer_replaces_the_client(
    peer: str, forwarded: str, seen: str
) -> None:
    clients: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        clients.append(scope["client"])

    scope = {"type": "http", "client": (peer, 5000), "headers": [(b"x-forwarded-for", forwarded.encode())]}
    await behind_proxies(app, ["127.0.0.1"])(scope, None, None)
    assert clients[0][0] == seen
