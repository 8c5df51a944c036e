#!/usr/bin/env python3
"""The release check: does a built xcore bundle work as a user gets it? Standard library only.

    python3 packaging/release_check.py dist/xcore/xcore [--plugins-src plugins]

`python3 tasks.py bundle --check` builds the one-folder bundle, then runs this on it. Every step runs the
bundle itself, the way a self-hoster would: `xcore --version`; `xcore serve` headless (no DISPLAY) on a free
port with a temporary data directory; first-run setup through the API; `xcore plugin pack` of the example
`notes` plugin and its upload; a call to its route; a run of its task through the scheduler; a plugin with
`"sandbox": true`, which must answer from its own confined worker (forked by the binary started as
`xcore plugin-zygote`) and fail to read the secret key; `xcore plugin runtime`; and a stop by SIGTERM, which must exit
0. It prints a pass/fail table and exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0


class CheckFailed(Exception):
    """CheckFailed ends one step with the reason shown in the table."""


BOXED_RUN = """import os
from pathlib import Path

from xcore.sdk import Ctx, get


@get("/", sync_to_thread=False)
def where(ctx: Ctx) -> dict:
    try:
        secret = "read: " + (Path(ctx.data_dir).parent.parent / "secret.key").read_text()[:4]
    except OSError as exc:
        secret = f"blocked: {exc}"
    return {"pid": os.getpid(), "secret": secret}


