"""Complete backups (`xcore.db.archive`, `xcore.db.seal`): making and opening an archive, plain and encrypted, side
by side with Python's own tar.gz of the same folder.

The script makes one data directory in a temporary folder: a migrated runtime (`open_runtime`, `prepare_database`)
and, in `plugin-data/bench/`, N MiB of random bytes (`--mib`, default 100) and a SQLite database of about N/2 MiB
(rows of hex text, which compresses about 2:1). Each round then runs every case once, in turns, each in a child
process of its own (this script with `--case`), which times only the operation and reads its own peak RSS
(VmHWM in /proc/self/status) when it is done:

- `tarfile gz` (the yardstick): `tarfile.open(mode="w:gz")` of the whole data directory, gzip level 6 as the
  archive's;
- `make, plain`, `make, passphrase`, `make, key`: `make_archive` without a secret, with a passphrase (scrypt, 128
  MiB and about half a second by design) and with a generated key;
- `open, plain`, `open, passphrase`, `open, key`: `open_archive` of each (unpacked into a scratch folder and every
  member checked against the manifest), then the staged folder removed.

The table gives each case's median seconds, its ratio to the yardstick's median of the same run, the archive's
size and the child's peak RSS; `--mib 50,200` runs both sizes in one run, one table each. What it shows: an
encrypted archive costs little more than a plain one, and a child's peak RSS does not grow with the data (the
archive streams: gzip, AES-GCM chunks of 256 KiB, tar members read in blocks); the passphrase's scrypt adds its
fixed 128 MiB. No target is enforced; the script exits 1 only if a case fails.

    .venv/bin/python benchmarks/backup.py [--mib 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

# Python put this folder first on sys.path, where benchmarks/http.py would shadow the standard `http`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PASSPHRASE = "correct horse battery staple"
CASES = ["tarfile gz", "make, plain", "make, passphrase", "make, key", "open, plain", "open, passphrase", "open, key"]
FIELDS = ["database", "plugins", "plugin_data", "wheels", "config", "trust", "secret"]


def peak_rss_mb() -> float:
    """peak_rss_mb is this process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def build(root: Path, mib: int) -> dict[str, str]:
    """build makes a migrated data directory in `root` with `mib` MiB of random plugin data and a SQLite database
    of about mib/2 MiB; returns its backup places as strings."""
    from xcore.db.archive import places
    from xcore.runtime import open_runtime
    from xcore.server import prepare_database

    runtime = open_runtime(root, environ={})
    try:
        prepare_database(runtime)
        data = runtime.data.root / "plugin-data" / "bench"
        data.mkdir(parents=True)
        chance = random.Random(25)
        with (data / "blob.bin").open("wb") as out:
            for _ in range(mib):
                out.write(chance.randbytes(1 << 20))
        with closing(sqlite3.connect(data / "plugin.db")) as conn, conn:
            conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, text TEXT)")
            rows = (mib << 20) // 2 // 2000
            conn.executemany(
                "INSERT INTO rows (text) VALUES (?)", ((chance.randbytes(1000).hex(),) for _ in range(rows))
            )
        where = places(runtime.data, runtime.config, runtime.database_file or runtime.database_url)
        return {name: str(getattr(where, name)) for name in FIELDS}
    finally:
        runtime.close()


def secret_of(case: str, key: str) -> Any:
    """secret_of is the Secret a case seals or opens with (None for plain)."""
    from xcore.db.seal import Secret

    if case.endswith("passphrase"):
        return Secret.passphrase(PASSPHRASE)
    if case.endswith("key"):
        return Secret.key(key)
    return None


def run_case(case: str, job: dict[str, Any]) -> dict[str, Any]:
    """run_case runs one case in this (child) process and returns its seconds, the archive it made and the peak
    RSS."""
    from xcore.db.archive import Places, make_archive, open_archive

    work = Path(job["work"])
    secret = secret_of(case, job["key"])
    size, made = 0, ""
    if case == "tarfile gz":
        target = work / "yardstick.tar.gz"
        started = time.perf_counter()
        with tarfile.open(target, "w:gz", compresslevel=6) as tar:
            tar.add(job["root"], arcname="data")
        seconds = time.perf_counter() - started
        size, made = target.stat().st_size, str(target)
    elif case.startswith("make"):
        where = Places(**{name: Path(job["places"][name]) for name in FIELDS})
        folder = work / case.split(", ")[1]
        started = time.perf_counter()
        result = make_archive(where, folder, "bench", 1, "manual", secret)
        seconds = time.perf_counter() - started
        size, made = result.path.stat().st_size, str(result.path)
    else:
        archive = Path(job["archives"][case.replace("open", "make")])
        started = time.perf_counter()
        with archive.open("rb") as source, open_archive(source, archive.name, work / "scratch", secret):
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "size": size, "made": made, "rss": peak_rss_mb()}


def in_child(case: str, job: dict[str, Any]) -> dict[str, Any]:
    """in_child runs one case in a new interpreter and returns what it measured."""
    done = subprocess.run(
        [sys.executable, __file__, "--case", case],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"{case}: failed\n{done.stderr}", file=sys.stderr)
        raise SystemExit(1)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def bench(mib: int, rounds: int) -> None:
    """bench builds a data directory of `mib` MiB and prints the table of `rounds` rounds of every case."""
    from xcore.db.seal import Secret, key_text

    with tempfile.TemporaryDirectory(prefix="xcore-bench-backup-") as tmp:
        root = Path(tmp) / "data"
        job: dict[str, Any] = {"root": str(root), "work": tmp, "places": build(root, mib), "archives": {}}
        job["key"] = key_text(Secret.new_key().value)
        held = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        seconds: dict[str, list[float]] = {case: [] for case in CASES}
        sizes: dict[str, int] = {}
        rss: dict[str, list[float]] = {case: [] for case in CASES}
        for round_ in range(rounds):
            makes, opens = CASES[:4], CASES[4:]
            order = makes + opens if round_ % 2 == 0 else makes[::-1] + opens[::-1]
            for case in order:
                result = in_child(case, job)
                seconds[case].append(result["seconds"])
                rss[case].append(result["rss"])
                if result["made"]:
                    sizes[case] = result["size"]
                    job["archives"][case] = result["made"]
        yardstick = statistics.median(seconds["tarfile gz"])
        print(f"data directory: {held / 1e6:.1f} MB ({mib} MiB random, a {mib // 2} MiB SQLite file); {rounds} rounds")
        print(f"{'case':<20}{'p50':>9}{'÷ tarfile':>11}{'archive':>11}{'peak RSS':>11}")
        for case in CASES:
            p50 = statistics.median(seconds[case])
            size = f"{sizes[case] / 1e6:.1f} MB" if case in sizes else "-"
            print(f"{case:<20}{p50:>7.2f} s{p50 / yardstick:>10.2f}x{size:>11}{max(rss[case]):>8.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", default="100", help="MiB of random plugin data, or several: 50,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child's one case, its job as JSON on stdin
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, json.loads(sys.stdin.read()))))
        return
    for number, mib in enumerate(int(part) for part in args.mib.split(",")):
        if number:
            print()
        bench(mib, args.rounds)


if __name__ == "__main__":
    os.environ.setdefault("XCORE_LOG_LEVEL", "WARNING")
    main()
