"""xcore.plugins.confine: a child Python process confines itself as a plugin's worker does, then tries what a plugin
might. Each test checks what is refused and what still works; where it can, it also checks that the same attempt
succeeded in the same child before `confine`, so a refusal is the confinement's doing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from xcore.plugins.confine import available, scrubbed_environment

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"

# The child: `probe` (the test's code) runs before `confine` when asked, then after it; each attempt inside it is
# "ok" or the name of the exception it raised. The result is the last line printed.
CHILD = """
import json, os, sys, sysconfig
from pathlib import Path
from xcore.plugins.confine import Limits, confine

def attempt(action):
    try:
        action()
    except BaseException as exc:
        return type(exc).__name__
    return "ok"

setup = json.loads(sys.argv[1])
values = setup["values"]
paths = sysconfig.get_paths()
runtime = [sys.prefix, sys.base_prefix, *(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))]
read_only = [Path(p) for p in [*runtime, setup["app"], *setup["read_only"]]]
read_write = [Path(p) for p in setup["read_write"]]
exec(setup["probe"])
before = probe() if setup["before"] else None
confinement = confine(read_only, read_write, Limits(**setup["limits"]))
after = probe()
print(json.dumps({"before": before, "after": after, "layers": confinement.layers}))
"""


def run_confined(
    probe: str,
    *,
    read_only: Sequence[Path] = (),
    read_write: Sequence[Path] = (),
    limits: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    before: bool = True,
) -> dict[str, Any]:
    """run_confined runs `probe` (the source of a function `probe() -> dict`) in a child that confines itself, and
    returns the child's {"before", "after", "layers"}."""
    setup = {
        "app": str(APP),
        "read_only": [str(p) for p in read_only],
        "read_write": [str(p) for p in read_write],
        "limits": limits or {},
        "values": values or {},
        "probe": textwrap.dedent(probe),
        "before": before,
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(APP), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(setup)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert [name for name, state in result["layers"].items() if not state.startswith("active")] == []
    return result


def landlock_abi() -> int:
    """landlock_abi is this machine's Landlock ABI version, 0 without Landlock."""
    state = available().layers["landlock-fs"]
    return int(state.removeprefix("active (ABI ").rstrip(")")) if state.startswith("active") else 0


needs_scopes = pytest.mark.skipif(landlock_abi() < 6, reason="Landlock scopes need ABI 6")


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    """tcp_listener is the port of a TCP socket listening on 127.0.0.1 in the test's process."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_reads_only_the_allowed_paths(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "plugin", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "code.py").write_text("inside")
    (outside / "secret.txt").write_text("secret")
    probe = """
    def probe():
        return {
            "inside": Path(values["allowed"], "code.py").read_text(),
            "outside": attempt(lambda: Path(values["outside"], "secret.txt").read_text()),
            "list outside": attempt(lambda: os.listdir(values["outside"])),
            "passwd": attempt(lambda: open("/etc/passwd").read()),
            "list /dev": attempt(lambda: os.listdir("/dev")),
        }
    """
    result = run_confined(probe, read_only=[allowed], values={"allowed": str(allowed), "outside": str(outside)})
    others = ["outside", "list outside", "passwd", "list /dev"]
    assert result["before"] == {"inside": "inside", **dict.fromkeys(others, "ok")}
    assert result["after"] == {
        "inside": "inside",
        "outside": "PermissionError",
        "list outside": "PermissionError",
        "passwd": "PermissionError",
        "list /dev": "PermissionError",
    }


def test_read_only_paths_cannot_be_changed(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    (plugin / "sub").mkdir(parents=True)
    (plugin / "code.py").write_text("original")
    (plugin / "module.py").write_text("single file rule")
    probe = """
    def probe():
        folder = Path(values["plugin"])
        return {
            "append": attempt(lambda: open(folder / "code.py", "a").write("x")),
            "truncate": attempt(lambda: os.truncate(folder / "code.py", 0)),
            "create": attempt(lambda: (folder / "new.py").write_text("x")),
            "delete": attempt(lambda: (folder / "code.py").unlink()),
            "rename": attempt(lambda: (folder / "code.py").rename(folder / "sub" / "moved.py")),
            "mkdir": attempt(lambda: (folder / "newdir").mkdir()),
            "rmdir": attempt(lambda: (folder / "sub").rmdir()),
            "file rule read": (folder / "module.py").read_text(),
            "file rule write": attempt(lambda: open(folder / "module.py", "a").write("x")),
        }
    """
    # The directory and, separately, one of its files: a rule on a regular file gets the file rights only.
    result = run_confined(probe, read_only=[plugin, plugin / "module.py"], values={"plugin": str(plugin)}, before=False)
    denied = ["append", "truncate", "create", "delete", "rename", "mkdir", "rmdir", "file rule write"]
    assert result["after"] == {**dict.fromkeys(denied, "PermissionError"), "file rule read": "single file rule"}
    assert (plugin / "code.py").read_text() == "original"
    assert sorted(p.name for p in plugin.iterdir()) == ["code.py", "module.py", "sub"]


def test_read_write_paths_can_be_changed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "old.txt").write_text("old")
    probe = """
    def probe():
        folder = Path(values["data"])
        steps = {
            "read": lambda: (folder / "old.txt").read_text(),
            "create": lambda: (folder / "new.txt").write_text("new"),
            "append": lambda: open(folder / "new.txt", "a").write("er"),
            "mkdir": lambda: (folder / "sub").mkdir(),
            "rename": lambda: (folder / "new.txt").rename(folder / "sub" / "newer.txt"),
            "truncate": lambda: os.truncate(folder / "old.txt", 1),
            "delete": lambda: (folder / "old.txt").unlink(),
            "symlink": lambda: (folder / "link").symlink_to("sub/newer.txt"),
            "rmdir": lambda: (folder / "empty").mkdir() or (folder / "empty").rmdir(),
        }
        return {name: attempt(step) for name, step in steps.items()}
    """
    result = run_confined(probe, read_write=[data], values={"data": str(data)}, before=False)
    assert set(result["after"].values()) == {"ok"}, result["after"]
    assert (data / "sub" / "newer.txt").read_text() == "newer"
    assert sorted(p.name for p in data.iterdir()) == ["link", "sub"]


def test_devices_that_are_harmless_stay_usable() -> None:
    probe = """
    def probe():
        return {
            "null": attempt(lambda: open("/dev/null", "w").write("x")),
            "urandom": attempt(lambda: open("/dev/urandom", "rb").read(16)),
            "zero": attempt(lambda: open("/dev/zero", "rb").read(16)),
            "random bytes": len(os.urandom(16)),
        }
    """
    result = run_confined(probe)
    assert result["after"] == result["before"] == {"null": "ok", "urandom": "ok", "zero": "ok", "random bytes": 16}


@needs_scopes
def test_other_processes_are_out_of_reach() -> None:
    probe = """
    def probe():
        host = os.getppid()
        return {
            "environ": attempt(lambda: open(f"/proc/{host}/environ", "rb").read()),
            "signal": attempt(lambda: os.kill(host, 0)),
        }
    """
    result = run_confined(probe)
    assert result["before"] == {"environ": "ok", "signal": "ok"}
    assert result["after"] == {"environ": "PermissionError", "signal": "PermissionError"}


@needs_scopes
def test_abstract_unix_sockets_outside_are_out_of_reach() -> None:
    name = f"\0xcore-confine-test-{uuid.uuid4().hex}"
    probe = """
    import socket

    def probe():
        def connect():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(values["name"])

        return {"connect": attempt(connect), "pair": attempt(lambda: [s.close() for s in socket.socketpair()])}
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)
        result = run_confined(probe, values={"name": name})
    assert result["before"] == {"connect": "ok", "pair": "ok"}
    assert result["after"] == {"connect": "PermissionError", "pair": "ok"}


