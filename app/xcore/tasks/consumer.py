"""The consumer: Huey's worker threads, embedded in the server, in the one process that holds the leader lock.

Every server process keeps a registry (each loads every plugin), but only one runs the consumer: the holder of
the lock of xcore.tasks.leader. The others try to take the lock every `LEADER_RETRY` seconds, so when the leader
dies another process takes over. While it leads, the process also runs the periodic schedule. The consumer runs
in threads inside the server; Huey's `start()`, which installs signal handlers, is not used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from huey.consumer import Consumer

from xcore.tasks.leader import leadership

if TYPE_CHECKING:
    from huey import Huey

    from xcore.config.schema import TasksConfig
    from xcore.runtime import Runtime

log = logging.getLogger("xcore.tasks")
CONTEXT = {"context": "tasks"}
LEADER_RETRY = 2.0  # seconds between a follower's attempts to take the consumer's lock


class EmbeddedConsumer(Consumer):  # type: ignore[misc, unused-ignore]  # Huey has no type hints
    """EmbeddedConsumer is Huey's consumer without its signal handlers: the server owns the signals."""

    def start(self) -> None:
        self.scheduler.start()
        for _, worker in self.worker_threads:
            worker.start()


class LeadingConsumer:
    """LeadingConsumer runs the consumer of `huey` whenever this process holds the leader lock.

    On taking the lock it calls `recover` (before the consumer starts), then starts the thread `schedule` returns
    for an event that is set when this process stops leading.
    """

    def __init__(
        self,
        runtime: Runtime,
        huey: Huey,
        settings: TasksConfig,
        *,
        recover: Callable[[], None],
        schedule: Callable[[threading.Event], threading.Thread],
    ) -> None:
        self.huey = huey
        self.settings = settings
        self._recover = recover
        self._schedule_for = schedule
        self._leader = leadership(runtime, on_lost=self._step_down)
        self._consumer: EmbeddedConsumer | None = None
        self._stop = threading.Event()  # the host stops
        self._leading = threading.Event()  # set when this process stops leading: the schedule ends
        self._follower: threading.Thread | None = None
        self._schedule: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def leading(self) -> bool:
        """leading is true in the one process that runs the consumer."""
        return self._consumer is not None

    def where(self) -> str:
        """where says where the consumer runs: `running here`, `running in another process`, or `stopped`."""
        if self.leading:
            return "running here"
        if self._leader.held_elsewhere():
            return "running in another process"
        return "stopped"

    def start(self) -> None:
        """start runs the consumer if this process gets the lock, else keeps trying in the background."""
        self._stop.clear()
        if not self._try_lead():
            self._follow_later()

    def stop(self) -> None:
        """stop lets running tasks finish (up to `manager.tasks.shutdown_grace` seconds), releases the lock, and
        ends the schedule and the follower."""
        with self._mutex:
            self._stop.set()
            self._leading.set()
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop(graceful=True)
            self._leader.release()
        if self._follower is not None:
            self._follower.join(timeout=LEADER_RETRY + 1)
        if self._schedule is not None:
            self._schedule.join(timeout=2)

    def _try_lead(self) -> bool:
        with self._mutex:
            if self._stop.is_set() or not self._leader.acquire():
                return False
            self._consumer = EmbeddedConsumer(
                self.huey,
                workers=self.settings.workers,
                periodic=False,
                initial_delay=0.1,
                backoff=1.0,
                max_delay=0.1,
                worker_type="thread",
                check_worker_health=False,
                shutdown_timeout=self.settings.shutdown_grace,
            )
            self._recover()
            self._consumer.start()
            self._leading = threading.Event()
            self._schedule = self._schedule_for(self._leading)
            self._schedule.start()
            log.info("task consumer running here (pid %d) with %d thread(s)", os.getpid(), self.settings.workers,
                     extra=CONTEXT)  # fmt: skip
            return True

    def _follow(self) -> None:
        while not self._stop.wait(LEADER_RETRY):
            if self._try_lead():
                return

    def _follow_later(self) -> None:
        self._follower = threading.Thread(target=self._follow, name="xcore-task-follower", daemon=True)
        self._follower.start()

    def _step_down(self) -> None:
        """_step_down stops the consumer and the schedule after the lock was lost, and follows again."""
        with self._mutex:
            consumer, self._consumer = self._consumer, None
            self._leading.set()
        if consumer is not None:
            consumer.stop(graceful=False)
        if not self._stop.is_set():
            self._follow_later()
