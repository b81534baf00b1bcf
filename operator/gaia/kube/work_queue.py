"""Tasks waiting for a sisyphus worker, and who runs what (see workers.py).

Bookkeeping only, in memory (a restart loses it: the engine starts those tasks again and
a late report of an old run is ignored). Every operation costs the same whatever the
queue's length: the queue is an insertion-ordered dict, so a task leaves it in O(1).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["TaskId", "WorkQueue"]

TaskId = tuple[str, str, int]  # root, process, run


class WorkQueue:
    def __init__(self, alive_for: float) -> None:
        self.alive_for = alive_for  # seconds a worker counts as alive after it was heard
        self.heard: dict[str, float] = {}  # worker -> when it last asked (monotonic)
        self.waiting: dict[TaskId, None] = {}  # FIFO, O(1) removal
        self.assigned: dict[TaskId, str] = {}  # task -> the worker running it
        self.ready = asyncio.Event()
        self.closing = False  # the API is shutting down: long polls end at once

    def hear(self, worker: str) -> None:
        self.heard[worker] = time.monotonic()

    def alive(self, worker: str) -> bool:
        seen = self.heard.get(worker)
        return seen is not None and time.monotonic() - seen < self.alive_for

    def any_alive(self) -> bool:
        return any(self.alive(worker) for worker in self.heard)

    def put(self, task: TaskId) -> None:
        self.waiting[task] = None
        self.ready.set()

    def take(self, worker: str) -> TaskId | None:
        """The oldest waiting task, assigned to ``worker`` in the same step: a task is
        never both waiting and nobody's, so no one else takes it meanwhile."""
        if not self.waiting:
            return None
        task = next(iter(self.waiting))
        del self.waiting[task]
        self.assigned[task] = worker
        return task

    def holder(self, task: TaskId) -> str | None:
        return self.assigned.get(task)

    def release(self, task: TaskId) -> str | None:
        """Take ``task`` away from whoever has it (waiting or assigned); return the worker
        that had it, "" if it was waiting, None if the queue did not know it."""
        if task in self.waiting:
            del self.waiting[task]
            return ""
        return self.assigned.pop(task, None)

    def forgive(self, seconds: float) -> None:
        """The operator could not hear anyone for ``seconds`` (its loop stalled): no
        worker counts that time as silence."""
        for worker in self.heard:
            self.heard[worker] += seconds

    def forget(self, worker: str) -> None:
        """The worker stopped (idle); what it still had is sent back by the re-check."""
        self.heard.pop(worker, None)

    def close(self) -> None:
        self.closing = True
        self.ready.set()