NETWORK_PROBE = """
import socket

# Sockets made before confine (seccomp only sees socket() itself): Landlock alone decides their connect and bind.
premade = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(4)]

def probe():
    def udp():
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()

    def raw():
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()

    def bind():
        with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as server:
            server.bind(("::1" if socket.has_ipv6 else "127.0.0.1", 0))

    address = ("127.0.0.1", values["port"])
    return {
        "connect": attempt(lambda: socket.create_connection(address, timeout=5).close()),
        "bind": attempt(bind),
        "udp": attempt(udp),
        "raw": attempt(raw),
        "premade connect": attempt(lambda: premade.pop().connect(address)),
        "premade bind": attempt(lambda: premade.pop().bind(("127.0.0.1", 0))),
    }
"""


def test_no_network_without_limits_network(tcp_listener: int) -> None:
    result = run_confined(NETWORK_PROBE, values={"port": tcp_listener})
    assert result["before"]["connect"] == result["before"]["udp"] == "ok"
    assert result["before"]["premade connect"] == result["before"]["premade bind"] == "ok"
    assert result["after"] == dict.fromkeys(
        ["connect", "bind", "udp", "raw", "premade connect", "premade bind"], "PermissionError"
    )


def test_tcp_with_limits_network(tcp_listener: int) -> None:
    result = run_confined(NETWORK_PROBE, values={"port": tcp_listener}, limits={"network": True})
    assert result["layers"]["landlock-net"].startswith("active")
    allowed = ["connect", "bind", "udp", "premade connect", "premade bind"]
    assert result["after"] == {**dict.fromkeys(allowed, "ok"), "raw": "PermissionError"}
    if os.geteuid() == 0:  # a raw socket needs CAP_NET_RAW: the refusal after is the confinement's
        assert result["before"]["raw"] == "ok"


