"""Signed bundles (issue 26): Ed25519 signatures over a bundle's content, the operator's trust store, and
manager.plugins.policy, through the real pack step, a running host (conftest's `plugin_host`), the admin API and
the CLI.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import create_account, run_xcore
from test_plugin_manager import Host, configured_runtime, login, open_host, route, upload
from xcore import __version__
from xcore.plugins.bundle import BundleError, inspect_bundle
from xcore.plugins.pack import pack_folder
from xcore.plugins.signing import SignatureError, TrustStore, new_key, parse_public_key
from xcore.runtime import Runtime


@pytest.fixture
def keys(tmp_path: Path) -> Callable[[str], tuple[Path, str]]:
    """keys makes a key pair like `xcore keys new`: returns (the private key's path, the public key's line)."""

    def make(name: str) -> tuple[Path, str]:
        pem, line = new_key(name)
        private = tmp_path / "keys" / f"{name}.key"
        private.parent.mkdir(exist_ok=True)
        private.write_bytes(pem)
        private.with_suffix(".pub").write_text(line + "\n")
        return private, line

    return make


def plugin(parent: Path, plugin_id: str, version: str = "1.0.0", says: str = "hi", **manifest: object) -> Path:
    folder = parent / f"src-{plugin_id}-{version}"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps({"id": plugin_id, "version": version, **manifest}))
    (folder / "run.py").write_text(route(says))
    (folder / "static").mkdir()
    (folder / "static" / "a.txt").write_text("static file\n")
    return folder


def rewrite(path: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """rewrite copies a zip entry by entry through `change` (None drops the entry)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = change(info.filename, source.read(info))
            if data is not None:
                out.writestr(info, data)
    return target


# --- signing and verifying ---------------------------------------------------------------------------------------


def test_a_signed_bundle_names_its_signer_and_any_change_after_signing_breaks_it(tmp_path: Path, keys) -> None:
    private, line = keys("Ada")
    signed = pack_folder(plugin(tmp_path, "memo"), tmp_path / "dist", __version__, sign=private)
    bundle = inspect_bundle(signed, __version__)
    assert bundle.signer is not None and bundle.signer.name == "Ada"
    assert bundle.signer.public_key == parse_public_key(line)[1]
    assert "xcore-signature.json" not in bundle.entries, "the signature is not extracted with the code"

    def one_byte(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "static/a.txt" else data

    tampers = {
        "one byte changed": one_byte,
        "an entry added": lambda name, data: data + b"\n" if name == "run.py" else data,
        "an entry removed": lambda name, data: None if name == "static/a.txt" else data,
    }
    for what, change in tampers.items():
        with pytest.raises(BundleError) as caught:
            inspect_bundle(rewrite(signed, tmp_path / f"{what}.zip", change), __version__)
        assert caught.value.rule == "signature", what
        assert "changed after it was signed" in caught.value.reason, what
    with zipfile.ZipFile(signed) as archive, zipfile.ZipFile(tmp_path / "extra.zip", "w") as out:
        for info in archive.infolist():
            out.writestr(info, archive.read(info))
        out.writestr("static/added.js", "alert(1)")
    with pytest.raises(BundleError) as caught:
        inspect_bundle(tmp_path / "extra.zip", __version__)
    assert caught.value.rule == "signature"


def test_a_damaged_signature_file_is_refused_saying_so(tmp_path: Path, keys) -> None:
    private, _ = keys("Ada")
    signed = pack_folder(plugin(tmp_path, "memo"), tmp_path / "dist", __version__, sign=private)
    broken = rewrite(signed, tmp_path / "b.zip", lambda n, d: b"{not json" if n == "xcore-signature.json" else d)
    with pytest.raises(BundleError) as caught:
        inspect_bundle(broken, __version__)
    assert caught.value.rule == "signature" and "cannot be read" in caught.value.reason


def test_the_trust_store_adds_lists_and_removes_keys_and_refuses_duplicates(tmp_path: Path, keys) -> None:
    store = TrustStore(tmp_path / "trusted-keys.json")
    _, ada = keys("Ada")
    _, bob = keys("Bob")
    store.add(ada)
    store.add(bob, "Bob the builder")
    assert [k.name for k in store.listed()] == ["Ada", "Bob the builder"]
    with pytest.raises(SignatureError, match="trusted already, as 'Ada'"):
        store.add(ada, "Another")
    with pytest.raises(SignatureError, match="a key named 'ada' is trusted already"):
        store.add(keys("Cyd")[1], "ada")
    with pytest.raises(SignatureError, match="one line `xcore-ed25519"):
        store.add("ssh-ed25519 AAAA")
    removed = store.remove(store.listed()[0].key_id)
    assert removed.name == "Ada" and [k.name for k in store.listed()] == ["Bob the builder"]
    assert [k.name for k in TrustStore(tmp_path / "trusted-keys.json").listed()] == ["Bob the builder"]


# --- the policy, on a running host -------------------------------------------------------------------------------


@pytest.fixture
def policy_host(tmp_path: Path) -> Iterator[Callable[[str], Host]]:
    """policy_host(policy) runs a host whose manager.plugins.policy is `policy`, with accounts root and ada."""
    stack: list[object] = []

    def start(policy: str) -> Host:
        runtime_cm = configured_runtime(tmp_path / "data", XCORE_MANAGER__PLUGINS__POLICY=policy)
        runtime: Runtime = runtime_cm.__enter__()
        create_account(runtime, "ada", ["admin"])
        host_cm = open_host(runtime, tmp_path / "staging")
        host = host_cm.__enter__()
        stack.extend([runtime_cm, host_cm])
        return host

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]