router = [where]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """Client is a tiny JSON-over-HTTP client on the bundle's server (urllib, no proxy)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type or "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self.opener.open(request, timeout=STEP_TIMEOUT) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def expect(self, method: str, path: str, status: int, body: Any = None, **kwargs: Any) -> Any:
        got, payload = self.call(method, path, body, **kwargs)
        if got != status:
            raise CheckFailed(f"{method} {path} answered {got}, expected {status}: {str(payload)[:300]}")
        return payload


def wait_until(check: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class ReleaseCheck:
    """ReleaseCheck runs the steps in order; a failed step stops the ones that depend on it."""

    def __init__(self, executable: Path, plugins_src: Path, work: Path) -> None:
        self.executable = executable
        self.plugins_src = plugins_src
        self.work = work
        self.data = work / "data"
        self.port = free_port()
        self.client = Client(f"http://127.0.0.1:{self.port}")
        self.env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.env = {k: v for k, v in self.env.items() if not k.startswith("XCORE_")}
        self.server: subprocess.Popen[bytes] | None = None
        self.results: list[tuple[str, bool, str, float]] = []

    def xcore(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.executable), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def step(self, name: str, action: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail, ok = action(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # a bug in a step is a failed step, still shown in the table
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.results.append((name, ok, detail, time.monotonic() - started))
        return ok

    # The steps.

    def version(self) -> str:
        done = self.xcore("--version")
        line = done.stdout.strip()
        if done.returncode != 0 or "frozen build" not in line or "commit unknown" in line:
            raise CheckFailed(f"exit {done.returncode}: {line or done.stderr.strip()}")
        return line

    def start(self) -> str:
        self.log = open(self.work / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.server = subprocess.Popen(
            [str(self.executable), "serve", "--port", str(self.port), "--data-dir", str(self.data)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        started = time.monotonic()

        def healthy() -> bool:
            if self.server is not None and self.server.poll() is not None:
                raise CheckFailed(f"the server exited with code {self.server.returncode}: {self.tail()}")
            try:
                return self.client.call("GET", "/health")[0] == 200
            except OSError:
                return False

        wait_until(healthy, "GET /health answering 200", START_TIMEOUT)
        return f"/health 200 after {time.monotonic() - started:.2f} s on port {self.port}"

    def setup(self) -> str:
        token = (self.data / "setup-token").read_text().strip()
        password = secrets.token_urlsafe(18)
        self.client.expect("POST", "/api/setup", 201, {"token": token, "username": "owner", "password": password})
        session = self.client.expect("POST", "/api/auth/login", 200, {"username": "owner", "password": password})
        self.client.token = session["access_token"]
        return "superadmin 'owner' created with the printed token, and signed in"

    def install_notes(self) -> str:
        out = self.work / "zips"
        done = self.xcore("plugin", "pack", str(self.plugins_src / "notes"), "--out", str(out))
        if done.returncode != 0:
            raise CheckFailed(f"xcore plugin pack: exit {done.returncode}: {done.stderr.strip()}")
        bundle = next(out.glob("notes-*.zip"))
        body, content_type = multipart("data", bundle.name, bundle.read_bytes())
        self.client.expect("POST", "/api/admin/plugins", 201, raw=body, content_type=content_type)

        def loaded() -> Any:
            view = self.client.call("GET", "/api/admin/plugins/notes")[1]
            if isinstance(view, dict) and view.get("state") == "failed":
                raise CheckFailed(f"notes failed to load: {view.get('error')}")
            return view if isinstance(view, dict) and view.get("state") == "active" else None

        view = wait_until(loaded, "notes becoming active")
        return f"{bundle.name} packed by the bundle, uploaded, {view['state']} ({view['version']})"

    def call_route(self) -> str:
        note = self.client.expect("POST", "/app/notes/", 201, {"title": "release", "body": "checked"})
        listed = self.client.expect("GET", "/app/notes/", 200)
        if not any(n.get("id") == note.get("id") for n in listed):
            raise CheckFailed(f"the new note is not listed: {listed}")
        return f"POST and GET /app/notes/ work ({len(listed)} note)"

    def run_task(self) -> str:
        queued = self.client.expect("POST", "/api/admin/tasks/notes.purge_empty/run", 201)
        run_id = queued["run"]

        def finished() -> Any:
            run = self.client.call("GET", f"/api/admin/tasks/runs/{run_id}")[1]
            return run if isinstance(run, dict) and run.get("status") in ("succeeded", "failed", "dropped") else None

        run = wait_until(finished, f"run {run_id} of notes.purge_empty finishing")
        if run["status"] != "succeeded":
            raise CheckFailed(f"run {run_id} {run['status']}: {run.get('error')}")
        return f"notes.purge_empty run {run_id} succeeded in {run['duration'] * 1000:.0f} ms (pid {run['pid']})"

    def metrics(self) -> str:
        """GET /metrics answers in the Prometheus text format (prometheus-client is in the bundle), with the route
        just called and the task just run counted."""
        wanted = ('route="/app/notes', 'task="notes.purge_empty"')  # the route's template: /app/notes

        def counted() -> Any:
            status, text = self.client.call("GET", "/metrics")
            if status != 200 or not isinstance(text, str):
                raise CheckFailed(f"GET /metrics answered {status}: {str(text)[:300]}")
            return text if all(label in text for label in wanted) else None

        text = wait_until(counted, "the route and the task counted in /metrics")
        return f"{sum(1 for line in text.splitlines() if line.startswith('xcore_'))} samples"

    def sandboxed(self) -> str:
        """A plugin with "sandbox": true, packed by the binary, runs in a worker that the binary starts of itself
        (`xcore plugin-zygote` forks it), confined: it answers from another process and cannot read the secret key. Its
        requirements are met by the packages the binary ships (their metadata is in it)."""
        source = self.work / "boxed"
        source.mkdir(exist_ok=True)
        manifest = {"id": "boxed", "version": "1.0.0", "sandbox": True, "requirements": ["PyYAML>=5", "msgspec"]}
        (source / "plugin.json").write_text(json.dumps(manifest))
        (source / "run.py").write_text(BOXED_RUN)
        out = self.work / "zips"
        done = self.xcore("plugin", "pack", str(source), "--out", str(out))
        if done.returncode != 0:
            raise CheckFailed(f"xcore plugin pack: exit {done.returncode}: {done.stderr.strip()}")
        bundle = next(out.glob("boxed-*.zip"))
        body, content_type = multipart("data", bundle.name, bundle.read_bytes())
        view = self.client.expect("POST", "/api/admin/plugins", 201, raw=body, content_type=content_type)
        if view.get("state") != "active" or not view.get("sandbox"):
            raise CheckFailed(f"boxed did not run sandboxed: {view.get('state')}: {view.get('error')}")
        answer = self.client.expect("GET", "/app/boxed/", 200)
        assert self.server is not None
        if answer.get("pid") in (None, self.server.pid) or not str(answer.get("secret", "")).startswith("blocked"):
            raise CheckFailed(f"the sandboxed plugin answered {answer}")
        return f"answered from pid {answer['pid']}; reading secret.key: {answer['secret'][:60]}"

    def runtime(self) -> str:
        done = self.xcore("plugin", "runtime", "--json")
        if done.returncode != 0:
            raise CheckFailed(f"exit {done.returncode}: {done.stderr.strip()}")
        listing = json.loads(done.stdout)
        modules = set(listing["stdlib"]) | {p["module"] for p in listing["packages"]}
        missing = {"sqlite3", "email", "json", "litestar", "msgspec", "sqlalchemy"} - modules
        if not listing["frozen"] or missing:
            raise CheckFailed(f"frozen={listing['frozen']}, missing {sorted(missing)}")
        return f"{len(listing['stdlib'])} standard-library modules and {len(listing['packages'])} packages"

    def stop(self) -> str:
        if self.server is None or self.server.poll() is not None:
            raise CheckFailed("the server is not running")
        self.server.send_signal(signal.SIGTERM)
        try:
            code = self.server.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.server.kill()
            raise CheckFailed("still running 30 s after SIGTERM") from None
        if code != 0:
            raise CheckFailed(f"exit code {code}: {self.tail()}")
        return "SIGTERM: exit code 0"

    def tail(self) -> str:
        self.log.flush()
        lines = (self.work / "server.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:])

    def run(self) -> bool:
        """run runs every step whose prerequisites passed; the others are shown as skipped (and fail the check)."""
        plan: list[tuple[str, Callable[[], str], tuple[str, ...]]] = [
            ("version", self.version, ()),
            ("start headless", self.start, ()),
            ("first-run setup", self.setup, ("start headless",)),
            ("install notes", self.install_notes, ("first-run setup",)),
            ("call its route", self.call_route, ("install notes",)),
            ("run its task", self.run_task, ("install notes",)),
            ("metrics", self.metrics, ("call its route", "run its task")),
            ("a sandboxed plugin", self.sandboxed, ("first-run setup",)),
            ("stop with SIGTERM", self.stop, ("start headless",)),
            ("plugin runtime", self.runtime, ()),
        ]
        passed: set[str] = set()
        for name, action, needs in plan:
            if not set(needs) <= passed:
                self.results.append(
                    (name, False, f"skipped: {', '.join(n for n in needs if n not in passed)} failed", 0.0)
                )
            elif self.step(name, action):
                passed.add(name)
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        return all(ok for _, ok, _, _ in self.results)

    def table(self) -> str:
        width = max(len(name) for name, *_ in self.results)
        lines = [f"{'step':<{width}}  result  seconds  detail", f"{'-' * width}  ------  -------  ------"]
        for name, ok, detail, seconds in self.results:
            verdict = "pass" if ok else ("skip" if detail.startswith("skipped") else "FAIL")
            lines.append(f"{name:<{width}}  {verdict:<6}  {seconds:7.2f}  {detail}")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that a built xcore bundle works.")
    parser.add_argument("executable", type=Path, help="the bundle's xcore executable, e.g. dist/xcore/xcore")
    parser.add_argument("--plugins-src", type=Path, default=ROOT / "plugins", help="the example plugins' folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory and the server log")
    args = parser.parse_args(argv)
    executable = args.executable.resolve()
    if not executable.is_file() or not os.access(executable, os.X_OK):
        print(f"release_check: no executable at {executable}; build one with `python3 tasks.py bundle`")
        return 2
    work = Path(tempfile.mkdtemp(prefix="xcore-release-check-"))
    check = ReleaseCheck(executable, args.plugins_src.resolve(), work)
    ok = check.run()
    print(check.table())
    print(f"release check {'passed' if ok else 'FAILED'}: {executable}")
    if args.keep or not ok:
        print(f"data directory and server log kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
