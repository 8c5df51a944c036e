"""The backups admin API on real SQLite files: list, create, download and restore (superadmin only), the safety
backup, refused backups (newer schema, no account, damaged, unknown names and path tricks), the audit trail, and a
restore on a real `xcore serve` with two workers that both serve the restored data at once.

All of it is about SQLite files and their live restore; the API on PostgreSQL (pg_dump backups, restore by
`xcore db restore`) is tested in tests/test_postgres.py.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PASSWORDS, Api
from test_migrations import NOT_XCORE_DATABASES
from xcore.config.schema import BackupConfig
from xcore.db import migrate
from xcore.db.backup import BACKUP_NAME, SQLITE_MAGIC
from xcore.runtime import Runtime

PROBLEM_JSON = "application/problem+json"
EVE = {"username": "eve", "password": "a-long-enough-secret-6", "roles": ["user"]}

pytestmark = pytest.mark.sqlite  # backups of SQLite files; PostgreSQL's: tests/test_postgres.py


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    return str(response.json()["detail"])


def usernames(api: Api, headers: dict[str, str]) -> list[str]:
    response = api.client.get("/api/admin/users", headers=headers, params={"per_page": 100})
    assert response.status_code == 200, response.text
    return sorted(u["username"] for u in response.json()["items"])


def user_id(api: Api, headers: dict[str, str], name: str) -> int:
    users = api.client.get("/api/admin/users", headers=headers, params={"per_page": 100}).json()["items"]
    return int(next(u["id"] for u in users if u["username"] == name))


def audit_actions(api: Api, headers: dict[str, str], action: str) -> list[dict[str, Any]]:
    response = api.client.get("/api/admin/audit", headers=headers, params={"action": action})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def create_backup(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = api.client.post("/api/admin/backups", headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def database_backup(runtime: Runtime) -> dict[str, Any]:
    """database_backup makes a backup of the database alone (a .db file, as a migration or an older xcore made)."""
    from xcore.db.backup import make_backup

    assert runtime.database_file is not None
    path = make_backup(runtime.database_file, runtime.backups_dir, migrate.head_revision(), 10, kind="manual")
    return {"name": path.name}


def archived_rows(archive: Path, sql: str) -> list[tuple[Any, ...]]:
    """archived_rows runs `sql` on the core database inside a complete backup."""
    from xcore.db.archive import open_archive

    with archive.open("rb") as source, open_archive(source, archive.name, archive.parent, None) as staged:
        return rows(staged.database, sql)


def restore(api: Api, headers: dict[str, str], name: str) -> Any:
    return api.client.post(f"/api/admin/backups/{name}/restore", headers=headers)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def placed_backup(runtime: Runtime, source: Path, name: str) -> Path:
    """placed_backup copies a SQLite file into the backup directory under a backup's name."""
    target = runtime.backups_dir / name
    shutil.copyfile(source, target)
    return target


@pytest.fixture
def root(accounts_api: Api) -> dict[str, str]:
    return accounts_api.login("root")


# List, create, download


def test_create_list_and_download(accounts_api: Api, root: dict[str, str]) -> None:
    runtime = accounts_api.runtime
    item = create_backup(accounts_api, root)
    name = item["name"]
    assert BACKUP_NAME.fullmatch(name) and name.endswith(f"-{migrate.head_revision()}-manual.xcbackup")
    assert item["kind"] == "manual" and item["complete"] is True and item["encrypted"] is False
    assert item["emergency_kit"] is None and item["secret"] is None
    assert item["size"] == (runtime.backups_dir / item["name"]).stat().st_size > 0
    assert item["created"].endswith("Z")

    listing = accounts_api.client.get("/api/admin/backups", headers=root).json()
    listed = {k: v for k, v in item.items() if not k.startswith("emergency_kit")}
    assert listing["items"][0] == listed
    assert listing["directory"] == str(runtime.backups_dir)
    assert listing["restore"] == {"supported": True, "reason": None}
    assert listing["encryption"] == {"mode": "off", "problem": None}

    second = create_backup(accounts_api, root)
    names = [b["name"] for b in accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]]
    assert names == [second["name"], item["name"]], "newest first"

    response = accounts_api.client.get(f"/api/admin/backups/{item['name']}", headers=root)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="{item["name"]}"'
    assert response.content.startswith(b"\x1f\x8b"), "a gzip-compressed tar"
    assert response.content == (runtime.backups_dir / item["name"]).read_bytes()

    assert [e["target"] for e in audit_actions(accounts_api, root, "backup.create")] == [second["name"], item["name"]]
    assert [(e["actor"], e["target"]) for e in audit_actions(accounts_api, root, "backup.download")] == [
        ("root", item["name"])
    ]

    # A backup of the database alone (a migration's, or one an older xcore made) is a SQLite file.
    alone = database_backup(runtime)["name"]
    response = accounts_api.client.get(f"/api/admin/backups/{alone}", headers=root)
    assert response.content.startswith(SQLITE_MAGIC) and response.headers["content-type"] == "application/vnd.sqlite3"
    listed_alone = next(b for b in accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]
                        if b["name"] == alone)  # fmt: skip
    assert listed_alone["complete"] is False and listed_alone["encrypted"] is False


