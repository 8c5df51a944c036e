"""Two-factor login with real pyotp codes: enrollment, login with drift and replay refusal, recovery codes,
encryption at rest, disabling, admin reset, lockout and audit events."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pyotp
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

import xcore.auth.totp
from conftest import PASSWORDS, Api, Clock, create_account, prepare_from_template
from xcore.runtime import open_runtime
from xcore.web.app import build_app

STEP = 30


# Helpers


@pytest.fixture(autouse=True)
def _still_clock(clock: Clock) -> None:
    """The server judges codes by the `clock` fixture's time, which stands still: a code made now is judged in the
    same step, however long the request takes."""


def totp_now() -> float:
    """totp_now is the time the server judges codes by."""
    return xcore.auth.totp.clock()


def code_at(secret: str, offset_steps: int = 0) -> str:
    """code_at is the real pyotp code for the current step plus `offset_steps`."""
    return pyotp.TOTP(secret).at(totp_now() + offset_steps * STEP)


def login(api: Api, username: str, password: str | None = None, **extra: Any) -> Any:
    return api.client.post(
        "/api/auth/login", json={"username": username, "password": password or PASSWORDS[username], **extra}
    )


def bearer(response: Any) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def field_errors(response: Any) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


def db_rows(api: Api, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """db_rows reads the core database directly (SQLite or PostgreSQL), past the application's code."""
    with api.runtime.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def set_last_step(api: Api, username: str, step: int | None) -> None:
    """set_last_step resets the replay guard of a user directly in the database."""
    with api.runtime.engine.begin() as conn:
        changed = conn.execute(
            text("UPDATE users SET totp_last_step = :step WHERE username = :username"),
            {"step": step, "username": username},
        )
        assert changed.rowcount == 1


def last_step(api: Api, username: str) -> int | None:
    return db_rows(api, "SELECT totp_last_step FROM users WHERE username = :username", username=username)[0][0]


class Enrolled:
    """Enrolled is a user with 2FA on: their secret, recovery codes and a session opened before enrollment."""

    def __init__(self, secret: str, codes: list[str], headers: dict[str, str], confirmed_step: int) -> None:
        self.secret = secret
        self.codes = codes
        self.headers = headers
        self.confirmed_step = confirmed_step


