"""The password policy: common passwords and predictable patterns are refused, with a message that says which,
wherever a password is set (setup, an admin creating or resetting an account, a password change); the switches in
`secure.password`; and GET /api/auth/policy, which the UI shows instead of its own copy of the rules."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from conftest import PASSWORDS, Api, create_account
from xcore.auth.errors import InvalidInput
from xcore.auth.password_policy import COMMON_FILE, common_passwords, password_problem
from xcore.config.schema import PasswordConfig
from xcore.runtime import open_runtime

POLICY = PasswordConfig()

COMMON = "in the list of common passwords"
KEYBOARD = "a keyboard pattern"
SEQUENCE = "a sequence"
REPEAT = "a repeat of"
DECORATED = "a common password"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        # The examples.
        ("password123", COMMON),
        ("1234567890", COMMON),
        ("qwertyuiop", COMMON),
        # Common passwords in other clothes: case, look-alike digits, a few digits or symbols around them.
        ("PASSWORD123", COMMON),
        ("P@ssw0rd2024", DECORATED),
        ("Summer2024!", DECORATED),
        ("!!dragon1234", DECORATED),
        ("iloveyou1234567", DECORATED),
        # Patterns that are not in the list.
        ("qwertyuiopasdfgh", KEYBOARD),
        ("!QAZ@WSX#EDC$RFV", KEYBOARD),
        ("zxcvbnm,./;lkjh", KEYBOARD),
        ("abcdefghijklmnop", SEQUENCE),
        ("98765432109876", SEQUENCE),
        ("lmnopq-rstuvw", SEQUENCE),
        ("xk9#xk9#xk9#", REPEAT),
        ("7777777777abc", "a repeated character"),
        ("qwertyuiopZk8#", KEYBOARD),  # 4 of 14 characters outside the pattern are too few
    ],
)
def test_common_and_predictable_passwords_are_refused_saying_why(password: str, message: str) -> None:
    problem = password_problem(password, POLICY, username="someone", email=None)
    assert problem is not None and message in problem, problem


@pytest.mark.parametrize(
    "password",
    [
        "correct-horse-battery-9",
        "Blue-Kettle-Morning-42",
        "Tr0ub4dor&3x",
        "hello world 42 times",
        "xk9#mP2$vL7q",
        "first-owner-secret-1",
        *PASSWORDS.values(),
    ],
)
def test_ordinary_good_passwords_pass(password: str) -> None:
    assert password_problem(password, POLICY, username="someone", email="someone@example.org") is None


def test_the_username_backwards_is_refused_like_the_username() -> None:
    problem = password_problem("Xylo-renowyfal-77", POLICY, username="lafywoner", email=None)
    assert problem is not None and "username reversed" in problem


def test_the_switches_turn_the_list_and_the_patterns_off() -> None:
    neither = PasswordConfig(refuse_common=False, refuse_patterns=False)
    assert password_problem("password123", neither, username="someone", email=None) is None
    assert password_problem("qwertyuiopasdfgh", neither, username="someone", email=None) is None
    patterns_only = PasswordConfig(refuse_common=False)
    assert KEYBOARD in (password_problem("qwertyuiop", patterns_only, username="someone", email=None) or "")


def test_the_shipped_list_is_read_offline_and_holds_the_common_ones() -> None:
    assert COMMON_FILE.is_file() and COMMON_FILE.with_name("common-passwords.LICENSE").is_file()
    with gzip.open(COMMON_FILE, "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    assert len(lines) >= 19_000 and len(common_passwords()) >= 19_000
    assert {"password123", "1234567890", "qwertyuiop", "iloveyou"} <= common_passwords()


def test_a_long_password_is_judged_quickly() -> None:
    import time

    started = time.perf_counter()
    assert password_problem("abcd" * 256, POLICY, username="someone", email=None) is not None
    assert password_problem("x!9Q" + "k7#pL2" * 170, POLICY, username="someone", email=None) is not None
    assert time.perf_counter() - started < 1.0


# Every place a password is set uses the policy.


def field_error(response: Any, field: str) -> str:
    assert response.status_code == 400, response.text
    errors = {e["field"]: e["message"] for e in response.json().get("errors", [])}
    assert field in errors, response.text
    return errors[field]


def test_setup_refuses_a_common_password_and_keeps_the_token(api: Api) -> None:
    token = api.runtime.auth.setup_token.create()
    response = api.client.post("/api/setup", json={"token": token, "username": "owner", "password": "password123"})
    assert COMMON in field_error(response, "password")
    response = api.client.post("/api/setup", json={"token": token, "username": "owner", "password": "qwertyuiopasdf"})
    assert KEYBOARD in field_error(response, "password")
    good = {"token": token, "username": "owner", "password": "quiet-harbour-secret-9"}
    assert api.client.post("/api/setup", json=good).status_code == 201


def test_admin_create_and_reset_and_my_password_change_refuse_weak_passwords(accounts_api: Api) -> None:
    api = accounts_api
    ada = api.login("ada")
    response = api.client.post("/api/admin/users", headers=ada, json={"username": "dan", "password": "1234567890"})
    assert COMMON in field_error(response, "password")
    bob_id = api.client.get("/api/admin/users", headers=ada, params={"q": "bob"}).json()["items"][0]["id"]
    response = api.client.patch(f"/api/admin/users/{bob_id}", headers=ada, json={"password": "abcdefghijklmn"})
    assert SEQUENCE in field_error(response, "password")
    bob = api.login("bob")
    response = api.client.post(
        "/api/me/password",
        headers=bob,
        json={"current_password": PASSWORDS["bob"], "new_password": "Qwerty123456!"},
    )
    assert DECORATED in field_error(response, "new_password")
    api.login("bob")  # nothing changed: the old password still works


def test_the_policy_follows_the_settings(tmp_path: Any) -> None:
    from litestar.testing import TestClient

    from xcore.web.app import build_app

    environ = {
        "XCORE_SECURE__PASSWORD__MIN_LENGTH": "14",
        "XCORE_SECURE__PASSWORD__REFUSE_COMMON": "false",
    }
    runtime = open_runtime(tmp_path / "data", environ=environ, logs=False)
    try:
        from xcore.server import prepare_database

        prepare_database(runtime)
        with TestClient(build_app(runtime)) as client:
            policy = client.get("/api/auth/policy").json()  # public: the setup page needs it before any account
            assert policy["password"]["min_length"] == 14
            assert policy["password"]["refuse_common"] is False and policy["password"]["refuse_patterns"] is True
            assert any("14 characters" in rule for rule in policy["password"]["rules"])
            assert not any("common" in rule for rule in policy["password"]["rules"])
            assert policy["username"]["max_length"] == 64 and "letters" in policy["username"]["rule"]
            assert policy["totp_digits"] == 6
            with pytest.raises(InvalidInput, match="at least 14 characters"):
                create_account(runtime, "root", ["superadmin"], password="short-but-ok1")
    finally:
        runtime.close()