def trust(host: Host, line: str) -> None:
    response = host.client.post("/api/admin/trust", json={"public_key": line}, headers=host.root)
    assert response.status_code == 201, response.text


def test_signed_only_refuses_unsigned_and_untrusted_bundles_until_the_signer_is_trusted(
    policy_host: Callable[[str], Host], tmp_path: Path, keys
) -> None:
    host = policy_host("signed-only")
    private, line = keys("Ada")
    policy = host.client.get("/api/admin/plugin-policy", headers=login(host.client, "ada")).json()
    assert policy["policy"] == "signed-only" and policy["unsigned_runs"] is False and policy["trusted_keys"] == 0
    assert policy["advice"] == "Only bundles a trusted key signed run here; any other bundle is refused."
    host.drop(pack_folder(plugin(tmp_path, "plain"), tmp_path / "dist", __version__))
    host.drop(pack_folder(plugin(tmp_path, "inked"), tmp_path / "dist", __version__, sign=private))
    assert (
        "policy: the bundle is unsigned; manager.plugins.policy signed-only"
        in host.wait_view("plain", "failed")["error"]
    )
    error = host.wait_view("inked", "failed")["error"]
    assert "signed by 'Ada'" in error and "a key this host does not trust" in error
    refused = upload(host, pack_folder(plugin(tmp_path, "later"), tmp_path / "dist", __version__))
    assert refused.status_code == 422 and refused.json()["rule"] == "policy", refused.text
    assert not list(host.folder.glob("later-*.zip"))

    trust(host, line)
    view = host.wait_view("inked", "active")
    assert view["signature"] == {
        "signer": "Ada",
        "key_id": view["signature"]["key_id"],
        "trusted": True,
        "trusted_as": "Ada",
    }
    assert host.get("/app/inked/hello").json()["says"] == "hi"
    assert host.wait_view("plain", "failed")
    actions = [a for a in host.audit_actions()]  # plugin.* only; the trust change is audited under trust.add
    assert not any(a[0] == "trust.add" for a in actions)
    audit = host.get("/api/admin/audit?action=trust.*").json()["items"]
    assert audit[0]["action"] == "trust.add" and audit[0]["target"] == "Ada"

    assert host.client.delete("/api/admin/trust/Ada", headers=host.root).status_code == 204
    assert "signed by 'Ada'" in host.wait_view("inked", "failed")["error"], "untrusted again: it stops serving"


def test_sandbox_unsigned_runs_unsigned_bundles_sandboxed_and_trusted_ones_in_process(
    policy_host: Callable[[str], Host], tmp_path: Path, keys
) -> None:
    host = policy_host("sandbox-unsigned")
    private, line = keys("Ada")
    trust(host, line)
    host.drop(pack_folder(plugin(tmp_path, "plain"), tmp_path / "dist", __version__))
    host.drop(pack_folder(plugin(tmp_path, "inked"), tmp_path / "dist", __version__, sign=private))
    plain = host.wait_view("plain", "active")
    assert plain["sandbox"] is not None and plain["sandbox"]["state"] == "running"
    assert plain["signature"] is None and plain["manage_permission"] == "plugins.manage_sandboxed"
    inked = host.wait_view("inked", "active")
    assert inked["sandbox"] is None and inked["manage_permission"] == "plugins.manage"
    assert host.get("/app/plain/hello").json()["says"] == "hi"


