"""Complete backups (`xcore.db.archive`, `xcore.db.seal`): one archive with the database, the plugin bundles, the
plugins' data and the settings; restored offline into a fresh install and uploaded into a running server;
optionally encrypted; refused, changing nothing, when the secret is wrong or the archive damaged, cut short or
edited; and restored under Windows' rules for open files.

Real files throughout: real SQLite databases (the core one, or PostgreSQL with XCORE_TEST_DATABASE=postgresql, and
the plugins'), real bundles loaded by a real plugin manager, the real `xcore` command, and a real `xcore serve` for
the end-to-end case of the issue.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BACKEND, PASSWORDS, Api, create_account, plugin_host, run_xcore, until
from test_plugin_manager import Host, make_zip
from xcore.db.archive import (
    ArchiveRefused,
    BackupRefused,
    configured_secret,
    make_archive,
    open_archive,
    places,
)
from xcore.db.seal import (
    CHUNK,
    TAG,
    SealDamaged,
    SealedReader,
    SealedWriter,
    SealError,
    Secret,
    WrongSecret,
    key_text,
    read_header,
)
from xcore.runtime import Runtime, open_runtime

PASSPHRASE = "correct horse battery staple"

# A plugin that keeps its data as a plugin does: rows in ctx.db (SQLite, WAL), a plain file, a log it keeps open,
# and on request a second database it keeps open.
KEEPER = """
import sqlite3

from xcore.sdk import Ctx, FromPath, get, post

HELD = {}


def on_load(ctx):
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    HELD["log"] = (ctx.data_dir / "held.log").open("a")


def on_unload(ctx):
    for handle in HELD.values():
        handle.close()
    HELD.clear()


def _state(ctx):
    notes = [row["text"] for row in ctx.db["notes"].rows] if "notes" in ctx.db.table_names() else []
    note = ctx.data_dir / "note.txt"
    return {
        "version": ctx.version,
        "notes": notes,
        "file": note.read_text() if note.exists() else None,
        "files": sorted(p.name for p in ctx.data_dir.iterdir()),
    }


@post("/notes/{text:str}", sync_to_thread=False)
def add_note(ctx: Ctx, text: FromPath[str]) -> dict:
    ctx.db["notes"].insert({"text": text})
    return _state(ctx)


@post("/file/{text:str}", sync_to_thread=False)
def write_file(ctx: Ctx, text: FromPath[str]) -> dict:
    (ctx.data_dir / "note.txt").write_text(text)
    return _state(ctx)


@post("/extra", sync_to_thread=False)
def extra_database(ctx: Ctx) -> dict:
    conn = sqlite3.connect(ctx.data_dir / "extra.db")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    HELD["extra"] = conn
    return _state(ctx)


@get("/state", sync_to_thread=False)
def state(ctx: Ctx) -> dict:
    return _state(ctx)


router = [add_note, write_file, extra_database, state]
"""

GREETER = """
from xcore.sdk import get


@get("/hello", sync_to_thread=False)
def hello() -> dict:
    return {"says": "hello"}


router = [hello]
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(root: Path, database: bool = True) -> dict[str, str]:
    """tree_hashes is the sha256 of every file under `root` but the log files (each command logs its run), and but
    the core database's files when not `database` (a running server audits each refusal in it)."""
    return {
        p.relative_to(root).as_posix(): sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(root).parts and (database or not p.name.startswith("xcore.db"))
    }


def bundles(folder: Path) -> tuple[Path, Path]:
    """bundles builds the two plugins of these tests into `folder`."""
    return make_zip(folder, "keeper", "1.0.0", KEEPER), make_zip(folder, "greeter", "2.1.0", GREETER)


def usernames(runtime: Runtime) -> list[str]:
    from sqlalchemy import text

    with runtime.engine.connect() as conn:
        return sorted(row[0] for row in conn.execute(text("SELECT username FROM users")))


# --- the sealed stream -----------------------------------------------------------------------------------------


def sealed(data: bytes, secret: Secret, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    writer = SealedWriter(out, secret, "test", chunk=chunk)
    for at in range(0, len(data), 10_000):
        writer.write(data[at : at + 10_000])
    writer.close()
    return out.getvalue()


def unsealed(blob: bytes, secret: Secret) -> bytes:
    source = io.BytesIO(blob)
    reader = SealedReader(source, read_header(source, "x.xcbackup"), secret, "x.xcbackup")
    return b"".join(iter(lambda: reader.read(7_777), b""))


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 2 * CHUNK + 5])
def test_a_sealed_stream_reads_back_whole(size: int) -> None:
    data = os.urandom(size)
    key = Secret.new_key()
    assert unsealed(sealed(data, key), key) == data
    assert unsealed(sealed(data, key, chunk=1000), key) == data


