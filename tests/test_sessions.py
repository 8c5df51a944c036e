"""Sessions, tokens and brute-force protection, through the real app: real SQLite, real argon2, real JWTs.

Covers login (by username or email), the access JWT's claims, forged and malformed credentials, revocation
(logout, password change, admin revocation, deactivation), refresh-token rotation and reuse detection,
cookie sessions with CSRF, account and address lockout, user enumeration, malformed login bodies, rehashing
of old password hashes and the audit trail of logins.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import argon2
import jwt
import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update

from conftest import PASSWORDS, Api, Clock, create_account, prepare_from_template
from xcore.auth.errors import NotAuthenticated
from xcore.auth.login import find_user
from xcore.auth.passwords import HASHER
from xcore.auth.throttle import account_key
from xcore.auth.tokens import TokenSigner
from xcore.db.models import AuditEvent, LoginThrottle, User
from xcore.runtime import Runtime, open_runtime
from xcore.web.app import build_app

PROBLEM_JSON = "application/problem+json"
WRONG_CREDENTIALS = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "wrong username or password",
}


# Helpers


def login(client: TestClient, username: str, password: str | None = None, **extra: Any) -> Any:
    """login posts the credentials and returns the raw response."""
    return client.post(
        "/api/auth/login", json={"username": username, "password": password or PASSWORDS[username], **extra}
    )


def tokens_of(client: TestClient, username: str, password: str | None = None) -> dict[str, Any]:
    """tokens_of logs in with Bearer tokens and returns the response body."""
    response = login(client, username, password)
    assert response.status_code == 200, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refresh(client: TestClient, refresh_token: str) -> Any:
    return client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


def user_id(runtime: Runtime, username: str) -> int:
    with runtime.sessions() as session:
        found = session.scalar(select(User.id).where(User.username == username))
    assert found is not None, username
    return int(found)


def throttle_row(runtime: Runtime, key: str) -> LoginThrottle | None:
    with runtime.sessions() as session:
        return session.get(LoginThrottle, key)


def account_row(runtime: Runtime, name: str) -> LoginThrottle | None:
    """account_row is the lockout row of the account `name` resolves to (of the name itself when it names none)."""
    with runtime.sessions() as session:
        user = find_user(session, name)
        return session.get(LoginThrottle, account_key(user.id if user else None, name))


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """assert_problem checks an RFC 9457 answer with `status` and returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["detail"]
    return dict(body)


