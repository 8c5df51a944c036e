"""The password-hashing pool: argon2 runs on its own few threads behind a bounded queue, and every route that hashes
or checks a password goes through it, so a flood of logins is refused at once (503, Retry-After) while other
routes keep answering. The load itself is measured by benchmarks/logins.py."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import Type
from litestar.testing import TestClient

import xcore
from conftest import PASSWORDS, Api, create_account, prepare_from_template
from xcore.auth.errors import Busy
from xcore.auth.hashing import NICE, HashPool, cheap_hashing
from xcore.auth.passwords import HASHER
from xcore.config.schema import HashingConfig
from xcore.db.models import LoginThrottle
from xcore.runtime import open_runtime
from xcore.web.app import build_app

NEW_PASSWORD = "Quiet-River-Lantern-77"


# The pool alone


def test_the_pool_hashes_at_most_workers_at_once_and_refuses_past_its_queue() -> None:
    pool = HashPool(HashingConfig(workers=2, queue=3), request_threads=32)
    running, most, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def job() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1

    outcomes: list[str] = []

    def request() -> None:
        try:
            pool._run(job)
            outcomes.append("done")
        except Busy as exc:
            outcomes.append(f"busy {exc.retry_after}")

    threads = [threading.Thread(target=request) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while (pool._taken < 5 or running < 2) and time.monotonic() < deadline:
        time.sleep(0.01)  # a place is taken before its job starts on a hashing thread: wait for both
    assert pool._taken == 5 and running == 2  # two hashing, three waiting
    started = time.perf_counter()
    with pytest.raises(Busy) as refused:
        pool.hash("a password")
    assert time.perf_counter() - started < 0.5  # at once, without waiting for a place
    assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) >= 1
    assert "busy" in str(refused.value)
    release.set()
    for thread in threads:
        thread.join(10)
    assert outcomes == ["done"] * 5
    assert most == 2
    assert pool._taken == 0
    pool.close()


def test_a_request_holds_one_place_for_all_its_hashing() -> None:
    pool = HashPool(HashingConfig(workers=1, queue=0))
    with pool.reserve():
        stored = pool.hash("a password 1")  # the same thread: no second place needed
        assert pool.verify(stored, "a password 1") == (True, False)
        assert pool.verify(None, "a password 1") == (False, False)
        other: list[BaseException] = []
        thread = threading.Thread(target=lambda: _catch(other, lambda: pool.hash("x" * 12)))
        thread.start()
        thread.join(10)
        assert [type(e) for e in other] == [Busy]
    assert pool.verify(stored, "a password 2") == (False, False)  # the place is free again
    pool.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are set on Linux only")
def test_hashing_threads_run_at_a_lower_priority() -> None:
    pool = HashPool(HashingConfig(workers=1, queue=0))
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    theirs = pool._run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert theirs == min(19, mine + NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's is untouched
    pool.close()


def test_the_pool_never_takes_more_than_half_the_request_threads(caplog: pytest.LogCaptureFixture) -> None:
    """Each place holds a request thread; with too many, logins would take the threads /health needs."""
    with caplog.at_level(logging.INFO, logger="xcore.auth"):
        pool = HashPool(HashingConfig(workers=4, queue=8), request_threads=6)
    assert (pool.workers, pool.places) == (3, 3)
    assert "more than half of the 6 request threads" in caplog.text
    assert (HashPool(HashingConfig(workers=2, queue=8), request_threads=32).places) == 10
    assert HashPool(HashingConfig(workers=1, queue=0), request_threads=1).places == 1


@pytest.mark.usefixtures("production_hashing")
def test_the_memory_bound_is_workers_times_argon2s_memory_cost() -> None:
    assert HashPool(HashingConfig(workers=3, queue=0)).memory_bound == 3 * 46 * 1024 * 1024


# The production parameters, and the tests' cheap ones


@pytest.mark.usefixtures("production_hashing")
def test_production_hashes_with_owasps_argon2id_and_a_cheap_test_hash_still_verifies() -> None:
    """The server hashes with argon2id at OWASP's first setting (46 MiB, one pass, one lane), whatever the tests use.
    A hash made with the tests' cheap parameters verifies under it all the same (argon2 writes its parameters into
    the hash), and needs a rehash, so a login would upgrade it."""
    assert (HASHER.type, HASHER.memory_cost, HASHER.time_cost, HASHER.parallelism) == (Type.ID, 46 * 1024, 1, 1)
    pool = HashPool(HashingConfig(workers=1, queue=0))
    assert pool.hasher is HASHER
    stored = pool.hash("a password 1")
    assert stored.startswith("$argon2id$v=19$m=47104,t=1,p=1$")
    with cheap_hashing():
        assert pool.hasher is not HASHER
        cheap = pool.hash("a password 1")
        assert pool.verify(stored, "a password 1") == (True, True)  # under the cheap hasher, production's differs
    assert cheap.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert pool.verify(cheap, "a password 1") == (True, True)
    assert pool.verify(cheap, "a password 2") == (False, False)
    assert pool.verify(stored, "a password 1") == (True, False)
    pool.close()


def test_only_tests_reach_the_cheap_parameters() -> None:
    """No setting, variable or route leads to `cheap_hashing`: in the package only the plugin authors' pytest plugin
    (xcore.testing) uses it, besides its own module."""
    package = Path(xcore.__file__).parent
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "cheap_hashing" in p.read_text())
    assert users == ["auth/hashing.py", "testing.py"]


def _catch(into: list[BaseException], job: Any) -> None:
    try:
        job()
    except BaseException as exc:
        into.append(exc)


# Every route that hashes goes through the pool


ONE_PLACE = {"XCORE_SECURE__HASHING__WORKERS": "1", "XCORE_SECURE__HASHING__QUEUE": "0"}


@pytest.fixture
def full(tmp_path: Path) -> Iterator[tuple[Api, dict[str, dict[str, str]]]]:
    """full: an app whose hashing pool has one place and no queue, with root and bob set up and logged in."""
    rt = open_runtime(tmp_path / "data", environ=ONE_PLACE)
    prepare_from_template(rt)
    create_account(rt, "root", ["superadmin"])
    create_account(rt, "bob", ["user"])
    with TestClient(build_app(rt)) as client:
        api = Api(client, rt)
        yield api, {"root": api.login("root"), "bob": api.login("bob")}
    rt.close()


ROUTES = {
    "login": ("POST", "/api/auth/login", None, {"username": "bob", "password": PASSWORDS["bob"]}),
    "unknown name": ("POST", "/api/auth/login", None, {"username": "nobody", "password": "wrong-password-1"}),
    "password change": (
        "POST",
        "/api/me/password",
        "bob",
        {"current_password": PASSWORDS["bob"], "new_password": NEW_PASSWORD},
    ),
    "2FA setup": ("POST", "/api/me/totp/setup", "bob", {"password": PASSWORDS["bob"]}),
    "user creation": (
        "POST",
        "/api/admin/users",
        "root",
        {"username": "eve", "password": NEW_PASSWORD, "roles": ["user"]},
    ),
    "password reset": ("PATCH", "/api/admin/users/{bob}", "root", {"password": NEW_PASSWORD}),
}


AFTER = {"unknown name": 401, "password change": 204, "user creation": 201}  # the answer once a place is free


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_full_pool_answers_503_at_once_and_other_routes_still_answer(
    full: tuple[Api, dict[str, dict[str, str]]], route: str
) -> None:
    api, logged_in = full
    method, path, who, body = ROUTES[route]
    path = path.format(bob=api.client.get("/api/me", headers=logged_in["bob"]).json()["id"])
    headers = logged_in[who] if who else None
    holder, entered, leave = _holder(api)
    try:
        assert entered.wait(10)
        started = time.perf_counter()
        response = api.client.request(method, path, json=body, headers=headers)
        took = time.perf_counter() - started
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) >= 1
        assert "busy" in response.json()["detail"]
        assert took < 1.0  # refused at once, not after a hash's time
        assert api.client.get("/health").status_code == 200
        assert api.client.get("/api/me", headers=logged_in["bob"]).status_code == 200
    finally:
        leave.set()
        holder.join(10)
    with api.runtime.sessions() as session:  # a refused login is not counted: nothing was guessed
        assert session.query(LoginThrottle).filter(LoginThrottle.failures > 0).count() == 0
    after = api.client.request(method, path, json=body, headers=headers)  # once the place is free, it is checked
    assert after.status_code == AFTER.get(route, 200), after.text


def test_setup_answers_503_while_the_pool_is_full(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path / "data", environ=ONE_PLACE)
    prepare_from_template(rt)
    token = rt.auth.setup_token.create()
    body = {"token": token, "username": "owner", "password": NEW_PASSWORD}
    with TestClient(build_app(rt)) as client:
        api = Api(client, rt)
        holder, entered, leave = _holder(api)
        try:
            assert entered.wait(10)
            response = client.post("/api/setup", json=body)
            assert response.status_code == 503, response.text
        finally:
            leave.set()
            holder.join(10)
        assert client.post("/api/setup", json=body).status_code == 201  # the token was kept for the next try
    rt.close()


def _holder(api: Api) -> tuple[threading.Thread, threading.Event, threading.Event]:
    entered, leave = threading.Event(), threading.Event()

    def run() -> None:
        with api.runtime.auth.hashing.reserve():  # the pool's only place, as a slow hash would hold it
            entered.set()
            leave.wait(20)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, entered, leave