def test_a_sealed_stream_cut_reordered_or_edited_is_refused() -> None:
    key = Secret.new_key()
    data = os.urandom(3 * 1000)
    blob = sealed(data, key, chunk=1000)
    header = len(blob) - 3 * (1000 + TAG)
    chunks = [blob[header + i * (1000 + TAG) : header + (i + 1) * (1000 + TAG)] for i in range(3)]
    cases = {
        "cut at a chunk's end": blob[: header + 2 * (1000 + TAG)],
        "cut within a chunk": blob[:-5],
        "chunks swapped": blob[:header] + chunks[1] + chunks[0] + chunks[2],
        "a chunk dropped": blob[:header] + chunks[0] + chunks[2],
        "extended": blob + chunks[2],
        "a byte flipped": blob[: header + 10] + bytes([blob[header + 10] ^ 1]) + blob[header + 11 :],
    }
    for what, damaged in cases.items():
        with pytest.raises(SealDamaged, match=r"damaged|cut short"):
            unsealed(damaged, key)
            raise AssertionError(what)


def test_a_wrong_secret_is_told_apart_from_damage() -> None:
    passphrase = Secret.passphrase(PASSPHRASE)
    blob = sealed(b"payload", passphrase)
    with pytest.raises(WrongSecret, match="the passphrase is wrong"):
        unsealed(blob, Secret.passphrase("wrong horse battery staple"))
    with pytest.raises(WrongSecret, match="not a key"):
        unsealed(blob, Secret.new_key())
    key = Secret.new_key()
    with pytest.raises(WrongSecret, match=f"needs the backup key {key.key_id}"):
        unsealed(sealed(b"payload", key), Secret.new_key())
    # The header is authenticated: raising its scrypt cost, or changing its id, is a refusal too.
    edited = blob.replace(b'"id": "test"', b'"id": "tesT"')
    with pytest.raises(WrongSecret):
        unsealed(edited, passphrase)
    greedy = blob.replace(b'"n": 131072', b'"n": 1073741824')
    with pytest.raises(SealDamaged, match="header is damaged"):
        unsealed(greedy, passphrase)


def test_a_key_is_written_for_people_and_a_mistyped_one_is_refused_as_such() -> None:
    key = Secret.new_key()
    text = key_text(key.value)
    assert text.startswith("XCK1-") and len(text.split("-")) == 12
    assert Secret.key(text.lower().replace("-", " - ")).value == key.value
    assert Secret.key(f"Some kit\nBackup key:  {text}\nmore").value == key.value, "a whole kit works"
    for at in (10, len(text) - 1):  # a letter of the key, and the last one (its check and padding)
        other = "A" if text[at] != "A" else "B"
        with pytest.raises(SealError, match="mistyped"):
            Secret.key(text[:at] + other + text[at + 1 :])
    with pytest.raises(SealError, match="no backup key found"):
        Secret.key("nothing here")
    with pytest.raises(SealError, match="at least 12"):
        Secret.passphrase("short")


# --- where the parts are ---------------------------------------------------------------------------------------


def test_the_archive_finds_each_part_where_the_plugin_store_keeps_it(runtime: Runtime) -> None:
    from xcore.plugins.store import plugin_data_dir, plugins_dir, trust_store, wheel_store

    where = places(runtime.data, runtime.config, runtime.database_file or runtime.database_url)
    assert where.plugins == plugins_dir(runtime)
    assert where.plugin_data / "keeper" == plugin_data_dir(runtime, "keeper")
    assert where.wheels == wheel_store(runtime)
    assert where.trust == trust_store(runtime).path
    assert where.config == runtime.data.config_file and where.secret == runtime.data.secret_file


# --- a data directory with plugins and their data -------------------------------------------------------------


def furnish(runtime: Runtime, staging: Path) -> dict[str, Any]:
    """furnish gives a data directory accounts, two plugin bundles, plugin data (a WAL database with rows and a
    plain file) and a config.json; returns what a restore must bring back."""
    create_account(runtime, "root", ["superadmin"])
    create_account(runtime, "bob", ["user"])
    folder = runtime.data.subdir(runtime.config.manager.plugins.directory)
    zips = {}
    for bundle in bundles(staging):
        shutil.copyfile(bundle, folder / bundle.name)
        zips[bundle.name] = sha256(bundle)
    data = runtime.data.root / "plugin-data" / "keeper"
    data.mkdir(parents=True)
    with closing(sqlite3.connect(data / "plugin.db")) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.executemany("INSERT INTO notes VALUES (?)", [("first",), ("second",)])
    (data / "note.txt").write_text("hello")
    (data / "nested").mkdir()
    (data / "nested" / "deep.bin").write_bytes(bytes(range(256)) * 10)
    config = {"manager": {"tasks": {"backup_every": 0}}}
    runtime.data.config_file.write_text(json.dumps(config))
    return {"zips": zips, "config": runtime.data.config_file.read_bytes()}


