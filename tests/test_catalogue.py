"""Plugin catalogues (issue 26): a signed index a team builds with `xcore catalogue build`, served from a local
HTTP server on 127.0.0.1, browsed, installed from and updated through the admin API and the CLI, with its
notices and its blocklist.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from conftest import create_account, run_xcore
from test_plugin_manager import Host, configured_runtime, eventually, open_host, route
from xcore import __version__
from xcore.plugins.catalogue import build
from xcore.plugins.pack import pack_folder
from xcore.plugins.signing import new_key


@pytest.fixture
def shelf(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """shelf is a folder served over HTTP on 127.0.0.1: (the folder, its URL ending in /)."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def team_key(tmp_path: Path) -> tuple[Path, str]:
    pem, line = new_key("Team")
    key = tmp_path / "team.key"
    key.write_bytes(pem)
    (tmp_path / "team.pub").write_text(line + "\n")
    return key, line


def release(shelf: Path, tmp: Path, version: str, says: str, key: Path | None = None) -> Path:
    folder = tmp / f"src-{version}"
    folder.mkdir(parents=True)
    manifest = {"id": "memo", "version": version, "name": "Memo", "description": "Notes for the team"}
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "run.py").write_text(route(says))
    return pack_folder(folder, shelf, __version__, sign=key)


def publish(shelf: Path, key: Path, **settings: Any) -> None:
    if settings:
        (shelf / "catalogue.json").write_text(json.dumps(settings))
    (shelf / "index.json").write_bytes(build(shelf, key))


@pytest.fixture
def catalogue_host(
    tmp_path: Path, shelf: tuple[Path, str], team_key: tuple[Path, str]
) -> Iterator[Callable[..., Host]]:
    """catalogue_host(trust=True) runs a host whose catalogue is the shelf's index, trusting the team's key."""
    stack: list[Any] = []

    def start(trust: bool = True, **environ: str) -> Host:
        cm = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__CATALOGUES=json.dumps([shelf[1]]), **environ)
        runtime = cm.__enter__()
        stack.append(cm)
        create_account(runtime, "ada", ["admin"])
        host_cm = open_host(runtime, tmp_path / "staging")
        host = host_cm.__enter__()
        stack.append(host_cm)
        if trust:
            response = host.client.post("/api/admin/trust", json={"public_key": team_key[1]}, headers=host.root)
            assert response.status_code == 201, response.text
        return host

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def browse(host: Host, **query: str) -> dict[str, Any]:
    response = host.client.post("/api/admin/catalogue/refresh", headers=host.root)
    assert response.status_code == 200, response.text
    response = host.client.get("/api/admin/catalogue", params=query, headers=host.root)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def install(host: Host, **body: str) -> Any:
    return host.client.post("/api/admin/catalogue/install", json=body, headers=host.root)