def enroll(api: Api, username: str) -> Enrolled:
    headers = api.login(username)
    setup = api.client.post("/api/me/totp/setup", headers=headers, json={"password": PASSWORDS[username]})
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    now = totp_now()
    confirm = api.client.post("/api/me/totp/confirm", headers=headers, json={"code": pyotp.TOTP(secret).at(now)})
    assert confirm.status_code == 200, confirm.text
    return Enrolled(secret, confirm.json()["recovery_codes"], headers, int(now // STEP))


@pytest.fixture
def users_api(api: Api) -> Api:
    """users_api: root (superadmin) and bob (user); fewer accounts than conftest's accounts_api, as argon2 is slow.
    Tests that need ada or cyd create them with `create_account`."""
    create_account(api.runtime, "root", ["superadmin"])
    create_account(api.runtime, "bob", ["user"])
    return api


@pytest.fixture
def bob(users_api: Api) -> Enrolled:
    """bob has two-factor login on."""
    return enroll(users_api, "bob")


# 1. Enrollment


def test_totp_setup_needs_a_login(users_api: Api) -> None:
    response = users_api.client.post("/api/me/totp/setup")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_totp_setup_returns_secret_otpauth_uri_and_svg_qr_code(users_api: Api) -> None:
    headers = users_api.login("bob")
    response = users_api.client.post("/api/me/totp/setup", headers=headers, json={"password": PASSWORDS["bob"]})
    assert response.status_code == 200, response.text
    body = response.json()

    secret = body["secret"]
    assert len(secret) >= 16
    pyotp.TOTP(secret).now()  # valid base32

    uri = urlparse(body["uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert unquote(uri.path) == "/xcore:bob"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["xcore"]
    assert pyotp.parse_uri(body["uri"]).secret == secret

    svg = body["qr_svg"]
    assert svg.lstrip().startswith("<svg") or "<svg" in svg
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")


def test_totp_setup_while_enabled_is_a_conflict(users_api: Api, bob: Enrolled) -> None:
    response = users_api.client.post("/api/me/totp/setup", headers=bob.headers, json={"password": PASSWORDS["bob"]})
    assert response.status_code == 409


def test_totp_setup_needs_the_password(users_api: Api) -> None:
    """A stolen session cannot turn 2FA on with the thief's phone and lock the owner out."""
    headers = users_api.login("bob")
    missing = users_api.client.post("/api/me/totp/setup", headers=headers)
    assert missing.status_code == 400
    wrong = users_api.client.post("/api/me/totp/setup", headers=headers, json={"password": "wrong-password-x"})
    assert wrong.status_code == 403
    assert field_errors(wrong) == ["password"]
    assert "password is wrong" in wrong.json()["detail"]
    assert db_rows(users_api, "SELECT totp_secret FROM users WHERE username = 'bob'") == [(None,)]
    right = users_api.client.post("/api/me/totp/setup", headers=headers, json={"password": PASSWORDS["bob"]})
    assert right.status_code == 200, right.text


# 2. Confirmation


def test_confirm_refuses_a_wrong_code_and_accepts_the_current_one(users_api: Api) -> None:
    headers = users_api.login("bob")
    setup = users_api.client.post("/api/me/totp/setup", headers=headers, json={"password": PASSWORDS["bob"]})
    secret = setup.json()["secret"]
    now = totp_now()
    wrong = f"{(int(pyotp.TOTP(secret).at(now)) + 1) % 1_000_000:06d}"

    for code in (wrong, "\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11" * 6):  # other scripts' digits are wrong too
        response = users_api.client.post("/api/me/totp/confirm", headers=headers, json={"code": code})
        assert response.status_code == 400, response.text
        assert field_errors(response) == ["code"]
    assert users_api.client.get("/api/me", headers=headers).json()["totp_enabled"] is False

    response = users_api.client.post("/api/me/totp/confirm", headers=headers, json={"code": pyotp.TOTP(secret).at(now)})
    assert response.status_code == 200, response.text
    codes = response.json()["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert users_api.client.get("/api/me", headers=headers).json()["totp_enabled"] is True


def test_confirm_without_setup_is_a_conflict(users_api: Api) -> None:
    headers = users_api.login("bob")
    response = users_api.client.post("/api/me/totp/confirm", headers=headers, json={"code": "123456"})
    assert response.status_code == 409


# 3. Login


def test_login_asks_for_the_code_then_refuses_a_wrong_one_and_accepts_the_right_one(
    users_api: Api, bob: Enrolled
) -> None:
    response = login(users_api, "bob")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["totp_required"] is True
    assert "access_token" not in response.json()

    right = code_at(bob.secret, +1)  # the confirm step is used: the next one is within drift
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = login(users_api, "bob", totp=wrong)
    assert response.status_code == 401
    assert response.json().get("totp_required") is None

    # A wrong password with the right code is still a wrong password, and does not burn the code.
    response = login(users_api, "bob", "not-bobs-password", totp=right)
    assert response.status_code == 401

    headers = bearer(login(users_api, "bob", totp=right))
    assert users_api.client.get("/api/me", headers=headers).json()["username"] == "bob"


def test_a_code_works_once(users_api: Api, bob: Enrolled) -> None:
    code = code_at(bob.secret, +1)
    assert login(users_api, "bob", totp=code).status_code == 200
    replay = login(users_api, "bob", totp=code)
    assert replay.status_code == 401, "the same code in the same window must be refused"
    # The code of the confirmation step is older than the last accepted step: refused too.
    assert login(users_api, "bob", totp=pyotp.TOTP(bob.secret).at(bob.confirmed_step * STEP)).status_code == 401


def test_confirm_consumes_its_step(users_api: Api, bob: Enrolled) -> None:
    assert last_step(users_api, "bob") == bob.confirmed_step
    code = pyotp.TOTP(bob.secret).at(bob.confirmed_step * STEP)  # still within drift: refused as a replay
    assert login(users_api, "bob", totp=code).status_code == 401


@pytest.mark.parametrize(
    ("offset_steps", "accepted"),
    [
        pytest.param(0, True, id="now"),
        pytest.param(-1, True, id="now-30s"),
        pytest.param(+1, True, id="now+30s"),
        pytest.param(-2, False, id="now-60s"),
        pytest.param(+2, False, id="now+60s"),
        pytest.param(-3, False, id="now-90s"),
        pytest.param(+3, False, id="now+90s"),
    ],
)
def test_clock_drift_of_one_step_is_allowed(users_api: Api, bob: Enrolled, offset_steps: int, accepted: bool) -> None:
    set_last_step(users_api, "bob", None)  # no step used yet
    now = totp_now()
    code = pyotp.TOTP(bob.secret).at(now + offset_steps * STEP)
    response = login(users_api, "bob", totp=code)
    assert response.status_code == (200 if accepted else 401), response.text
    if accepted:
        assert last_step(users_api, "bob") == int(now // STEP) + offset_steps


def test_steps_must_increase(users_api: Api, bob: Enrolled) -> None:
    """Logins at now-30 s, now and now+30 s in that order all work; going back to an earlier step fails."""
    set_last_step(users_api, "bob", None)
    now = totp_now()
    totp = pyotp.TOTP(bob.secret)
    for offset in (-1, 0, +1):
        assert login(users_api, "bob", totp=totp.at(now + offset * STEP)).status_code == 200, offset
    for offset in (-1, 0, +1):
        assert login(users_api, "bob", totp=totp.at(now + offset * STEP)).status_code == 401, offset


# Digits of other scripts are `str.isdigit()` too; they once reached hmac.compare_digest and answered 500.
@pytest.mark.parametrize(
    "code",
    ["12345", "1234567", "abcdef", "", "12 34 5", "\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11" * 6, "\u00b2" * 6],
)
def test_malformed_codes_are_refused(users_api: Api, bob: Enrolled, code: str) -> None:
    response = login(users_api, "bob", totp=code)
    assert response.status_code == 401
    if code == "":  # an empty code is no code
        assert response.json().get("totp_required") is True


def test_a_code_with_spaces_is_accepted(users_api: Api, bob: Enrolled) -> None:
    code = code_at(bob.secret, +1)
    assert login(users_api, "bob", totp=f"{code[:3]} {code[3:]}").status_code == 200


# 4. Recovery codes


def test_each_recovery_code_works_once(users_api: Api, bob: Enrolled) -> None:
    first, second = bob.codes[0], bob.codes[1]
    headers = bearer(login(users_api, "bob", recovery_code=first))
    assert users_api.client.get("/api/me", headers=headers).status_code == 200
    assert login(users_api, "bob", recovery_code=first).status_code == 401
    assert login(users_api, "bob", recovery_code=second).status_code == 200
    assert login(users_api, "bob", recovery_code="ABCD-EFGH-JKLM").status_code == 401


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(str.lower, id="lowercase"),
        pytest.param(lambda c: c.replace("-", ""), id="no-dashes"),
        pytest.param(lambda c: c.replace("-", "").lower(), id="lowercase-no-dashes"),
        pytest.param(lambda c: f"  {c.replace('-', ' ')} ", id="spaces"),
    ],
)
def test_recovery_codes_are_normalized(users_api: Api, bob: Enrolled, transform: Any) -> None:
    code = bob.codes[3]
    assert login(users_api, "bob", recovery_code=transform(code)).status_code == 200
    assert login(users_api, "bob", recovery_code=code).status_code == 401, "the normalized code is the same code"


def test_totp_and_recovery_code_together_are_refused(users_api: Api, bob: Enrolled) -> None:
    response = login(users_api, "bob", totp=code_at(bob.secret, +1), recovery_code=bob.codes[0])
    assert response.status_code == 400
    assert response.json()["errors"]
    # Neither was consumed.
    assert login(users_api, "bob", recovery_code=bob.codes[0]).status_code == 200


def test_recovery_codes_of_one_user_do_not_work_for_another(users_api: Api, bob: Enrolled) -> None:
    create_account(users_api.runtime, "cyd", ["user"])
    cyd = enroll(users_api, "cyd")
    assert login(users_api, "cyd", recovery_code=bob.codes[0]).status_code == 401
    assert login(users_api, "bob", recovery_code=cyd.codes[0]).status_code == 401


# 5. At rest


def test_totp_secret_is_encrypted_and_recovery_codes_hashed_at_rest(users_api: Api, bob: Enrolled) -> None:
    [(sealed,)] = db_rows(users_api, "SELECT totp_secret FROM users WHERE username = 'bob'")
    assert sealed
    assert bob.secret not in sealed
    assert bob.secret.lower() not in sealed.lower()
    assert users_api.runtime.auth.box.open(sealed) == bob.secret

    stored = db_rows(
        users_api,
        "SELECT code_hash FROM recovery_codes JOIN users ON users.id = recovery_codes.user_id "
        "WHERE users.username = 'bob'",
    )
    assert len(stored) == 10
    dump = "\n".join(str(v) for row in db_rows(users_api, "SELECT * FROM recovery_codes") for v in row)
    for code in bob.codes:
        assert code not in dump
        assert code.replace("-", "") not in dump
    assert {h for (h,) in stored} == {hashlib.sha256(c.encode()).hexdigest() for c in bob.codes}


def test_secret_sealed_with_another_key_does_not_open(users_api: Api, bob: Enrolled) -> None:
    from xcore.auth.totp import SecretBox

    [(sealed,)] = db_rows(users_api, "SELECT totp_secret FROM users WHERE username = 'bob'")
    assert SecretBox("another-secret-key-of-at-least-32-chars").open(sealed) is None


# 6. Disable and admin reset


def test_disable_needs_the_password_and_a_code(users_api: Api, bob: Enrolled) -> None:
    code = code_at(bob.secret, +1)
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"

    response = users_api.client.post(
        "/api/me/totp/disable", headers=bob.headers, json={"password": "wrong-password-x", "code": code}
    )
    assert response.status_code == 403
    assert field_errors(response) == ["password"]

    response = users_api.client.post(
        "/api/me/totp/disable", headers=bob.headers, json={"password": PASSWORDS["bob"], "code": wrong_code}
    )
    assert response.status_code == 403
    assert field_errors(response) == ["code"]
    assert users_api.client.get("/api/me", headers=bob.headers).json()["totp_enabled"] is True

    response = users_api.client.post(
        "/api/me/totp/disable", headers=bob.headers, json={"password": PASSWORDS["bob"], "code": code}
    )
    assert response.status_code == 204, response.text
    assert users_api.client.get("/api/me", headers=bob.headers).json()["totp_enabled"] is False
    assert bearer(login(users_api, "bob"))
    assert db_rows(users_api, "SELECT totp_secret, totp_last_step FROM users WHERE username = 'bob'") == [(None, None)]
    assert db_rows(users_api, "SELECT count(*) FROM recovery_codes") == [(0,)]


def test_wrong_passwords_and_codes_to_disable_count_towards_the_lockout(users_api: Api, bob: Enrolled) -> None:
    code = code_at(bob.secret, +1)
    wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
    for body in ({"password": "wrong-password-x", "code": code}, {"password": PASSWORDS["bob"], "code": wrong_code}):
        response = users_api.client.post("/api/me/totp/disable", headers=bob.headers, json=body)
        assert response.status_code == 403
    rows = db_rows(users_api, "SELECT key, failures FROM login_throttle WHERE key LIKE 'user:%'")
    assert [failures for _, failures in rows] == [2]
    response = users_api.client.post(
        "/api/me/totp/disable", headers=bob.headers, json={"password": PASSWORDS["bob"], "code": code}
    )
    assert response.status_code == 204, response.text
    assert db_rows(users_api, "SELECT count(*) FROM login_throttle WHERE key LIKE 'user:%'") == [(0,)]


def test_disable_with_a_recovery_code(users_api: Api, bob: Enrolled) -> None:
    response = users_api.client.post(
        "/api/me/totp/disable", headers=bob.headers, json={"password": PASSWORDS["bob"], "code": bob.codes[5].lower()}
    )
    assert response.status_code == 204, response.text
    assert bearer(login(users_api, "bob"))


def test_disable_when_off_is_a_conflict(users_api: Api) -> None:
    headers = users_api.login("bob")
    response = users_api.client.post(
        "/api/me/totp/disable", headers=headers, json={"password": PASSWORDS["bob"], "code": "123456"}
    )
    assert response.status_code == 409


@pytest.mark.parametrize("admin", ["root", "ada"])
def test_admin_reset_turns_2fa_off_and_ends_sessions(users_api: Api, bob: Enrolled, admin: str) -> None:
    create_account(users_api.runtime, "ada", ["admin"])
    bob_session = bearer(login(users_api, "bob", totp=code_at(bob.secret, +1)))
    bob_id = users_api.client.get("/api/me", headers=bob_session).json()["id"]

    response = users_api.client.post(f"/api/admin/users/{bob_id}/reset-totp", headers=users_api.login(admin))
    assert response.status_code == 204, response.text

    assert users_api.client.get("/api/me", headers=bob_session).status_code == 401
    assert users_api.client.get("/api/me", headers=bob.headers).status_code == 401
    headers = bearer(login(users_api, "bob"))  # no code needed any more
    assert users_api.client.get("/api/me", headers=headers).json()["totp_enabled"] is False
    assert login(users_api, "bob", recovery_code=bob.codes[0]).status_code == 200  # codes are ignored when off
    assert db_rows(users_api, "SELECT count(*) FROM recovery_codes") == [(0,)]


@pytest.mark.parametrize(
    ("actor", "target", "status"),
    [
        pytest.param("bob", "root", 403, id="user-cannot-reset"),
        pytest.param("ada", "root", 403, id="admin-cannot-reset-superadmin"),
        pytest.param("ada", "ada", 403, id="admin-cannot-reset-own-rank"),
        pytest.param(None, "bob", 401, id="anonymous"),
    ],
)
def test_admin_reset_is_refused_to_those_who_may_not(
    users_api: Api, actor: str | None, target: str, status: int
) -> None:
    create_account(users_api.runtime, "ada", ["admin"])
    target_id = db_rows(users_api, "SELECT id FROM users WHERE username = :username", username=target)[0][0]
    headers = users_api.login(actor) if actor else {}
    response = users_api.client.post(f"/api/admin/users/{target_id}/reset-totp", headers=headers)
    assert response.status_code == status, response.text


# 7. Lockout


@pytest.fixture
def lockout_api(data_dir: Path) -> Iterator[Api]:
    """An app that locks an account after 3 failures."""
    runtime = open_runtime(data_dir, environ={"XCORE_SECURE__LOCKOUT__MAX_FAILURES": "3"})
    prepare_from_template(runtime)
    with TestClient(build_app(runtime)) as client:
        api = Api(client, runtime)
        create_account(runtime, "root", ["superadmin"])
        create_account(runtime, "bob", ["user"])
        yield api
    runtime.close()


def test_wrong_codes_count_toward_lockout(lockout_api: Api) -> None:
    bob = enroll(lockout_api, "bob")
    right = code_at(bob.secret, +1)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for attempt in range(3):
        assert login(lockout_api, "bob", totp=wrong).status_code == 401, attempt
    response = login(lockout_api, "bob", totp=right)
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    # The refused right code was not consumed.
    assert last_step(lockout_api, "bob") == bob.confirmed_step


def test_wrong_recovery_codes_count_toward_lockout(lockout_api: Api) -> None:
    bob = enroll(lockout_api, "bob")
    for attempt in range(3):
        assert login(lockout_api, "bob", recovery_code="AAAA-BBBB-CCCC").status_code == 401, attempt
    assert login(lockout_api, "bob", recovery_code=bob.codes[0]).status_code == 429


def test_a_missing_code_does_not_count_toward_lockout(lockout_api: Api) -> None:
    bob = enroll(lockout_api, "bob")
    for _ in range(4):
        assert login(lockout_api, "bob").json()["totp_required"] is True
    assert login(lockout_api, "bob", totp=code_at(bob.secret, +1)).status_code == 200


# 8. Audit


def test_totp_events_are_audited(users_api: Api, bob: Enrolled) -> None:
    assert login(users_api, "bob", recovery_code=bob.codes[0]).status_code == 200
    response = users_api.client.post(
        "/api/me/totp/disable",
        headers=bob.headers,
        json={"password": PASSWORDS["bob"], "code": code_at(bob.secret, +1)},
    )
    assert response.status_code == 204, response.text

    root = users_api.login("root")
    for action in ("totp.enabled", "totp.recovery_code_used", "totp.disabled"):
        page = users_api.client.get("/api/admin/audit", headers=root, params={"action": action}).json()
        assert page["total"] == 1, (action, page)
        event = page["items"][0]
        assert event["action"] == action
        assert event["actor"] == "bob"
    used = users_api.client.get("/api/admin/audit", headers=root, params={"action": "totp.recovery_code_used"}).json()[
        "items"
    ][0]
    assert used["detail"]["codes_left"] == 9
    everything = users_api.client.get("/api/admin/audit", headers=root, params={"per_page": 500}).text
    assert bob.secret not in everything
    assert bob.codes[0] not in everything