def notes(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY rowid")]


def archive_of(runtime: Runtime, secret: Secret | None = None, kind: str = "manual") -> Path:
    where = places(runtime.data, runtime.config, runtime.database_file or runtime.database_url)
    return make_archive(where, runtime.backups_dir, "x", 10, kind, secret).path


def members(archive: Path) -> dict[str, bytes]:
    with gzip.open(archive) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar}  # type: ignore[union-attr]


def repacked(archive: Path, target: Path, change: Callable[[dict[str, bytes]], dict[str, bytes]]) -> Path:
    """repacked writes `archive` again to `target` with its members changed by `change` (the manifest kept)."""
    found = change(members(archive))
    with gzip.open(target, "wb") as plain, tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in found.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def test_an_archive_holds_every_part_with_a_manifest_of_sizes_and_hashes(runtime: Runtime, tmp_path: Path) -> None:
    furnish(runtime, tmp_path / "staging")
    # A plugin writing as the backup is made: its newest rows are in the WAL, not yet in the database file.
    writer = sqlite3.connect(runtime.data.root / "plugin-data" / "keeper" / "plugin.db")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    with writer:
        writer.execute("INSERT INTO notes VALUES ('third')")
    assert (runtime.data.root / "plugin-data" / "keeper" / "plugin.db-wal").stat().st_size > 0
    plain = members(archive_of(runtime))
    writer.close()
    database = "database.db" if runtime.database_file else "database.dump"
    assert sorted(plain) == sorted([
        database, "plugins/keeper-1.0.0.zip", "plugins/greeter-2.1.0.zip", "plugin-data/keeper/plugin.db",
        "plugin-data/keeper/note.txt", "plugin-data/keeper/nested/deep.bin", "config.json", "manifest.json",
    ])  # fmt: skip
    assert list(plain)[-1] == "manifest.json"
    manifest = json.loads(plain["manifest.json"])
    assert manifest["format"] == "xcore-backup" and manifest["format_version"] == 1 and manifest["kind"] == "manual"
    assert manifest["database"] == ("sqlite" if runtime.database_file else "postgresql")
    assert manifest["encrypted"] is False and "secret.key" not in plain, "the signing key only goes in encrypted"
    for entry in manifest["members"]:
        data = plain[entry["name"]]
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), entry["name"]
    assert plain["plugins/keeper-1.0.0.zip"] == (tmp_path / "staging" / "keeper-1.0.0.zip").read_bytes()
    copy = tmp_path / "copy.db"
    copy.write_bytes(plain["plugin-data/keeper/plugin.db"])
    assert notes(copy) == ["first", "second", "third"], "the rows in its WAL too, through the backup API"

    runtime.data.signing_key()
    sealed_members = members_of_sealed(archive_of(runtime, Secret.passphrase(PASSPHRASE)), PASSPHRASE)
    assert sealed_members["secret.key"] == runtime.data.secret_file.read_bytes()


def members_of_sealed(archive: Path, passphrase: str) -> dict[str, bytes]:
    secret = Secret.passphrase(passphrase)
    with archive.open("rb") as source, open_archive(source, archive.name, archive.parent, secret) as staged:
        return {name: (staged.root / name).read_bytes() for name in staged.members}


# --- offline: backup, wipe, restore into a fresh install -------------------------------------------------------


def test_backup_then_restore_into_a_fresh_install_from_the_command_line(runtime: Runtime, tmp_path: Path) -> None:
    expected = furnish(runtime, tmp_path / "staging")
    runtime.data.signing_key()
    secret_key = runtime.data.secret_file.read_bytes()
    passphrase = tmp_path / "passphrase.txt"
    passphrase.write_text(PASSPHRASE + "\n")
    one = runtime.data.root
    made = run_xcore("db", "backup", "--passphrase-file", str(passphrase), "--data-dir", str(one))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.splitlines()[0].split(": ", 1)[1])
    assert archive.name.endswith("-manual.xcbackup") and "encrypted with the passphrase" in made.stdout
    kept = shutil.copyfile(archive, tmp_path / archive.name)
    runtime.close()

    two = tmp_path / "fresh"  # an empty data directory (on PostgreSQL, with an empty database of its own)
    restored = run_xcore("db", "restore", str(kept), "--passphrase-file", str(passphrase), "--data-dir", str(two))
    assert restored.returncode == 0, restored.stderr
    assert "plugins: greeter-2.1.0.zip, keeper-1.0.0.zip" in restored.stdout
    assert "backed up first" not in restored.stdout, "nothing to back up in a fresh install"

    fresh = open_runtime(two, environ={}, logs=False)
    try:
        assert usernames(fresh) == ["bob", "root"]
        assert {p.name: sha256(p) for p in (two / "plugins").glob("*.zip")} == expected["zips"], "byte-identical"
        assert notes(two / "plugin-data" / "keeper" / "plugin.db") == ["first", "second"]
        assert (two / "plugin-data" / "keeper" / "note.txt").read_text() == "hello"
        assert (two / "plugin-data/keeper/nested/deep.bin").read_bytes() == bytes(range(256)) * 10
        assert (two / "config.json").read_bytes() == expected["config"]
        assert (two / "secret.key").read_bytes() == secret_key, "an encrypted backup carries the signing key"
        from litestar.testing import TestClient

        from xcore.server import prepare_database
        from xcore.web.app import build_app

        prepare_database(fresh)
        with TestClient(build_app(fresh)) as client:
            for name in ("root", "bob"):
                login = client.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
                assert login.status_code == 200, login.text
        accounts = usernames(fresh)
    finally:
        fresh.close()
    before = tree_hashes(two)

    # A wrong passphrase, a missing one, a truncated archive: refused in one line, and nothing changes.
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrong horse battery staple")
    truncated = tmp_path / "truncated.xcbackup"
    truncated.write_bytes(kept.read_bytes()[:-100])
    for args, says in (
        ([str(kept), "--passphrase-file", str(wrong)], "the passphrase is wrong"),
        ([str(kept)], "is encrypted; give the passphrase it was made with"),
        ([str(truncated), "--passphrase-file", str(passphrase)], "is damaged or cut short"),
    ):
        refused = run_xcore("db", "restore", *args, "--data-dir", str(two))
        assert refused.returncode == 1, refused.stdout
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in refused.stderr, refused.stderr
    assert tree_hashes(two) == before, "a refused restore changes no file"
    again = open_runtime(two, environ={}, logs=False)
    assert usernames(again) == accounts
    again.close()