def test_browse_install_update_notice_and_blocklist_from_a_catalogue(
    catalogue_host: Callable[..., Host], shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = shelf
    key, _ = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    release(folder, tmp_path, "1.1.0", "two", key)
    publish(folder, key, name="Team plugins", notices=[
        {"id": "memo", "versions": "<1.1", "level": "warning", "message": "1.0 loses notes on restart; update"}
    ])  # fmt: skip
    host = catalogue_host()

    listing = browse(host, q="notes for")
    assert [c["name"] for c in listing["catalogues"]] == ["Team plugins"] and listing["catalogues"][0]["error"] is None
    (memo,) = listing["plugins"]
    assert (memo["id"], memo["latest"]["version"], memo["installed"], memo["update"]) == ("memo", "1.1.0", None, False)
    assert memo["latest"]["signer"] == "Team" and memo["versions"] == ["1.1.0", "1.0.0"]
    assert browse(host, q="nothing like it")["plugins"] == []

    first = install(host, id="memo", version="1.0.0")
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "active" and first.json()["serving"] == "1.0.0"
    assert first.json()["notices"] == [
        {"level": "warning", "message": "1.0 loses notes on restart; update", "catalogue": "Team plugins"}
    ]
    assert host.get("/app/memo/hello").json()["says"] == "one"
    memo = browse(host)["plugins"][0]
    assert memo["installed"] == "1.0.0" and memo["update"] is True and memo["notices"]

    updated = install(host, id="memo")  # the newest that fits: an update, hot reloaded
    assert updated.status_code == 201 and updated.json()["serving"] == "1.1.0", updated.text
    assert updated.json()["notices"] == []
    assert host.get("/app/memo/hello").json()["says"] == "two"
    audit = host.get("/api/admin/audit?action=plugin.install").json()["items"]
    assert [(a["target"], a["detail"]["version"], a["detail"]["catalogue"]) for a in audit] == [
        ("memo", "1.1.0", "Team plugins"), ("memo", "1.0.0", "Team plugins")
    ]  # fmt: skip
    (team,) = host.get("/api/admin/trust").json()
    assert audit[0]["detail"]["signer"] == {"name": "Team", "key_id": team["key_id"], "trusted": True}

    # The team blocks 1.1.0: at the next fetch it stops serving, the older version serves again, and says why.
    publish(folder, key, name="Team plugins", blocklist=[{"id": "memo", "versions": "==1.1.0", "reason": "bad"}])
    browse(host)
    view = host.wait_view("memo", "active", serving="1.0.0")
    assert "blocked: bad (the blocklist of catalogue 'Team plugins')" in view["error"]
    assert host.get("/app/memo/hello").json()["says"] == "one"
    refused = install(host, id="memo", version="1.1.0")
    assert refused.status_code == 422 and refused.json()["rule"] == "blocked", refused.text


def test_a_catalogue_the_host_cannot_trust_or_reach_is_named_with_its_error(
    catalogue_host: Callable[..., Host], shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _url = shelf
    key, _ = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    publish(folder, key)
    host = catalogue_host(trust=False)
    (entry,) = browse(host)["catalogues"]
    assert "signed by 'Team'" in entry["error"] and "a key this host does not trust" in entry["error"]
    assert install(host, id="memo").status_code == 404

    trusted = host.client.post("/api/admin/trust", json={"public_key": team_key[1]}, headers=host.root)
    assert trusted.status_code == 201
    assert browse(host)["catalogues"][0]["error"] is None
    index = folder / "index.json"
    index.write_text(index.read_text().replace('"Memo"', '"Mallory"'))  # the host of the catalogue changes it
    (entry,) = browse(host)["catalogues"]
    assert "changed after it was signed" in (entry["error"] or ""), entry
    publish(folder, key)
    browse(host)
    index.unlink()
    shutil.rmtree(folder)  # unreachable now: the last good copy answers, marked stale
    (entry,) = browse(host)["catalogues"]
    assert entry["error"] is None and "HTTP 404" in entry["stale"], entry


def test_a_download_that_does_not_match_the_catalogues_sha256_is_refused(
    catalogue_host: Callable[..., Host], shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = shelf
    key, _ = team_key
    bundle = release(folder, tmp_path, "1.0.0", "one", key)
    publish(folder, key)
    bundle.write_bytes(bundle.read_bytes() + b"\0")  # the file served is not the one listed
    host = catalogue_host()
    browse(host)
    refused = install(host, id="memo")
    assert refused.status_code == 502 and "the catalogue lists" in refused.json()["detail"], refused.text
    assert not list(host.folder.glob("memo-*.zip"))


def test_an_admin_cannot_install_a_plugin_that_would_run_in_process(
    catalogue_host: Callable[..., Host], shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = shelf
    key, _ = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    publish(folder, key)
    host = catalogue_host()
    browse(host)
    from test_plugin_manager import login

    refused = host.client.post("/api/admin/catalogue/install", json={"id": "memo"}, headers=login(host.client, "ada"))
    assert refused.status_code == 403, refused.text
    eventually(lambda: host.view("memo") is None)


def test_the_cli_builds_searches_and_updates(
    shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    folder, url = shelf
    key, _ = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    built = run_xcore("catalogue", "build", str(folder), "--sign", str(key))
    assert built.returncode == 0, built.stderr
    data = ["--data-dir", str(tmp_path / "data")]
    env = {"XCORE_MANAGER__PLUGINS__CATALOGUES": json.dumps([url])}
    assert run_xcore("trust", "add", str(tmp_path / "team.pub"), *data).returncode == 0
    found = run_xcore("plugin", "search", "memo", *data, env=env)
    assert found.returncode == 0 and "memo" in found.stdout and "1.0.0" in found.stdout, found.stdout + found.stderr
    first = run_xcore("plugin", "update", "memo", *data, env=env)
    assert first.returncode == 0 and "memo: not installed -> 1.0.0 (from shelf)" in first.stdout, first.stdout
    release(folder, tmp_path, "1.1.0", "two", key)
    assert run_xcore("catalogue", "build", str(folder), "--sign", str(key)).returncode == 0
    second = run_xcore("plugin", "update", *data, env=env)
    assert "memo: 1.0.0 -> 1.1.0" in second.stdout, second.stdout + second.stderr
    again = run_xcore("plugin", "update", *data, env=env)
    assert "memo 1.1.0 is up to date" in again.stdout
    assert sorted(p.name for p in (tmp_path / "data" / "plugins").glob("*.zip")) == ["memo-1.0.0.zip", "memo-1.1.0.zip"]
    none = run_xcore("plugin", "search", *data)
    assert none.returncode == 2 and "no catalogue is configured" in none.stderr


@pytest.mark.parametrize(("where", "policy"), [("file", "unsigned"), ("folder", "signed-only")])
def test_a_catalogue_on_the_disk_is_searched_and_installed_from_offline(
    tmp_path: Path, team_key: tuple[Path, str], where: str, policy: str
) -> None:
    folder = tmp_path / "offline"  # no server: a file, or a folder holding index.json (a share, a USB stick)
    folder.mkdir()
    key, line = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    release(folder, tmp_path, "1.1.0", "unsigned")  # listed, but no key signed the bundle
    built = run_xcore("catalogue", "build", str(folder), "--sign", str(key))
    assert built.returncode == 0, built.stderr
    source = str(folder / "index.json") if where == "file" else str(folder)
    catalogues = json.dumps([source])
    with (
        configured_runtime(
            tmp_path / "data", XCORE_MANAGER__PLUGINS__CATALOGUES=catalogues, XCORE_MANAGER__PLUGINS__POLICY=policy
        ) as runtime,
        open_host(runtime, tmp_path / "staging") as host,
    ):
        response = host.client.post("/api/admin/trust", json={"public_key": line}, headers=host.root)
        assert response.status_code == 201, response.text
        listing = browse(host, q="notes")
        (catalogue,) = listing["catalogues"]
        assert catalogue["source"] == source and catalogue["error"] is None and catalogue["name"] == "offline"
        (memo,) = listing["plugins"]
        assert memo["versions"] == ["1.1.0", "1.0.0"] and memo["latest"]["signer"] is None

        first = install(host, id="memo", version="1.0.0")
        assert first.status_code == 201, first.text
        assert first.json()["state"] == "active" and first.json()["signature"]["trusted"] is True
        assert host.get("/app/memo/hello").json()["says"] == "one"
        unsigned = install(host, id="memo", version="1.1.0")
        if policy == "signed-only":  # the catalogue's signature does not stand for the bundle's
            assert unsigned.status_code == 422 and unsigned.json()["rule"] == "policy", unsigned.text
            assert "the bundle is unsigned" in unsigned.json()["detail"]
            assert sorted(p.name for p in host.folder.glob("*.zip")) == ["memo-1.0.0.zip"]
        else:
            assert unsigned.status_code == 201 and unsigned.json()["serving"] == "1.1.0", unsigned.text
            assert host.get("/app/memo/hello").json()["says"] == "unsigned"


def test_a_bundle_not_signed_by_the_signer_the_catalogue_lists_is_refused_naming_both(
    catalogue_host: Callable[..., Host], shelf: tuple[Path, str], team_key: tuple[Path, str], tmp_path: Path
) -> None:
    from xcore.plugins.signing import read_private_key, sign

    folder, _ = shelf
    key, _ = team_key
    release(folder, tmp_path, "1.0.0", "one", key)
    publish(folder, key)
    # The index, edited to say another signer, then signed again with the team's key: the index holds, the bundle
    # is not what it says.
    body = json.loads((folder / "index.json").read_text())
    del body["signature"]
    body["plugins"][0]["releases"][0]["signer"] = "Mallory"
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signature = json.loads(sign(*read_private_key(key), canonical))
    (folder / "index.json").write_text(json.dumps({**body, "signature": signature}))
    host = catalogue_host()
    assert browse(host)["plugins"][0]["latest"]["signer"] == "Mallory"

    refused = install(host, id="memo")
    assert refused.status_code == 422 and refused.json()["rule"] == "signer", refused.text
    (team,) = host.get("/api/admin/trust").json()
    assert refused.json()["detail"] == (
        "bundle memo-1.0.0.zip: signer: catalogue 'shelf' lists it as signed by 'Mallory', but the bundle is signed "
        f"by 'Team' ({team['key_id']})"
    )
    assert not list(host.folder.glob("*.zip"))
