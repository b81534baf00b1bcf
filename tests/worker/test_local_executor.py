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
        # Not `finished`: an attribute of that name would hide the method below.
        self.ended: list[tuple[str, str, int]] = []

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None:
        pass

    async def finished(self, root: str, process: str, run: int, result: TaskResult) -> None:
        self.ended.append((root, process, run))

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
    assert reports.ended == []


def test_close_kills_a_running_task_without_reporting_it(tmp_path: Path) -> None:
    reports = Reports()

    async def scenario() -> None:
        executor = await running_nap(tmp_path, reports)
        closing = asyncio.create_task(executor.close())
        done, _ = await asyncio.wait({closing}, timeout=30)
        assert done, "close() never returned"
        assert executor.running == {} and executor.workers == {}

    asyncio.run(scenario())
    assert reports.ended == []


class HeldReports(Reports):
    """Reports whose first task's ``finished`` waits for the test's word, as a slow
    publish (an fsync on a busy disk) would; they note what each task's output held."""

    def __init__(self) -> None:
        super().__init__()
        self.started_runs: list[int] = []
        self.release = asyncio.Event()
        self.outputs: dict[int, str] = {}

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None:
        self.started_runs.append(run)

    async def finished(self, root: str, process: str, run: int, result: TaskResult) -> None:
        if run == 1:
            await self.release.wait()
        assert result.ok, result.error
        self.outputs[run] = result.staged["/out/o"].read_text()
        await super().finished(root, process, run, result)


def echo(run: int) -> TaskSpec:
    return TaskSpec(
        root="busy",
        process="echo",
        run=run,
        image=None,
        command=("sh", "-c", f"echo {run} > /out/o"),
        inputs={},
        outputs=("/out/o",),
    )


def test_a_worker_runs_its_next_task_while_the_last_ones_outputs_go_out(tmp_path: Path) -> None:
    """A worker takes the next task once the last one's command has exited, in its other
    folder; the folder of a task still publishing is not cleared for a third one."""
    reports = HeldReports()

    async def scenario() -> None:
        executor = LocalExecutor(tmp_path, reports, workers=1, sandbox="none")
        executor.start()
        for run in (1, 2, 3):
            executor.submit(echo(run))
        await eventually_async(
            lambda: [run for *_, run in reports.ended] == [2],
            "run 2 to finish while run 1 publishes",
        )
        assert 3 not in reports.started_runs, "run 3 took the folder run 1 still publishes from"
        reports.release.set()
        await eventually_async(lambda: len(reports.ended) == 3, "every run to finish")
        await executor.close()

    asyncio.run(scenario())
    assert reports.outputs == {1: "1\n", 2: "2\n", 3: "3\n"}
    assert [run for *_, run in reports.ended] == [2, 1, 3]
