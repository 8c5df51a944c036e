"""xcore.heap: a start defers the cyclic garbage collector, and each process sets it back and freezes its heap."""

from __future__ import annotations

from conftest import fresh_python, run_xcore

PROBE = """\
import gc, os
from xcore import heap

defaults = gc.get_threshold()
heap.defer_collections()
print("DEFERRED", gc.get_threshold() == heap.STARTING_THRESHOLDS != defaults)
heap.freeze_startup_heap(once=False)  # the server process, before Granian forks its workers
print("SERVER", gc.get_threshold() == defaults, gc.get_freeze_count() > 0)
os.register_at_fork(after_in_child=heap.after_fork_in_child)
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # a worker: deferred again until its core app is built, then frozen once
    lines = [f"WORKER-DEFERRED {gc.get_threshold() == heap.STARTING_THRESHOLDS}"]
    before = gc.get_freeze_count()
    built = [[index] for index in range(1000)]  # the core app
    heap.freeze_startup_heap()
    after = gc.get_freeze_count()
    lines.append(f"WORKER-FROZEN {gc.get_threshold() == defaults} {after >= before + 1000}")
    plugins = [[index] for index in range(1000)]  # loaded afterwards: they stay collectable
    heap.freeze_startup_heap()
    lines.append(f"WORKER-ONCE {gc.get_freeze_count() == after}")
    os.write(write, "\\n".join(lines).encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
print(os.read(read, 4096).decode())
print("EXIT", status)
"""


def test_a_start_defers_collections_and_each_process_sets_them_back_and_freezes_its_heap() -> None:
    lines = fresh_python(PROBE).splitlines()
    for line in ("DEFERRED True", "SERVER True True", "WORKER-DEFERRED True", "WORKER-FROZEN True True",
                 "WORKER-ONCE True", "EXIT 0"):  # fmt: skip
        assert line in lines, lines


def test_the_xcore_command_defers_collections_before_its_imports() -> None:
    """`python -m xcore` raises the thresholds before it imports the CLI (a short command never sets them back)."""
    probe = (
        "import gc, runpy, sys\n"
        "sys.argv = ['xcore', '--version']\n"
        "try:\n"
        "    runpy.run_module('xcore', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "from xcore import heap\n"
        "print('THRESHOLDS', gc.get_threshold() == heap.STARTING_THRESHOLDS)\n"
    )
    assert "THRESHOLDS True" in fresh_python(probe).splitlines()
    assert run_xcore("--version", fresh=True).returncode == 0
