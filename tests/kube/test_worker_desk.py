"""The operator's side of the workers' protocol, in process: what a worker staged is
published whatever the store lanes are doing, and a task a worker holds is never also
given to a Job. (No cluster is needed: tasks for workers never touch the API.)"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from gaia.kube.host import KubeHost
from gaia.kube.pod_security import TASK_GROUP
from gaia.kube.workers import WORKER_DATA
from gaia.store import LocalStore
from gaia.wire import TaskState
from waiting import eventually_async

MAKE = {
    "key": "make",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo made > /out/o"],
    "outputs": {"OUT": "/out/o"},
}


class BusyLanes(LocalStore):
    """A store whose clean-ups run late, as a namespace's store lane does under load
    (it is busy with other publishes and lookups, or starved of CPU)."""

    def clear_staging(self, root: str, job: str) -> None:
        time.sleep(0.3)
        super().clear_staging(root, job)


def host_with_a_task(tmp_path: Path) -> tuple[KubeHost, Any]:
    host = KubeHost(
        None,  # type: ignore[arg-type]  # tasks for workers never reach the API server
        tmp_path,
        "gaia-data",
        store=BusyLanes(tmp_path),
        worker_image="ubuntu",
    )
    return host, asyncio.new_event_loop()


def staged_by_a_worker(tmp_path: Path, offer: dict[str, Any]) -> None:
    """What `gaia worker` does once its command succeeded: outputs into the staging."""
    staging = tmp_path / offer["staging"].removeprefix(WORKER_DATA + "/")
    for path in offer["outputs"]:
        target = staging / path.strip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("made\n")


@pytest.mark.slow  # waits out the lagging clean-ups: about a second
def test_what_a_fast_worker_staged_is_published_while_the_lanes_lag(tmp_path: Path) -> None:
    """The operator once cleared a task's staging folder when it offered the task,
    without waiting: when the lane ran that clean-up late, after a fast worker had
    staged its outputs, they were deleted and the task failed with "declared outputs
    ['/out/o'] were not produced"."""
    host, loop = host_with_a_task(tmp_path)

    async def scenario() -> None:
        await host.change_commands([MAKE])
        host.desk.queue.hear("w1")
        await host.merge("ns", [{"key": "p", "command": "make", "outputs": {"OUT": "o"}}])
        for _ in range(3):  # earlier runs leave clean-ups queued in the lane
            offer = (await host.desk.take("w1", 0))["task"]
            staged_by_a_worker(tmp_path, offer)
            report = {"ok": True, "exit_code": 0, "error": None, "log_tail": []}
            assert await host.desk.done("w1", "ns", "p", offer["run"], **report)
            task = host.namespaces["ns"].tasks["p"]
            assert task.state is TaskState.COMPLETE, task.error
            assert (tmp_path / "ns" / "o").read_text() == "made\n"
            await host.expire("ns", ["p"])  # runs it again

    loop.run_until_complete(scenario())
    host.lanes.close()
    loop.close()


def test_a_task_a_worker_has_taken_stays_the_workers(tmp_path: Path) -> None:
    """Between a worker taking a task and the offer being written, the re-check once saw
    a task neither queued nor assigned, took it for a Job's and created a Job for it."""
    host, loop = host_with_a_task(tmp_path)

    async def scenario() -> None:
        await host.change_commands([MAKE])
        host.desk.queue.hear("w1")
        await host.merge("ns", [{"key": "p", "command": "make", "outputs": {"OUT": "o"}}])
        namespace = host.namespaces["ns"]
        task = namespace.tasks["p"]
        async with host.lock("ns"):  # the offer waits for the lock, as behind a re-check
            taking = asyncio.create_task(host.desk.take("w1", 0))
            await eventually_async(
                lambda: host.desk.queue.holder(("ns", "p", task.run)), "w1 to take the task"
            )
            assert host.desk.queue.holder(("ns", "p", task.run)) == "w1"
            assert host.desk.keeps(namespace, task)  # the re-check leaves it alone
        offer = (await taking)["task"]
        assert offer["process"] == "p"
        assert namespace.tasks["p"].handle == {"worker": "w1"}

    loop.run_until_complete(scenario())
    host.lanes.close()
    loop.close()


