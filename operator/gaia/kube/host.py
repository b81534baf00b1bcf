"""The engine's host on a cluster: each GaiaNamespace resource drives one engine
namespace; the engine's instructions become Jobs, deletions, store changes and events;
finished Jobs become completions. Every entry point is idempotent, so a watch event seen
twice, a periodic re-check or a restart never runs a task twice or loses a completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaia.bus import EventBus, EventHistory
from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.keys import render, root_problem
from gaia.engine.namespace import MergePlan, Namespace
from gaia.engine.registry import Registry
from gaia.engine.states import Mode, TaskState
from gaia.errors import GaiaError, StoreError
from gaia.kube.cluster import Cluster
from gaia.kube.config import DEFAULT_IMAGE, S3Config
from gaia.kube.jobs import JobOutcome, build_job, job_name, outcome_of, staging_dir
from gaia.kube.resources import command_of, processes_of
from gaia.kube.status import summary, valid_condition
from gaia.kube.store_lanes import StoreLanes
from gaia.kube.workers import WORKER_ALIVE, WORKER_DATA, worker_task_name
from gaia.store import LocalStore, Store

__all__ = ["KubeHost", "Tracked"]

logger = logging.getLogger(__name__)

TaskId = tuple[str, str, int]  # root, process, run


@dataclass
class Tracked:
    """One GaiaNamespace resource and the engine namespace it drives."""

    engine: Namespace
    resource: dict[str, Any]
    generation: int | None = None
    handled: dict[str, Any] = field(default_factory=dict)  # trigger / expire tokens done
    problem: str | None = None  # why the current spec was rejected
    expired: dict[str, Any] = field(default_factory=dict)  # expire token -> what it expired

    @property
    def k8s_namespace(self) -> str:
        return str(self.resource["metadata"]["namespace"])


class KubeHost:
    def __init__(
        self,
        cluster: Cluster,
        store_path: Path,
        claim: str,
        *,
        store: Store | None = None,
        s3: S3Config | None = None,
        image: str = DEFAULT_IMAGE,
        worker_image: str | None = None,
        worker_takes: str = "image",
    ) -> None:
        """``store`` defaults to the shared volume mounted at ``store_path`` (task pods
        mount ``claim``); with ``s3`` set, ``store`` is that bucket and task pods copy
        their data in and out with ``image``'s ``gaia task`` (see jobs.py). Workers run
        ``worker_image`` (default ``image``) and take the tasks whose command has that
        image, or every task with ``worker_takes="all"``."""
        self.worker_image = worker_image or image
        self.worker_takes = worker_takes
        self.cluster = cluster
        self.store: Store = store if store is not None else LocalStore(store_path)
        self.lanes = StoreLanes(self.store)  # every store call goes through these
        # Resources whose last event failed on the store, retried by the re-check.
        self.retry: dict[str, dict[str, Any]] = {}
        self.claim = claim
        self.s3 = s3
        self.image = image
        self.registry = Registry()
        self.command_generations: dict[str, tuple[Any, Any]] = {}
        self.tracked: dict[str, Tracked] = {}
        # Ids seeded from the clock (microseconds) keep growing across operator restarts,
        # so a client resuming with ``since`` after a restart misses nothing newer.
        self.history = EventHistory()
        self.bus = EventBus(sink=self.history.record, first_id=time.time_ns() // 1000)
        self.dirty: set[str] = set()
        self.pending: set[asyncio.Task[Any]] = set()
        # One namespace's resource events, Job events, re-checks and API calls take turns:
        # a Job seen while its namespace is being adopted must wait for the adoption.
        self.locks: dict[str, asyncio.Lock] = {}
        # Workers (see workers.py): when each was last heard from (monotonic), the tasks
        # waiting for one (FIFO), and who runs what. In memory only: lost on a restart.
        self.workers: dict[str, float] = {}
        self.work_queue: deque[TaskId] = deque()
        self.assigned: dict[TaskId, str] = {}
        self.work_ready = asyncio.Event()
        self.closing = False  # the API is shutting down: long polls end at once

    # -- commands ----------------------------------------------------------------------

    async def load_commands(self) -> None:
        """Before any namespace: every GaiaCommand, composites after what they use."""
        resources = await self.cluster.gaia_commands()
        resources.sort(key=lambda r: bool((r.get("spec") or {}).get("steps")))
        for resource in resources:
            await self.apply_command(resource)

    async def apply_command(self, resource: dict[str, Any]) -> None:
        """Register a GaiaCommand; if it is invalid or would break a namespace, say so on
        the resource and change nothing. Our own status writes come back as events: a
        generation already seen is skipped."""
        meta = resource["metadata"]
        if self.command_generations.get(meta["name"]) == (meta.get("uid"), meta.get("generation")):
            return
        self.command_generations[meta["name"]] = (meta.get("uid"), meta.get("generation"))
        try:
            merged, changed = self.registry.prepare([command_of(resource)])
            plans = {
                root: tracked.engine.prepare_command_change(changed, merged)
                for root, tracked in self.tracked.items()
            }
        except GaiaError as exc:
            await self._command_status(resource, str(exc))
            return
        self.registry.commit(merged)
        for root in [root for root, plan in plans.items() if plan.specs]:
            async with self._lock(root):  # the store is asked first: keep others out
                tracked = self.tracked.get(root)
                if tracked is None:
                    continue
                try:
                    plan = tracked.engine.prepare_command_change(changed, merged)
                    exists = await self._exists(root, _keys_of(plan))
                except GaiaError as exc:  # changed meanwhile, or the store is down
                    logger.error(
                        "command %s: namespace %s not updated: %s", meta["name"], root, exc
                    )
                    continue
                self.carry_out(tracked, tracked.engine.apply(plan, exists))
        # A spec refused for want of this command (`kubectl apply` of both at once, the
        # namespace's event first) is tried again now, not only when it changes.
        for tracked in [t for t in self.tracked.values() if t.problem]:
            tracked.generation = None
            await self.apply_namespace(tracked.resource)
        await self._command_status(resource, None)

    def forget_command(self, resource: dict[str, Any]) -> None:
        self.command_generations.pop(resource["metadata"]["name"], None)
        key = command_of(resource)["key"]
        if any(key in t.engine.users and t.engine.users[key] for t in self.tracked.values()):
            logger.warning("GaiaCommand %s deleted while processes use it; keeping it", key)
            return
        self.registry.commands.pop(key, None)

    async def _command_status(self, resource: dict[str, Any], problem: str | None) -> None:
        status = {
            "observedGeneration": resource["metadata"].get("generation"),
            "conditions": [valid_condition(problem, "the command is valid")],
        }
        await self.cluster.write_command_status(resource["metadata"]["name"], status)
        if problem:
            await self.cluster.event(resource, "Invalid", problem, warning=True)

    # -- namespaces --------------------------------------------------------------------

    def _lock(self, root: str) -> asyncio.Lock:
        return self.locks.setdefault(root, asyncio.Lock())

    async def apply_namespace(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Bring the engine in line with a GaiaNamespace's spec; idempotent. Returns what
        an expire request in the spec expired (for the HTTP API)."""
        root = resource["metadata"]["name"]
        async with self._lock(root):
            self.retry.pop(root, None)  # this resource is the latest
            try:
                return await self._apply_namespace(resource)
            except StoreError as exc:
                self.retry[root] = resource
                tracked = self.tracked.get(root)
                if tracked is not None:
                    tracked.generation = None  # not in line with its spec yet
                    self.dirty.add(root)
                message = f"the store failed, nothing changed: {exc}; retrying at each re-check"
                logger.error("%s", message)
                await self.cluster.event(resource, "StoreUnavailable", message, warning=True)
                return {}

    async def retry_store_failures(self) -> None:
        """Apply again the resources whose last event failed on the store."""
        for root, resource in list(self.retry.items()):
            tracked = self.tracked.get(root)
            await self.apply_namespace(tracked.resource if tracked else resource)

    async def _apply_namespace(self, resource: dict[str, Any]) -> dict[str, Any]:
        root = resource["metadata"]["name"]
        tracked = self.tracked.get(root)
        if tracked is None:
            if problem := root_problem(root):
                await self.cluster.event(resource, "Invalid", problem, warning=True)
                return {}
            tracked = await self._adopt(resource)
        elif tracked.k8s_namespace != resource["metadata"]["namespace"]:
            message = (
                f"Gaia namespace {root!r} is already defined in Kubernetes namespace "
                f"{tracked.k8s_namespace!r}; names are unique across the cluster"
            )
            if resource["metadata"].get("generation") != (resource.get("status") or {}).get(
                "observedGeneration"
            ):
                await self.cluster.event(resource, "Conflict", message, warning=True)
                await self.cluster.write_namespace_status(
                    resource["metadata"]["namespace"], root, _rejected(resource, message)
                )
            return {}
        tracked.resource = resource
        generation = resource["metadata"].get("generation")
        if generation == tracked.generation:
            return {}
        tracked.generation = generation
        return await self._reconcile_spec(tracked)

    async def _adopt(self, resource: dict[str, Any]) -> Tracked:
        """First sight of a resource (created, or met again after a restart): rebuild the
        engine from the spec, the store and the Jobs that exist, then resume."""
        root = resource["metadata"]["name"]
        engine = Namespace(root)
        engine.command_lookup = lambda key: self.registry.commands[key]
        status = resource.get("status") or {}
        tracked = Tracked(engine, resource, handled=dict(status.get("handled") or {}))
        try:
            plan = engine.prepare_merge(processes_of(resource), self.registry.commands)
        except GaiaError:
            pass  # _reconcile_spec, which runs next, reports it on the resource
        else:
            exists = await self._exists(root, _keys_of(plan))  # may raise: nothing adopted
            engine.mode = Mode.HALTED  # add without starting; Jobs are adopted first
            engine.apply(plan, exists)
        self.tracked[root] = tracked
        jobs = [
            o for j in await self.cluster.jobs(tracked.k8s_namespace, root) if (o := outcome_of(j))
        ]
        finished = []
        for outcome in sorted(jobs, key=lambda o: o.run):
            if engine.adopt(outcome.process, outcome.run, {"job": outcome.name}):
                if outcome.finished:
                    finished.append(outcome)
            else:
                self._spawn(self.cluster.delete_job(tracked.k8s_namespace, outcome.name))
        engine.mode = Mode.HALTED if (resource.get("spec") or {}).get("halted") else Mode.ACTIVE
        self.carry_out(tracked, engine.resume())
        for outcome in finished:
            await self._job_event(outcome, None)
        self.dirty.add(root)
        return tracked

    async def _reconcile_spec(self, tracked: Tracked) -> dict[str, Any]:
        engine, resource = tracked.engine, tracked.resource
        spec = resource.get("spec") or {}
        root = engine.root
        try:
            plan = engine.prepare_merge(
                processes_of(resource), self.registry.commands, replace_all=True
            )
        except GaiaError as exc:
            known, tracked.problem = tracked.problem, str(exc)  # before any await: a command
            if known != str(exc):  # applied meanwhile looks for refused specs to retry
                await self.cluster.event(resource, "Invalid", str(exc), warning=True)
            self.dirty.add(root)
            return {}
        self.carry_out(tracked, engine.apply(plan, await self._exists(root, _keys_of(plan))))
        tracked.problem = None
        halted = bool(spec.get("halted"))
        token = spec.get("trigger")
        fresh_token = bool(token) and token != tracked.handled.get("trigger")
        if halted and engine.mode is not Mode.HALTED:
            self.carry_out(tracked, engine.halt())
        elif not halted and (engine.mode is Mode.HALTED or fresh_token):
            # After the deletes the apply asked for: the lane keeps them in order.
            exists = await self._exists(root, engine.graph.data_keys)
            self.carry_out(tracked, engine.trigger(exists))
        if fresh_token:
            tracked.handled["trigger"] = token
        expired: dict[str, Any] = {}
        request = spec.get("expire") or {}
        if request.get("token") and request["token"] != tracked.handled.get("expire"):
            tracked.handled["expire"] = request["token"]
            try:
                processes, data, instructions = engine.expire(list(request.get("keys") or []))
            except GaiaError as exc:
                tracked.problem = f"expire {request['token']!r}: {exc}"
                await self.cluster.event(resource, "Invalid", tracked.problem, warning=True)
            else:
                self.carry_out(tracked, instructions)
                expired = {"process": processes, "data": data}
                tracked.expired = {request["token"]: expired}  # for the API, whoever ran it
        self.dirty.add(root)
        return expired

    def forget_namespace(self, resource: dict[str, Any]) -> None:
        """The resource is gone; its Jobs go with it (owner references)."""
        tracked = self.tracked.get(resource["metadata"]["name"])
        if tracked and tracked.resource["metadata"].get("uid") == resource["metadata"].get("uid"):
            del self.tracked[tracked.engine.root]

    # -- instructions ------------------------------------------------------------------

    def carry_out(self, tracked: Tracked, instructions: list[Instruction]) -> None:
        root = tracked.engine.root
        for instruction in instructions:
            if isinstance(instruction, StartTask):
                self._start(tracked, instruction)
            elif isinstance(instruction, CancelTask):
                if self._withdraw((root, instruction.process, instruction.run)):
                    continue  # a worker's heartbeat hears of it and kills the task
                name = job_name(root, instruction.process, instruction.run)
                self._spawn(self._cancel(tracked.k8s_namespace, root, name))
            elif isinstance(instruction, DeleteData):
                keys = instruction.keys
                self.lanes.later(root, f"deleting {list(keys)}", self.store.delete, root, keys)
            elif isinstance(instruction, Emit):
                self.bus.publish(instruction.event)
        self.dirty.add(root)

    def _start(self, tracked: Tracked, start: StartTask) -> None:
        name = job_name(start.root, start.process.key, start.run)
        task = tracked.engine.tasks[start.process.key]
        if self._for_workers(start.command.image):
            task.handle = {"worker": None}  # until a worker takes it
            self._enqueue((start.root, start.process.key, start.run))
            return
        task.handle = {"job": name}
        try:
            manifest = self._manifest(tracked, start)
        except GaiaError as exc:
            self.carry_out(
                tracked, tracked.engine.task_failed(start.process.key, start.run, str(exc))
            )
            return
        self._spawn(self._create(tracked, start, manifest))

    def _manifest(self, tracked: Tracked, start: StartTask) -> dict[str, Any]:
        return build_job(
            start, claim=self.claim, owner=tracked.resource, s3=self.s3, image=self.image
        )

    async def _create(self, tracked: Tracked, start: StartTask, manifest: dict[str, Any]) -> None:
        try:
            await self.cluster.create_job(manifest)
        except Exception as exc:  # the periodic re-check creates it again
            logger.warning("could not create Job %s: %s", manifest["metadata"]["name"], exc)

    async def _cancel(self, namespace: str, root: str, job: str) -> None:
        await self.cluster.delete_job(namespace, job)
        self._clear_staging(root, job)

    def _clear_staging(self, root: str, job: str) -> None:
        self.lanes.later(root, f"clearing {job}'s staging", self.store.clear_staging, root, job)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _exists(self, root: str, keys: Iterable[str]) -> Callable[[str], bool]:
        """The engine's ``exists``, asked of the store up front (off the event loop): a
        store that is down fails here, before the engine has changed anything. ``keys``
        must hold every key the engine call will ask about (see ``_keys_of``)."""
        return (await self.lanes.existing(root, keys)).__contains__

    # -- Jobs --------------------------------------------------------------------------

    async def job_event(self, outcome: JobOutcome, job: dict[str, Any] | None = None) -> None:
        """A Job changed: note its start, or carry its end into the engine (once)."""
        async with self._lock(outcome.root):
            await self._job_event(outcome, job)

    async def _job_event(self, outcome: JobOutcome, job: dict[str, Any] | None) -> None:
        tracked = self.tracked.get(outcome.root)
        if tracked is None:
            return
        engine = tracked.engine
        task = engine.tasks.get(outcome.process)
        if task is None and engine.adopt(outcome.process, outcome.run, {"job": outcome.name}):
            task = engine.tasks[outcome.process]  # ours from before a restart, unknown so far
        if task is None or task.run > outcome.run or outcome.process not in engine.graph.processes:
            self._spawn(
                self._cancel(tracked.k8s_namespace, outcome.root, outcome.name)
            )  # superseded
            return
        if task.run != outcome.run or not task.state.active:
            return  # already handled, or not ours yet
        if task.state is TaskState.QUEUED and (
            job is None or (job.get("status") or {}).get("active") or outcome.finished
        ):
            self.carry_out(
                tracked, engine.task_started(outcome.process, outcome.run, {"job": outcome.name})
            )
        if not outcome.finished:
            return
        if outcome.succeeded:
            instructions = await self._publish(tracked, outcome.process, outcome.run, outcome.name)
        else:
            exit_code, tail = await self._failure_detail(tracked, outcome)
            error = f"Job {outcome.name} failed: {outcome.error}"
            if exit_code is not None:
                error = f"exit code {exit_code} (Job {outcome.name}: {outcome.error})"
            instructions = engine.task_failed(outcome.process, outcome.run, error, exit_code, tail)
            self._clear_staging(outcome.root, outcome.name)
        self.carry_out(tracked, instructions)

    async def _publish(
        self, tracked: Tracked, process: str, run: int, name: str, *, job: bool = True
    ) -> list[Instruction]:
        """Publish what the task ``name`` (a Job, else a worker's task) staged."""
        engine, root = tracked.engine, tracked.engine.root
        leaf = engine.graph.processes[process]
        command = self.registry.commands[leaf.command]
        paths = {key: command.outputs[output] for output, key in leaf.outputs.items()}
        try:
            staged, missing = await self.lanes.call(root, self._staged, root, name, paths)
        except Exception as exc:  # the store cannot be read now: the re-check comes back
            logger.warning("could not look at the outputs of %s: %s", name, exc)
            return []
        if missing:
            self._clear_staging(root, name)
            return engine.task_failed(
                process, run, f"declared outputs {missing} were not produced", 0
            )
        try:
            await self.lanes.call(root, self.store.publish, root, staged)
        except GaiaError as exc:
            return engine.task_failed(process, run, str(exc), 0)
        if job:
            self._spawn(self._cancel(tracked.k8s_namespace, root, name))  # done with it
        else:
            self._clear_staging(root, name)
        return engine.task_succeeded(process, run)

    def _staged(
        self, root: str, name: str, paths: dict[str, str]
    ) -> tuple[dict[str, Any], list[str]]:
        """Where a task staged each output, and the container paths it did not stage."""
        staged = self.store.staged_outputs(root, name, paths)
        return staged, sorted(paths[k] for k in staged if not self.store.is_staged(staged[k]))

    async def _failure_detail(
        self, tracked: Tracked, outcome: JobOutcome
    ) -> tuple[int | None, list[str]]:
        try:
            pod = await self.cluster.pod_of(tracked.k8s_namespace, outcome.name)
        except Exception:
            return None, []
        if pod is None:
            return None, []
        exit_code = None
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if container.get("name") == "main" and terminated:
                exit_code = terminated.get("exitCode")
        tail = await self.cluster.pod_log_tail(tracked.k8s_namespace, pod["metadata"]["name"])
        return exit_code, tail

    async def recheck(self, root: str) -> None:
        """The safety net against missed watch events: compare Jobs with the engine."""
        async with self._lock(root):
            await self._recheck(root)

    async def _recheck(self, root: str) -> None:
        tracked = self.tracked.get(root)
        if tracked is None:
            return
        jobs = {
            o.name: (o, j)
            for j in await self.cluster.jobs(tracked.k8s_namespace, root)
            if (o := outcome_of(j))
        }
        for outcome, job in jobs.values():
            await self._job_event(outcome, job)
        await self._fail_killed_commands(tracked)
        engine = tracked.engine
        for process in sorted(engine.active):
            task = engine.tasks[process]
            if self._with_workers(tracked, (root, process, task.run)):
                continue
            name = job_name(root, process, task.run)
            if name not in jobs:  # lost on creation (API error): create it again
                leaf = engine.graph.processes[process]
                start = StartTask(root, leaf, self.registry.commands[leaf.command], task.run)
                manifest = self._manifest(tracked, start)
                self._spawn(self._create(tracked, start, manifest))

    async def _fail_killed_commands(self, tracked: Tracked) -> None:
        """On the object store a `wait` container uploads after the command; a command
        killed by a signal (OOM, eviction) leaves no exit code, and `wait` would wait
        forever. Such a pod's task fails, and its Job goes."""
        engine, root = tracked.engine, tracked.engine.root
        if not any(engine.active):
            return
        for pod in await self.cluster.pods(tracked.k8s_namespace, root):
            statuses = {
                c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []
            }
            main, wait = statuses.get("main"), statuses.get("wait")
            killed = ((main or {}).get("state") or {}).get("terminated") or {}
            if wait is None or not killed or killed.get("exitCode", 0) < 128:
                continue
            if "running" not in (wait.get("state") or {}):
                continue
            outcome = outcome_of(
                {
                    "metadata": {
                        **pod["metadata"],
                        "name": pod["metadata"]["labels"].get("batch.kubernetes.io/job-name", ""),
                    }
                }
            )
            if outcome is None or engine.current(outcome.process, outcome.run) is None:
                continue
            reason = killed.get("reason") or "killed"
            error = f"the command was killed ({reason}, exit code {killed['exitCode']})"
            self.carry_out(
                tracked, engine.task_failed(outcome.process, outcome.run, error, killed["exitCode"])
            )
            self._spawn(self._cancel(tracked.k8s_namespace, root, outcome.name))

    # -- workers (see workers.py) -------------------------------------------------------

    def _heard(self, worker: str) -> bool:
        seen = self.workers.get(worker)
        return seen is not None and time.monotonic() - seen < WORKER_ALIVE

    def _for_workers(self, image: str | None) -> bool:
        """Whether a task of a command with ``image`` goes to the workers: they run it
        with their own image's programs, so only a command of that image, unless told
        to take all."""
        if self.s3 is not None or not self.workers_alive():
            return False
        return self.worker_takes == "all" or image == self.worker_image

    def workers_alive(self) -> bool:
        return any(self._heard(worker) for worker in self.workers)

    def _enqueue(self, task_id: TaskId) -> None:
        self.work_queue.append(task_id)
        self.work_ready.set()

    def _withdraw(self, task_id: TaskId) -> bool:
        """A task cancelled (halt, expire, supersession): True if workers had it."""
        if task_id in self.assigned:
            del self.assigned[task_id]  # the worker's next heartbeat answers cancel
            self._clear_staging(task_id[0], worker_task_name(*task_id))
            return True
        if task_id in self.work_queue:
            self.work_queue.remove(task_id)
            return True
        return False

    def _with_workers(self, tracked: Tracked, task_id: TaskId) -> bool:
        """The re-check's look at a running task: True if it is (still) the workers'.
        A task whose worker went silent goes back to the queue, or to a Job when no worker
        is alive; so does a task queued while every worker went silent."""
        worker = self.assigned.get(task_id)
        if worker is not None and self._heard(worker):
            return True
        queued = task_id in self.work_queue
        if worker is None and not queued:
            return False  # a Job's
        if self.workers_alive():
            if worker is not None:
                logger.warning("worker %s went silent; %s#%s goes back", worker, *task_id[1:])
                del self.assigned[task_id]
                self._enqueue(task_id)
            return True
        self.assigned.pop(task_id, None)
        if queued:
            self.work_queue.remove(task_id)
        task = tracked.engine.tasks[task_id[1]]
        task.handle = {"job": job_name(*task_id)}
        return False  # the caller creates its Job

    async def work_take(self, worker: str, wait: float) -> dict[str, Any]:
        """A worker asks for a task: the next current one, waiting up to ``wait`` s."""
        deadline = time.monotonic() + min(max(wait, 0.0), 30.0)
        while True:
            self.workers[worker] = time.monotonic()
            while self.work_queue:
                offer = await self._offer(self.work_queue.popleft(), worker)
                if offer is not None:
                    return {"task": offer}
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closing:
                return {"task": None}
            self.work_ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.work_ready.wait()

    async def _offer(self, task_id: TaskId, worker: str) -> dict[str, Any] | None:
        root, process, run = task_id
        async with self._lock(root):
            tracked = self.tracked.get(root)
            if tracked is None or tracked.engine.current(process, run) is None:
                return None  # gone, halted or superseded meanwhile
            engine = tracked.engine
            task = engine.tasks[process]
            leaf = engine.graph.processes[process]
            command = self.registry.commands[leaf.command]
            name = worker_task_name(root, process, run)
            self._clear_staging(root, name)  # a previous worker's leftovers
            self.assigned[task_id] = worker
            if task.state is TaskState.QUEUED:
                self.carry_out(tracked, engine.task_started(process, run, {"worker": worker}))
            else:  # back from a worker gone silent
                task.handle = {"worker": worker}
                self.dirty.add(root)
            return {
                "root": root,
                "process": process,
                "run": run,
                "command": [render(arg, leaf.vars) for arg in command.command],
                "inputs": {
                    command.inputs[i]: f"{WORKER_DATA}/{root}/{key}"
                    for i, key in leaf.inputs.items()
                },
                "outputs": [command.outputs[o] for o in leaf.outputs],
                "stdout": command.stdout,
                "timeout": command.timeout,
                "staging": f"{WORKER_DATA}/{staging_dir(root, name)}",
            }

    def work_heartbeat(self, worker: str, root: str, process: str, run: int) -> bool:
        """A worker runs ``run``: True if it should kill it (no longer current)."""
        self.workers[worker] = time.monotonic()
        tracked = self.tracked.get(root)
        return (
            self.assigned.get((root, process, run)) != worker
            or tracked is None
            or tracked.engine.current(process, run) is None
        )

    async def work_done(
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
        self.workers[worker] = time.monotonic()
        task_id = (root, process, run)
        name = worker_task_name(root, process, run)
        async with self._lock(root):
            tracked = self.tracked.get(root)
            if (
                self.assigned.get(task_id) != worker
                or tracked is None
                or tracked.engine.current(process, run) is None
            ):
                if self.assigned.get(task_id) == worker:
                    del self.assigned[task_id]
                if task_id not in self.assigned:
                    self._clear_staging(root, name)
                return False
            del self.assigned[task_id]
            if ok:
                instructions = await self._publish(tracked, process, run, name, job=False)
            else:
                self._clear_staging(root, name)
                instructions = tracked.engine.task_failed(
                    process,
                    run,
                    error or f"worker {worker} reported a failure",
                    exit_code,
                    log_tail,
                )
            self.carry_out(tracked, instructions)
            return True

    def stop_work(self) -> None:
        """The HTTP API is closing: answer every waiting ``/work/take`` now."""
        self.closing = True
        self.work_ready.set()

    def worker_stopped(self, worker: str) -> None:
        """The worker idled out; anything it still had goes back (the re-check)."""
        self.workers.pop(worker, None)

    # -- status ------------------------------------------------------------------------

    async def flush_status(self) -> None:
        roots, self.dirty = self.dirty, set()
        for root in sorted(roots):
            tracked = self.tracked.get(root)
            if tracked is None:
                continue
            status = summary(
                tracked.engine,
                handled=tracked.handled,
                generation=tracked.generation,
                problem=tracked.problem,
            )
            try:
                await self.cluster.write_namespace_status(
                    tracked.k8s_namespace, tracked.resource["metadata"]["name"], status
                )
            except Exception as exc:
                logger.warning("could not write the status of %s: %s", root, exc)
                self.dirty.add(root)


def _rejected(resource: dict[str, Any], message: str) -> dict[str, Any]:
    """The status of a resource the operator will not run."""
    return {
        "state": "error",
        "message": message,
        "observedGeneration": resource["metadata"].get("generation"),
        "conditions": [valid_condition(message, "", reason="Conflict")],
    }


def _keys_of(plan: MergePlan) -> set[str]:
    """Every data key the plan's processes read or write: all its apply may look up."""
    return {
        key
        for leaves in plan.processes.values()
        for process in leaves
        for key in (*process.inputs.values(), *process.outputs.values())
    }