def test_the_listing_says_why_each_backup_was_made(accounts_api: Api, root: dict[str, str]) -> None:
    runtime = accounts_api.runtime
    made = create_backup(accounts_api, root)
    source = runtime.backups_dir / made["name"]
    for name in ("xcore-20200101T000000Z-0005-scheduled.db", "xcore-20200102T000000Z-0004.db"):
        placed_backup(runtime, source, name)
    kinds = {b["name"]: b["kind"] for b in accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]}
    assert kinds == {
        made["name"]: "manual",
        "xcore-20200101T000000Z-0005-scheduled.db": "scheduled",
        "xcore-20200102T000000Z-0004.db": "unknown",  # made by an xcore that did not record the kind
    }


# Restore


def test_restore_round_trip(accounts_api: Api, root: dict[str, str]) -> None:
    runtime = accounts_api.runtime
    db = runtime.database_file
    assert db is not None
    ids = {name: user_id(accounts_api, root, name) for name in ("bob", "cyd")}
    cyd_before = accounts_api.login("cyd")  # a session from before the backup
    backup = create_backup(accounts_api, root)

    # After the backup: a new account, a changed one, a promotion, and cyd's sessions revoked.
    assert accounts_api.client.post("/api/admin/users", headers=root, json=EVE).status_code == 201
    patched = accounts_api.client.patch(f"/api/admin/users/{ids['cyd']}", headers=root, json={"email": "c@example.org"})
    assert patched.status_code == 200, patched.text
    promoted = accounts_api.client.put(f"/api/admin/users/{ids['bob']}/roles", headers=root, json={"roles": ["admin"]})
    assert promoted.status_code == 200, promoted.text
    bob = accounts_api.login("bob")
    assert accounts_api.client.get("/api/admin/users", headers=bob).status_code == 200
    revoked = accounts_api.client.post(f"/api/admin/users/{ids['cyd']}/revoke-sessions", headers=root)
    assert revoked.status_code in (200, 204), revoked.text
    assert accounts_api.client.get("/api/me", headers=cyd_before).status_code == 401
    assert "eve" in usernames(accounts_api, root)

    response = restore(accounts_api, root, backup["name"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["restored"] == backup["name"]
    assert body["restart_required"] is False
    assert "sign in again" in body["message"] and body["safety_backup"] in body["message"]
    safety = runtime.backups_dir / body["safety_backup"]
    assert BACKUP_NAME.fullmatch(safety.name) and safety.name.endswith("-safety.xcbackup"), "a complete one"

    # The old data is back, in the live database.
    assert usernames(accounts_api, root) == ["ada", "bob", "cyd", "root"]
    assert rows(db, "SELECT email FROM users WHERE username = 'cyd'") == [(None,)]
    # The safety backup holds the data as it was just before.
    assert ("eve",) in archived_rows(safety, "SELECT username FROM users")
    listed = accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]
    assert {"name": safety.name, "kind": "safety"}.items() <= listed[0].items()

    # Access follows the restored accounts at once: bob is a plain user again, with the same token.
    assert problem(accounts_api.client.get("/api/admin/users", headers=bob), 403)
    # A revocation made after the backup stays in force: cyd's old session does not come back.
    assert accounts_api.client.get("/api/me", headers=cyd_before).status_code == 401
    assert accounts_api.client.get("/api/me", headers=accounts_api.login("cyd")).status_code == 200
    # Root's session predates the backup and goes on; eve's account is gone, so she cannot log in.
    assert accounts_api.client.get("/api/admin/backups", headers=root).status_code == 200
    login = accounts_api.client.post("/api/auth/login", json={"username": "eve", "password": EVE["password"]})
    assert login.status_code == 401

    # The restore is in the (restored) audit log, with its safety backup.
    events = audit_actions(accounts_api, root, "backup.restore")
    assert [(e["actor"], e["target"], e["detail"]["safety_backup"]) for e in events] == [
        ("root", backup["name"], safety.name)
    ]

    # Restoring the safety backup undoes the restore.
    undo = restore(accounts_api, root, safety.name)
    assert undo.status_code == 200, undo.text
    assert "eve" in usernames(accounts_api, root)


def test_a_token_of_an_account_the_restore_removed_does_not_work_for_the_next_account_with_its_id(
    accounts_api: Api, root: dict[str, str]
) -> None:
    backup = create_backup(accounts_api, root)
    assert accounts_api.client.post("/api/admin/users", headers=root, json=EVE).status_code == 201
    eve_id = user_id(accounts_api, root, "eve")
    eve = accounts_api.login("eve", EVE["password"])
    assert restore(accounts_api, root, backup["name"]).status_code == 200

    # The restore removed eve; SQLite gives her id to the next account, here an admin.
    fay = {"username": "fay", "password": "lantern-orchard-secret-5", "roles": ["admin"]}
    created = accounts_api.client.post("/api/admin/users", headers=root, json=fay)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == eve_id
    assert accounts_api.client.get("/api/me", headers=eve).status_code == 401
    assert accounts_api.client.get("/api/admin/users", headers=eve).status_code == 401
    assert accounts_api.client.get("/api/me", headers=accounts_api.login("fay", fay["password"])).status_code == 200


def test_restoring_the_oldest_of_a_full_set_of_backups_keeps_it(accounts_api: Api, root: dict[str, str]) -> None:
    keep = accounts_api.runtime.config.migration.backup.max_backup_files
    made = [create_backup(accounts_api, root)["name"] for _ in range(keep)]
    oldest = made[0]

    response = restore(accounts_api, root, oldest)
    assert response.status_code == 200, response.text
    safety = response.json()["safety_backup"]
    listed = [b["name"] for b in accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]]
    # The safety backup is the newest; the one just restored is kept over the limit until the next backup, so it
    # can be restored again.
    assert listed[0] == safety and oldest in listed and len(listed) == keep + 1
    assert restore(accounts_api, root, oldest).status_code == 200