def test_the_default_policy_runs_unsigned_and_untrusted_bundles_and_shows_who_signed(
    policy_host: Callable[[str], Host], tmp_path: Path, keys
) -> None:
    host = policy_host("unsigned")
    private, line = keys("Ada")
    host.drop(pack_folder(plugin(tmp_path, "plain"), tmp_path / "dist", __version__))
    host.drop(pack_folder(plugin(tmp_path, "inked"), tmp_path / "dist", __version__, sign=private))
    assert host.wait_view("plain", "active")["signature"] is None
    signature = host.wait_view("inked", "active")["signature"]
    assert signature["signer"] == "Ada" and signature["trusted"] is False

    # The audit log says who signed an upload, and whether this host trusted the key then.
    assert upload(host, pack_folder(plugin(tmp_path, "later"), tmp_path / "dist", __version__)).status_code == 201
    signed = pack_folder(plugin(tmp_path, "inked", "1.1.0"), tmp_path / "dist", __version__, sign=private)
    assert upload(host, signed).status_code == 201
    trust(host, line)
    signed = pack_folder(plugin(tmp_path, "inked", "1.2.0"), tmp_path / "dist", __version__, sign=private)
    assert upload(host, signed).status_code == 201
    audit = host.get("/api/admin/audit?action=plugin.upload").json()["items"]
    key = {"name": "Ada", "key_id": signature["key_id"]}
    assert [(a["target"], a["detail"]["version"], a["detail"]["signer"]) for a in audit] == [
        ("inked", "1.2.0", {**key, "trusted": True}), ("inked", "1.1.0", {**key, "trusted": False}),
        ("later", "1.0.0", None),
    ]  # fmt: skip


def test_the_trust_api_is_read_by_admins_and_changed_by_superadmins_with_clear_errors(
    policy_host: Callable[[str], Host], keys
) -> None:
    host = policy_host("unsigned")
    ada = login(host.client, "ada")
    _, line = keys("Bob")
    assert host.client.post("/api/admin/trust", json={"public_key": line}, headers=ada).status_code == 403
    trust(host, line)
    listed = host.client.get("/api/admin/trust", headers=ada).json()
    assert [(k["name"], k["public_key"]) for k in listed] == [("Bob", line)]
    again = host.client.post("/api/admin/trust", json={"public_key": line}, headers=host.root)
    assert again.status_code == 422 and "trusted already" in again.json()["detail"]
    bad = host.client.post("/api/admin/trust", json={"public_key": "nonsense"}, headers=host.root)
    assert bad.status_code == 422 and "xcore-ed25519" in bad.json()["detail"]
    gone = host.client.delete("/api/admin/trust/nobody", headers=host.root)
    assert gone.status_code == 422 and "no trusted key is named 'nobody'" in gone.json()["detail"]


def test_the_policy_api_says_unsigned_bundles_run_under_the_default_policy(
    policy_host: Callable[[str], Host], keys
) -> None:
    host = policy_host("unsigned")
    ada = login(host.client, "ada")
    policy = host.client.get("/api/admin/plugin-policy", headers=ada).json()
    assert policy["policy"] == "unsigned" and policy["unsigned_runs"] is True and policy["trusted_keys"] == 0
    assert policy["setting"] == "manager.plugins.policy"
    assert "signed-only" in policy["advice"] and "XCORE_MANAGER__PLUGINS__POLICY" in policy["advice"]
    trust(host, keys("Bob")[1])
    assert host.client.get("/api/admin/plugin-policy", headers=ada).json()["trusted_keys"] == 1
    assert host.client.get("/api/admin/plugin-policy").status_code == 401


# --- the CLI -------------------------------------------------------------------------------------------------------