def assert_unauthenticated(response: Any) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def b64url(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unverified(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def set_cookies(response: Any) -> dict[str, tuple[str, dict[str, str]]]:
    """set_cookies parses the Set-Cookie headers: name -> (value, {attribute (lowercase): value})."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        attrs = {}
        for attribute in attributes:
            key, _, val = attribute.partition("=")
            attrs[key.lower()] = val
        found[name] = (value.strip('"'), attrs)
    return found


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """make_api(**settings) builds an app on a fresh data dir with XCORE_* settings, and root and bob set up."""
    opened: list[tuple[Runtime, TestClient]] = []

    def make(**environ: str) -> Api:
        rt = open_runtime(tmp_path / f"data{len(opened)}", environ=environ)
        prepare_from_template(rt)
        client = TestClient(build_app(rt))
        client.__enter__()
        opened.append((rt, client))
        create_account(rt, "root", ["superadmin"])
        create_account(rt, "bob", ["user"])
        return Api(client, rt)

    yield make
    for rt, client in opened:
        client.__exit__(None, None, None)
        rt.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """shared: one app for the scenario tables that change nothing (argon2 is slow, so accounts are made once).

    root, bob (email Bob@Example.com) and cyd exist. Tests using it must not end bob's sessions or fail logins.
    """
    rt = open_runtime(tmp_path_factory.mktemp("shared") / "data", environ={}, logs=False)
    prepare_from_template(rt)
    for name, roles in (("root", ["superadmin"]), ("bob", ["user"]), ("cyd", ["user"])):
        create_account(rt, name, roles)
    with TestClient(build_app(rt)) as client:
        api = Api(client, rt)
        me = client.patch("/api/me", json={"email": "Bob@Example.com"}, headers=api.login("bob"))
        assert me.status_code == 200, me.text
        yield api
    rt.close()


@pytest.fixture(scope="module")
def bob_token(shared: Api) -> str:
    """bob_token is an access token of bob on the shared app."""
    return str(tokens_of(shared.client, "bob")["access_token"])


@pytest.fixture
def client(shared: Api) -> Iterator[TestClient]:
    """client is the shared app's client, without cookies before and after the test."""
    shared.client.cookies.clear()
    yield shared.client
    shared.client.cookies.clear()


# 1. Login


@pytest.mark.parametrize("name", ["bob", "BOB", "  Bob ", "bob@example.com", "Bob@EXAMPLE.com"])
def test_login_by_username_or_email_ignores_case(shared: Api, client: TestClient, name: str) -> None:
    response = login(client, name, PASSWORDS["bob"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "bob"
    assert body["user_id"] == user_id(shared.runtime, "bob")


def test_login_returns_bearer_tokens_and_a_well_formed_jwt(shared: Api, client: TestClient) -> None:
    before = int(time.time())
    response = login(client, "bob")
    after = int(time.time())

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 895 <= body["expires_in"] <= 900
    assert body["refresh_expires_in"] > body["expires_in"]
    assert body["access_token"] and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    assert "csrf_token" not in body

    token = body["access_token"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = unverified(token)
    assert {"sub", "exp", "iat", "jti", "ver", "iss"} <= claims.keys()
    assert claims["iss"] == "xcore"
    assert claims["sub"] == str(user_id(shared.runtime, "bob"))
    assert isinstance(claims["ver"], int)
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 12
    assert before - 1 <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == 900
    # The real secret verifies it, and the token opens the account.
    jwt.decode(token, shared.runtime.secret, algorithms=["HS256"], issuer="xcore")
    me = client.get("/api/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["username"] == "bob"


def test_each_login_gets_a_distinct_token_id(client: TestClient) -> None:
    first = tokens_of(client, "bob")
    second = tokens_of(client, "bob")
    assert unverified(first["access_token"])["jti"] != unverified(second["access_token"])["jti"]
    assert first["refresh_token"] != second["refresh_token"]


# 2. Forged, tampered and malformed credentials


def _claims(runtime: Runtime, **changes: Any) -> dict[str, Any]:
    """_claims are valid claims for bob, with `changes` applied (a value of ... removes the claim)."""
    now = int(time.time())
    with runtime.sessions() as session:
        bob = session.scalars(select(User).where(User.username == "bob")).one()
    claims: dict[str, Any] = {
        "sub": str(bob.id),
        "iat": now,
        "exp": now + 600,
        "iss": "xcore",
        "jti": "forged-token-id",
        "ver": bob.token_version,
        "fam": "f" * 32,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


def _tampered_payload(runtime: Runtime, token: str) -> str:
    header, _, signature = token.split(".")
    claims = unverified(token)
    claims["sub"] = str(user_id(runtime, "root"))  # become root, keep bob's signature
    return f"{header}.{b64url(claims)}.{signature}"


def _alg_none_by_hand(runtime: Runtime, token: str) -> str:
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(unverified(token))}."


def _alg_none_by_pyjwt(runtime: Runtime, token: str) -> str:
    return jwt.encode(unverified(token), None, algorithm="none")


def _signed(algorithm: str = "HS256", key: str | None = None, **changes: Any) -> Callable[[Runtime, str], str]:
    def build(runtime: Runtime, token: str) -> str:
        return jwt.encode(_claims(runtime, **changes), key or runtime.secret, algorithm=algorithm)

    return build


FORGED_TOKENS: dict[str, Callable[[Runtime, str], str]] = {
    "payload changed, signature kept": _tampered_payload,
    "signature cut off": lambda rt, token: token.rsplit(".", 1)[0] + ".",
    "signed with another key": _signed(key="another-secret-key-of-at-least-32-chars"),
    "alg none built by hand": _alg_none_by_hand,
    "alg none built by PyJWT": _alg_none_by_pyjwt,
    "HS512 with the real secret": _signed(algorithm="HS512"),
    "expired": _signed(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "expiring this second": _signed(iat=int(time.time()) - 600, exp=int(time.time())),
    "issued in the future": _signed(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200),
    "expiry not a number": _signed(exp="tomorrow"),
    "no issue time": _signed(iat=...),
    "another issuer": _signed(iss="not-xcore"),
    "no token version": _signed(ver=...),
    "no expiry": _signed(exp=...),
    "subject not a number": _signed(sub="bob"),
    "user that does not exist": _signed(sub="9999"),
    "stale token version": _signed(ver=0),
    "garbage": lambda rt, token: "this-is-not-a-jwt",
    "three garbage parts": lambda rt, token: "a.b.c",
    "10 kB token": lambda rt, token: token + "A" * 10_240,
    "10 kB of dots": lambda rt, token: "." * 10_240,
}


@pytest.mark.parametrize("forge", FORGED_TOKENS.values(), ids=FORGED_TOKENS.keys())
def test_forged_or_broken_access_tokens_are_401(
    shared: Api, client: TestClient, bob_token: str, forge: Callable[[Runtime, str], str]
) -> None:
    genuine = bob_token
    forged = forge(shared.runtime, genuine)
    assert forged != genuine

    for method, path in (("GET", "/api/me"), ("GET", "/api/admin/users"), ("PATCH", "/api/me")):
        response = client.request(method, path, headers=bearer(forged), json={"email": None})
        assert_unauthenticated(response)
        # The same token in the access cookie is refused the same way.
        client.cookies.set("xcore_access", forged)
        response = client.request(method, path, json={"email": None})
        client.cookies.clear()
        assert_unauthenticated(response)

    # The genuine token still works: nothing above poisoned a cache.
    assert client.get("/api/me", headers=bearer(genuine)).status_code == 200


BEARER_NEEDED = "must be 'Bearer <access token>'"
NOT_VALID = "the access token is not valid"
AUTHORIZATION_HEADERS: dict[str, tuple[bytes, str]] = {
    "Bearer with no token": (b"Bearer", BEARER_NEEDED),
    "Bearer and spaces": (b"Bearer    ", BEARER_NEEDED),
    "Basic credentials": (b"Basic xyz", BEARER_NEEDED),
    "Basic with the right password": (b"Basic " + base64.b64encode(b"bob:" + PASSWORDS["bob"].encode()), BEARER_NEEDED),
    "token with no scheme": (b"eyJhbGciOiJIUzI1NiJ9.e30.x", BEARER_NEEDED),
    "non-ASCII token": (b"Bearer \xff\xfe\xc3\xa9\x80", NOT_VALID),
    "non-ASCII scheme": (b"B\xe9arer abc", BEARER_NEEDED),
    "empty": (b"", BEARER_NEEDED),
}


@pytest.mark.parametrize(("value", "detail"), AUTHORIZATION_HEADERS.values(), ids=AUTHORIZATION_HEADERS.keys())
def test_malformed_authorization_headers_are_401(client: TestClient, value: bytes, detail: str) -> None:
    response = client.get("/api/me", headers={"Authorization": value})
    body = assert_unauthenticated(response)
    assert detail in body["detail"]


def test_no_credentials_at_all_is_401(client: TestClient) -> None:
    body = assert_unauthenticated(client.get("/api/me"))
    assert "log in first" in body["detail"]


@pytest.mark.parametrize(
    "cookie",
    [b"xcore_access=\xff\xfe\x80", b"xcore_access", b'xcore_access="unterminated', b"=;=;;xcore_access=;", b"\x00\x01"],
    ids=["non-ASCII value", "no value", "unterminated quote", "empty pieces", "control bytes"],
)
def test_hostile_cookie_headers_are_401(client: TestClient, cookie: bytes) -> None:
    response = client.get("/api/me", headers={"Cookie": cookie})
    assert_unauthenticated(response)


def test_a_cached_token_stops_working_when_it_expires(
    shared: Api, client: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.runtime.auth.signer, "clock", clock)
    now = int(clock())
    token = jwt.encode(_claims(shared.runtime, iat=now - 10, exp=now + 2), shared.runtime.secret)
    assert client.get("/api/me", headers=bearer(token)).status_code == 200  # now verified and cached
    clock.advance(2.1)
    body = assert_unauthenticated(client.get("/api/me", headers=bearer(token)))
    assert "expired" in body["detail"]


def test_the_signer_judges_tokens_by_its_own_clock() -> None:
    """Issue and expiry times come from the signer's clock, not the system's: a token issued by a clock an hour
    ahead is valid by that clock, and expired once that clock passes its expiry, cached or not."""
    clock = Clock(time.time() + 3600)
    signer = TokenSigner("a-secret-of-the-test-" * 2, 600, clock)
    token, expires = signer.issue(7, 1, "family")
    assert expires.timestamp() == int(clock()) + 600
    assert signer.verify(token).user_id == 7  # PyJWT's own check would call it issued in the future
    clock.advance(600)
    for judge in (signer, TokenSigner("a-secret-of-the-test-" * 2, 600, clock)):  # cached, then read anew
        with pytest.raises(NotAuthenticated, match="expired"):
            judge.verify(token)


# 3. Revocation


def test_logout_ends_the_access_and_the_refresh_token_at_once(accounts_api: Api) -> None:
    client = accounts_api.client
    session = tokens_of(client, "bob")
    other = tokens_of(client, "bob")  # a second device of the same user
    assert client.get("/api/me", headers=bearer(session["access_token"])).status_code == 200

    response = client.post("/api/auth/logout", headers=bearer(session["access_token"]))
    assert response.status_code == 204

    for token in (session, other):
        assert_unauthenticated(client.get("/api/me", headers=bearer(token["access_token"])))
        assert_unauthenticated(refresh(client, token["refresh_token"]))
    # Others are unaffected, and bob can log in again.
    assert client.get("/api/me", headers=accounts_api.login("cyd")).status_code == 200
    assert client.get("/api/me", headers=accounts_api.login("bob")).status_code == 200


def test_logout_without_a_session_is_harmless(accounts_api: Api) -> None:
    client = accounts_api.client
    session = tokens_of(client, "bob")
    assert client.post("/api/auth/logout").status_code == 204
    assert client.post("/api/auth/logout", headers={"Authorization": "Bearer garbage"}).status_code == 204
    assert client.get("/api/me", headers=bearer(session["access_token"])).status_code == 200


def test_password_change_ends_every_session(accounts_api: Api) -> None:
    client = accounts_api.client
    session = tokens_of(client, "bob")
    new_password = "a-brand-new-secret-9"

    response = client.post(
        "/api/me/password",
        json={"current_password": PASSWORDS["bob"], "new_password": new_password},
        headers=bearer(session["access_token"]),
    )
    assert response.status_code == 204, response.text

    assert_unauthenticated(client.get("/api/me", headers=bearer(session["access_token"])))
    assert_unauthenticated(refresh(client, session["refresh_token"]))
    assert_problem(login(client, "bob", PASSWORDS["bob"]), 401)
    assert client.get("/api/me", headers=accounts_api.login("bob", new_password)).status_code == 200


def test_admin_revocation_ends_the_users_sessions_only(accounts_api: Api) -> None:
    client = accounts_api.client
    root = accounts_api.login("root")
    bob = tokens_of(client, "bob")
    cyd = tokens_of(client, "cyd")

    bob_id = user_id(accounts_api.runtime, "bob")
    response = client.post(f"/api/admin/users/{bob_id}/revoke-sessions", headers=root)
    assert response.status_code == 204, response.text

    assert_unauthenticated(client.get("/api/me", headers=bearer(bob["access_token"])))
    assert_unauthenticated(refresh(client, bob["refresh_token"]))
    assert client.get("/api/me", headers=bearer(cyd["access_token"])).status_code == 200
    assert refresh(client, cyd["refresh_token"]).status_code == 200
    assert client.get("/api/me", headers=root).status_code == 200


@pytest.mark.sqlite  # SQLite gives a deleted last row's id to the next row; PostgreSQL's sequences never do
def test_a_deleted_accounts_token_does_not_work_for_the_next_account_with_its_id(accounts_api: Api) -> None:
    # SQLite hands the id of the newest account to the next one once that account is deleted (and a restore can
    # bring back an id another account used): a token names its user by id, so the version in it must not match.
    client = accounts_api.client
    root = accounts_api.login("root")
    cyd_id = user_id(accounts_api.runtime, "cyd")
    cyd = tokens_of(client, "cyd")
    assert client.delete(f"/api/admin/users/{cyd_id}", headers=root).status_code == 204

    created = client.post(
        "/api/admin/users",
        json={"username": "eve", "password": "quiet-harbour-secret-9", "roles": ["admin"]},
        headers=root,
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == cyd_id  # the id was reused: this is the case the test is about

    assert_unauthenticated(client.get("/api/me", headers=bearer(cyd["access_token"])))
    assert_unauthenticated(client.get("/api/admin/users", headers=bearer(cyd["access_token"])))
    assert_unauthenticated(refresh(client, cyd["refresh_token"]))
    eve = tokens_of(client, "eve", "quiet-harbour-secret-9")
    assert client.get("/api/me", headers=bearer(eve["access_token"])).json()["username"] == "eve"


def test_deactivation_ends_sessions_and_login_fails_like_a_wrong_password(accounts_api: Api) -> None:
    client = accounts_api.client
    bob = tokens_of(client, "bob")
    wrong = login(client, "bob", "not-the-password-1")
    wrong_body = assert_unauthenticated(wrong)

    bob_id = user_id(accounts_api.runtime, "bob")
    response = client.patch(f"/api/admin/users/{bob_id}", json={"is_active": False}, headers=accounts_api.login("root"))
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False

    assert_unauthenticated(client.get("/api/me", headers=bearer(bob["access_token"])))
    assert_unauthenticated(refresh(client, bob["refresh_token"]))
    inactive = login(client, "bob")
    assert assert_unauthenticated(inactive) == wrong_body == WRONG_CREDENTIALS


# 4. Refresh


def test_refresh_rotates_both_tokens(accounts_api: Api) -> None:
    client = accounts_api.client
    first = tokens_of(client, "bob")

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["token_type"] == "Bearer"
    assert second["username"] == "bob"
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert unverified(second["access_token"])["fam"] == unverified(first["access_token"])["fam"]
    assert client.get("/api/me", headers=bearer(second["access_token"])).status_code == 200
    # The next rotation works from the new refresh token.
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_its_family_only(accounts_api: Api) -> None:
    client = accounts_api.client
    stolen = tokens_of(client, "bob")  # one login (family A)
    laptop = tokens_of(client, "bob")  # another login (family B)
    rotated = refresh(client, stolen["refresh_token"]).json()

    reused = refresh(client, stolen["refresh_token"])

    body = assert_unauthenticated(reused)
    assert "already used" in body["detail"]
    # The whole family A ends: the token the rotation handed out fails too.
    assert_unauthenticated(refresh(client, rotated["refresh_token"]))
    # Family B (a separate login) goes on.
    assert client.get("/api/me", headers=bearer(laptop["access_token"])).status_code == 200
    assert refresh(client, laptop["refresh_token"]).status_code == 200

    audit = client.get(
        "/api/admin/audit", params={"action": "session.refresh_reused"}, headers=accounts_api.login("root")
    ).json()
    assert audit["total"] == 1
    event = audit["items"][0]
    assert event["actor"] == "bob"
    assert event["ip"] == "testclient"
    assert event["detail"]["family"] == unverified(stolen["access_token"])["fam"]
    assert event["detail"]["family"] != unverified(laptop["access_token"])["fam"]


@pytest.mark.parametrize(
    "body",
    [{"refresh_token": "x" * 43}, {"refresh_token": "the refresh token is not this"}],
    ids=["unknown token", "random text"],
)
def test_unknown_refresh_tokens_are_401(client: TestClient, body: dict[str, Any]) -> None:
    assert_unauthenticated(client.post("/api/auth/refresh", json=body))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"refresh_token": "x" * 201}, "refresh_token"),
        ({"refresh_token": 42}, "refresh_token"),
        ({"token": "abc"}, "token"),
        ({}, "refresh_token"),
    ],
    ids=["too long", "not a string", "unknown field", "nothing"],
)
def test_malformed_refresh_requests_are_400(client: TestClient, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(client.post("/api/auth/refresh", json=body), 400)
    assert field in [error["field"] for error in problem["errors"]]


# 5. Cookie sessions


def test_cookie_login_sets_hardened_cookies_and_no_tokens_in_the_body(client: TestClient) -> None:
    response = login(client, "bob", cookie=True)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert "access_token" not in body and "refresh_token" not in body
    assert body["csrf_token"]
    assert body["username"] == "bob"

    cookies = set_cookies(response)
    assert {"xcore_access", "xcore_refresh", "xcore_csrf"} <= cookies.keys()
    access, access_attrs = cookies["xcore_access"]
    refresh_value, refresh_attrs = cookies["xcore_refresh"]
    csrf, csrf_attrs = cookies["xcore_csrf"]
    assert access_attrs["path"] == "/"
    assert refresh_attrs["path"] == "/api/auth"
    assert csrf_attrs["path"] == "/"
    for attrs in (access_attrs, refresh_attrs, csrf_attrs):
        assert attrs["samesite"].lower() == "strict"
        assert "secure" not in attrs  # plain http in tests
    assert "httponly" in access_attrs and "httponly" in refresh_attrs
    assert "httponly" not in csrf_attrs
    assert csrf == body["csrf_token"]
    assert unverified(access)["iss"] == "xcore"
    assert refresh_value and refresh_value != access


def test_cookie_sessions_need_the_csrf_header_on_unsafe_requests(accounts_api: Api) -> None:
    client = accounts_api.client
    csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    assert client.cookies.get("xcore_csrf") == csrf

    me = client.get("/api/me")
    assert me.status_code == 200
    assert me.json()["username"] == "bob"

    without = client.patch("/api/me", json={"email": "bob@example.com"})
    assert_problem(without, 403)
    wrong = client.patch("/api/me", json={"email": "bob@example.com"}, headers={"X-CSRF-Token": csrf[:-4] + "AAAA"})
    assert_problem(wrong, 403)
    assert client.get("/api/me").json()["email"] is None  # neither refused request changed anything

    done = client.patch("/api/me", json={"email": "bob@example.com"}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.json()["email"] == "bob@example.com"


def test_bearer_clients_never_need_csrf(accounts_api: Api) -> None:
    client = accounts_api.client
    headers = accounts_api.login("bob")
    response = client.patch("/api/me", json={"email": "bob@example.com"}, headers=headers)
    assert response.status_code == 200, response.text

    # Even with a cookie session in the same client, a Bearer header decides, and it needs no CSRF token.
    login(client, "cyd", cookie=True)
    response = client.patch("/api/me", json={"email": "bob2@example.com"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "bob"


def test_refresh_through_the_cookie(accounts_api: Api) -> None:
    client = accounts_api.client
    csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    old_access, old_refresh = client.cookies.get("xcore_access"), client.cookies.get("xcore_refresh")

    response = client.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 200, response.text
    body = response.json()
    assert "access_token" not in body and "refresh_token" not in body
    cookies = set_cookies(response)
    assert cookies["xcore_access"][0] != old_access
    assert cookies["xcore_refresh"][0] != old_refresh
    assert "httponly" in cookies["xcore_refresh"][1]
    assert body["csrf_token"] == client.cookies.get("xcore_csrf")  # the CSRF token stays the same
    assert client.get("/api/me").status_code == 200
    assert old_refresh is not None
    assert_unauthenticated(refresh(client, old_refresh))  # the old cookie value was rotated out


def test_logout_clears_the_cookies(accounts_api: Api) -> None:
    client = accounts_api.client
    csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    access = client.cookies.get("xcore_access")
    assert access is not None

    response = client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 204
    cleared = set_cookies(response)
    for name, path in (("xcore_access", "/"), ("xcore_refresh", "/api/auth"), ("xcore_csrf", "/")):
        value, attrs = cleared[name]
        assert value == ""
        assert attrs["path"] == path
        assert attrs.get("max-age") == "0" or "1970" in attrs.get("expires", "")
    assert client.cookies.get("xcore_access") is None
    assert client.cookies.get("xcore_refresh") is None
    assert_unauthenticated(client.get("/api/me"))
    assert_unauthenticated(client.get("/api/me", headers=bearer(access)))  # the session ended, not only the cookie


def test_a_csrf_token_is_bound_to_its_session(accounts_api: Api) -> None:
    """A CSRF token works only for the login that issued it: not another user's, not another login of the same
    user, and a csrf cookie set by someone else (a sibling subdomain can set cookies) does not make it pass."""
    client = accounts_api.client
    bob_csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    with TestClient(client.app) as other:
        cyd_csrf = login(other, "cyd", cookie=True).json()["csrf_token"]
        again = login(other, "bob", cookie=True).json()["csrf_token"]
    assert len({bob_csrf, cyd_csrf, again}) == 3
    for foreign in (cyd_csrf, again):
        # The double-submit pair matches, but it is not this session's token.
        domain = next(c.domain for c in client.cookies.jar if c.name == "xcore_csrf")
        client.cookies.set("xcore_csrf", foreign, domain=domain)
        refused = client.patch("/api/me", json={"email": "bob@example.com"}, headers={"X-CSRF-Token": foreign})
        assert "does not belong to this session" in assert_problem(refused, 403)["detail"]
    me = client.get("/api/me")
    assert me.json()["email"] is None
    # A safe request of the session sets the right cookie again, for the UI's script to read.
    assert set_cookies(me)["xcore_csrf"][0] == bob_csrf
    assert client.cookies.get("xcore_csrf") == bob_csrf
    assert "xcore_csrf" not in set_cookies(client.get("/api/me"))  # and only when it was missing or wrong
    done = client.patch("/api/me", json={"email": "bob@example.com"}, headers={"X-CSRF-Token": bob_csrf})
    assert done.status_code == 200, done.text


def test_the_csrf_token_survives_a_refresh_and_a_new_login_gets_another(accounts_api: Api) -> None:
    client = accounts_api.client
    csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    refreshed = client.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["csrf_token"] == csrf  # the same login (refresh family)
    assert client.patch("/api/me", json={"email": "b@example.com"}, headers={"X-CSRF-Token": csrf}).is_success
    fresh = login(client, "bob", cookie=True).json()["csrf_token"]
    assert fresh != csrf
    stale = client.patch("/api/me", json={"email": "c@example.com"}, headers={"X-CSRF-Token": csrf})
    assert_problem(stale, 403)


@pytest.mark.parametrize("header", [None, "forged-token", "csrf of another session"])
def test_cookie_logout_and_refresh_need_the_sessions_csrf_token(accounts_api: Api, header: str | None) -> None:
    """Another site can make the browser post to /api/auth/logout or /refresh with the cookies: without the
    session's CSRF token neither acts (the session lives on, the refresh token is not rotated)."""
    client = accounts_api.client
    if header == "csrf of another session":
        with TestClient(client.app) as other:
            header = login(other, "cyd", cookie=True).json()["csrf_token"]
    csrf = login(client, "bob", cookie=True).json()["csrf_token"]
    headers = {"X-CSRF-Token": header} if header else {}
    old_refresh = client.cookies.get("xcore_refresh")

    assert_problem(client.post("/api/auth/refresh", headers=headers), 403)
    assert client.cookies.get("xcore_refresh") == old_refresh
    assert_problem(client.post("/api/auth/logout", headers=headers), 403)
    assert client.get("/api/me").status_code == 200  # still logged in

    assert client.post("/api/auth/refresh", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert_unauthenticated(client.get("/api/me"))


def test_bearer_logout_and_body_refresh_need_no_csrf(accounts_api: Api) -> None:
    client = accounts_api.client
    body = tokens_of(client, "bob")
    renewed = refresh(client, body["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert client.post("/api/auth/logout", headers=bearer(renewed.json()["access_token"])).status_code == 204
    assert_unauthenticated(client.get("/api/me", headers=bearer(renewed.json()["access_token"])))


# 6. Lockout


def test_an_account_locks_after_max_failures_and_the_lock_grows(make_api: Callable[..., Api], clock: Clock) -> None:
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="3",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="2",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    clock.drive(api.runtime)  # the locks end when the test moves the clock past them
    client = api.client
    for _ in range(3):
        assert_unauthenticated(login(client, "bob", "wrong-password-123"))

    locked = login(client, "bob")  # even the right password
    body = assert_problem(locked, 429)
    assert locked.headers["retry-after"] == "2"
    assert "try again in 2 seconds" in body["detail"]
    first = account_row(api.runtime, "bob")
    assert first is not None and first.failures == 3
    assert first.locked_until is not None and first.last_failure_at is not None
    assert first.locked_until - first.last_failure_at == timedelta(seconds=2)
    # Other accounts are not locked.
    assert login(client, "root").status_code == 200

    clock.pass_until(first.locked_until)
    assert_unauthenticated(login(client, "BOB", "wrong-password-123"))  # the name's case does not matter
    locked_again = login(client, "bob")
    assert_problem(locked_again, 429)
    assert locked_again.headers["retry-after"] == "4"  # the second lock lasts twice as long
    second = account_row(api.runtime, "bob")
    assert second is not None and second.failures == 4
    assert second.locked_until is not None and second.last_failure_at is not None
    assert second.locked_until - second.last_failure_at == timedelta(seconds=4)

    clock.pass_until(second.locked_until)
    response = login(client, "bob")
    assert response.status_code == 200, response.text
    assert account_row(api.runtime, "bob") is None  # the count starts over
    for _ in range(2):
        assert_unauthenticated(login(client, "bob", "wrong-password-123"))
    assert login(client, "bob").status_code == 200


def test_an_unknown_name_locks_exactly_like_a_real_account(make_api: Callable[..., Api]) -> None:
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="3",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="2",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    answers: dict[str, list[tuple[int, dict[str, Any], str | None]]] = {}
    for name in ("bob", "nobody-here"):
        answers[name] = []
        for _ in range(4):
            response = login(api.client, name, "wrong-password-123")
            answers[name].append((response.status_code, response.json(), response.headers.get("retry-after")))

    assert answers["bob"] == answers["nobody-here"]
    assert [status for status, _, _ in answers["bob"]] == [401, 401, 401, 429]
    _, body, retry_after = answers["nobody-here"][3]
    assert retry_after == "2"
    assert set(body) == {"type", "title", "status", "detail"}
    row = account_row(api.runtime, "nobody-here")
    assert row is not None and row.failures == 3 and row.locked_until is not None


def test_failures_over_many_names_lock_the_client_address(make_api: Callable[..., Api], clock: Clock) -> None:
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="100",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="3",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="2",
    )
    clock.drive(api.runtime)
    client = api.client
    for name in ("alice", "bob", "carol"):
        assert_unauthenticated(login(client, name, "wrong-password-123"))

    for name, password in (("bob", PASSWORDS["bob"]), ("root", PASSWORDS["root"]), ("dave", "whatever-pass-1")):
        response = login(client, name, password)
        assert_problem(response, 429)
        assert response.headers["retry-after"] == "2"
    row = throttle_row(api.runtime, "ip:testclient")
    assert row is not None and row.failures == 3 and row.locked_until is not None
    for name in ("alice", "bob", "carol"):
        account = account_row(api.runtime, name)
        assert account is not None and account.failures == 1 and account.locked_until is None

    clock.pass_until(row.locked_until)
    assert login(client, "bob").status_code == 200


def test_failed_second_factor_codes_count_towards_the_lockout(make_api: Callable[..., Api]) -> None:
    """A right password with wrong 2FA codes locks the account too; the lock answers before the password check."""
    import pyotp

    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="2",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="30",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    client = api.client
    headers = api.login("bob")
    secret = client.post("/api/me/totp/setup", headers=headers, json={"password": PASSWORDS["bob"]}).json()["secret"]
    confirmed = client.post("/api/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text

    for _ in range(2):
        wrong = f"{(int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000:06d}"
        assert_unauthenticated(login(client, "bob", totp=wrong))
    locked = login(client, "bob", totp=pyotp.TOTP(secret).now())
    assert_problem(locked, 429)
    assert 29 <= int(locked.headers["retry-after"]) <= 30


def test_every_name_of_an_account_shares_one_lockout(make_api: Callable[..., Api]) -> None:
    """The lock follows the account, not the name typed: its username and email address in any case or spacing
    count together; an unknown name is counted under itself, in any case or spacing, and locks like an account."""
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="4",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="30",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    client = api.client
    patched = client.patch("/api/me", json={"email": "Vic1@Example.org"}, headers=api.login("bob"))
    assert patched.status_code == 200, patched.text
    for name in ("bob", " BOB ", "vic1@example.org", "\tVIC1@EXAMPLE.ORG"):
        assert_unauthenticated(login(client, name, "wrong-password-123"))
    for name in ("bob", "Vic1@Example.org"):
        assert_problem(login(client, name, PASSWORDS["bob"]), 429)  # even the right password, by any name
    row, same = account_row(api.runtime, "vic1@example.org"), account_row(api.runtime, "Bob")
    assert row is not None and same is not None and row.key == same.key and row.failures == 4
    assert login(client, "root").status_code == 200  # another account is not locked

    for name in ("nobody", " NOBODY", "Nobody ", "nobody"):
        assert_unauthenticated(login(client, name, "wrong-password-123"))
    assert_problem(login(client, "NOBODY", "wrong-password-123"), 429)
    unknown = account_row(api.runtime, "nobody")
    assert unknown is not None and unknown.failures == 4


def test_a_signed_in_users_wrong_passwords_count_towards_the_lockout(make_api: Callable[..., Api]) -> None:
    """A stolen session cannot guess the password through /api/me: every place that checks the password of a
    signed-in user counts a wrong one like a failed login, and a lock started there stops logins too."""
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="3",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="30",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    client = api.client
    headers = api.login("bob")
    wrong = "wrong-password-123"
    attempts = [
        ("/api/me/password", {"current_password": wrong, "new_password": "Another-Password-77"}, "current_password"),
        ("/api/me/totp/setup", {"password": wrong}, "password"),
        ("/api/me/password", {"current_password": wrong, "new_password": "Another-Password-77"}, "current_password"),
    ]
    for path, body, field in attempts:
        response = client.post(path, json=body, headers=headers)
        problem = assert_problem(response, 403)
        assert problem["errors"][0]["field"] == field
    row = account_row(api.runtime, "bob")
    assert row is not None and row.failures == 3 and row.locked_until is not None

    locked = client.post(
        "/api/me/password",
        json={"current_password": PASSWORDS["bob"], "new_password": "Another-Password-77"},
        headers=headers,
    )
    assert_problem(locked, 429)
    assert 29 <= int(locked.headers["retry-after"]) <= 30
    assert_problem(client.post("/api/me/totp/setup", json={"password": PASSWORDS["bob"]}, headers=headers), 429)
    assert_problem(login(client, "bob"), 429)
    with api.runtime.sessions() as session:
        failed = session.scalars(select(AuditEvent).where(AuditEvent.action == "reauth.failed")).all()
    assert [e.detail["during"] for e in failed] == ["password change", "2FA setup", "password change"]


def test_a_right_password_on_a_signed_in_check_clears_the_account_failures(make_api: Callable[..., Api]) -> None:
    api = make_api(
        XCORE_SECURE__LOCKOUT__MAX_FAILURES="3",
        XCORE_SECURE__LOCKOUT__BASE_DELAY="30",
        XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000",
    )
    client = api.client
    headers = api.login("bob")
    for _ in range(2):
        assert_unauthenticated(login(client, "bob", "wrong-password-123"))
    setup = client.post("/api/me/totp/setup", json={"password": PASSWORDS["bob"]}, headers=headers)
    assert setup.status_code == 200, setup.text
    assert account_row(api.runtime, "bob") is None


# 7. No user enumeration


def test_unknown_user_wrong_password_and_inactive_account_answer_alike(accounts_api: Api) -> None:
    client = accounts_api.client
    root = accounts_api.login("root")
    cyd_id = user_id(accounts_api.runtime, "cyd")
    assert client.patch(f"/api/admin/users/{cyd_id}", json={"is_active": False}, headers=root).status_code == 200

    answers = [
        login(client, "nobody-at-all", "wrong-password-123"),
        login(client, "bob", "wrong-password-123"),
        login(client, "cyd"),  # the right password of a deactivated account
        login(client, "nobody@example.com", PASSWORDS["bob"]),
    ]

    for response in answers:
        assert assert_unauthenticated(response) == WRONG_CREDENTIALS
        assert response.headers["www-authenticate"] == answers[0].headers["www-authenticate"]
        assert response.headers["content-type"] == answers[0].headers["content-type"]


@pytest.mark.usefixtures("production_hashing")  # the production cost is what is compared
def test_unknown_user_costs_as_much_time_as_a_wrong_password(make_api: Callable[..., Api]) -> None:
    api = make_api(XCORE_SECURE__LOCKOUT__MAX_FAILURES="1000", XCORE_SECURE__LOCKOUT__IP_MAX_FAILURES="1000")

    def timed(name: str) -> float:
        # CPU time of this process (the app runs in it, argon2 in one of its threads): the work a login does,
        # which neither path waits out. Wall time also counts what other processes took meanwhile, and on a busy
        # machine the fastest of five known logins took twice the fastest of five unknown ones.
        start = time.process_time()
        response = login(api.client, name, "wrong-password-123")
        elapsed = time.process_time() - start
        assert response.status_code == 401
        return elapsed

    timed("bob"), timed("nobody-here")  # warm up (the dummy hash is made on first use)
    known, unknown = [], []
    for _ in range(5):
        known.append(timed("bob"))
        unknown.append(timed("nobody-here"))

    # The cheapest of each: what the login costs itself, without the odd garbage collection or the like.
    ratio = min(unknown) / min(known)
    assert 0.5 <= ratio <= 2.0, (known, unknown)


# 8. Malformed login requests


MALFORMED_LOGINS: list[tuple[str, dict[str, Any], str | None]] = [
    ("not JSON", {"content": b"username=bob&password=x"}, None),
    ("truncated JSON", {"content": b'{"username": "bob", "password": '}, None),
    ("empty body", {"content": b""}, None),
    ("JSON null", {"json": None}, None),
    ("an array", {"json": ["bob", "secret"]}, None),
    ("a string", {"json": "bob:secret"}, None),
    ("missing password", {"json": {"username": "bob"}}, "password"),
    ("missing username", {"json": {"password": "x"}}, "username"),
    ("unknown field", {"json": {"username": "bob", "password": "x", "remember_me": True}}, "remember_me"),
    ("2 MB password", {"json": {"username": "bob", "password": "p" * 2_000_000}}, "password"),
    ("10 kB username", {"json": {"username": "b" * 10_000, "password": "x"}}, "username"),
    ("empty username", {"json": {"username": "", "password": "x"}}, "username"),
    ("username a number", {"json": {"username": 12, "password": "x"}}, "username"),
    ("password a list", {"json": {"username": "bob", "password": ["x"]}}, "password"),
    ("password null", {"json": {"username": "bob", "password": None}}, "password"),
    ("cookie a string", {"json": {"username": "bob", "password": "x", "cookie": "yes"}}, "cookie"),
    ("totp a number", {"json": {"username": "bob", "password": "x", "totp": 123456}}, "totp"),
    ("totp and recovery code", {"json": {"username": "bob", "password": "x", "totp": "1", "recovery_code": "2"}}, None),
    ("non-UTF-8 body", {"content": b'{"username": "\xff\xfe", "password": "x"}'}, None),
]


@pytest.mark.parametrize(
    ("request_kwargs", "field"), [(k, f) for _, k, f in MALFORMED_LOGINS], ids=[n for n, _, _ in MALFORMED_LOGINS]
)
def test_malformed_login_requests_are_400_naming_the_field(
    shared: Api, client: TestClient, request_kwargs: dict[str, Any], field: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    response = client.post("/api/auth/login", headers=headers, **request_kwargs)

    body = assert_problem(response, 400)
    assert len(response.content) < 4096  # a huge input is not echoed back
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    # None of these counted as a failed login. (The address may have a row from the shared logins: a login
    # is counted when it starts and refunded when it succeeds.)
    assert account_row(shared.runtime, "bob") is None
    address = throttle_row(shared.runtime, "ip:testclient")
    assert address is None or address.failures == 0


# 9. Rehash on login


@pytest.mark.usefixtures("production_hashing")  # rehashed to the production parameters
def test_login_rehashes_a_password_stored_with_weaker_parameters(accounts_api: Api) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORDS["bob"])
    assert HASHER.check_needs_rehash(weak)
    with accounts_api.runtime.sessions() as session, session.begin():
        session.execute(update(User).where(User.username == "bob").values(password_hash=weak))

    assert login(accounts_api.client, "bob").status_code == 200

    with accounts_api.runtime.sessions() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "bob"))
    assert stored is not None and stored != weak
    assert stored.startswith("$argon2id$")
    assert not HASHER.check_needs_rehash(stored)
    assert HASHER.verify(stored, PASSWORDS["bob"])
    # The next login keeps the hash: there is nothing to upgrade any more.
    assert login(accounts_api.client, "bob").status_code == 200
    with accounts_api.runtime.sessions() as session:
        assert session.scalar(select(User.password_hash).where(User.username == "bob")) == stored

    events = accounts_api.client.get(
        "/api/admin/audit", params={"user": "bob", "action": "login.succeeded"}, headers=accounts_api.login("root")
    ).json()["items"]
    assert [e["detail"]["rehashed"] for e in events] == [False, True]


def test_a_wrong_password_leaves_a_weak_hash_alone(accounts_api: Api) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORDS["bob"])
    with accounts_api.runtime.sessions() as session, session.begin():
        session.execute(update(User).where(User.username == "bob").values(password_hash=weak))

    assert login(accounts_api.client, "bob", "wrong-password-123").status_code == 401

    with accounts_api.runtime.sessions() as session:
        assert session.scalar(select(User.password_hash).where(User.username == "bob")) == weak


# 10. Audit


def test_logins_are_audited_and_filterable(accounts_api: Api, caplog: pytest.LogCaptureFixture) -> None:
    client = accounts_api.client
    with caplog.at_level(logging.INFO, logger="xcore.auth"):
        root = accounts_api.login("root")
        assert login(client, "bob", "wrong-password-123").status_code == 401
        assert login(client, "bob").status_code == 200
        assert login(client, "ghost", "wrong-password-123").status_code == 401

    def audit(**params: str) -> list[dict[str, Any]]:
        response = client.get("/api/admin/audit", params=params, headers=root)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    succeeded = audit(action="login.succeeded")
    assert [e["actor"] for e in succeeded] == ["bob", "root"]  # newest first
    assert all(e["ip"] == "testclient" for e in succeeded)
    failed = audit(action="login.failed")
    assert [e["actor"] for e in failed] == ["ghost", "bob"]
    assert failed[1]["detail"]["reason"] == "wrong password"
    assert [(e["action"], e["actor"]) for e in audit(user="bob", action="login.*")] == [
        ("login.succeeded", "bob"),
        ("login.failed", "bob"),
    ]
    about_bob = audit(user="bob")
    assert {"login.succeeded", "login.failed", "user.created"} <= {e["action"] for e in about_bob}
    assert all("bob" in (e["actor"], e["target"]) for e in about_bob)
    assert audit(user="nobody-at-all") == []
    assert audit(action="login.nothing") == []

    records = [r for r in caplog.records if r.name == "xcore.auth"]
    messages = [(r.levelno, r.getMessage()) for r in records]
    assert (logging.INFO, "login.succeeded by root") in messages
    assert (logging.INFO, "login.succeeded by bob") in messages
    assert (logging.WARNING, "login.failed by bob") in messages
    assert (logging.WARNING, "login.failed by ghost") in messages
    failure = next(r for r in records if r.getMessage() == "login.failed by bob")
    assert failure.data["ip"] == "testclient"  # type: ignore[attr-defined]
    assert failure.data["reason"] == "wrong password"  # type: ignore[attr-defined]
    # No password, right or wrong, reaches the log.
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'data', '')}" for r in records)
    assert "wrong-password-123" not in logged and PASSWORDS["bob"] not in logged


def test_audit_needs_an_admin(accounts_api: Api) -> None:
    client = accounts_api.client
    assert_problem(client.get("/api/admin/audit", headers=accounts_api.login("bob")), 403)
    assert_unauthenticated(client.get("/api/admin/audit"))
