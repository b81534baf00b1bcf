"""The local executor: a queue of tasks served by named workers on this machine.

``--workers N`` starts N permanent workers (``local-1`` ... ``local-N``); ``launch``
adds named workers that stop themselves after ``idle_timeout`` seconds without work,
the sisyphus way. Each task runs through the task runner in a folder of its worker.

A worker takes its next task as soon as the command of the last one has exited: checking,
fsyncing and publishing that one's outputs goes on beside the next command. So each
worker has two folders and uses them in turn; it waits for a folder's last task to be
published before it lays out the next there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gaia.wire import Event
from gaia.worker.runner import TaskResult, TaskSpec, run_task

__all__ = ["LocalExecutor", "TaskReport"]

logger = logging.getLogger(__name__)

TaskId = tuple[str, str, int]  # root, process, run


class TaskReport(Protocol):
    """How the executor tells its host what happened; called on the event loop."""

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None: ...
    async def finished(self, root: str, process: str, run: int, result: TaskResult) -> None: ...
    def line(self, root: str, process: str, run: int, stream: str, text: str) -> None: ...
    def worker(self, event: Event, worker: str) -> None: ...


@dataclass
class _Worker:
    key: str
    idle_timeout: float | None  # None: never stops
    slots: tuple[Path, Path]  # its working folders, used in turn and reused (see the runner)
    task: asyncio.Task[None] | None = None
    # Per folder: its last task, which may still be publishing from it.
    last: list[asyncio.Task[None] | None] = field(default_factory=lambda: [None, None])
    turn: int = 0


class LocalExecutor:
    def __init__(
        self,
        work_dir: Path,
        report: TaskReport,
        *,
        workers: int = 2,
        idle_timeout: float = 300.0,
        sandbox: str = "auto",
        hide: Sequence[Path] = (),
    ) -> None:
        """``hide``: host directories no task may see (the data directory)."""
        self.work_dir = work_dir
        self.hide = tuple(hide)
        self.report = report
        self.idle_timeout = idle_timeout
        self.sandbox = sandbox
        self.queue: asyncio.Queue[tuple[TaskId, TaskSpec]] = asyncio.Queue()
        self.workers: dict[str, _Worker] = {}
        self.running: dict[TaskId, asyncio.Task[TaskResult]] = {}
        self.finishing: set[asyncio.Task[None]] = set()  # each task's run and report
        self.withdrawn: set[TaskId] = set()  # cancelled while still queued
        self.permanent = workers
        self._slots = 0
        self._log_folders: set[str] = set()

    def start(self) -> None:
        for number in range(1, self.permanent + 1):
            self._spawn(self._new_worker(f"local-{number}", None))

    def _new_worker(self, key: str, idle_timeout: float | None) -> _Worker:
        """A worker with folders of its own (numbered: a key is any string)."""
        self._slots += 1
        folder = self.work_dir / "slots" / str(self._slots)
        return _Worker(key, idle_timeout, (folder / "a", folder / "b"))

    def _spawn(self, worker: _Worker) -> None:
        self.workers[worker.key] = worker
        worker.task = asyncio.get_running_loop().create_task(
            self._serve(worker), name=f"gaia-worker-{worker.key}"
        )

    def launched(self) -> int:
        """The workers started by ``launch`` (not the permanent ones) alive now."""
        return sum(1 for worker in self.workers.values() if worker.idle_timeout is not None)

    def launch(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Start a worker per new key; return (launched, already running)."""
        launched, present = [], []
        for key in keys:
            if key in self.workers:
                present.append(key)
                continue
            self._spawn(self._new_worker(key, self.idle_timeout))
            launched.append(key)
            self.report.worker(Event.WORKER_LAUNCHED, key)
        return launched, present

    def log_path(self, root: str, process: str, run: int) -> Path:
        """Where a task's log is kept: one file per run, in a folder per namespace."""
        return self.work_dir / "logs" / root / f"{process}.{run}.log"

    def _log_folder(self, root: str) -> Path:
        folder = self.work_dir / "logs" / root
        if root not in self._log_folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._log_folders.add(root)
        return folder

    def submit(self, spec: TaskSpec) -> None:
        self.queue.put_nowait(((spec.root, spec.process, spec.run), spec))

    def cancel(self, root: str, process: str, run: int) -> None:
        """Kill a running task's process tree, or drop it from the queue."""
        task_id = (root, process, run)
        running = self.running.get(task_id)
        if running is not None:
            running.cancel()
        else:
            self.withdrawn.add(task_id)

    async def _serve(self, worker: _Worker) -> None:
        try:
            while True:
                try:
                    # Not wait_for: on Python 3.11 it can swallow a cancellation that
                    # races with the item's arrival, and close() would wait forever.
                    async with asyncio.timeout(worker.idle_timeout):
                        task_id, spec = await self.queue.get()
                except TimeoutError:
                    logger.info("worker %s idle for %ss: stopping", worker.key, worker.idle_timeout)
                    return
                if task_id in self.withdrawn:
                    self.withdrawn.discard(task_id)
                    continue
                await self._hand_over(worker, task_id, spec)
        finally:
            self.workers.pop(worker.key, None)
            if worker.idle_timeout is not None:
                self.report.worker(Event.WORKER_STOPPED, worker.key)

    async def _hand_over(self, worker: _Worker, task_id: TaskId, spec: TaskSpec) -> None:
        """Run the task in the worker's next folder; return once its command has exited
        (or the task ended or could not start), while its outputs may still be going out."""
        slot = worker.turn % 2
        worker.turn += 1
        last = worker.last[slot]
        if last is not None:  # its outputs leave the folder before the next task clears it
            await asyncio.wait({last})
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        finishing = loop.create_task(
            self._run(worker, worker.slots[slot], task_id, spec, exited),
            name=f"gaia-task-{task_id[1]}#{task_id[2]}",
        )
        worker.last[slot] = finishing
        self.finishing.add(finishing)
        finishing.add_done_callback(self.finishing.discard)
        try:
            await asyncio.wait({exited, finishing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            finishing.cancel()  # the worker is being stopped: stop its task too
            raise

    async def _run(
        self,
        worker: _Worker,
        folder: Path,
        task_id: TaskId,
        spec: TaskSpec,
        exited: asyncio.Future[None],
    ) -> None:
        root, process, run = task_id
        self._log_folder(root)

        def on_start(pid: int) -> None:
            self.report.started(root, process, run, {"pid": pid, "worker": worker.key})

        def on_line(stream: str, text: str) -> None:
            self.report.line(root, process, run, stream, text)

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        job = asyncio.get_running_loop().create_task(
            run_task(
                spec,
                folder,  # reused by every other task of the worker: see the runner
                on_line=on_line,
                on_start=on_start,
                on_exit=on_exit,
                sandbox=self.sandbox,
                hide=self.hide,
                log=self.log_path(root, process, run),
            )
        )
        self.running[task_id] = job
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            # Ask this task itself, not the job: both can be cancelled in one instant, and
            # a stop taken for the job's own cancellation would leave the job running.
            this = asyncio.current_task()
            if this is not None and this.cancelling():
                job.cancel()  # the worker or the executor is being stopped: stop the job too
                await asyncio.gather(job, return_exceptions=True)
                raise
            return  # the task was cancelled (halt, expire, merge): nothing to report
        except Exception as exc:  # the runner itself broke: report it as the task's failure
            logger.exception("task %s#%s in %s failed to run", process, run, root)
            result = TaskResult(False, None, {}, f"could not run: {exc}", ())
        finally:
            self.running.pop(task_id, None)
        await self.report.finished(root, process, run, result)

    async def close(self) -> None:
        """Stop every worker, killing the process trees of running tasks."""
        for job in list(self.running.values()):
            job.cancel()
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        tasks += self.finishing  # publishing outputs: stopped as a task's end would be
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self.running.values(), *tasks, return_exceptions=True)
