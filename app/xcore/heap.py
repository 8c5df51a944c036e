"""The cyclic garbage collector while xcore starts, and the heap a start leaves behind.

A start imports the web stack and builds the core app: a great many objects that live as long as the process.
With the collector's default thresholds each of them is examined again and again while the heap grows,
including a full collection, all of it time the start waits for. So the `xcore` command raises the thresholds
while it starts (`defer_collections`), and each process sets them back once the heap that lives on is built,
then freezes that heap (`freeze_startup_heap`): later collections look only at what requests and plugins
create, not at the whole web stack, which would otherwise cost every request some CPU (benchmarks/README.md).

Granian forks its workers from the server process after its heap is frozen; a forked worker defers its
collections again until it has built its own core app (`serve` arranges it with `os.register_at_fork`).
"""

from __future__ import annotations

import gc

DEFAULT_THRESHOLDS = gc.get_threshold()
# While starting: the youngest generation is collected after 20,000 net allocations instead of 700, and the
# older ones after 20 collections of the one below instead of 10, so no full collection runs during a start.
STARTING_THRESHOLDS = (20_000, 20, 20)

_frozen = False


def defer_collections() -> None:
    """defer_collections raises the collector's thresholds until `freeze_startup_heap` sets them back."""
    gc.set_threshold(*STARTING_THRESHOLDS)


def freeze_startup_heap(*, once: bool = True) -> None:
    """freeze_startup_heap sets the collector's thresholds back, collects the young garbage of the start, and
    moves every object that exists now out of the collector's reach (`gc.freeze`).

    `once`: the worker's call (after its first core app is built) acts once per process, so that plugins,
    loaded afterwards, stay collectable across reloads. The server process calls it with `once=False` just
    before Granian forks its workers, which then share the frozen objects instead of copying them when a
    collection first touches them.
    """
    global _frozen
    if once and _frozen:
        return
    _frozen = True
    gc.set_threshold(*DEFAULT_THRESHOLDS)
    gc.collect(0)  # the youngest generation only, which is quick: most of a start's garbage is not frozen for good
    gc.freeze()


def after_fork_in_child() -> None:
    """after_fork_in_child lets a forked worker defer its collections and freeze its own heap once built."""
    global _frozen
    _frozen = False
    defer_collections()
