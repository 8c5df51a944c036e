"""Cold start, size and idle memory of xcore's PyInstaller builds and of the source checkout.

Variants: the one-folder and the one-file build, each with the Qt desktop window built in and `--headless`,
built here with `tasks.py bundle` into `--out` (one subfolder each), and the source checkout (`.venv/bin/xcore`).
Every run of a variant gets a fresh data dir and makes three starts of `EXE serve --port P --data-dir D`, each
stopped by SIGTERM (exit code 0 expected, and no process of the tree left behind):

1. the first start, on the empty data dir (it creates the database and migrates it): reported apart;
2. the timed start, on the data dir the first start prepared: the wall time from spawning the process to the
   first 200 on /health (polled every 10 ms over a raw socket);
3. the idle start, with the `hello` and `notes` example plugins zipped into `<data>/plugins/`: once /health
   counts 2 active plugins, and 2 s more, the RSS (VmRSS) and PSS (smaps_rollup) of every process of the tree
   are summed: the one-file bootloader, Granian's main process and its worker. The worker alone is reported too.

Runs interleave the variants (run 1 of each, then run 2 of each...), so the ratios of a build's start to the
source checkout's share the machine's noise. "Cold" means a new process: the page cache stays warm (the first
start has just read the same files), as on any server that restarts. The one-file build extracts itself to a
temp dir at every start (here under the run's own dir, which must be empty again after the stop).

    python benchmarks/startup.py [--runs 5] [--out build/bench-bundles] [--skip-build]
                                 [--kinds onedir,onefile,onedir-headless,onefile-headless,source]

Targets (2 cores): one-folder start p50 <= 1.0 s; one-file start p50 <= 3.0 s; headless one-file size <= 60 MB;
idle RSS (whole tree) <= 150 MB. Sizes are in MB of 10^6 bytes (as `tasks.py bundle` prints them), memory in MB
of 2^20 bytes (as /proc counts it). The raw numbers go to benchmarks/results/startup-<date>.json.

Careful: benchmarks/http.py would shadow the standard `http` package (urllib.request imports it), so this
script speaks raw sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import children, cpu_model, describe, process_tree, yardsticks

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("onedir", "onefile", "onedir-headless", "onefile-headless", "source")
EXAMPLE_PLUGINS = ("hello", "notes")
POLL = 0.01
CONNECT_TIMEOUT = 0.2
READ_TIMEOUT = 5.0
READY_TIMEOUT = 60.0
PLUGINS_TIMEOUT = 30.0
IDLE_WAIT = 2.0
STOP_TIMEOUT = 15.0
START_TARGETS = {"onedir": 1.0, "onefile": 3.0}  # seconds, by build kind (desktop and headless alike)
SIZE_TARGETS = {"onefile-headless": 60.0}  # MB
RSS_TARGET = 150.0  # MB, the whole tree


class BenchError(Exception):
    """BenchError ends one step of one run; its message goes in the report's error list."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """http_get is (status, body) of `GET path` on 127.0.0.1:port, or None when nothing answers yet."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except OSError:
        return None
    chunks = []
    try:
        with sock:
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2 :]
    return out