def test_an_older_backup_is_migrated_before_it_goes_in(accounts_api: Api, root: dict[str, str], tmp_path: Path) -> None:
    runtime = accounts_api.runtime
    made = database_backup(runtime)
    old = tmp_path / "old.db"
    shutil.copyfile(runtime.backups_dir / made["name"], old)
    migrate.downgrade(f"sqlite:///{old}", tmp_path, BackupConfig(auto_backup_before_migration=False), "0003")
    name = "xcore-20200101T000000Z-0003-manual.db"
    placed_backup(runtime, old, name)
    assert accounts_api.client.post("/api/admin/users", headers=root, json=EVE).status_code == 201

    response = restore(accounts_api, root, name)
    assert response.status_code == 200, response.text
    assert f"migrated to {migrate.head_revision()}" in response.json()["message"]
    db = runtime.database_file
    assert db is not None
    assert rows(db, "SELECT version_num FROM alembic_version") == [(migrate.head_revision(),)]
    assert usernames(accounts_api, root) == ["ada", "bob", "cyd", "root"]
    assert "task_state" in {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert accounts_api.client.get("/health").json()["database"]["status"] == "ok"


def test_a_backup_from_a_newer_xcore_is_refused_and_nothing_changes(
    accounts_api: Api, root: dict[str, str], tmp_path: Path
) -> None:
    runtime = accounts_api.runtime
    made = database_backup(runtime)
    newer = tmp_path / "newer.db"
    shutil.copyfile(runtime.backups_dir / made["name"], newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    name = "xcore-20990101T000000Z-9999-manual.db"
    placed_backup(runtime, newer, name)
    assert accounts_api.client.post("/api/admin/users", headers=root, json=EVE).status_code == 201
    before = sorted(p.name for p in runtime.backups_dir.iterdir())

    detail = problem(restore(accounts_api, root, name), 409)
    assert "'9999'" in detail and "newer xcore" in detail and migrate.head_revision() in detail
    assert "eve" in usernames(accounts_api, root), "the database is untouched"
    assert sorted(p.name for p in runtime.backups_dir.iterdir()) == before, "no safety backup for a refused restore"
    refused = audit_actions(accounts_api, root, "backup.restore_refused")
    assert [(e["actor"], e["target"]) for e in refused] == [("root", name)]
    assert "9999" in refused[0]["detail"]["reason"]


def test_a_backup_without_accounts_or_a_damaged_one_is_refused(
    accounts_api: Api, root: dict[str, str], tmp_path: Path
) -> None:
    runtime = accounts_api.runtime
    made = database_backup(runtime)
    empty = tmp_path / "empty.db"
    shutil.copyfile(runtime.backups_dir / made["name"], empty)
    migrate.downgrade(f"sqlite:///{empty}", tmp_path, BackupConfig(auto_backup_before_migration=False), "0001")
    placed_backup(runtime, empty, "xcore-20200101T000000Z-0001-manual.db")
    detail = problem(restore(accounts_api, root, "xcore-20200101T000000Z-0001-manual.db"), 409)
    assert "holds no account" in detail

    (runtime.backups_dir / "xcore-20200102T000000Z-0005-manual.db").write_bytes(b"not a database at all" * 100)
    detail = problem(restore(accounts_api, root, "xcore-20200102T000000Z-0005-manual.db"), 409)
    assert "is not a SQLite database" in detail
    assert usernames(accounts_api, root) == ["ada", "bob", "cyd", "root"]
    assert not list(runtime.data.root.glob("*.restoring*")), "no working copy is left behind"


def session(api: Api, name: str) -> dict[str, Any]:
    """session logs in and returns the whole answer: access and refresh token."""
    response = api.client.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
    assert response.status_code == 200, response.text
    return dict(response.json())


def refreshed(api: Api, token: str) -> Any:
    return api.client.post("/api/auth/refresh", json={"refresh_token": token})


def bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_a_restore_brings_back_nothing_revoked_spent_or_locked_since_the_backup(
    accounts_api: Api, root: dict[str, str]
) -> None:
    runtime = accounts_api.runtime
    db = runtime.database_file
    assert db is not None
    code = "c" * 64
    bob, cyd = session(accounts_api, "bob"), session(accounts_api, "cyd")
    cyd_id = user_id(accounts_api, root, "cyd")
    with sqlite3.connect(db) as conn:  # a 2FA recovery code cyd still has when the backup is made
        conn.execute("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)", (cyd_id, code))
        conn.execute("UPDATE users SET totp_last_step = 100 WHERE id = ?", (cyd_id,))
    backup = create_backup(accounts_api, root)

    # After the backup: cyd's refresh token is exchanged, bob's family is revoked by a reuse (its newer tokens,
    # which the backup never saw, with it), cyd spends the recovery code and a TOTP step, and failed logins count.
    cyd_next = refreshed(accounts_api, cyd["refresh_token"])
    assert cyd_next.status_code == 200, cyd_next.text
    bob_next = refreshed(accounts_api, bob["refresh_token"]).json()
    assert refreshed(accounts_api, bob["refresh_token"]).status_code == 401  # a reuse: the family is revoked
    assert accounts_api.client.get("/api/me", headers=bearer(bob_next)).status_code == 401
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recovery_codes SET used_at = '2026-01-01 00:00:00.000000' WHERE code_hash = ?", (code,))
        conn.execute("UPDATE users SET totp_last_step = 200 WHERE id = ?", (cyd_id,))
    for _ in range(3):
        wrong = accounts_api.client.post("/api/auth/login", json={"username": "ada", "password": "not-her-password"})
        assert wrong.status_code in (401, 429), wrong.text
    throttles = rows(db, "SELECT key, failures, locked_until FROM login_throttle ORDER BY key")
    assert throttles, "the failed logins were counted"
    assert accounts_api.client.post("/api/admin/users", headers=root, json=EVE).status_code == 201

    response = restore(accounts_api, root, backup["name"])
    assert response.status_code == 200, response.text
    assert "eve" not in usernames(accounts_api, root), "the accounts are the backup's"

    # Spent and revoked stay so: the exchanged token is a reuse now, the revoked family stays revoked.
    assert refreshed(accounts_api, bob["refresh_token"]).status_code == 401
    assert accounts_api.client.get("/api/me", headers=bearer(bob_next)).status_code == 401
    assert refreshed(accounts_api, bob_next["refresh_token"]).status_code == 401
    assert refreshed(accounts_api, cyd["refresh_token"]).status_code == 401
    spent = rows(db, f"SELECT used_at IS NOT NULL FROM recovery_codes WHERE code_hash = '{code}'")
    assert spent == [(1,)], "a recovery code used since the backup stays used"
    assert rows(db, f"SELECT totp_last_step FROM users WHERE id = {cyd_id}") == [(200,)]
    restored = {key: (failures, locked) for key, failures, locked, *_ in rows(db, "SELECT * FROM login_throttle")}
    for key, failures, locked in throttles:
        assert restored[key][0] >= failures and restored[key][1] == locked, key
    # The audit trail since the backup is kept: the account created, then removed by the restore.
    created = [e["target"] for e in audit_actions(accounts_api, root, "user.created")]
    assert sorted(created) == ["ada", "bob", "cyd", "eve"], "the backup's events, and the one since, once each"
    assert accounts_api.client.get("/api/me", headers=bearer(session(accounts_api, "bob"))).status_code == 200


@pytest.mark.parametrize(("make", "says"), NOT_XCORE_DATABASES)
def test_a_file_that_is_not_an_intact_xcore_database_is_refused_and_nothing_changes(
    accounts_api: Api, root: dict[str, str], make: Any, says: str
) -> None:
    runtime = accounts_api.runtime
    good = runtime.backups_dir / database_backup(runtime)["name"]
    name = "xcore-20200101T000000Z-0005-manual.db"
    make(runtime.backups_dir / name, good)
    before = sorted(p.name for p in runtime.backups_dir.iterdir())

    detail = problem(restore(accounts_api, root, name), 409)
    assert says in detail and name in detail, detail
    assert "Traceback" not in detail and "\n" not in detail
    assert usernames(accounts_api, root) == ["ada", "bob", "cyd", "root"]
    assert sorted(p.name for p in runtime.backups_dir.iterdir()) == before, "no safety backup for a refused restore"
    assert not list(runtime.data.root.glob("*.restoring*"))


def test_backups_are_counted_and_pruned_per_kind(accounts_api: Api, root: dict[str, str]) -> None:
    from xcore.db.backup import backup_kind, list_backups, make_backup

    runtime = accounts_api.runtime
    db = runtime.database_file
    assert db is not None
    keep = runtime.config.migration.backup.max_backup_files
    manual = [create_backup(accounts_api, root)["name"] for _ in range(2)]
    safety = make_backup(db, runtime.backups_dir, "0005", keep, kind="safety")
    # Many scheduled backups (what the task xcore.backup makes) push out older scheduled ones only.
    scheduled = [make_backup(db, runtime.backups_dir, "0005", keep, kind="scheduled") for _ in range(keep + 3)]
    names = [p.name for p in list_backups(runtime.backups_dir)]
    assert set(manual) | {safety.name} <= set(names), "an admin's and a restore's backups are never pruned for them"
    assert [n for n in names if backup_kind(n) == "scheduled"] == [p.name for p in scheduled[-keep:]]
    # And many manual backups do not push out scheduled ones.
    for _ in range(keep):
        create_backup(accounts_api, root)
    names = [p.name for p in list_backups(runtime.backups_dir)]
    assert sum(backup_kind(n) == "manual" for n in names) == keep
    assert sum(backup_kind(n) == "scheduled" for n in names) == keep and safety.name in names
    assert not list(runtime.backups_dir.glob(".*")), "no partial file is left"


# Names: only backups, nothing else


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("xcore-20200101T000000Z-0005-manual.db", 404),  # the right shape, but no such backup
        ("xcore.db", 404),
        ("secret.key", 404),
        ("..", 404),
        # A dot segment or a control character once decoded is refused by the access guard before any route.
        ("..%2Fxcore.db", 400),
        ("%2E%2E%2Fsecret.key", 400),
        ("xcore-20200101T000000Z-0005.db%0A", 400),
        ("xcore-20200101T000000Z-0005-manual.db.txt", 404),
    ],
)
def test_unknown_names_and_path_tricks_are_refused(
    accounts_api: Api, root: dict[str, str], name: str, status: int
) -> None:
    create_backup(accounts_api, root)
    download = accounts_api.client.get(f"/api/admin/backups/{name}", headers=root)
    assert not download.content.startswith(SQLITE_MAGIC)
    assert download.status_code == status, download.text
    assert restore(accounts_api, root, name).status_code == status


