"""The operator's host: the shell (:mod:`gaia.shell`) on a cluster.

Each GaiaNamespace resource drives one engine namespace and each GaiaCommand one command.
Tasks run as Kubernetes Jobs, or as tasks queued for sisyphus workers
(:mod:`gaia.kube.work_queue`); data lives on a shared volume or in S3, reached through
per-namespace store lanes; state lives in the resources (their spec, and the status this
host writes back). Every entry point is idempotent, so a watch event seen twice, a
periodic re-check or a restart never runs a task twice or loses a completion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gaia.bus import EventBus, EventHistory
from gaia.engine.instructions import CancelTask, StartTask
from gaia.engine.keys import root_problem
from gaia.engine.limits import DEFAULT_LIMITS, Limits
from gaia.engine.lookup import Lookup
from gaia.engine.namespace import Namespace
from gaia.engine.states import Mode
from gaia.engine.tasks import Task
from gaia.errors import GaiaError, InvalidRequest, StoreError
from gaia.kube.cluster import Cluster
from gaia.kube.conditions import carry_transition_times, command_conditions, condition
from gaia.kube.config import DEFAULT_IMAGE, DEFAULT_JOB_TTL, S3Config
from gaia.kube.jobs import (
    JobOutcome,
    build_job,
    controller_uid,
    handled_patch,
    job_name,
    outcome_of,
    output_directories,
    recorded_task,
    refusal,
)
from gaia.kube.pod_security import TASK_GROUP
from gaia.kube.pods import killed_command, main_exit_code
from gaia.kube.resources import ROOT_LABEL, command_of, processes_of
from gaia.kube.stalls import LoopWatch
from gaia.kube.status import summary
from gaia.kube.store_lanes import StoreLanes
from gaia.kube.worker_desk import WorkerDesk
from gaia.kube.workers import worker_task_name
from gaia.shell import Kept, Outcome, Shell
from gaia.store import LocalStore, Store
from gaia.wire import TaskState

__all__ = ["KubeHost", "Tracked"]

logger = logging.getLogger(__name__)


@dataclass
class Tracked:
    """What the operator knows of one GaiaNamespace resource, beside its engine namespace."""

    resource: dict[str, Any]
    generation: int | None = None
    handled: dict[str, Any] = field(default_factory=dict)  # trigger / expire tokens done
    problem: str | None = None  # why the current spec was rejected
    expired: dict[str, Any] = field(default_factory=dict)  # expire token -> what it expired
    written: dict[str, Any] | None = None  # the status written last (None: none yet)

    @property
    def conditions(self) -> list[dict[str, Any]]:
        """The conditions written last, or found on the resource (before a restart)."""
        status = self.written or self.resource.get("status") or {}
        return list(status.get("conditions") or [])

    @property
    def k8s_namespace(self) -> str:
        return str(self.resource["metadata"]["namespace"])

    @property
    def root(self) -> str:
        return str(self.resource["metadata"]["name"])


class KubeHost(Shell):
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
        limits: Limits = DEFAULT_LIMITS,
        job_ttl: int = DEFAULT_JOB_TTL,
    ) -> None:
        """``store`` defaults to the shared volume mounted at ``store_path`` (task pods
        mount ``claim``); with ``s3`` set, ``store`` is that bucket and task pods copy
        their data in and out with ``image``'s ``gaia task`` (see jobs.py). Workers run
        ``worker_image`` (default ``image``) and take the tasks whose command has that
        image, or every task with ``worker_takes="all"``. A finished Job whose outcome is
        recorded is kept ``job_ttl`` seconds (its ``ttlSecondsAfterFinished``); with 0 a
        succeeded one is deleted at once and a failed one kept until its process runs
        again."""
        # Ids seeded from the clock (microseconds) keep growing across operator restarts,
        # so a client resuming with ``since`` after a restart misses nothing newer.
        self.history = EventHistory()
        bus = EventBus(sink=self.history.record, first_id=time.time_ns() // 1000)
        super().__init__(store if store is not None else LocalStore(store_path), bus, limits)
        self.cluster = cluster
        self.lanes = StoreLanes(self.store)  # every store call goes through these
        self.claim = claim
        self.s3 = s3
        self.image = image
        self.worker_image = worker_image or image
        self.worker_takes = worker_takes
        self.job_ttl = job_ttl
        # Look-alike Jobs already reported (namespace, name, UID): one Warning event each.
        self.refused: set[tuple[str, str, str]] = set()
        self.tracked: dict[str, Tracked] = {}
        self.reconciling: dict[str, asyncio.Lock] = {}  # per resource, see apply_namespace
        self.command_generations: dict[str, tuple[Any, Any]] = {}
        # A command's generation being applied now: a second event for it (the watch's,
        # as the API's own call applies it) waits for the first to end.
        self.applying_commands: dict[str, asyncio.Future[None]] = {}
        # GaiaCommands refused (name -> resource, why), tried again when a command comes.
        self.refused_commands: dict[str, tuple[dict[str, Any], str]] = {}
        # Resources whose last event failed on the store, retried by the re-check.
        self.retry: dict[str, dict[str, Any]] = {}
        self.dirty: set[str] = set()  # namespaces whose status must be written
        self.pending: set[asyncio.Task[Any]] = set()
        # Jobs asked for and not yet created (waiting in the rate limiter, or in flight):
        # the re-check must not ask for them again. And Jobs created, with when (monotonic):
        # one the re-check finds gone without an outcome is not created again (it may have
        # run: a task never runs twice because of the operator), its task fails instead.
        self.creating: set[str] = set()
        self.created: dict[str, float] = {}
        self.loop_watch = LoopWatch(lambda seconds: self.desk.queue.forgive(seconds))
        self.desk = WorkerDesk(
            self,
            self.clear_staging,
            self.prepare_staging,
            image=None if s3 is not None else self.worker_image,
            takes_all=worker_takes == "all",
        )

    # -- what the shell asks of a host -------------------------------------------------

    async def look_up(self, root: str, keys: Iterable[str]) -> Lookup:
        return await self.lanes.call(root, self.store.lookup, root, list(keys))

    def delete_data(self, root: str, keys: Sequence[str]) -> None:
        self.lanes.later(root, f"deleting {list(keys)}", self.store.delete, root, keys)

    async def publish_outputs(self, root: str, staged: Mapping[str, Any]) -> None:
        await self.lanes.call(root, self.store.publish, root, staged)

    async def locate_outputs(
        self, namespace: Namespace, task: Task, outcome: Outcome, paths: Mapping[str, str]
    ) -> dict[str, Any]:
        """In the staging folder of the task's Job, or of the worker that ran it. A worker
        checked and synced what it staged; a Job's container wrote there directly, so the
        store checks and syncs that (:meth:`Store.seal_staged`)."""
        name = _staging_name(namespace.root, task)
        by_job = not task.handle.get("worker")  # as _staging_name tells the two apart
        return await self.lanes.call(
            namespace.root, self._staged, namespace.root, name, paths, by_job
        )

    def _staged(
        self, root: str, name: str, paths: Mapping[str, str], by_job: bool
    ) -> dict[str, Any]:
        staged = self.store.staged_outputs(root, name, paths)
        found = {key: where for key, where in staged.items() if self.store.is_staged(where)}
        return self.store.seal_staged(found, paths) if by_job else found

    def keep(self, namespace: Namespace, kept: Kept) -> None:
        self.dirty.add(namespace.root)  # the resource's status, written by flush_status

    def run_task(self, namespace: Namespace, start: StartTask) -> None:
        key, run = start.process.key, start.run
        if self.desk.takes(start.command):
            self.desk.hand_over(namespace, start)
            return
        name = job_name(start.root, key, run)
        namespace.set_handle(key, run, {"job": name})
        try:
            manifest = self._manifest(start)
        except GaiaError as exc:
            self.start_failed(namespace, start, str(exc))
            return
        self._create(start, manifest)

    def cancel_task(self, namespace: Namespace, cancel: CancelTask) -> None:
        root = cancel.root
        task = namespace.tasks.get(cancel.process)
        handle = task.handle if task is not None and task.run == cancel.run else {}
        if "worker" in handle:
            self.desk.withdraw((root, cancel.process, cancel.run))
            return
        name = job_name(root, cancel.process, cancel.run)
        self._spawn(self._delete_job(self.tracked[root].k8s_namespace, root, name))

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
        seen = _seen(resource)
        if self.command_generations.get(meta["name"]) == seen:
            # Seen, but maybe not applied yet: returning now told the API's caller the
            # command was registered while the watch's event was still applying it.
            if (applying := self.applying_commands.get(meta["name"])) is not None:
                await asyncio.shield(applying)
            return
        self.command_generations[meta["name"]] = seen
        applied = asyncio.get_running_loop().create_future()
        self.applying_commands[meta["name"]] = applied
        try:
            await self._apply_command(resource, meta, seen)
        finally:
            applied.set_result(None)
            if self.applying_commands.get(meta["name"]) is applied:
                del self.applying_commands[meta["name"]]

    async def _apply_command(
        self, resource: dict[str, Any], meta: dict[str, Any], seen: tuple[Any, Any]
    ) -> None:
        try:
            await self.change_commands([command_of(resource)])
        except StoreError as exc:
            del self.command_generations[meta["name"]]  # the next event or re-check retries
            message = f"the store failed, nothing changed: {exc}"
            await self.cluster.event(resource, "StoreUnavailable", message, warning=True)
            return
        except GaiaError as exc:
            known = self.refused_commands.get(meta["name"])
            self.refused_commands[meta["name"]] = (resource, str(exc))
            if known is None or (_seen(known[0]), known[1]) != (seen, str(exc)):
                await self._command_status(resource, str(exc))  # news: say so, once
            return
        self.refused_commands.pop(meta["name"], None)
        # A composite refused for want of this command is tried again now: kustomize, Flux
        # and Argo CD apply in name order (`cat-wc` before `wc`), not leaves first.
        for name, (refused, _) in list(self.refused_commands.items()):
            if name in self.refused_commands and self.refused_commands[name][0] is refused:
                self.command_generations.pop(name, None)
                await self.apply_command(refused)
        # A spec refused for want of this command (`kubectl apply` of both at once, the
        # namespace's event first) is tried again now, not only when it changes.
        for tracked in [t for t in self.tracked.values() if t.problem]:
            tracked.generation = None
            await self.apply_namespace(tracked.resource)
        await self._command_status(resource, None)

    def forget_command(self, resource: dict[str, Any]) -> None:
        self.command_generations.pop(resource["metadata"]["name"], None)
        self.refused_commands.pop(resource["metadata"]["name"], None)
        key = command_of(resource)["key"]
        if any(namespace.uses_command(key) for namespace in self.namespaces.values()):
            logger.warning("GaiaCommand %s deleted while processes use it; keeping it", key)
            return
        self.registry.remove(key)

    async def _command_status(self, resource: dict[str, Any], problem: str | None) -> None:
        generation = resource["metadata"].get("generation")
        previous = (resource.get("status") or {}).get("conditions") or []
        found = command_conditions(problem, generation, previous)
        status = {"observedGeneration": generation, "conditions": found}
        await self.cluster.write_command_status(resource["metadata"]["name"], status)
        if problem:
            await self.cluster.event(resource, "Invalid", problem, warning=True)

    # -- namespaces --------------------------------------------------------------------

    async def apply_namespace(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Bring the engine in line with a GaiaNamespace's spec; idempotent. Returns what
        an expire request in the spec expired (for the HTTP API)."""
        root = resource["metadata"]["name"]
        # One resource event at a time, from start to end: a second one (the watch's, as
        # the API's own call is still applying the change) waits, then finds it done.
        async with self.reconciling.setdefault(root, asyncio.Lock()):
            return await self._apply_namespace_once(resource)

    async def _apply_namespace_once(self, resource: dict[str, Any]) -> dict[str, Any]:
        root = resource["metadata"]["name"]
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
            await self._refuse_twin(tracked, resource)
            return {}
        tracked.resource = resource
        generation = resource["metadata"].get("generation")
        if generation == tracked.generation:
            return {}
        expired = await self._reconcile_spec(tracked)
        # Only now does the status speak for this spec: set before, a status written while
        # the merge waited on the store said observedGeneration N over the state of N-1.
        tracked.generation = generation
        return expired

    async def _refuse_twin(self, tracked: Tracked, resource: dict[str, Any]) -> None:
        message = (
            f"Gaia namespace {tracked.root!r} is already defined in Kubernetes namespace "
            f"{tracked.k8s_namespace!r}; names are unique across the cluster"
        )
        status = resource.get("status") or {}
        if resource["metadata"].get("generation") != status.get("observedGeneration"):
            await self.cluster.event(resource, "Conflict", message, warning=True)
            await self.cluster.write_namespace_status(
                resource["metadata"]["namespace"], tracked.root, _rejected(resource, message)
            )

    async def _adopt(self, resource: dict[str, Any]) -> Tracked:
        """First sight of a resource (created, or met again after a restart): rebuild the
        engine from the spec, the store and the Jobs that exist, then resume."""
        root = resource["metadata"]["name"]
        status = resource.get("status") or {}
        tracked = Tracked(resource, handled=dict(status.get("handled") or {}))
        finished = []
        async with self.lock(root):
            namespace = await self.restore(root, processes_of(resource))
            self.tracked[root] = tracked
            jobs = await self._our_jobs(tracked)
            # Handled Jobs, kept for their TTL, are recorded runs: never adopted nor
            # carried in again, and no later run may take their names; the latest one
            # of a process is its task record (a failure stays a failure).
            live = [(o, j) for o, j in jobs.values() if not o.handled]
            newest_live = {o.process: o.run for o, _ in sorted(live, key=lambda f: f[0].run)}
            runs: dict[str, int] = {}
            records: dict[str, Task] = {}
            for outcome, job in jobs.values():
                if not outcome.handled:
                    continue
                runs[outcome.process] = max(runs.get(outcome.process, 0), outcome.run)
                known = records.get(outcome.process)
                if outcome.run > newest_live.get(outcome.process, 0) and (
                    known is None or known.run < outcome.run
                ):
                    records[outcome.process] = recorded_task(job, outcome)
            namespace.restore_tasks(records.values(), runs)
            for outcome, job in sorted(live, key=lambda found: found[0].run):
                if namespace.adopt(outcome.process, outcome.run, {"job": outcome.name}):
                    self.created[outcome.name] = time.monotonic()
                    if outcome.finished:
                        finished.append((outcome, job))
                else:
                    self._spawn(self._delete_job(tracked.k8s_namespace, root, outcome.name))
            halted = bool((resource.get("spec") or {}).get("halted"))
            self.carry_out(namespace, namespace.resume(Mode.HALTED if halted else Mode.ACTIVE))
        for outcome, job in finished:
            await self.job_event(outcome, job)
        self.dirty.add(root)
        return tracked

    async def _reconcile_spec(self, tracked: Tracked) -> dict[str, Any]:
        resource, root = tracked.resource, tracked.root
        spec = resource.get("spec") or {}
        try:
            await self.merge(root, processes_of(resource), replace_all=True)
        except InvalidRequest as exc:
            known, tracked.problem = tracked.problem, str(exc)  # before any await: a command
            if known != str(exc):  # applied meanwhile looks for refused specs to retry
                await self.cluster.event(resource, "Invalid", str(exc), warning=True)
            self.dirty.add(root)
            return {}
        tracked.problem = None
        namespace = self.namespaces[root]
        halted = bool(spec.get("halted"))
        token = spec.get("trigger")
        fresh_token = bool(token) and token != tracked.handled.get("trigger")
        if halted and namespace.mode is not Mode.HALTED:
            await self.halt(root)
        elif not halted and (namespace.mode is Mode.HALTED or fresh_token):
            await self.trigger(root)
        if fresh_token:
            tracked.handled["trigger"] = token
        expired: dict[str, Any] = {}
        request = spec.get("expire") or {}
        if request.get("token") and request["token"] != tracked.handled.get("expire"):
            tracked.handled["expire"] = request["token"]
            try:
                expired = await self.expire(root, list(request.get("keys") or []))
            except GaiaError as exc:
                tracked.problem = f"expire {request['token']!r}: {exc}"
                await self.cluster.event(resource, "Invalid", tracked.problem, warning=True)
            else:
                tracked.expired = {request["token"]: expired}  # for the API, whoever ran it
        self.dirty.add(root)
        return expired

    def forget_namespace(self, resource: dict[str, Any]) -> None:
        """The resource is gone; its Jobs go with it (owner references)."""
        root = resource["metadata"]["name"]
        tracked = self.tracked.get(root)
        if tracked and tracked.resource["metadata"].get("uid") == resource["metadata"].get("uid"):
            del self.tracked[root]
            self.namespaces.pop(root, None)
            self._flow_json.pop(root, None)

    # -- Jobs --------------------------------------------------------------------------

    def _manifest(self, start: StartTask) -> dict[str, Any]:
        owner = self.tracked[start.root].resource
        return build_job(start, claim=self.claim, owner=owner, s3=self.s3, image=self.image)

    def _create(self, start: StartTask, manifest: dict[str, Any]) -> None:
        """Create the Job soon (the rate limiter decides when); until then the re-check
        knows it is on its way and does not ask for it again."""
        name = manifest["metadata"]["name"]
        self.creating.add(name)
        self._spawn(self._create_now(start, name, manifest))

    async def _create_now(self, start: StartTask, name: str, manifest: dict[str, Any]) -> None:
        try:
            # The pod's unprivileged user writes its outputs into folders made for it
            # first (else the kubelet makes them, as root, on the claim).
            await self.prepare_staging(start.root, name, output_directories(start))
            if not await self.cluster.create_job(manifest) and not await self._ours_in_the_way(
                manifest
            ):
                return  # a look-alike holds the name: the re-check tries again
        except GaiaError as exc:  # the periodic re-check creates it again
            logger.warning("could not create Job %s: %s", name, exc)
        else:
            self.created[name] = time.monotonic()
        finally:
            self.creating.discard(name)

    async def _ours_in_the_way(self, manifest: dict[str, Any]) -> bool:
        """A Job of the manifest's name exists: ours (an earlier try went through), or
        a look-alike made to be taken for it, which is reported and not followed."""
        meta = manifest["metadata"]
        existing = await self.cluster.read_job(meta["namespace"], meta["name"])
        outcome = outcome_of(existing) if existing is not None else None
        tracked = self.tracked.get(meta["labels"][ROOT_LABEL])
        if existing is None or tracked is None:
            return existing is not None  # gone meanwhile: the re-check creates it
        if outcome is None:
            outcome = outcome_of(manifest)
            assert outcome is not None
            outcome = replace(outcome, namespace=meta["namespace"])
        return await self._trusted(tracked, outcome, existing)

    async def _delete_job(self, namespace: str, root: str, job: str) -> None:
        self.created.pop(job, None)
        try:
            await self.cluster.delete_job(namespace, job)
        except GaiaError as exc:  # the re-check finds it again
            logger.warning("could not delete Job %s: %s", job, exc)
            return
        self.clear_staging(root, job)

    async def prepare_staging(self, root: str, name: str, directories: list[str]) -> None:
        await self.lanes.call(root, self.store.prepare_staging, root, name, directories, TASK_GROUP)

    def clear_staging(self, root: str, name: str) -> None:
        self.lanes.later(root, f"clearing {name}'s staging", self.store.clear_staging, root, name)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def job_event(self, outcome: JobOutcome, job: dict[str, Any]) -> None:
        """A Job changed: note its start, or carry its end into the engine (once). Only
        Jobs that the GaiaNamespace created are read; a look-alike is reported and left
        alone."""
        root = outcome.root
        tracked = self.tracked.get(root)
        if tracked is None or not await self._trusted(tracked, outcome, job):
            return
        async with self.lock(root):
            namespace = self.namespaces.get(root)
            if namespace is None or self.tracked.get(root) is not tracked:
                return
            task = namespace.tasks.get(outcome.process)
            if outcome.handled:  # recorded already: Kubernetes deletes it after its TTL
                return
            if task is None and namespace.adopt(
                outcome.process, outcome.run, {"job": outcome.name}
            ):
                task = namespace.tasks[outcome.process]  # ours from before a restart
            if (
                task is None
                or task.run > outcome.run
                or outcome.process not in namespace.graph.processes
            ):
                self._spawn(self._delete_job(tracked.k8s_namespace, root, outcome.name))
                return  # superseded
            if task.run != outcome.run or not task.state.active:
                return  # already handled, or not ours yet
            self.created.setdefault(outcome.name, time.monotonic())  # it exists
            if task.state is TaskState.QUEUED and (
                (job.get("status") or {}).get("active") or outcome.finished
            ):
                self.task_started(root, outcome.process, outcome.run, {"job": outcome.name})
        if not outcome.finished:
            return
        if outcome.succeeded:
            result = Outcome(ok=True, exit_code=0)
        else:
            exit_code, tail = await self._failure_detail(tracked, outcome)
            error = f"Job {outcome.name} failed: {outcome.error}"
            if exit_code is not None:
                error = f"exit code {exit_code} (Job {outcome.name}: {outcome.error})"
            result = Outcome(ok=False, error=error, exit_code=exit_code, log_tail=tail)
        state = await self.task_finished(root, outcome.process, outcome.run, result)
        if state is not None:
            self.created.pop(outcome.name, None)  # its outcome is recorded
            task = self.namespaces[root].tasks[outcome.process]
            self._spawn(self._handled(tracked, outcome.name, task))

    async def _handled(self, tracked: Tracked, name: str, task: Task) -> None:
        """A Job's outcome is recorded: say so on the Job, so that nothing (the re-check,
        its events, a restarted operator) acts on it again, and let Kubernetes delete it
        after the TTL; the TTL is set only now, so a Job is never deleted before its end
        was carried in, however long the operator was away. With a TTL of 0, as before
        TTLs: a succeeded Job is deleted at once, a failed one is kept (for `kubectl
        logs`) until its process runs again, unmarked, so that the re-check finds it."""
        root = tracked.root
        if not self.job_ttl:
            if task.state is TaskState.COMPLETE:
                await self._delete_job(tracked.k8s_namespace, root, name)
            else:
                self.clear_staging(root, name)
            return
        try:
            await self.cluster.mark_job(
                tracked.k8s_namespace, name, handled_patch(task, self.job_ttl)
            )
        except GaiaError as exc:  # the re-check finds it finished and recorded again
            logger.warning("could not mark Job %s handled: %s", name, exc)
        self.clear_staging(root, name)  # published, or failed: nothing in it is wanted

    async def _trusted(self, tracked: Tracked, outcome: JobOutcome, job: dict[str, Any]) -> bool:
        """Whether ``job`` is one the GaiaNamespace created (jobs.refusal); a look-alike
        gets a Warning event on the GaiaNamespace, once, and is otherwise ignored: never
        published, deleted or taken for a task's outcome."""
        why = refusal(job, tracked.resource)
        if why is None:
            return True
        seen = (outcome.namespace, outcome.name, outcome.uid)
        if seen not in self.refused:
            self.refused.add(seen)
            message = (
                f"ignored Job {outcome.namespace}/{outcome.name}: it is labelled as run "
                f"{outcome.run} of process {outcome.process!r} of Gaia namespace "
                f"{tracked.root!r}, but {why}"
            )
            logger.warning("%s", message)
            await self.cluster.event(tracked.resource, "ForeignJob", message, warning=True)
        return False

    async def _our_jobs(
        self, tracked: Tracked, handled: bool = True
    ) -> dict[str, tuple[JobOutcome, dict[str, Any]]]:
        """The GaiaNamespace's Jobs, by name, from one listing; look-alikes reported.
        Without ``handled``, the Jobs kept for their TTL are left out of the listing (the
        re-check has nothing to do with them, and there may be thousands)."""
        found = {}
        listing = await self.cluster.jobs(tracked.k8s_namespace, tracked.root, handled)
        for job in listing:
            outcome = outcome_of(job)
            if outcome is not None and await self._trusted(tracked, outcome, job):
                found[outcome.name] = (outcome, job)
        return found

    async def task_pod(self, tracked: Tracked, name: str) -> dict[str, Any] | None:
        """The pod of the GaiaNamespace's Job ``name`` (for its log), if it has one."""
        job = await self.cluster.read_job(tracked.k8s_namespace, name)
        outcome = outcome_of(job) if job is not None else None
        if job is None or outcome is None or not await self._trusted(tracked, outcome, job):
            return None
        return await self.cluster.pod_of(tracked.k8s_namespace, name, outcome.uid)

    async def _failure_detail(
        self, tracked: Tracked, outcome: JobOutcome
    ) -> tuple[int | None, list[str]]:
        try:
            pod = await self.cluster.pod_of(tracked.k8s_namespace, outcome.name, outcome.uid)
        except GaiaError:
            return None, []
        if pod is None:
            return None, []
        tail = await self.cluster.pod_log_tail(tracked.k8s_namespace, pod["metadata"]["name"])
        return main_exit_code(pod), tail

    # -- the re-check ------------------------------------------------------------------

    async def recheck(self, root: str) -> None:
        """The safety net against missed watch events: compare Jobs with the engine. One
        listing (parsed off the loop); the work after it follows the active tasks and
        the Jobs that changed, not the size of the namespace."""
        tracked = self.tracked.get(root)
        if tracked is None:
            return
        listed_at = time.monotonic()
        jobs = await self._our_jobs(tracked, handled=False)
        namespace = self.namespaces.get(root)
        if namespace is None:
            return
        for outcome, job in jobs.values():
            task = namespace.tasks.get(outcome.process)
            if task is not None and task.run == outcome.run and not task.state.active:
                continue  # its outcome is recorded: nothing to do but wait for its TTL
            await self.job_event(outcome, job)
        await self._fail_killed_commands(tracked, jobs)
        async with self.lock(root):
            if self.namespaces.get(root) is not namespace:
                return
            for process in sorted(namespace.active):
                task = namespace.tasks[process]
                if "worker" in task.handle and self.desk.keeps(namespace, task):
                    continue
                name = job_name(root, process, task.run)
                if name in jobs or name in self.creating:
                    continue
                created = self.created.get(name)
                if created is not None and created > listed_at:
                    continue  # created after the listing was taken
                if created is not None:  # gone without an outcome: it may have run
                    self.created.pop(name, None)
                    error = (
                        f"Job {name} was deleted before its end was seen; nothing was "
                        "published (trigger to run the process again)"
                    )
                    self.carry_out(namespace, namespace.task_failed(process, task.run, error))
                    continue
                # lost on creation (an API error), or back from the workers
                namespace.set_handle(process, task.run, {"job": name})
                leaf = namespace.graph.processes[process]
                start = StartTask(root, leaf, self.registry.commands[leaf.command], task.run)
                self._create(start, self._manifest(start))

    async def _fail_killed_commands(
        self, tracked: Tracked, jobs: Mapping[str, tuple[JobOutcome, dict[str, Any]]]
    ) -> None:
        """On S3, fail the tasks whose command was killed; only pods made by the
        GaiaNamespace's own Jobs (``jobs``) are read."""
        namespace = self.namespaces.get(tracked.root)
        if namespace is None or not namespace.active or self.s3 is None:
            return
        for pod in await self.cluster.pods(tracked.k8s_namespace, tracked.root):
            killed = killed_command(pod)
            if killed is None:
                continue
            found, reason, code = killed
            owner = jobs.get(found.name)
            if owner is None or owner[0].handled or controller_uid(pod) != owner[0].uid:
                continue
            outcome = owner[0]
            error = f"the command was killed ({reason}, exit code {code})"
            result = Outcome(ok=False, error=error, exit_code=code)
            if await self.task_finished(tracked.root, outcome.process, outcome.run, result):
                self._spawn(self._delete_job(tracked.k8s_namespace, tracked.root, outcome.name))

    # -- status ------------------------------------------------------------------------

    async def flush_status(self) -> None:
        roots, self.dirty = self.dirty, set()
        for root in sorted(roots):
            tracked = self.tracked.get(root)
            namespace = self.namespaces.get(root)
            if tracked is None or namespace is None:
                continue
            status = summary(
                namespace,
                handled=tracked.handled,
                generation=tracked.generation,
                problem=tracked.problem,
                previous=tracked.conditions,
            )
            if status == tracked.written:
                continue  # nothing changed: no write (transition times carry over)
            try:
                await self.cluster.write_namespace_status(tracked.k8s_namespace, root, status)
            except GaiaError as exc:
                logger.warning("could not write the status of %s: %s", root, exc)
                self.dirty.add(root)
            else:
                tracked.written = status


def _seen(resource: dict[str, Any]) -> tuple[Any, Any]:
    """Which version of a resource this is: its uid and generation."""
    return resource["metadata"].get("uid"), resource["metadata"].get("generation")


def _staging_name(root: str, task: Task) -> str:
    """Where the task's outputs are staged: its Job's folder, or its worker's."""
    worker = task.handle.get("worker")
    if worker:
        return worker_task_name(root, task.process, task.run, str(worker))
    return job_name(root, task.process, task.run)


def _rejected(resource: dict[str, Any], message: str) -> dict[str, Any]:
    """The status of a resource the operator will not run: not ready, and stalled."""
    generation = resource["metadata"].get("generation")
    previous = (resource.get("status") or {}).get("conditions") or []
    found = [
        condition("Ready", False, "Conflict", message, generation),
        condition("Complete", False, "Conflict", message, generation),
        condition("Failed", False, "NoFailure", "no process has run", generation),
        condition("Reconciling", False, "Conflict", message, generation),
        condition("Stalled", True, "Conflict", message, generation),
        condition("Valid", False, "Conflict", message, generation),
    ]
    return {
        "state": "error",
        "message": message,
        "observedGeneration": generation,
        "conditions": carry_transition_times(found, previous),
    }