def test_no_new_processes() -> None:
    probe = """
    import subprocess

    def probe():
        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

        return {
            "fork": attempt(fork),
            "subprocess": attempt(lambda: subprocess.run(["/bin/sh", "-c", "true"], check=True)),
            "spawn": attempt(lambda: os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)),
        }
    """
    result = run_confined(probe)
    assert result["before"] == {"fork": "ok", "subprocess": "ok", "spawn": "ok"}
    assert result["after"] == dict.fromkeys(["fork", "subprocess", "spawn"], "PermissionError")


def test_exec_is_refused() -> None:
    # Python, its dynamic loader and the system's libraries are executable under Landlock here, so the refusal is
    # seccomp's. Had execve worked, the child would be a new Python printing no result.
    system = [Path(p) for p in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")]
    probe = """
    def probe():
        return {"exec": attempt(lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]))}
    """
    assert run_confined(probe, read_only=system, before=False)["after"] == {"exec": "PermissionError"}


def test_threads_asyncio_and_imports_still_work() -> None:
    probe = """
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    def probe():
        seen = []
        thread = threading.Thread(target=seen.append, args=("thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=4) as pool:
            squares = list(pool.map(lambda n: n * n, range(8)))
            spawn = pool.submit(attempt, lambda: os.posix_spawn("/bin/true", ["true"], {})).result()

        async def main():
            return await asyncio.to_thread(sum, squares)

        import fractions  # a module first imported after confine: read from the read-only standard library

        third = str(fractions.Fraction(1, 3))
        return {"thread": seen, "pool": squares, "spawn": spawn, "asyncio": asyncio.run(main()), "import": third}
    """
    result = run_confined(probe, before=False)
    squares = [n * n for n in range(8)]
    assert result["after"] == {
        "thread": ["thread"],
        "pool": squares,
        "spawn": "PermissionError",  # the threads are confined too
        "asyncio": sum(squares),
        "import": "1/3",
    }


def test_memory_limit_is_a_memory_error() -> None:
    probe = """
    def probe():
        return {"2 GB": attempt(lambda: bytearray(2 * 1024**3)), "10 MB": attempt(lambda: bytearray(10 * 1024**2))}
    """
    result = run_confined(probe, limits={"memory_mb": 512}, before=False)
    assert result["after"] == {"2 GB": "MemoryError", "10 MB": "ok"}


def test_limits_cannot_be_raised_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("x")
    probe = """
    import resource

    def probe():
        return {
            "as": resource.getrlimit(resource.RLIMIT_AS),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
            "core": resource.getrlimit(resource.RLIMIT_CORE),
            "raise": attempt(lambda: resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)),
            "chown": attempt(lambda: os.chown(Path(values["data"], "mine.txt"), 12345, 12345)),
            "write too much": attempt(lambda: Path(values["data"], "big").write_bytes(bytes(2 * 1024**2))),
        }
    """
    limits = {"memory_mb": 768, "open_files": 64, "file_size_mb": 1}
    result = run_confined(probe, read_write=[data], limits=limits, values={"data": str(data)}, before=False)
    assert result["after"] == {
        "as": [768 * 1024**2] * 2,
        "nofile": [64, 64],
        "fsize": [1024**2] * 2,
        "core": [0, 0],
        "raise": "ValueError",  # EPERM: raising a hard limit needs CAP_SYS_RESOURCE, dropped
        "chown": "PermissionError",
        "write too much": "OSError",  # EFBIG: Python ignores SIGXFSZ
    }


def test_confine_once_and_single_threaded() -> None:
    probe = """
    def probe():
        return {"again": attempt(lambda: confine([], [], Limits()))}
    """
    # Before: a second thread is running, so confine refuses (and may still be called once it is gone).
    threaded = """
    import threading

    def probe():
        if "done" in values:
            return {"again": attempt(lambda: confine([], [], Limits()))}
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        outcome = attempt(lambda: confine([], [], Limits()))
        stop.set()
        thread.join()
        values["done"] = True
        return {"with a thread": outcome}
    """
    assert run_confined(probe, before=False)["after"] == {"again": "RuntimeError"}
    result = run_confined(threaded)
    assert result["before"] == {"with a thread": "RuntimeError"}
    assert result["after"] == {"again": "RuntimeError"}


def test_available_reports_without_applying() -> None:
    report = available()
    assert report.layers["landlock-fs"].startswith("active (ABI ")
    assert report.missing() == [name for name, state in report.layers.items() if not state.startswith("active")]
    # Nothing was applied to this process: it can still start one.
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


def test_scrubbed_environment(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XCORE_SECRET": "s3cret",
        "XCORE_DATABASE_URL": "postgresql://x",
        "DATABASE_URL": "postgresql://user:pw@db/x",
        "REDIS_URL": "redis://r",
        "HTTPS_PROXY": "http://proxy:3128",
        "http_proxy": "http://proxy:3128",
        "AWS_SECRET_ACCESS_KEY": "key",
        "HOME": "/root",
        "TMPDIR": "/tmp",
    }
    assert scrubbed_environment(environ, tmp_path) == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
    }
