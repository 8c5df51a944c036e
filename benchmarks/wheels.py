"""A plugin's wheels on a real `xcore serve`: install to serving with about 5 MB of wheels against the same
plugin without, and the reload when only its code changed (the library folder reused) against one that changes a
wheel (a new folder unpacked).

The wheels are made here, in a temporary folder, the same bytes every run (a fixed seed and fixed timestamps):
five pure-Python wheels (`wbench_alpha` ... `wbench_epsilon`, `py3-none-any`), each a package of generated
modules in subpackages with a valid `.dist-info` (METADATA, WHEEL, RECORD), about 6 KB of source a module, whose
made-up identifiers deflate packs about 3:1 (real code packs 3-5:1; a bundle may not pass 100:1); with the real
`humanize` and `mmh3` (an extension module) wheels of `.venv/test-wheels` when they are there (`python3 tasks.py
test` downloads them) and fit this Python. Together their .whl files hold `--size-mb` MiB. Each bundle is packed
with `xcore.plugins.pack.pack_folder`, which writes `wheels/lock.json`, as `xcore plugin pack --wheels` would.

The server runs with one worker on a fresh data dir, unpinned (as reload.py), with every `/app/*` route public.
Its plugins folder holds two plugins from the start: `wbreload`, whose bundle carries the wheels and a tiny one
more (`wbench_bump`), and `plainreload`, the same code without wheels or requirements. Each route answers its
version; the routes of plugins with wheels import every package first and answer `wbench_bump.__version__` too,
so an answer says which wheels serve it. Every zip goes in the way an installer would put it: copied under a
hidden name into the plugins folder, then renamed to `<id>.zip` (atomic); a time runs from the rename until the
route answers 200 with the new version, polled every 5 ms on a keep-alive connection. The script measures, in
this order:

- install to serving, `--rounds` times each, the two kinds in turns (the first alternates): a new plugin
  `wheels<N>` with the wheels (a library folder of its own is unpacked, `<id>-libs-<key of the wheels' hashes>`),
  and `plain<N>` without; p50, max, and the median of the rounds' own ratios (with ÷ without);
- reload, `--rounds` times each, the three kinds in turns (the first rotates), each a new version: `plainreload`
  (no wheels; the baseline); `wbreload` with only run.py changed (code only: its library folder must be reused);
  `wbreload` with a new `wbench_bump` wheel (another key: every wheel is unpacked again into a new folder). Before
  and after each `wbreload` reload the script reads every `wbreload-libs-*` folder of `<data>/cache/plugins`,
  with its inode and its `xcore-libraries.json`'s inode and mtime (the marker written once, last, into a new
  folder): a code-only reload is `reused` when no folder was added and no marker written again; a wheel change
  must add exactly one folder;
- in this process, with no server, `--rounds` times: what the host does with the bundle before it imports it,
  step by step: `inspect_bundle` (it hashes the zip, and each wheel against the lock), `plan` (each wheel's
  METADATA, which the host caches by sha256 after the first version), `install_libraries` (each wheel read out of
  the zip, hashed, checked and unpacked into a fresh cache) and `extract_bundle` (the code); against
  `inspect_bundle` and `extract_bundle` of the bundle without wheels. For scale, the parts of
  `install_libraries` are timed apart too (reading the wheels out of the zip, hashing them, inflating every
  entry without writing it); what is left of it is the checks and the files and folders written.

    python benchmarks/wheels.py [--rounds 10] [--size-mb 5]

Target (issue 24): a code-only reload reuses the library folder (no wheel unpacked again). The exit code is 1 when
one did not, when a wheel change did not unpack into a new folder, or when the server failed (its stderr's tail is
printed); 0 otherwise. The times are reported, not held to a target: read the ratios, measured side by side in one
run.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar

from machine import cpu_model, describe, yardsticks
from sandbox import Connection, bench, wait_for

from xcore import __version__ as HOST_VERSION
from xcore.plugins.bundle import extract_bundle, inspect_bundle
from xcore.plugins.lock import parse_wheel_name
from xcore.plugins.pack import pack_folder
from xcore.plugins.requirements import bundle_wheels, plan
from xcore.plugins.wheels import LIBRARIES_MARKER, WheelRef, install_libraries, interpreter_tags

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
TEST_WHEELS = ROOT / ".venv" / "test-wheels"
REAL_WHEELS = (  # (file name, its module), used when present and fitting this Python
    ("humanize-4.10.0-py3-none-any.whl", "humanize"),
    (
        "mmh3-4.1.0-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "mmh3",
    ),
)
PACKAGES = ("wbench_alpha", "wbench_beta", "wbench_gamma", "wbench_delta", "wbench_epsilon")
BUMP = "wbench_bump"  # the small wheel a "wheels changed" reload gives a new version
SEED = 24  # issue 24
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MODULES_PER_SUBPACKAGE = 40
ONSETS = (*"bcdfghjklmnprstvwz", "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr")  # of syllables
WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: xcore-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
CACHE = Path("cache") / "plugins"  # under the data dir (xcore.plugins.leftovers.CACHE_FOLDER)
RELOAD_ID, PLAIN_RELOAD_ID = "wbreload", "plainreload"
INSTALL_KINDS = ("plain", "wheels")
RELOAD_KINDS = ("plain", "code", "wheels")
RELOAD_GAP = 0.2  # seconds between two drops: the previous version retires meanwhile
PLAIN_RUN = (
    'from xcore.sdk import get\n\nVERSION = "{version}"\n\n\n'
    '@get("/")\nasync def which() -> dict[str, str]:\n    return {{"version": VERSION}}\n\n\n'
    "router = [which]\n"
)
WHEELS_RUN = (
    "{imports}\n\nfrom xcore.sdk import get\n\n"
    'VERSION = "{version}"\nREADY = {check}\n\n\n'
    '@get("/")\nasync def which() -> dict[str, str]:\n'
    '    return {{"version": VERSION, "bump": {bump}, "ready": READY}}\n\n\n'
    "router = [which]\n"
)


# --- the wheels -------------------------------------------------------------------------------------------------


class WheelSet(NamedTuple):
    """WheelSet is the wheels every bundle with wheels carries, and what the plugin's code imports of them."""

    paths: list[Path]
    requirements: list[str]
    modules: list[str]
    files: int  # entries of all the wheels
    unpacked: int  # bytes, uncompressed


