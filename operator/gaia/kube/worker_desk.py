"""The operator's side of the workers' protocol (``POST /work/...``, see workers.py):
tasks handed to the queue instead of Jobs, offered to the workers that ask, followed by
their heartbeats and carried into the engine when they report.

The bookkeeping is the :class:`~gaia.kube.work_queue.WorkQueue`'s; this desk adds what
needs the host: the engine's view of each task, and publishing what a worker staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gaia.engine.instructions import StartTask
from gaia.engine.model import Command
from gaia.engine.namespace import Namespace
from gaia.engine.tasks import Task
from gaia.errors import GaiaError
from gaia.kube.jobs import staging_dir
from gaia.kube.work_queue import TaskId, WorkQueue
from gaia.kube.workers import WORKER_ALIVE, WORKER_DATA, worker_task_name
from gaia.shell import Kept, Outcome, Shell
from gaia.wire import TaskState

__all__ = ["MAX_WAIT", "WorkerDesk"]

logger = logging.getLogger(__name__)
MAX_WAIT = 30.0  # the longest long poll a worker is granted


class WorkerDesk:
    def __init__(
        self,
        host: Shell,
        clear_staging: Callable[[str, str], None],
        prepare_staging: Callable[[str, str, list[str]], Awaitable[None]],
        *,
        image: str | None,
        takes_all: bool = False,
    ) -> None:
        """Workers run ``image`` (None: no workers, as on the object store) and take the
        tasks of commands with that image, or all with ``takes_all``."""
        self.host = host
        self.clear_staging = clear_staging
        self.prepare_staging = prepare_staging
        self.image = image
        self.takes_all = takes_all
        self.queue = WorkQueue(WORKER_ALIVE)

    def takes(self, command: Command) -> bool:
        """Whether a task of ``command`` goes to the workers: they run it with their own
        image's programs, so only a command of that image, unless told to take all; only
        while a worker is alive; and never one that asks for root (worker pods run
        unprivileged, pod_security.py)."""
        if self.image is None or command.run_as_root or not self.queue.any_alive():
            return False
        return self.takes_all or command.image == self.image

    def hand_over(self, namespace: Namespace, start: StartTask) -> None:
        namespace.set_handle(start.process.key, start.run, {"worker": None})  # until taken
        self.queue.put((start.root, start.process.key, start.run))

    def withdraw(self, task: TaskId) -> None:
        """The task was cancelled: the worker's next heartbeat hears of it and kills it."""
        worker = self.queue.release(task)
        if worker:
            self.clear_staging(task[0], worker_task_name(*task, worker))

    def keeps(self, namespace: Namespace, task: Task) -> bool:
        """The re-check's look at a workers' task: True if it stays theirs. A task whose
        worker went silent goes back to the queue, or to a Job when no worker is alive."""
        task_id = (namespace.root, task.process, task.run)
        queue = self.queue
        worker = queue.holder(task_id)
        if worker is not None and queue.alive(worker):
            return True
        if worker is None and task_id in queue.waiting and queue.any_alive():
            return True
        self.withdraw(task_id)
        if queue.any_alive():
            logger.warning("worker %s went silent; %s#%s goes back", worker, *task_id[1:])
            namespace.set_handle(task.process, task.run, {"worker": None})
            queue.put(task_id)
            return True
        return False  # the caller gives it to a Job

    async def take(self, worker: str, wait: float) -> dict[str, Any]:
        """A worker asks for a task: the next current one, waiting up to ``wait`` s."""
        queue = self.queue
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        while True:
            queue.hear(worker)
            while (task_id := queue.take(worker)) is not None:
                offer = await self._offer(task_id, worker)
                if offer is not None:
                    return {"task": offer}
            remaining = deadline - time.monotonic()
            if remaining <= 0 or queue.closing:
                return {"task": None}
            queue.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await queue.ready.wait()

    async def _offer(self, task_id: TaskId, worker: str) -> dict[str, Any] | None:
        root, process, run = task_id
        host = self.host
        async with host.lock(root):
            namespace = host.namespaces.get(root)
            task = None if namespace is None else namespace.current(process, run)
            if namespace is None or task is None or self.queue.holder(task_id) != worker:
                self.queue.release(task_id)
                return None  # gone, halted or superseded meanwhile
            leaf = namespace.graph.processes[process]
            start = StartTask(root, leaf, host.registry.commands[leaf.command], run)
            if task.state is TaskState.QUEUED:
                host.task_started(root, process, run, {"worker": worker})
            else:  # back from a worker gone silent
                namespace.set_handle(process, run, {"worker": worker})
                host.keep(namespace, Kept(tasks=[task]))
            name = worker_task_name(root, process, run, worker)
            offer = {
                "root": root,
                "process": process,
                "run": run,
                "command": start.argv,
                "inputs": {
                    path: f"{WORKER_DATA}/{root}/{key}" for path, key in start.inputs.items()
                },
                "outputs": list(start.outputs.values()),
                "stdout": start.command.stdout,
                "timeout": start.command.timeout,
                "env": dict(start.command.env),
                "network": start.command.network,
                "resources": start.command.resources.to_dict() if start.command.resources else None,
                "staging": f"{WORKER_DATA}/{staging_dir(root, name)}",
            }
        # The worker's unprivileged user moves the outputs into a folder made for it.
        try:
            await self.prepare_staging(root, name, [])
        except GaiaError as exc:  # its outputs cannot be staged: the task fails, saying so
            logger.warning("worker %s: %s", worker, exc)
        return offer

    def heartbeat(self, worker: str, root: str, process: str, run: int) -> bool:
        """A worker runs ``run``: True if it should kill it (no longer current)."""
        self.queue.hear(worker)
        namespace = self.host.namespaces.get(root)
        return (
            self.queue.holder((root, process, run)) != worker
            or namespace is None
            or namespace.current(process, run) is None
        )

    async def done(
        self,
        worker: str,
        root: str,
        process: str,
        run: int,
        *,
        ok: bool,
        exit_code: int | None,
        error: str | None,
        log_tail: list[str],
    ) -> bool:
        """A worker finished a task (outputs staged if ``ok``); False if it was stale."""
        self.queue.hear(worker)
        task_id = (root, process, run)
        name = worker_task_name(root, process, run, worker)
        if self.queue.holder(task_id) != worker:
            self.clear_staging(root, name)
            return False
        if not ok:
            error = error or f"worker {worker} reported a failure"
        outcome = Outcome(ok=ok, error=error, exit_code=exit_code, log_tail=log_tail)
        # The task stays this worker's until its outcome is recorded: released before,
        # it looked unassigned to a re-check holding the lock meanwhile, which sent it
        # back to the queue and its outputs were looked for in the wrong folder.
        state = await self.host.task_finished(root, process, run, outcome)
        if self.queue.holder(task_id) == worker:
            self.queue.release(task_id)
        self.clear_staging(root, name)
        return state is not None

    def close(self) -> None:
        """The HTTP API is closing: answer every waiting ``/work/take`` now."""
        self.queue.close()

    def stopped(self, worker: str) -> None:
        """The worker idled out; anything it still had goes back (the re-check)."""
        self.queue.forget(worker)