def test_time_the_operator_itself_was_stalled_is_not_a_workers_silence() -> None:
    """A worker that asked for work while the operator's loop was stuck (a long listing,
    once) counted as silent, and its tasks went to Jobs."""
    from gaia.kube.work_queue import WorkQueue

    queue = WorkQueue(alive_for=60)
    queue.hear("w1")
    queue.heard["w1"] -= 70  # last heard 70 s ago...
    assert not queue.alive("w1")
    queue.forgive(15)  # ...15 of which the operator could not hear anyone
    assert queue.alive("w1")


@pytest.mark.slow  # it waits out a stall of its own making
def test_the_loop_watch_measures_a_stall_and_forgives_it() -> None:
    from gaia.kube.stalls import LoopWatch

    forgiven: list[float] = []
    watch = LoopWatch(forgiven.append)

    async def scenario() -> None:
        running = asyncio.create_task(watch.run())
        await asyncio.sleep(0.3)
        time.sleep(1.5)  # the loop is stuck (a tick may be due 0.25 s into it)
        await asyncio.sleep(0.6)
        running.cancel()

    asyncio.run(scenario())
    assert 1.2 <= watch.longest < 10
    assert forgiven and max(forgiven) == watch.longest


def test_a_finished_task_waiting_for_its_lock_stays_its_workers(tmp_path: Path) -> None:
    """A worker's report released the task before its outcome was recorded; a re-check
    that held the namespace's lock in between found the task neither queued nor assigned,
    sent it back to the queue, and its outputs were then looked for in a Job's folder:
    "declared outputs ['/out/o'] were not produced" (3 of 16,000 tasks in a benchmark)."""
    host, loop = host_with_a_task(tmp_path)

    async def scenario() -> None:
        await host.change_commands([MAKE])
        host.desk.queue.hear("w1")
        await host.merge("ns", [{"key": "p", "command": "make", "outputs": {"OUT": "o"}}])
        offer = (await host.desk.take("w1", 0))["task"]
        staged_by_a_worker(tmp_path, offer)
        namespace = host.namespaces["ns"]
        report = {"ok": True, "exit_code": 0, "error": None, "log_tail": []}
        async with host.lock("ns"):  # a re-check holds the lock as the report comes
            done = asyncio.create_task(host.desk.done("w1", "ns", "p", offer["run"], **report))
            await asyncio.sleep(0.05)
            assert host.desk.keeps(namespace, namespace.tasks["p"])
            assert not host.desk.queue.waiting  # not sent back
        assert await done
        task = namespace.tasks["p"]
        assert task.state is TaskState.COMPLETE, task.error
        assert host.desk.queue.holder(("ns", "p", offer["run"])) is None

    loop.run_until_complete(scenario())
    host.lanes.close()
    loop.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to the task group needs root")
def test_a_worker_is_offered_a_staging_folder_its_unprivileged_user_can_write(
    tmp_path: Path,
) -> None:
    """Worker pods run as 65532: the operator makes the task's staging folder for that
    group before it offers the task (the worker cannot make it in the operator's area)."""
    host, loop = host_with_a_task(tmp_path)

    async def scenario() -> dict[str, Any]:
        await host.change_commands([MAKE])
        host.desk.queue.hear("w1")
        await host.merge("ns", [{"key": "p", "command": "make", "outputs": {"OUT": "o"}}])
        return dict((await host.desk.take("w1", 0))["task"])

    offer = loop.run_until_complete(scenario())
    host.lanes.close()
    loop.close()
    staging = tmp_path / offer["staging"].removeprefix(WORKER_DATA + "/")
    assert staging.stat().st_gid == TASK_GROUP
    assert stat.S_IMODE(staging.stat().st_mode) == 0o2770