def test_scheduled_backups_are_encrypted_with_the_key_of_backup_key(runtime: Runtime, tmp_path: Path) -> None:
    d = ("--data-dir", str(runtime.data.root))
    env = {"XCORE_MIGRATION__BACKUP__ENCRYPTION": "key"}
    refused = run_xcore("db", "backup", *d, env=env)
    assert refused.returncode == 1 and "no backup key is set" in refused.stderr, refused.stderr
    assert not list(runtime.backups_dir.glob("*.xcbackup")), "never written unencrypted instead"

    kit = tmp_path / "kit.txt"
    made_key = run_xcore("db", "backup-key", str(kit), *d)
    assert made_key.returncode == 0, made_key.stderr
    secret_file = runtime.data.root / "backup-secret"
    key = Secret.key(secret_file.read_text())
    assert Secret.key(kit.read_text()).value == key.value and key.key_id in made_key.stdout
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600" and oct(kit.stat().st_mode & 0o777) == "0o600"
    again = run_xcore("db", "backup-key", str(tmp_path / "other.txt"), *d)
    assert again.returncode == 1 and "exists already" in again.stderr

    made = run_xcore("db", "backup", *d, env=env)
    assert made.returncode == 0 and f"encrypted with the backup key {key.key_id}" in made.stdout, made.stderr
    archive = Path(made.stdout.splitlines()[0].split(": ", 1)[1])
    from xcore.db.archive import archive_info

    assert archive_info(archive).key_id == key.key_id
    new_kit = tmp_path / "new-kit.txt"
    other = run_xcore("db", "backup", "--new-key", str(new_kit), *d, env=env)
    assert other.returncode == 0 and str(new_kit) in other.stdout, other.stderr
    other_archive = Path(other.stdout.splitlines()[0].split(": ", 1)[1])
    assert other_archive.name in new_kit.read_text(), "the kit names its backup"
    assert archive_info(other_archive).key_id == Secret.key(new_kit.read_text()).key_id != key.key_id
    plain = run_xcore("db", "backup", "--plain", *d, env=env)
    assert plain.returncode == 0 and not archive_info(Path(plain.stdout.strip().split(": ", 1)[1])).encrypted
    both = run_xcore("db", "backup", "--plain", "--new-key", str(tmp_path / "x.txt"), *d)
    assert both.returncode == 2 and "do not go together" in both.stderr

    runtime.close()
    fresh = tmp_path / "fresh"
    for which, kit_file in ((archive, kit), (other_archive, new_kit)):
        restored = run_xcore("db", "restore", str(which), "--key-file", str(kit_file), "--data-dir", str(fresh))
        assert restored.returncode == 0, restored.stderr