def vocabulary(rng: random.Random, size: int = 300) -> list[str]:
    """vocabulary is `size` pronounceable made-up words: identifiers that repeat as much as a real code base's."""
    vowels = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou")
    words: set[str] = set()
    while len(words) < size:
        stem = "".join(rng.choice(ONSETS) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
        words.add(stem + rng.choice(("", "n", "r", "s", "t", "x")))
    return sorted(words)


def module_source(rng: random.Random, words: list[str]) -> str:
    """module_source is one module of plausible Python: constants, functions with a docstring and some arithmetic,
    string handling and branches, a dataclass; about 10 KB."""

    def name(parts: int = 2) -> str:
        return "_".join(rng.choice(words) for _ in range(parts))

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize()

    lines = [f'"""{sentence()}.', "", f"{sentence()}.", '"""', "", "from __future__ import annotations", ""]
    lines += ["import math", "from dataclasses import dataclass, field", ""]
    constants = [name().upper() for _ in range(rng.randint(3, 6))]
    lines += [f"{c} = {rng.randint(0, 10 ** rng.randint(2, 9))}" for c in constants]
    for _ in range(rng.randint(10, 16)):
        lines += ["", ""]
        if rng.random() < 0.2:
            fields = [name(1) for _ in range(rng.randint(2, 5))]
            lines += ["@dataclass", f"class {''.join(w.capitalize() for w in name(2).split('_'))}:"]
            lines += [f'    """{sentence()}."""', ""]
            lines += [f"    {f}: int = {rng.randint(0, 999)}" for f in dict.fromkeys(fields)]
            lines += [f"    {name(1)}s: list[str] = field(default_factory=list)", ""]
            lines += [f"    def {name()}(self) -> int:", f"        return self.{fields[0]} * {rng.randint(2, 97)}"]
            continue
        args = list(dict.fromkeys(name(1) for _ in range(rng.randint(1, 4))))
        signature = ", ".join(f"{a}: int" for a in args)
        lines += [f"def {name()}({signature}, label: str = {rng.choice(words)!r}) -> int:"]
        lines += [f'    """{sentence()}.', "", f"    {sentence()}.", '    """']
        lines += [f"    total = {' + '.join(f'{a} * {rng.randint(2, 999)}' for a in args)}"]
        for _ in range(rng.randint(2, 6)):
            match rng.randint(0, 3):
                case 0:
                    lines += [f"    if total > {rng.choice(constants)}:", f"        total -= {rng.randint(1, 9999)}"]
                case 1:
                    lines += [f"    for step in range({rng.randint(2, 40)}):", f"        total += step ^ {args[-1]}"]
                case 2:
                    lines += [f"    label = label.replace({rng.choice(words)!r}, {rng.choice(words)!r})"]
                case _:
                    lines += [f"    total += int(math.sqrt(abs(total)) * {rng.randint(2, 99)}) % {rng.randint(3, 999)}"]
        lines += ["    return total + len(label)"]
    return "\n".join(lines) + "\n"


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def central_directory(records: list[str]) -> int:
    """central_directory is about what the zip grows by once these entries are written: its directory, and the
    RECORD listing them (whose hashes do not compress), written when it closes."""
    return sum(46 + 45 + len(record.split(",", 1)[0]) for record in records)


def build_wheel(folder: Path, package: str, version: str, size: int, rng: random.Random) -> Path:
    """build_wheel writes `<package>-<version>-py3-none-any.whl` into `folder`: a package of generated modules
    until the file holds about `size` bytes, with METADATA, WHEEL and RECORD; returns its path."""
    words = vocabulary(rng)
    buffer = io.BytesIO()
    records: list[str] = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(path: str, data: bytes) -> None:
            info = zipfile.ZipInfo(path, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
            records.append(record_line(path, data))

        add(f"{package}/__init__.py", f'"""{package}."""\n\n__version__ = "{version}"\n'.encode())
        add(f"{package}/__main__.py", f"from {package}.part00 import module000\n\nprint(module000)\n".encode())
        n = 0
        while n == 0 or buffer.tell() + central_directory(records) < size:
            part = f"{package}/part{n // MODULES_PER_SUBPACKAGE:02d}"
            if n % MODULES_PER_SUBPACKAGE == 0:
                add(f"{part}/__init__.py", f'"""{part}."""\n'.encode())
            add(f"{part}/module{n % MODULES_PER_SUBPACKAGE:03d}.py", module_source(rng, words).encode())
            n += 1
        info_dir = f"{package}-{version}.dist-info"
        metadata = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\nSummary: xcore benchmark wheel\n"
        add(f"{info_dir}/METADATA", metadata.encode())
        add(
            f"{info_dir}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: xcore-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        info = zipfile.ZipInfo(f"{info_dir}/RECORD", date_time=FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        archive.writestr(info, "\n".join([*records, f"{info_dir}/RECORD,,"]) + "\n")
    path = folder / f"{package}-{version}-py3-none-any.whl"
    path.write_bytes(buffer.getvalue())
    return path


def bump_wheel(folder: Path, version: str) -> Path:
    """bump_wheel is the small wheel whose version a "wheels changed" reload raises (a few KB)."""
    folder.mkdir(parents=True, exist_ok=True)
    return build_wheel(folder, BUMP, version, 1, random.Random(f"{SEED}-{version}"))


def real_wheels() -> list[tuple[Path, str]]:
    """real_wheels are those of REAL_WHEELS in .venv/test-wheels that this Python takes, with their module."""
    ours = set(interpreter_tags())
    found = []
    for file, module in REAL_WHEELS:
        path = TEST_WHEELS / file
        if path.is_file() and parse_wheel_name(file)[2] & ours:
            found.append((path, module))
    return found


def make_wheels(folder: Path, size_mb: float) -> WheelSet:
    """make_wheels writes the wheels into `folder`: the real ones that fit, then the generated ones for the rest of
    `size_mb` MiB, shared equally."""
    folder.mkdir(parents=True)
    real = real_wheels()
    paths = [path for path, _ in real]
    rest = max(0, int(size_mb * 1024 * 1024) - sum(p.stat().st_size for p in paths))
    for n, package in enumerate(PACKAGES):
        paths.append(build_wheel(folder, package, "1.0.0", rest // len(PACKAGES), random.Random(SEED + n)))
    files = unpacked = 0
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            files += len(infos)
            unpacked += sum(i.file_size for i in infos)
    requirements = [parse_wheel_name(p.name)[0] for p in paths]
    return WheelSet(paths, requirements, [module for _, module in real] + list(PACKAGES), files, unpacked)


# --- the bundles ------------------------------------------------------------------------------------------------


def run_py(version: str, modules: list[str], bump: bool) -> str:
    """run_py is the plugin's entry module: it answers its version; with `modules`, it imports them first, calls
    the real wheels' code (an extension module's too) and answers the bump wheel's version."""
    if not modules:
        return PLAIN_RUN.format(version=version)
    imports = "\n".join(f"import {m}" for m in [*modules, *([BUMP] if bump else [])])
    checks = [f"{m}.__version__" for m in modules if m.startswith("wbench_")]
    if "humanize" in modules:
        checks.append("humanize.naturalsize(5 * 1024 * 1024, binary=True)")
    if "mmh3" in modules:
        checks.append("str(mmh3.hash('xcore'))")
    bump_value = f"{BUMP}.__version__" if bump else '""'
    return WHEELS_RUN.format(imports=imports, version=version, check=" + ' ' + ".join(checks), bump=bump_value)


def pack(tmp: Path, plugin_id: str, version: str, wheels: WheelSet | None, bump: Path | None = None) -> Path:
    """pack makes the bundle of `plugin_id` at `version` with `pack_folder`, as `xcore plugin pack` does (the
    wheels, and `bump`, into wheels/ with wheels/lock.json); returns the zip, in `<tmp>/staging`."""
    folder = tmp / "sources" / f"{plugin_id}-{version}"
    folder.mkdir(parents=True)
    manifest: dict[str, object] = {"id": plugin_id, "version": version}
    carried: list[Path] = []
    if wheels is not None:
        carried = [*wheels.paths, *([bump] if bump else [])]
        manifest["requirements"] = [*wheels.requirements, *([BUMP] if bump else [])]
    (folder / "plugin.json").write_text(json.dumps(manifest))
    modules = wheels.modules if wheels is not None else []
    (folder / "run.py").write_text(run_py(version, modules, bump is not None))
    zipped = pack_folder(folder, tmp / "staging", HOST_VERSION, wheels=carried)
    shutil.rmtree(folder)
    return zipped


def put(bundle: Path, plugins: Path, plugin_id: str) -> float:
    """put copies `bundle` under a hidden name into the plugins folder (the watcher ignores it), then renames it to
    `<id>.zip`, atomically, as an installer would; returns the moment of the rename."""
    hidden = plugins / f".{plugin_id}.zip.tmp"
    shutil.copyfile(bundle, hidden)
    os.rename(hidden, plugins / f"{plugin_id}.zip")
    return time.perf_counter()


def expected(version: str, bump: str | None = None) -> bytes:
    """expected is what the route's answer holds once that version serves."""
    answer = f'"version":"{version}"' + (f',"bump":"{bump}"' if bump is not None else "")
    return answer.encode()


# --- the server ---------------------------------------------------------------------------------------------------


class Server(NamedTuple):
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    data: Path

    @property
    def plugins(self) -> Path:
        return self.data / "plugins"


@contextmanager
def serving(tmp: Path, first: dict[str, Path]) -> Iterator[Server]:
    """serving starts `xcore serve` (one worker) with the bundles of `first` (by id) installed, waits until each
    route answers, yields it, and stops it afterwards."""
    data = tmp / "data"
    plugins = data / "plugins"
    plugins.mkdir(parents=True)
    for plugin_id, zipped in first.items():
        shutil.copyfile(zipped, plugins / f"{plugin_id}.zip")
    port = bench.free_port()
    env = {**os.environ, "XCORE_XCORE__MIDDLEWARE__ACCESS_RULES": json.dumps({"/app/*": {"public": True}})}
    env["XCORE_XCORE__LOGS__CONSOLE"] = "false"
    with open(tmp / "server.stderr", "w+b") as log:
        proc = bench.spawn(bench.server_command("xcore", port, data), env, log)
        try:
            for path in ("/health", *(f"/app/{plugin_id}" for plugin_id in first)):
                bench.wait_ready("xcore", proc, port, path, log)
            yield Server(port, proc, log, data)
        finally:
            bench.stop(proc)


def check_alive(server: Server) -> None:
    if server.proc.poll() is not None:
        raise bench.BenchError(f"xcore died mid-run (code {server.proc.returncode}): {bench.stderr_tail(server.log)}")


Folders = dict[str, tuple[int, int, int]]  # library folder name -> (its inode, its marker's inode and mtime_ns)


def library_folders(server: Server, plugin_id: str) -> Folders:
    """library_folders are the complete library folders of `plugin_id` in the cache, each with its inode and its
    marker's inode and mtime (the marker is written once, last, into a new folder)."""
    found: Folders = {}
    for folder in (server.data / CACHE).glob(f"{plugin_id}-libs-*"):
        try:
            marker = (folder / LIBRARIES_MARKER).stat()
            found[folder.name] = (folder.stat().st_ino, marker.st_ino, marker.st_mtime_ns)
        except FileNotFoundError:
            continue  # being unpacked, or collected
    return found


def in_turns(kinds: tuple[str, ...], n: int) -> list[str]:
    """in_turns is the order of `kinds` in turn `n`: the first rotates."""
    return list(kinds[n % len(kinds) :] + kinds[: n % len(kinds)])


def installs(server: Server, tmp: Path, wheels: WheelSet, rounds: int) -> tuple[dict[str, list[float]], int]:
    """installs are the seconds from a new plugin's zip renamed into place until its route answers, per kind, and
    how many of the installs with wheels got a library folder of their own."""
    connection = Connection(server.port)
    found: dict[str, list[float]] = {kind: [] for kind in INSTALL_KINDS}
    folders = 0
    for n in range(1, rounds + 1):
        for kind in in_turns(INSTALL_KINDS, n):
            plugin_id = f"{kind}{n}"
            zipped = pack(tmp, plugin_id, "1.0.0", wheels if kind == "wheels" else None)
            time.sleep(RELOAD_GAP)
            since = put(zipped, server.plugins, plugin_id)
            answer = expected("1.0.0", "" if kind == "wheels" else None)
            found[kind].append(wait_for(connection, f"/app/{plugin_id}", answer, since))
            check_alive(server)
            folders += kind == "wheels" and len(library_folders(server, plugin_id)) == 1
    connection.close()
    return found, folders


class Reloads(NamedTuple):
    seconds: dict[str, list[float]]
    reused: list[bool]  # per code-only reload: no folder added, no marker written again
    unpacked: list[bool]  # per wheels-changed reload: exactly one folder added


def reloads(server: Server, tmp: Path, wheels: WheelSet, rounds: int) -> Reloads:
    """reloads time each kind of reload `rounds` times, in turns; see the module's docstring."""
    connection = Connection(server.port)
    found = Reloads({kind: [] for kind in RELOAD_KINDS}, [], [])
    bump_version, k = "1.0.0", 0
    bump = tmp / "wheels" / f"{BUMP}-{bump_version}-py3-none-any.whl"
    for n in range(1, rounds + 1):
        for kind in in_turns(RELOAD_KINDS, n):
            k += 1
            version = f"1.{k}.0"
            if kind == "plain":
                plugin_id, answer = PLAIN_RELOAD_ID, expected(version)
                zipped = pack(tmp, plugin_id, version, None)
            else:
                if kind == "wheels":
                    bump_version = f"1.0.{k}"
                    bump = bump_wheel(tmp / "bumps", bump_version)
                plugin_id, answer = RELOAD_ID, expected(version, bump_version)
                zipped = pack(tmp, plugin_id, version, wheels, bump)
            time.sleep(RELOAD_GAP)
            before = library_folders(server, RELOAD_ID)
            since = put(zipped, server.plugins, plugin_id)
            found.seconds[kind].append(wait_for(connection, f"/app/{plugin_id}", answer, since))
            check_alive(server)
            after = library_folders(server, RELOAD_ID)
            added = set(after) - set(before)
            if kind == "code":
                rewritten = [name for name in after if name in before and after[name] != before[name]]
                found.reused.append(not added and not rewritten)
            elif kind == "wheels":
                found.unpacked.append(len(added) == 1)
    connection.close()
    return found


# --- in this process ------------------------------------------------------------------------------------------------


def timed(step: Callable[..., T], *args: Any) -> tuple[T, float]:
    """timed is what `step(*args)` returns, and the seconds it took."""
    start = time.perf_counter()
    result = step(*args)
    return result, time.perf_counter() - start


def read_all(refs: list[WheelRef]) -> dict[str, bytes]:
    return {ref.file: ref.read() for ref in refs}


def hash_all(data: dict[str, bytes]) -> list[bytes]:
    return [hashlib.sha256(raw).digest() for raw in data.values()]


def inflate_all(data: dict[str, bytes]) -> int:
    """inflate_all reads every entry of the wheels `data` (inflated, CRC checked), writing nothing; the bytes."""
    total = 0
    for raw in data.values():
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            total += sum(len(archive.read(info)) for info in archive.infolist())
    return total


def contents(data: dict[str, bytes]) -> dict[str, bytes]:
    """contents are the files the wheels `data` hold, inflated, by path."""
    found = {}
    for raw in data.values():
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            found.update({i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()})
    return found


def write_files(files: dict[str, bytes], target: Path) -> None:
    """write_files writes `files` under `target` the plainest way: each file's folder made, the file written."""
    for relative, data in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            out.write(data)


INSPECT, PLAN, INSTALL = "inspect_bundle", "plan", "install_libraries"
READ, HASH, INFLATE, REST, WRITE = "read", "sha256", "inflate", "rest", "write"
EXTRACT, PLAIN_INSPECT, PLAIN_EXTRACT = "extract_bundle", "plain inspect_bundle", "plain extract_bundle"


def steps(tmp: Path, wheels: WheelSet, rounds: int) -> dict[str, list[float]]:
    """steps time, in this process, what the host does with a bundle before importing it (see the docstring), and
    apart, for scale, the parts of install_libraries (reading the wheels out of the zip, hashing them, inflating
    their entries; what is left is the checks and the files and folders written) and the same files written by
    plain Python."""
    with_wheels = pack(tmp, "stepwheels", "1.0.0", wheels)
    without = pack(tmp, "stepplain", "1.0.0", None)
    found: dict[str, list[float]] = {}

    def note(label: str, seconds: float) -> None:
        found.setdefault(label, []).append(seconds)

    for n in range(rounds):
        cache = tmp / f"steps-cache-{n}"
        checked, seconds = timed(inspect_bundle, with_wheels, HOST_VERSION)
        note(INSPECT, seconds)
        refs = bundle_wheels(checked)
        answer, seconds = timed(plan, checked.manifest.requirements, refs)
        note(PLAN, seconds)
        if answer.problem():
            raise bench.BenchError(f"the bench bundle's requirements: {answer.problem()}")
        data, seconds = timed(read_all, refs)
        note(READ, seconds)
        note(HASH, timed(hash_all, data)[1])
        note(INFLATE, timed(inflate_all, data)[1])
        note(INSTALL, timed(install_libraries, cache, checked.manifest.id, answer.wheels, answer.data)[1])
        note(REST, found[INSTALL][-1] - found[READ][-1] - found[HASH][-1] - found[INFLATE][-1])
        note(EXTRACT, timed(extract_bundle, checked, cache)[1])
        note(WRITE, timed(write_files, contents(data), tmp / f"steps-files-{n}")[1])
        shutil.rmtree(tmp / f"steps-files-{n}")
        plain, seconds = timed(inspect_bundle, without, HOST_VERSION)
        note(PLAIN_INSPECT, seconds)
        note(PLAIN_EXTRACT, timed(extract_bundle, plain, cache)[1])
        shutil.rmtree(cache)
    return found


# --- the report -----------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def ratio(values: list[float], base: list[float]) -> str:
    """ratio is the median of the rounds' own ratios `values` ÷ `base`."""
    return f"{statistics.median(v / b for v, b in zip(values, base, strict=True)):.2f}x"


def count(flags: list[bool], word: str) -> str:
    return f"{'yes' if all(flags) else 'NO'} ({sum(flags)}/{len(flags)} {word})"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())


def timing_rows(installed: dict[str, list[float]], folders: int, reloaded: Reloads, size: str) -> list[tuple[str, ...]]:
    plain, code, changed = (reloaded.seconds[kind] for kind in RELOAD_KINDS)
    rounds = len(installed["wheels"])
    return [
        ("install to serving, without wheels", *spread(installed["plain"]), "1.00x", ""),
        (
            f"install to serving, {size} of wheels",
            *spread(installed["wheels"]),
            ratio(installed["wheels"], installed["plain"]),
            f"unpacked: {folders}/{rounds} new folders",
        ),
        ("reload, without wheels", *spread(plain), "1.00x", ""),
        (
            "reload, code only (same wheels)",
            *spread(code),
            ratio(code, plain),
            f"reused: {count(reloaded.reused, 'reused')}",
        ),
        (
            "reload, one wheel changed (new key)",
            *spread(changed),
            ratio(changed, plain),
            f"unpacked: {count(reloaded.unpacked, 'new folders')}",
        ),
    ]


def spread(values: list[float]) -> tuple[str, str]:
    return ms(statistics.median(values)), ms(max(values))


def step_rows(found: dict[str, list[float]], wheels: WheelSet) -> list[tuple[str, ...]]:
    def total(labels: tuple[str, ...]) -> list[float]:
        return [sum(found[label][n] for label in labels) for n in range(len(found[labels[0]]))]

    return [
        ("with wheels: inspect_bundle (the zip, and each wheel against the lock, hashed)", *spread(found[INSPECT])),
        ("with wheels: plan (each wheel's METADATA, cached by sha256 after the first)", *spread(found[PLAN])),
        ("with wheels: install_libraries (read, hash, check and unpack each wheel)", *spread(found[INSTALL])),
        ("  of it, apart: each wheel read out of the bundle's zip", *spread(found[READ])),
        ("  of it, apart: sha256 of the wheels", *spread(found[HASH])),
        (f"  of it, apart: {wheels.files:,} entries inflated (zlib, CRC), none written", *spread(found[INFLATE])),
        ("  of it, the rest: entries checked, files and folders written", *spread(found[REST])),
        ("  for scale: the same files written by plain Python, no zip, no check", *spread(found[WRITE])),
        ("with wheels: extract_bundle (the code; the zip read and hashed again)", *spread(found[EXTRACT])),
        ("with wheels: in all", *spread(total((INSPECT, PLAN, INSTALL, EXTRACT)))),
        ("without: inspect_bundle", *spread(found[PLAIN_INSPECT])),
        ("without: extract_bundle", *spread(found[PLAIN_EXTRACT])),
        ("without: in all", *spread(total((PLAIN_INSPECT, PLAIN_EXTRACT)))),
    ]


def server_errors(log: IO[bytes], limit: int = 5) -> list[str]:
    """server_errors are the last lines of the server's stderr that read as errors or tracebacks."""
    log.flush()
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    marks = ("error", "traceback", "exception", "critical")
    return [line[:200] for line in lines if any(mark in line.lower() for mark in marks)][-limit:]


def revision() -> str:
    """revision is the checkout's commit, and the files of app/ changed since (the server runs them)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "app"], cwd=ROOT, capture_output=True, text=True)
    files = [line[3:] for line in changed.stdout.splitlines()]
    return head.stdout.strip() + (f" with uncommitted changes to {', '.join(files)}" if files else "")


def describe_wheels(wheels: WheelSet) -> str:
    size = sum(p.stat().st_size for p in wheels.paths)
    names = ", ".join(f"{p.name} ({p.stat().st_size / 1024:,.0f} KB)" for p in wheels.paths)
    return (
        f"{len(wheels.paths)} wheels, {size / 2**20:.2f} MiB as .whl files, {wheels.unpacked / 2**20:.1f} MiB in "
        f"{wheels.files:,} entries unpacked (ratio {wheels.unpacked / size:.1f}:1): {names}"
    )


def run(args: argparse.Namespace, tmp: Path) -> tuple[int, list[str]]:
    """run makes the wheels, starts the server, measures everything and prints the tables; returns the exit code
    and the server's error lines."""
    start = time.perf_counter()
    wheels = make_wheels(tmp / "wheels", args.size_mb)
    made = time.perf_counter() - start
    print(f"wheels: {describe_wheels(wheels)}; made in {made:.1f} s")
    first_bump = bump_wheel(tmp / "wheels", "1.0.0")
    first = {
        RELOAD_ID: pack(tmp, RELOAD_ID, "1.0.0", wheels, first_bump),
        PLAIN_RELOAD_ID: pack(tmp, PLAIN_RELOAD_ID, "1.0.0", None),
    }
    with serving(tmp, first) as server:
        print(f"install: {args.rounds} plugins per kind", file=sys.stderr)
        installed, folders = installs(server, tmp, wheels, args.rounds)
        print(f"reload: {args.rounds} reloads per kind", file=sys.stderr)
        reloaded = reloads(server, tmp, wheels, args.rounds)
        errors = server_errors(server.log)
    print(f"in process: {args.rounds} rounds", file=sys.stderr)
    found = steps(tmp, wheels, args.rounds)
    size = f"{sum(p.stat().st_size for p in wheels.paths) / 2**20:.1f} MiB"
    print()
    print(f"Against a real server, {args.rounds} rounds (ratio: the median of the rounds' own ratios):")
    print()
    print_table(
        ("measure", "p50", "max", "÷ without wheels", "library folder"),
        timing_rows(installed, folders, reloaded, size),
    )
    print()
    print(f"In this process, no server: the steps before the import, {args.rounds} rounds:")
    print()
    print_table(("step", "p50", "max"), step_rows(found, wheels))
    print()
    print(
        "rounds, ms: "
        + "; ".join(
            f"{label} {' '.join(f'{s * 1e3:.0f}' for s in values)}"
            for label, values in [
                *((f"install {kind}", installed[kind]) for kind in INSTALL_KINDS),
                *((f"reload {kind}", reloaded.seconds[kind]) for kind in RELOAD_KINDS),
            ]
        )
    )
    for line in errors:
        print(f"server stderr, error line: {line}")
    return (0 if all(reloaded.reused) and all(reloaded.unpacked) else 1), errors


def machine_now() -> str:
    """machine_now is the yardsticks and the load average: other work on a shared machine slows the unpacking
    (CPU and disk) more than a plugin without wheels."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{describe(yardsticks())}; load average {load} ({os.cpu_count()} CPUs)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="installs and reloads per kind (default 10)")
    parser.add_argument("--size-mb", type=float, default=5.0, help="MiB of .whl files in a bundle (default 5)")
    args = parser.parse_args()
    if args.rounds < 1 or args.size_mb <= 0:
        parser.error("--rounds and --size-mb must be positive")
    return args


def main() -> int:
    args = parse_args()
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"revision: {revision()}")
    print(f"cpu: {cpu_model()}")
    print(f"versions: {bench.versions()}")
    print(f"machine speed before: {machine_now()}")
    with tempfile.TemporaryDirectory(prefix="xcore-wheels-") as tmp:
        try:
            code, _ = run(args, Path(tmp))
        except bench.BenchError as exc:
            print(f"FAILED: {exc}")
            return 1
    print(f"machine speed after: {machine_now()}")
    if code:
        print("FAILED: a code-only reload unpacked the wheels again, or a wheel change did not")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted")