def memory_kb(pid: int) -> tuple[int, int | None]:
    """memory_kb is the (RSS, PSS) of `pid` in kB; PSS is None where smaps_rollup cannot be read."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    pss = None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Server:
    """Server is one `EXE serve` on a free port; the clock starts just before it is spawned."""

    def __init__(self, command: list[str], data: Path, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 (closed by stop)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port), "--data-dir", str(data)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self) -> str:
        self.log.flush()
        text = self.log_path.read_bytes().decode(errors="replace").strip()
        return " | ".join(text.splitlines()[-5:])

    def wait_healthy(self) -> tuple[float, dict[str, Any]]:
        """wait_healthy polls /health until a 200; returns the seconds since the spawn and the health body."""
        deadline = self.started + READY_TIMEOUT
        last = "no answer"
        while True:
            code = self.process.poll()
            if code is not None:
                raise BenchError(f"exited with {code} before /health answered 200: {self.log_tail()}")
            reply = http_get(self.port, "/health")
            now = time.perf_counter()
            if reply is not None and reply[0] == 200:
                return now - self.started, json.loads(reply[1])
            if reply is not None:
                last = f"last answer {reply[0]}"
            if now > deadline:
                raise BenchError(f"/health did not answer 200 within {READY_TIMEOUT:g} s ({last}): {self.log_tail()}")
            time.sleep(POLL)

    def wait_plugins(self, count: int) -> float:
        """wait_plugins polls /health until `count` plugins are active; returns the seconds since the spawn."""
        deadline = time.perf_counter() + PLUGINS_TIMEOUT
        plugins: dict[str, int] = {}
        while time.perf_counter() < deadline:
            reply = http_get(self.port, "/health")
            if reply is not None and reply[0] == 200:
                plugins = json.loads(reply[1]).get("plugins") or {}
                if plugins.get("active", 0) >= count:
                    return time.perf_counter() - self.started
            time.sleep(0.05)
        raise BenchError(
            f"{count} plugins not active within {PLUGINS_TIMEOUT:g} s (last: {plugins}): {self.log_tail()}"
        )

    def stop(self) -> float:
        """stop sends SIGTERM and waits; returns the seconds the stop took. Raises BenchError unless the exit
        code is 0 and no process of the tree is left."""
        pids = process_tree(self.process.pid) if self.process.poll() is None else [self.process.pid]
        began = time.perf_counter()
        try:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise BenchError(f"did not stop within {STOP_TIMEOUT:g} s of SIGTERM (killed): {self.log_tail()}") from None
        finally:
            self.log.close()
        took = time.perf_counter() - began
        if code != 0:
            raise BenchError(f"SIGTERM: exit code {code}, expected 0: {self.log_tail()}")
        time.sleep(0.2)  # a worker may end a moment after the main process
        left = [pid for pid in pids[1:] if Path(f"/proc/{pid}").exists()]
        if left:
            with_names = [f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}" for pid in left]
            os.killpg(self.process.pid, signal.SIGKILL)
            raise BenchError(f"processes left after a clean exit: {', '.join(with_names)}")
        return took

    def kill(self) -> None:
        """kill ends the whole process group at once (after an error or an interrupt)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def start(command: list[str], data: Path, logs: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    """start is one start until /health answers 200, then a stop; returns the seconds each took."""
    server = Server(command, data, logs / f"{name}.log", env)
    try:
        seconds, _ = server.wait_healthy()
        return {"start_s": seconds, "stop_s": server.stop()}
    finally:
        server.kill()


def idle(command: list[str], data: Path, logs: Path, env: dict[str, str], onefile: bool) -> dict[str, Any]:
    """idle starts with the example plugins in place and measures the tree's memory once they are active."""
    server = Server(command, data, logs / "idle.log", env)
    try:
        seconds, _ = server.wait_healthy()
        active = server.wait_plugins(len(EXAMPLE_PLUGINS))
        time.sleep(IDLE_WAIT)
        root = server.process.pid
        main = children(root)[0] if onefile and children(root) else root
        workers = set(children(main))
        processes = []
        for pid in process_tree(root):
            rss, pss = memory_kb(pid)
            role = "worker" if pid in workers else "main" if pid == main else "bootloader" if pid == root else "other"
            processes.append({"pid": pid, "role": role, "rss_kb": rss, "pss_kb": pss})
        result = {"start_s": seconds, "plugins_active_s": active, "processes": processes}
        result.update(memory_sums(processes))
        result["stop_s"] = server.stop()
        return result
    finally:
        server.kill()


def memory_sums(processes: list[dict[str, Any]]) -> dict[str, float | None]:
    def total(key: str, rows: list[dict[str, Any]]) -> float | None:
        values = [row[key] for row in rows]
        return None if not rows or None in values else sum(values) / 1024

    workers = [row for row in processes if row["role"] == "worker"]
    return {
        "rss_tree_mb": total("rss_kb", processes),
        "pss_tree_mb": total("pss_kb", processes),
        "rss_worker_mb": total("rss_kb", workers),
        "pss_worker_mb": total("pss_kb", workers),
    }


def server_env(tmp: Path | None) -> dict[str, str]:
    """server_env is this environment without a display or xcore settings; TMPDIR is `tmp` when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env = {k: v for k, v in env.items() if not k.startswith("XCORE_")}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return env


def one_run(kind: str, command: list[str], zips: list[Path], tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """one_run makes the three starts of one run of `kind` in the fresh folder `tmp`; returns its numbers and
    the errors met (a failed step ends the run)."""
    data, logs, extract = tmp / "data", tmp / "logs", tmp / "extract"
    logs.mkdir(parents=True)
    onefile = kind.startswith("onefile")
    if onefile:
        extract.mkdir()
    env = server_env(extract if onefile else None)
    run: dict[str, Any] = {}
    step = "first start"
    try:
        first = start(command, data, logs, "first", env)
        run["first_start_s"], run["first_stop_s"] = first["start_s"], first["stop_s"]
        step = "timed start"
        timed = start(command, data, logs, "timed", env)
        run["start_s"], run["stop_s"] = timed["start_s"], timed["stop_s"]
        step = "idle memory"
        (data / "plugins").mkdir(exist_ok=True)
        for archive in zips:
            shutil.copy2(archive, data / "plugins" / archive.name)
        run["idle"] = idle(command, data, logs, env, onefile)
        if onefile and (left := sorted(p.name for p in extract.iterdir())):
            raise BenchError(f"extraction dirs left in TMPDIR after the stops: {', '.join(left)}")
    except BenchError as exc:
        return run, [f"{step}: {exc}"]
    return run, []


def executable(out: Path, kind: str) -> Path:
    folder = out / kind
    return folder / "xcore" / "xcore" if kind.startswith("onedir") else folder / "xcore"


def size_bytes(out: Path, kind: str) -> int:
    """size_bytes is the build's size: its file, or the sum of the regular files of its folder."""
    path = executable(out, kind)
    if kind.startswith("onefile"):
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.parent.rglob("*") if p.is_file() and not p.is_symlink())