def test_a_restore_over_a_data_directory_makes_it_hold_exactly_the_archive(runtime: Runtime, tmp_path: Path) -> None:
    """Plugins and data added after the backup are gone, changed ones are as they were, the current state is in a
    complete safety backup."""
    expected = furnish(runtime, tmp_path / "staging")
    one = runtime.data.root
    made = run_xcore("db", "backup", "--data-dir", str(one))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.strip().split(": ", 1)[1])
    data = one / "plugin-data" / "keeper"
    with closing(sqlite3.connect(data / "plugin.db")) as conn, conn:
        conn.execute("INSERT INTO notes VALUES ('after')")
    (data / "note.txt").write_text("changed")
    (data / "later.txt").write_text("new")
    (one / "plugin-data" / "other").mkdir()
    (one / "plugin-data" / "other" / "x.db").write_bytes(b"")
    make_zip(one / "plugins", "keeper", "1.1.0", KEEPER)
    create_account(runtime, "eve", ["user"], password="a-long-enough-secret-6")
    runtime.data.config_file.write_text("{}")
    runtime.close()

    restored = run_xcore("db", "restore", str(archive), "--data-dir", str(one))
    assert restored.returncode == 0, restored.stderr
    assert "the current state was backed up first" in restored.stdout
    assert {p.name: sha256(p) for p in (one / "plugins").glob("*.zip")} == expected["zips"]
    assert notes(data / "plugin.db") == ["first", "second"]
    assert (data / "note.txt").read_text() == "hello" and not (data / "later.txt").exists()
    assert not (one / "plugin-data" / "other").exists()
    assert (one / "config.json").read_bytes() == expected["config"]
    rt = open_runtime(one, environ={}, logs=False)
    assert usernames(rt) == ["bob", "root"]
    safety = next(rt.backups_dir.glob("*-safety.xcbackup"))
    rt.close()
    kept = members(safety)
    assert "plugins/keeper-1.1.0.zip" in kept and kept["plugin-data/keeper/later.txt"] == b"new"


def test_a_bundle_that_fails_its_check_is_restored_as_it_was_and_named(runtime: Runtime, tmp_path: Path) -> None:
    """A backup holds the plugins folder as it was: a zip the plugin manager refused then (not a zip at all here)
    does not make the backup unrestorable; it comes back byte for byte, and the restore says it does not load."""
    furnish(runtime, tmp_path / "staging")
    one = runtime.data.root
    broken = one / "plugins" / "broken-1.0.0.zip"
    broken.write_bytes(b"this was never a zip")
    made = run_xcore("db", "backup", "--data-dir", str(one))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.strip().split(": ", 1)[1])
    broken.unlink()
    runtime.close()

    restored = run_xcore("db", "restore", str(archive), "--data-dir", str(one))
    assert restored.returncode == 0, restored.stderr
    assert "plugins/broken-1.0.0.zip: " in restored.stdout and "it does not load here" in restored.stdout
    assert broken.read_bytes() == b"this was never a zip"


def test_an_archive_damaged_or_edited_is_refused_before_anything_is_touched(runtime: Runtime, tmp_path: Path) -> None:
    furnish(runtime, tmp_path / "staging")
    good = archive_of(runtime)
    blob = good.read_bytes()
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF

    def edit(found: dict[str, bytes]) -> dict[str, bytes]:
        return {**found, "config.json": b'{"server": {"port": 1}}'}

    def smuggle(found: dict[str, bytes]) -> dict[str, bytes]:
        manifest = found.pop("manifest.json")
        return {**found, "plugin-data/keeper/extra.txt": b"x", "manifest.json": manifest}

    def escape(found: dict[str, bytes]) -> dict[str, bytes]:
        return {"plugin-data/keeper/../../../etc/evil": b"x", **found}

    def drop_manifest(found: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in found.items() if k != "manifest.json"}

    cases = {
        "cut": (blob[: len(blob) - 30], "is damaged or cut short"),
        "flipped": (bytes(flipped), "is damaged"),
        "garbage": (b"PK\x03\x04 not a backup" * 40, "is not an xcore backup archive"),
        "edited": (repacked(good, tmp_path / "e", edit).read_bytes(), "config.json does not match its manifest"),
        "smuggled": (repacked(good, tmp_path / "s", smuggle).read_bytes(), "which its manifest does not list"),
        "escape": (repacked(good, tmp_path / "x", escape).read_bytes(), "which is not a member of an xcore backup"),
        "no manifest": (repacked(good, tmp_path / "m", drop_manifest).read_bytes(), "has no manifest"),
    }
    scratch = tmp_path / "scratch"
    for what, (data, says) in cases.items():
        with pytest.raises(ArchiveRefused, match=says):
            open_archive(io.BytesIO(data), f"{what}.xcbackup", scratch, None)
            raise AssertionError(what)
        assert not list(scratch.iterdir()), f"{what}: nothing unpacked is left"


