"""The local executor's workers stop when asked, whatever they are doing at that moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gaia.standalone.executor import LocalExecutor
from gaia.wire import Event
from gaia.worker.runner import TaskResult, TaskSpec
from waiting import eventually_async

pytestmark = pytest.mark.slow  # the executor runs real tasks


class Reports:
    def __init__(self) -> None:
        self.finished: list[tuple[str, str, int]] = []

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None:
        pass

    async def finished(self, root: str, process: str, run: int, result: TaskResult) -> None:
        self.finished.append((root, process, run))

    def line(self, root: str, process: str, run: int, stream: str, text: str) -> None:
        pass

    def worker(self, event: Event, worker: str) -> None:
        pass


def nap(run: int) -> TaskSpec:
    return TaskSpec(
        root="sleepy",
        process="nap",
        run=run,
        image="ubuntu",
        command=("sleep", "30"),
        inputs={},
        outputs=(),
    )


async def running_nap(workdir: Path, reports: Reports) -> LocalExecutor:
    """An executor with one worker, running a long task."""
    # "none": these tests are about the workers, not the sandbox
    executor = LocalExecutor(workdir, reports, workers=1, sandbox="none")
    executor.start()
    executor.submit(nap(1))
    await eventually_async(lambda: executor.running, "the nap to run")
    return executor


def test_a_worker_stopped_as_its_task_ends_cancelled_does_stop(tmp_path: Path) -> None:
    """A halt cancels a task, and close() cancels its worker in the instant the task ends:
    the worker once took its own stop for the task's cancellation and waited for more
    work, so close() never returned."""
    reports = Reports()

    async def scenario() -> None:
        executor = await running_nap(tmp_path, reports)
        job = executor.running["sleepy", "nap", 1]
        workers = [w.task for w in executor.workers.values() if w.task is not None]

        def stop_workers(_: object) -> None:  # what close() does, in that very instant
            for worker in workers:
                worker.cancel()

        job.add_done_callback(stop_workers)
        executor.cancel("sleepy", "nap", 1)
        # A guard against a hang, not a timing claim.
        done, _ = await asyncio.wait(workers, timeout=30)
        assert len(done) == len(workers), "a cancelled worker kept waiting for work"
        await executor.close()

    asyncio.run(scenario())
    assert reports.finished == []


def test_close_kills_a_running_task_without_reporting_it(tmp_path: Path) -> None:
    reports = Reports()

    async def scenario() -> None:
        executor = await running_nap(tmp_path, reports)
        closing = asyncio.create_task(executor.close())
        done, _ = await asyncio.wait({closing}, timeout=30)
        assert done, "close() never returned"
        assert executor.running == {} and executor.workers == {}

    asyncio.run(scenario())
    assert reports.finished == []