def build(out: Path, kind: str) -> float:
    """build makes the bundle `kind` with `tasks.py bundle`; returns the seconds it took."""
    flags = ["--onefile" if kind.startswith("onefile") else "--onedir"]
    flags += ["--headless"] if kind.endswith("-headless") else []
    step = [sys.executable, str(ROOT / "tasks.py"), "bundle", *flags, "--out", str(out / kind)]
    print(f"building {kind}: {shlex.join(step[1:])}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    done = subprocess.run(step, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"tasks.py bundle {' '.join(flags)} failed (exit {done.returncode})")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if not executable(out, kind).is_file():
        raise BenchError(f"tasks.py bundle {' '.join(flags)} printed {last!r} but {executable(out, kind)} is missing")
    print(f"  {last} in {took:.0f} s", file=sys.stderr, flush=True)
    return took


def pack_plugins(out: Path) -> list[Path]:
    """pack_plugins zips the example plugins with the source checkout's CLI."""
    for name in EXAMPLE_PLUGINS:
        step = [
            str(ROOT / ".venv" / "bin" / "xcore"),
            "plugin",
            "pack",
            str(ROOT / "plugins" / name),
            "--out",
            str(out),
        ]
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"packing plugins/{name} failed: {done.stderr.strip()}")
    zips = sorted(out.glob("*.zip"))
    if len(zips) != len(EXAMPLE_PLUGINS):
        raise SystemExit(f"expected {len(EXAMPLE_PLUGINS)} plugin zips in {out}, found {[z.name for z in zips]}")
    return zips


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(key: str, within: str | None = None) -> list[float]:
        rows = [run.get(within) or {} for run in runs] if within else runs
        return [row[key] for row in rows if row.get(key) is not None]

    summary = {key: stats(pick(key)) for key in ("start_s", "first_start_s", "stop_s")}
    summary["idle_start_s"] = stats(pick("start_s", "idle"))  # the start with the two plugins in place
    for key in ("plugins_active_s", "rss_tree_mb", "pss_tree_mb", "rss_worker_mb", "pss_worker_mb"):
        summary[key] = stats(pick(key, "idle"))
    return summary


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """targets are the issue's targets that apply to the measured variants, each with its value and verdict."""
    found: list[dict[str, Any]] = []
    for kind, result in results.items():
        summary = result["summary"]
        base = kind.removesuffix("-headless")
        if base in START_TARGETS:
            limit = START_TARGETS[base]
            what = f"{'one-folder' if base == 'onedir' else 'one-file'} start p50 <= {limit:g} s"
            value = (summary["start_s"] or {}).get("p50")
            found.append({"kind": kind, "name": "start", "what": what, "value": value, "limit": limit})
        if kind in SIZE_TARGETS:
            limit = SIZE_TARGETS[kind]
            value = None if result["size_bytes"] is None else result["size_bytes"] / 1e6
            found.append(
                {"kind": kind, "name": "size", "what": f"size <= {limit:g} MB", "value": value, "limit": limit}
            )
        # The memory target read two ways: RSS summed over the processes counts the pages Granian's parent
        # shares with its forked worker twice; PSS counts each shared page once (the memory actually used).
        for name, key in (("RSS", "rss_tree_mb"), ("PSS", "pss_tree_mb")):
            what = f"idle {name} (tree) p50 <= {RSS_TARGET:g} MB"
            value = (summary[key] or {}).get("p50")
            found.append({"kind": kind, "name": name, "what": what, "value": value, "limit": RSS_TARGET})
    for target in found:
        target["met"] = None if target["value"] is None else target["value"] <= target["limit"]
    return found


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ratios are each build's start time over the source checkout's, run by run (interleaved), and their median."""
    if "source" not in results:
        return {}
    source = {run["n"]: run.get("start_s") for run in results["source"]["runs"]}
    found = {}
    for kind, result in results.items():
        if kind == "source":
            continue
        per_run = [
            run["start_s"] / source[run["n"]] for run in result["runs"] if run.get("start_s") and source.get(run["n"])
        ]
        if per_run:
            found[f"{kind}/source"] = {"p50": statistics.median(per_run), "runs": per_run}
    return found


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, dict[str, Any]], checks: list[dict[str, Any]], starts: dict[str, Any]) -> None:
    header = (
        "variant",
        "size MB",
        "start p50 s (min-max)",
        "first start s",
        "idle RSS MB (tree)",
        "PSS MB (tree)",
        "worker RSS / PSS MB",
        "target met?",
        "errors",
    )
    rows: list[tuple[str, ...]] = [header]
    for kind, result in results.items():
        summary = result["summary"]

        def p50(key: str, summary: dict[str, Any] = summary) -> float | None:
            return (summary[key] or {}).get("p50")

        start_s = summary["start_s"]
        start_cell = "-" if not start_s else f"{start_s['p50']:.2f} ({start_s['min']:.2f}-{start_s['max']:.2f})"
        own = [c for c in checks if c["kind"] == kind]
        missed = [c["name"] for c in own if c["met"] is False]
        unknown = [c["name"] for c in own if c["met"] is None]
        verdict = f"NO: {', '.join(missed)}" if missed else f"? ({', '.join(unknown)})" if unknown else "yes"
        rows.append(
            (
                kind,
                fmt(result["size_bytes"] / 1e6 if result.get("size_bytes") is not None else None, ".1f"),
                start_cell,
                fmt(p50("first_start_s")),
                fmt(p50("rss_tree_mb"), ".1f"),
                fmt(p50("pss_tree_mb"), ".1f"),
                f"{fmt(p50('rss_worker_mb'), '.1f')} / {fmt(p50('pss_worker_mb'), '.1f')}",
                verdict,
                str(len(result["errors"])),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    runs = max((len(r["runs"]) for r in results.values()), default=0)
    print()
    for n, row in enumerate(rows):
        print("| " + " | ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"(medians over {runs} run(s); memory {IDLE_WAIT:g} s after {len(EXAMPLE_PLUGINS)} plugins became active)")
    print("\ntargets:")
    width = max((len(f"{c['kind']}: {c['what']}") for c in checks), default=0)
    for c in checks:
        verdict = "no measurement" if c["met"] is None else "met" if c["met"] else "MISSED"
        print(f"  {c['kind'] + ': ' + c['what']:<{width}}  {fmt(c['value']):>8}  {verdict}")
    if starts:
        print("\nstart time ratios (median of the per-run ratios, same run):")
        for name, ratio in starts.items():
            print(f"  {name}: {ratio['p50']:.2f} (runs: {', '.join(f'{r:.2f}' for r in ratio['runs'])})")
    for kind, result in results.items():
        for error in result["errors"]:
            print(f"ERROR {kind}: {error}")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("xcore", "litestar", "granian", "pyinstaller"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def write_json(payload: dict[str, Any], now: dt.datetime, name: str = "startup") -> Path:
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{now:%Y-%m-%d}.json"
    n = 2
    while path.exists():  # keep earlier runs of the same day
        path = folder / f"{name}-{now:%Y-%m-%d}-{n}.json"
        n += 1
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per variant; medians reported (default 5)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "bench-bundles", help="where the bundles are built"
    )
    parser.add_argument("--skip-build", action="store_true", help="reuse the bundles already in --out")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"variants to measure (default: {','.join(KINDS)})")
    args = parser.parse_args()
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown := sorted(set(args.kinds) - set(KINDS)):
        parser.error(f"unknown variant(s) in --kinds: {', '.join(unknown)} (known: {', '.join(KINDS)})")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.out = args.out.resolve()
    return args


def main() -> int:
    args = parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("benchmarks/startup.py reads /proc: it runs on Linux only")
    now = dt.datetime.now(dt.UTC)
    print(f"date: {now:%Y-%m-%d %H:%M:%S} UTC")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"cpu: {cpu_model()}")
    print(f"versions: {', '.join(f'{k} {v}' for k, v in versions().items())}", flush=True)
    source = ROOT / ".venv" / "bin" / "xcore"
    results: dict[str, dict[str, Any]] = {}
    commands: dict[str, list[str]] = {}
    for kind in args.kinds:
        result: dict[str, Any] = {"runs": [], "errors": [], "size_bytes": None, "build_s": None}
        results[kind] = result
        if kind == "source":
            if not source.exists():
                result["errors"].append(f"{source} is missing: run `python3 tasks.py run --version` first")
                continue
            commands[kind] = [str(source)]
            continue
        try:
            if not args.skip_build:
                result["build_s"] = build(args.out, kind)
            elif not executable(args.out, kind).is_file():
                raise BenchError(f"no build at {executable(args.out, kind)}; run without --skip-build")
        except BenchError as exc:
            result["errors"].append(f"build: {exc}")
            continue
        result["executable"] = str(executable(args.out, kind))
        result["size_bytes"] = size_bytes(args.out, kind)
        commands[kind] = [result["executable"]]
    with tempfile.TemporaryDirectory(prefix="xcore-startup-") as tmp:
        zips = pack_plugins(Path(tmp) / "zips")
        before = yardsticks()  # after the builds, right before the starts
        for n in range(1, args.runs + 1):
            for kind, command in commands.items():
                print(f"run {n}/{args.runs}: {kind}", file=sys.stderr, flush=True)
                run, errors = one_run(kind, command, zips, Path(tmp) / kind / f"run-{n}")
                results[kind]["runs"].append({"n": n, **run})
                results[kind]["errors"] += [f"run {n}: {error}" for error in errors]
    for result in results.values():
        result["summary"] = summarize(result["runs"])
    machine = {"before": before, "after": yardsticks()}
    checks = targets(results)
    starts = ratios(results)
    report(results, checks, starts)
    print(f"machine speed before the runs: {describe(machine['before'])}")
    print(f"machine speed after the runs:  {describe(machine['after'])}")
    print("(compare runs on the same machine by these: a start is mostly imports, so by the second above all)")
    payload = {
        "date": now.isoformat(),
        "command": sys.orig_argv,
        "cpu": cpu_model(),
        "machine_speed": machine,
        "versions": versions(),
        "runs": args.runs,
        "variants": results,
        "targets": checks,
        "ratios": starts,
    }
    print(f"\nraw numbers: {write_json(payload, now).relative_to(ROOT)}")
    return 1 if any(result["errors"] for result in results.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are killed and the temp dir removed by then
        sys.exit("interrupted")