def test_a_link_named_like_a_backup_is_not_followed_out_of_the_directory(
    accounts_api: Api, root: dict[str, str]
) -> None:
    runtime = accounts_api.runtime
    create_backup(accounts_api, root)
    link = runtime.backups_dir / "xcore-20200101T000000Z-0005-manual.db"
    assert runtime.database_file is not None
    link.symlink_to(runtime.database_file)  # a real SQLite file, outside the backup directory
    assert problem(accounts_api.client.get(f"/api/admin/backups/{link.name}", headers=root), 404)
    assert problem(restore(accounts_api, root, link.name), 404)


# Who may


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/admin/backups"),
        ("POST", "/api/admin/backups"),
        ("GET", "/api/admin/backups/{name}"),
        ("POST", "/api/admin/backups/{name}/restore"),
        ("POST", "/api/admin/backups/restore-upload"),
    ],
)
def test_only_superadmins_handle_backups(accounts_api: Api, root: dict[str, str], method: str, path: str) -> None:
    name = create_backup(accounts_api, root)["name"]
    url = path.format(name=name)
    assert accounts_api.client.request(method, url).status_code == 401
    for who in ("ada", "bob"):
        detail = problem(accounts_api.client.request(method, url, headers=accounts_api.login(who)), 403)
        assert "role superadmin" in detail and "/api/admin/backups*" in detail
    listed = accounts_api.client.get("/api/admin/backups", headers=root).json()["items"]
    assert [b["name"] for b in listed] == [name], "a refused request made no backup and restored nothing"