def test_the_cli_makes_keys_signs_trusts_and_verifies(tmp_path: Path) -> None:
    def xcore(*args: str) -> subprocess.CompletedProcess[str]:
        return run_xcore(*args, cwd=tmp_path, timeout=120)

    made = xcore("keys", "new", "Ada Lovelace", "--out", "keys")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "keys" / "Ada-Lovelace.key").stat().st_mode & 0o077 == 0, "the private key is the owner's"
    folder = plugin(tmp_path, "memo")
    packed = xcore("plugin", "pack", str(folder), "--sign", "keys/Ada-Lovelace.key", "--out", "dist")
    assert packed.returncode == 0, packed.stderr
    data = ["--data-dir", str(tmp_path / "data")]
    unknown = xcore("plugin", "verify", "dist/memo-1.0.0.zip", *data)
    assert unknown.returncode == 1 and "signed by 'Ada Lovelace'" in unknown.stdout and "not trusted" in unknown.stdout
    assert xcore("trust", "add", "keys/Ada-Lovelace.pub", *data).returncode == 0
    known = xcore("plugin", "verify", "dist/memo-1.0.0.zip", *data)
    assert known.returncode == 0 and "trusted as 'Ada Lovelace'" in known.stdout, known.stdout
    assert "Ada Lovelace" in xcore("trust", "list", *data).stdout
    again = xcore("keys", "new", "Ada Lovelace", "--out", "keys")
    assert again.returncode != 0 and "exists already" in again.stderr and "Traceback" not in again.stderr
    tampered = rewrite(
        tmp_path / "dist" / "memo-1.0.0.zip", tmp_path / "t.zip", lambda n, d: d + b"#" if n == "run.py" else d
    )
    broken = xcore("plugin", "verify", str(tampered), *data)
    assert broken.returncode == 2 and "signature: the signature does not match" in broken.stderr


def test_the_cli_install_applies_the_policy_and_the_blocklist_and_the_list_shows_the_signer(tmp_path: Path) -> None:
    def xcore(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_xcore(*args, "--data-dir", str(tmp_path / "data"), env=env, cwd=tmp_path, timeout=120)

    private, line = new_key("Ada")
    (tmp_path / "ada.key").write_bytes(private)
    (tmp_path / "ada.pub").write_text(line + "\n")
    plain = pack_folder(plugin(tmp_path, "plain"), tmp_path / "dist", __version__)
    inked = pack_folder(plugin(tmp_path, "inked"), tmp_path / "dist", __version__, sign=tmp_path / "ada.key")
    plugins = tmp_path / "data" / "plugins"
    strict = {"XCORE_MANAGER__PLUGINS__POLICY": "signed-only"}

    refused = xcore("plugin", "install", str(plain), **strict)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "plain-1.0.0.zip: policy: the bundle is unsigned; manager.plugins.policy signed-only" in refused.stderr
    untrusted = xcore("plugin", "install", str(inked), **strict)
    assert untrusted.returncode != 0 and "signed by 'Ada'" in untrusted.stderr, untrusted.stderr
    assert not list(plugins.glob("*.zip")), "nothing is written before the checks"

    assert xcore("trust", "add", str(tmp_path / "ada.pub")).returncode == 0
    installed = xcore("plugin", "install", str(inked), **strict)
    assert installed.returncode == 0, installed.stderr
    blocklist = json.dumps([{"id": "plain", "versions": "", "reason": "never here"}])
    blocked = xcore("plugin", "install", str(plain), XCORE_MANAGER__PLUGINS__BLOCKLIST=blocklist)
    assert blocked.returncode != 0 and "blocked: never here (manager.plugins.blocklist: plain)" in blocked.stderr
    assert xcore("plugin", "install", str(plain)).returncode == 0, "the default policy installs it"

    def signed_column() -> dict[str, str]:
        listed = xcore("plugin", "list")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        start = header.index("SIGNED")
        end = header.index("STATE")
        return {row.split()[0]: row[start:end].strip() for row in rows}

    assert signed_column() == {"inked": "Ada (trusted)", "plain": "unsigned"}
    removed = xcore("trust", "remove", "Ada")
    assert removed.returncode == 0 and removed.stdout.startswith("no longer trusted: Ada ("), removed.stdout
    assert "Ada" not in xcore("trust", "list").stdout
    assert signed_column() == {"inked": "Ada (not trusted)", "plain": "unsigned"}
    again = xcore("trust", "remove", "Ada")
    assert again.returncode != 0 and "no trusted key is named 'Ada'" in again.stderr and "Traceback" not in again.stderr