def test_a_damaged_file_named_like_a_complete_backup_is_refused_as_one(runtime: Runtime, tmp_path: Path) -> None:
    """`xcore db restore` of a .xcbackup that is not one says so, not that it is no SQLite database."""
    runtime.close()
    damaged = tmp_path / "xcore-20261207T000000Z-0009-manual.xcbackup"
    damaged.write_bytes(b"not a backup at all")
    refused = run_xcore("db", "restore", str(damaged), "--data-dir", str(runtime.data.root))
    assert refused.returncode != 0
    assert f"{damaged.name}: is not an xcore backup archive" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_archive_that_would_fill_the_disk_is_refused_while_unpacking(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpacking stops before a member that would leave less than FREE_RESERVE free (here more than any disk has),
    with the reason, and removes what it had unpacked: a decompression bomb never fills the disk."""
    from xcore.db import archive as archive_module

    furnish(runtime, tmp_path / "staging")
    good = archive_of(runtime)
    monkeypatch.setattr(archive_module, "FREE_RESERVE", 1 << 60)
    scratch = tmp_path / "scratch"
    refused = pytest.raises(ArchiveRefused, match=r"would leave less than .* MiB free on the disk of .*make room there")
    with refused, good.open("rb") as source:
        open_archive(source, good.name, scratch, None)
    assert not list(scratch.iterdir())


# --- the admin API: making, uploading, restoring by name ----------------------------------------------------------


@pytest.fixture
def root(accounts_api: Api) -> dict[str, str]:
    return accounts_api.login("root")


def upload(api: Api, data: bytes, headers: dict[str, str] | None, **fields: str) -> httpx.Response:
    return api.client.post(  # type: ignore[no-any-return]
        "/api/admin/backups/restore-upload",
        files={"data": ("backup.xcbackup", data, "application/octet-stream")},
        data=fields,
        headers=headers or {},
    )


@pytest.mark.sqlite  # a restore into the running server is SQLite's; on PostgreSQL it is `xcore db restore`
def test_an_uploaded_backup_is_restored_by_a_superadmin_only(accounts_api: Api, root: dict[str, str]) -> None:
    runtime = accounts_api.runtime
    made = accounts_api.client.post("/api/admin/backups", headers=root, json={"encryption": "key"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["encrypted"] and body["secret"] == "key" and body["key_id"]
    kit = body["emergency_kit"]
    assert key_text(Secret.key(kit).value) in kit and body["name"] in kit and body["key_id"] in kit
    assert body["emergency_kit_name"] == body["name"].removesuffix(".xcbackup") + "-emergency-kit.txt"
    listed = accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]
    assert "emergency_kit" not in listed[0], "the kit is shown once, never listed"
    archive = (runtime.backups_dir / body["name"]).read_bytes()

    eve = {"username": "eve", "password": "a-long-enough-secret-6", "roles": ["user"]}
    assert accounts_api.client.post("/api/admin/users", headers=root, json=eve).status_code == 201
    before = tree_hashes(runtime.data.root, database=False)
    accounts = {u["username"] for u in accounts_api.client.get("/api/admin/users", headers=root).json()["items"]}

    assert upload(accounts_api, archive, None, key=kit).status_code == 401
    for who in ("ada", "bob"):
        refused = upload(accounts_api, archive, accounts_api.login(who), key=kit)
        assert refused.status_code == 403, refused.text
    garbage = upload(accounts_api, b"this is not a backup" * 100, root)
    assert garbage.status_code == 400 and "is not an xcore backup archive" in garbage.json()["detail"]
    no_key = upload(accounts_api, archive, root)
    assert no_key.status_code == 400 and "is encrypted; give the backup key" in no_key.json()["detail"]
    wrong = upload(accounts_api, archive, root, key=key_text(Secret.new_key().value))
    assert wrong.status_code == 400, wrong.text
    assert "this key is not the one it was encrypted with" in wrong.json()["detail"]
    cut = upload(accounts_api, archive[: len(archive) // 2], root, key=kit)
    assert cut.status_code == 400 and "damaged or cut short" in cut.json()["detail"]
    assert tree_hashes(runtime.data.root, database=False) == before, "refused uploads made no safety backup either"
    assert {
        u["username"] for u in accounts_api.client.get("/api/admin/users", headers=root).json()["items"]
    } == accounts

    done = upload(accounts_api, archive, root, key=kit)
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["safety_backup"].endswith("-safety.xcbackup") and answer["restart_required"] is False
    assert "eve" not in {
        u["username"] for u in accounts_api.client.get("/api/admin/users", headers=root).json()["items"]
    }
    events = accounts_api.client.get("/api/admin/audit", headers=root, params={"action": "backup.restore*"}).json()
    assert [(e["action"], e["detail"].get("upload")) for e in events["items"]][:2] == [
        ("backup.restore", True), ("backup.restore_refused", True),
    ]  # fmt: skip


@pytest.mark.sqlite
def test_a_backup_encrypted_with_a_passphrase_is_restored_by_name_with_it(
    accounts_api: Api, root: dict[str, str]
) -> None:
    client = accounts_api.client
    short = client.post("/api/admin/backups", headers=root, json={"encryption": "passphrase", "passphrase": "short"})
    assert short.status_code == 400 and "at least 12" in short.json()["detail"]
    made = client.post("/api/admin/backups", headers=root, json={"encryption": "passphrase", "passphrase": PASSPHRASE})
    assert made.status_code == 201, made.text
    name = made.json()["name"]
    assert made.json()["secret"] == "passphrase" and made.json()["emergency_kit"] is None
    missing = client.post(f"/api/admin/backups/{name}/restore", headers=root)
    assert missing.status_code == 409 and "is encrypted; give the passphrase" in missing.json()["detail"]
    wrong = client.post(f"/api/admin/backups/{name}/restore", headers=root, json={"passphrase": "x" * 12})
    assert wrong.status_code == 409 and "the passphrase is wrong" in wrong.json()["detail"]
    done = client.post(f"/api/admin/backups/{name}/restore", headers=root, json={"passphrase": PASSPHRASE})
    assert done.status_code == 200, done.text
    assert done.json()["changed"] == ["secret.key"] or done.json()["changed"] == []


def test_an_encrypted_backup_without_its_secret_is_refused_never_written_in_the_clear(data_dir: Path) -> None:
    from conftest import prepare_from_template
    from xcore.tasks.core import register_core_tasks
    from xcore.tasks.host import TaskHost

    environ = {"XCORE_MIGRATION__BACKUP__ENCRYPTION": "key"}
    runtime = open_runtime(data_dir, environ=environ)
    try:
        prepare_from_template(runtime)
        with pytest.raises(BackupRefused, match="no backup key is set: put it in XCORE_BACKUP_SECRET or in"):
            configured_secret(runtime.config.migration.backup, runtime.data, {})
        host = TaskHost(runtime)
        register_core_tasks(host)
        assert runtime.log_file is not None
        log = runtime.log_file
        until(lambda: log.exists() and "scheduled backups will fail" in log.read_text(), "the error in the log")
        with pytest.raises(BackupRefused, match="no backup was written"):
            host.registry["xcore.backup"].fn()
        assert not runtime.backups_dir.exists() or not list(runtime.backups_dir.iterdir())

        key = Secret.new_key()
        (data_dir / "backup-secret").write_text(key_text(key.value))
        written = Path(host.registry["xcore.backup"].fn())
        assert written.name.endswith("-scheduled.xcbackup")
        from xcore.db.archive import archive_info

        assert archive_info(written).key_id == key.key_id
    finally:
        runtime.close()


# --- a live restore under Windows' rules for open files ----------------------------------------------------------


def open_files() -> set[str]:
    """open_files is the real path of every file this process has open (Linux: /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            continue
    return found


@contextmanager
def windows_file_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """windows_file_rules makes os.replace, os.rename, os.unlink and os.remove refuse, with the PermissionError
    Windows raises, a file this process has open (as the target or the source); yields the refusals."""
    refused: list[str] = []
    real = {name: getattr(os, name) for name in ("replace", "rename", "unlink", "remove")}

    def where(path: Any, dir_fd: int | None) -> str:
        path = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return os.path.realpath(path)

    def guard(*paths: str) -> None:
        busy = open_files()
        for path in paths:
            if path in busy:
                refused.append(path)
                raise PermissionError(errno.EACCES, "The process cannot access the file: it is open", path)

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        guard(where(path, dir_fd))
        real["unlink"](path, dir_fd=dir_fd)

    def moving(name: str) -> Callable[..., None]:
        def move(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
            guard(where(src, src_dir_fd), where(dst, dst_dir_fd))
            real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        return move

    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", unlink)
        patch.setattr(os, "remove", unlink)
        patch.setattr(os, "replace", moving("replace"))
        patch.setattr(os, "rename", moving("rename"))
        yield refused


def test_the_windows_rules_refuse_what_windows_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held, free = tmp_path / "held.txt", tmp_path / "free.txt"
    held.write_text("x")
    free.write_text("y")
    with held.open() as _handle, windows_file_rules(monkeypatch) as refused:
        for action in (held.unlink, lambda: os.replace(free, held), lambda: os.rename(held, tmp_path / "z")):
            with pytest.raises(PermissionError):
                action()
        free.replace(tmp_path / "moved.txt")
        (tmp_path / "moved.txt").unlink()
    assert refused == [str(held)] * 3


@pytest.mark.sqlite  # a restore into the running server is SQLite's
def test_a_live_restore_works_under_windows_rules_for_open_files(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_account(runtime, "root", ["superadmin"])
    keeper, greeter = bundles(tmp_path / "staging")
    with plugin_host(runtime) as client:
        host = Host(client, runtime, tmp_path / "staging")
        for bundle in (keeper, greeter):
            response = client.post(
                "/api/admin/plugins", files={"data": (bundle.name, bundle.read_bytes(), "application/zip")},
                headers=host.root,
            )  # fmt: skip
            assert response.status_code == 201, response.text
        for text in ("first", "second"):
            assert client.post(f"/app/keeper/notes/{text}", headers=host.root).status_code == 201
        assert client.post("/app/keeper/file/hello", headers=host.root).status_code == 201
        made = client.post("/api/admin/backups", headers=host.root)
        assert made.status_code == 201, made.text
        archive = (runtime.backups_dir / made.json()["name"]).read_bytes()

        # After the backup: more notes, a changed file, a database the plugin keeps open, a new version.
        assert client.post("/app/keeper/notes/after", headers=host.root).status_code == 201
        assert client.post("/app/keeper/file/changed", headers=host.root).status_code == 201
        assert client.post("/app/keeper/extra", headers=host.root).status_code == 201
        newer = make_zip(tmp_path / "staging", "greeter", "2.2.0", GREETER)
        response = client.post(
            "/api/admin/plugins", files={"data": (newer.name, newer.read_bytes(), "application/zip")}, headers=host.root
        )
        assert response.status_code == 201, response.text
        data = runtime.data.root / "plugin-data" / "keeper"
        busy = open_files()
        assert {str(data / "plugin.db"), str(data / "extra.db"), str(data / "held.log")} <= busy
        assert str(runtime.database_file) in busy, "the core database is open too"

        with windows_file_rules(monkeypatch) as refused:
            done = upload(Api(client, runtime), archive, host.root)
        assert done.status_code == 200, done.text
        assert str(data / "extra.db") in refused, "deleting the open database was refused, as on Windows"
        assert not {str(data / "plugin.db"), str(runtime.database_file)} & set(refused), "never renamed over"

        assert sorted(p.name for p in host.folder.glob("*.zip")) == ["greeter-2.1.0.zip", "keeper-1.0.0.zip"]
        host.wait_view("greeter", "active", version="2.1.0")
        state = host.wait_answer("/app/keeper/state", notes=["first", "second"], file="hello")
        assert "extra.db" in state["files"], "in use, so emptied rather than deleted"
        with closing(sqlite3.connect(data / "extra.db")) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        assert notes(data / "plugin.db") == ["first", "second"]


# --- the case, end to end: a real server, wiped, restored, started again -----------------------------


def test_backup_wipe_restore_and_start_a_fresh_install(start_server: Any, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(mode=0o700)
    (one / "config.json").write_text(json.dumps({"manager": {"tasks": {"backup_every": 0}}}))
    server = start_server(one)
    server.wait_ready()
    http = httpx.Client(base_url=server.url, timeout=30)
    token = (one / "setup-token").read_text().strip()
    assert (
        http.post("/api/setup", json={"token": token, "username": "root", "password": PASSWORDS["root"]}).status_code
        == 201
    )

    def login(name: str) -> dict[str, str]:
        response = http.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    root = login("root")
    created = http.post("/api/admin/users", headers=root, json={"username": "bob", "password": PASSWORDS["bob"]})
    assert created.status_code == 201, created.text
    zips = {}
    for bundle in bundles(tmp_path / "staging"):
        response = http.post(
            "/api/admin/plugins", files={"data": (bundle.name, bundle.read_bytes(), "application/zip")}, headers=root
        )
        assert response.status_code == 201, response.text
        zips[bundle.name] = sha256(bundle)
    for text in ("first", "second"):
        assert http.post(f"/app/keeper/notes/{text}", headers=root).status_code == 201
    assert http.post("/app/keeper/file/hello", headers=root).status_code == 201
    made = http.post("/api/admin/backups", headers=root, json={"encryption": "key"})
    assert made.status_code == 201, made.text
    kit = tmp_path / made.json()["emergency_kit_name"]
    kit.write_text(made.json()["emergency_kit"])
    download = http.get(f"/api/admin/backups/{made.json()['name']}", headers=root)
    archive = tmp_path / made.json()["name"]
    archive.write_bytes(download.content)
    assert server.stop() == 0
    shutil.rmtree(one)  # the disk died

    restored = run_xcore("db", "restore", str(archive), "--key-file", str(kit), "--data-dir", str(two))
    assert restored.returncode == 0, restored.stderr
    server = start_server(two)
    server.wait_ready()
    http = httpx.Client(base_url=server.url, timeout=30)
    # The same signing key: a session goes on (on PostgreSQL a restore ends every session, by design).
    assert http.get("/api/me", headers=root).status_code == (200 if BACKEND == "sqlite" else 401)
    root = login("root")
    assert login("bob")
    plugins = {p["id"]: p for p in http.get("/api/admin/plugins", headers=root).json()}
    assert {p: (v["state"], v["version"]) for p, v in plugins.items()} == {
        "keeper": ("active", "1.0.0"), "greeter": ("active", "2.1.0"),
    }  # fmt: skip
    assert {p.name: sha256(p) for p in (two / "plugins").glob("*.zip")} == zips, "the very bundles, offline"
    assert plugins["keeper"]["sha256"] == zips["keeper-1.0.0.zip"]
    state = until(lambda: http.get("/app/keeper/state", headers=root).json(), "the keeper's state")
    assert (state["notes"], state["file"]) == (["first", "second"], "hello")
    assert server.stop() == 0

    before = tree_hashes(two)
    wrong = tmp_path / "wrong-kit.txt"
    wrong.write_text(key_text(Secret.new_key().value))
    refused = run_xcore("db", "restore", str(archive), "--key-file", str(wrong), "--data-dir", str(two))
    assert refused.returncode == 1 and "this key is not the one it was encrypted with" in refused.stderr
    assert tree_hashes(two) == before, "a wrong key changes nothing"
    if BACKEND == "sqlite":
        with closing(sqlite3.connect(two / "xcore.db")) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (2,)