# A real server with two workers


def test_a_restore_takes_effect_in_every_worker_of_a_running_server(start_server: Any, tmp_path: Path) -> None:
    server = start_server(None, "--workers", "2")
    server.wait_ready()
    data = server.data_dir
    # No keep-alive: each request opens a new connection, so requests spread over both workers.
    http = httpx.Client(base_url=server.url, timeout=15, limits=httpx.Limits(max_keepalive_connections=0))
    token = (data / "setup-token").read_text().strip()
    setup = http.post("/api/setup", json={"token": token, "username": "root", "password": PASSWORDS["root"]})
    assert setup.status_code == 201, setup.text

    def login(name: str) -> dict[str, str]:
        response = http.post("/api/auth/login", json={"username": name, "password": PASSWORDS[name]})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def names(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {u["username"] for u in response.json()["items"]}

    root = login("root")
    created = http.post("/api/admin/users", headers=root, json={"username": "bob", "password": PASSWORDS["bob"]})
    assert created.status_code == 201, created.text
    bob_id = created.json()["id"]
    backup = http.post("/api/admin/backups", headers=root)
    assert backup.status_code == 201, backup.text

    assert http.post("/api/admin/users", headers=root, json=EVE).status_code == 201
    assert http.put(f"/api/admin/users/{bob_id}/roles", headers=root, json={"roles": ["admin"]}).status_code == 200
    bob = login("bob")
    for _ in range(12):  # both workers load and cache the accounts as they are now
        assert "eve" in names(http.get("/api/admin/users", headers=root))
        assert http.get("/api/admin/users", headers=bob).status_code == 200

    restored = http.post(f"/api/admin/backups/{backup.json()['name']}/restore", headers=root)
    assert restored.status_code == 200, restored.text
    assert restored.json()["restart_required"] is False

    request_ids = []
    for _ in range(30):
        response = http.get("/api/admin/users", headers=root)
        assert names(response) == {"root", "bob"}, "every worker serves the restored accounts"
        request_ids.append(response.headers["x-request-id"])
        assert http.get("/api/admin/users", headers=bob).status_code == 403, "and the restored roles"

    # Which worker answered each request: the request log line carries the request id and the process id.
    log_file = data / "logs" / "xcore.log"
    deadline = time.monotonic() + 10
    pids: dict[str, int] = {}
    while time.monotonic() < deadline and len(pids) < len(request_ids):
        for line in log_file.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("request_id") in request_ids:
                pids[entry["request_id"]] = entry["pid"]
        time.sleep(0.2)
    assert len(pids) == len(request_ids), "every request is in the log"
    assert len(set(pids.values())) == 2, f"the requests should have reached both workers: {set(pids.values())}"
    assert server.stop() == 0
