"""Start time of this checkout against another revision, or of two builds: paired, alternating starts.

A change to a start is worth 5-30 ms, while this shared machine's speed drifts by a third within minutes, so
absolute medians from `startup.py` cannot show it. This script checks REV out into a temporary git worktree and
times `xcore serve` (to the first 200 on /health, as `startup.py` does) from REV's `app/` and from this
checkout's `app/` in turns: pair i starts REV first when i is even, this checkout first when it is odd. Each
pair shares the machine's noise; the paired differences and ratios are what to quote.

Both sides run on this checkout's `.venv` (the same third-party packages; a REV with other dependencies is not
comparable this way) with their bytecode compiled beforehand, each on a data dir its own first start prepared.
Packages the binary leaves out but `.venv` may hold (`--hide`, default pydantic: the benchmark extras bring it,
and Litestar loads its pydantic plugins when it is importable) are hidden from both, as they are absent from
the binary.

    python benchmarks/start_ab.py REV [--pairs 30] [--hide pydantic]

With `--executables BEFORE AFTER` it compares two builds instead (two one-folder binaries, say: what a build
changes, like the compiled dataclass methods of xcore.codecache, shows only there), started the same way, each
on its own data dir; REV is then not given.

    python benchmarks/start_ab.py --executables OLD/xcore/xcore NEW/xcore/xcore [--pairs 30]

The raw numbers go to benchmarks/results/start-ab-<date>.json.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model, describe, yardsticks
from startup import ROOT, BenchError, server_env, start, write_json

HIDE = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # ImportError, as in the binary\n"


def worktree(rev: str, folder: Path) -> str:
    """worktree checks `rev` out into `folder` (detached); returns its commit."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder), rev], check=True)
    return subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def side_env(app: Path, hide_dir: Path) -> dict[str, str]:
    env = server_env(None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(app), str(hide_dir)])
    return env


def measure(sides: dict[str, tuple[list[str], dict[str, str]]], pairs: int, tmp: Path) -> dict[str, list[float]]:
    """measure starts each side (its command and environment) `pairs` times, in turns whose order alternates;
    each side's first start prepares its own data dir and is not timed. Returns the seconds of each start."""
    datas = {name: tmp / f"data-{i}" for i, name in enumerate(sides)}
    logs = tmp / "logs"
    logs.mkdir()
    times: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for name, (command, env) in sides.items():
            start(command, datas[name], logs, "first", env)
        for i in range(pairs):
            for name in list(sides) if i % 2 == 0 else list(reversed(sides)):
                command, env = sides[name]
                times[name].append(start(command, datas[name], logs, "timed", env)["start_s"])
    except BenchError as exc:
        raise SystemExit(f"start failed: {exc}") from None
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", help="the revision to compare this checkout against (e.g. HEAD~1)")
    parser.add_argument("--executables", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="two builds instead")
    parser.add_argument("--pairs", type=int, default=30, help="paired starts (default 30)")
    parser.add_argument("--hide", default="pydantic", help="comma-separated packages hidden from both sides")
    args = parser.parse_args()
    if (args.rev is None) == (args.executables is None):
        parser.error("give either REV or --executables BEFORE AFTER")
    hidden = [n.strip() for n in args.hide.split(",") if n.strip()]
    now = dt.datetime.now(dt.UTC)
    print(f"date: {now:%Y-%m-%d %H:%M:%S} UTC\ncommand: {shlex.join(sys.orig_argv)}\ncpu: {cpu_model()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="xcore-start-ab-") as tmp_name:
        tmp = Path(tmp_name)
        before = yardsticks()
        if args.executables:
            missing = [str(e) for e in args.executables if not e.is_file()]
            if missing:
                raise SystemExit(f"not built: {', '.join(missing)}")
            env = server_env(None)
            names = [f"before ({args.executables[0]})", f"after ({args.executables[1]})"]
            times = measure({n: ([str(e.resolve())], env) for n, e in zip(names, args.executables, strict=True)},
                            args.pairs, tmp)  # fmt: skip
            commit, label = None, "after - before"
        else:
            command = [str(ROOT / ".venv" / "bin" / "xcore")]
            if not Path(command[0]).exists():
                raise SystemExit(f"{command[0]} is missing: run `python3 tasks.py run --version` first")
            hide_dir = tmp / "hide"
            hide_dir.mkdir()
            (hide_dir / "sitecustomize.py").write_text(HIDE.format(names=hidden))
            base = tmp / "rev"
            commit = worktree(args.rev, base)
            try:
                apps = {f"{args.rev} ({commit})": base / "app", "this checkout": ROOT / "app"}
                for app in apps.values():
                    compileall.compile_dir(str(app), quiet=1)
                times = measure({n: (command, side_env(app, hide_dir)) for n, app in apps.items()}, args.pairs, tmp)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
            label = f"this checkout - {args.rev}"
        after = yardsticks()
    old, new = times.values()
    diffs = [(b - a) * 1000 for a, b in zip(old, new, strict=True)]
    ratios = [b / a for a, b in zip(old, new, strict=True)]
    print(f"\n| side | start p50 ms (min-max) over {args.pairs} |\n|---|---|")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"| {name} | {statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f}) |")
    quartiles = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
    print(
        f"\n{label}: median {statistics.median(diffs):+.0f} ms per pair "
        f"(quartiles {quartiles[0]:+.0f} / {quartiles[2]:+.0f} ms); ratio median {statistics.median(ratios):.3f}; "
        f"faster in {sum(d < 0 for d in diffs)} of {len(diffs)} pairs"
    )
    print(f"machine speed before: {describe(before)}\nmachine speed after:  {describe(after)}")
    payload = {
        "date": now.isoformat(),
        "command": sys.orig_argv,
        "rev": args.rev,
        "commit": commit,
        "executables": [str(e) for e in args.executables] if args.executables else None,
        "hidden": hidden if not args.executables else [],
        "machine_speed": {"before": before, "after": after},
        "starts_s": times,
    }
    print(f"raw numbers: {write_json(payload, now, 'start-ab').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
