"""The host core: what the standalone server and the operator share.

The engine (:mod:`gaia.engine`) decides; a host carries its decisions out. Everything the
two hosts have in common lives here, once: the command registry and one engine namespace
per Gaia namespace, the order of a change (check, look up what the store holds, apply,
keep what was applied, carry out), the instruction loop, publishing a finished task, and
the checks of every call. A host subclasses :class:`Shell` and supplies only what
differs between one machine and a cluster::

    run_task / cancel_task    how a task runs: a local process, a Kubernetes Job, a worker
    look_up / delete_data     where data lives, and how a store call leaves the event loop
    publish_outputs           moving a finished task's staged outputs into place
    keep / keep_commands      where state is kept: a database, or the resources themselves

Every change to a namespace takes that namespace's lock, so a change that waits on the
store is never interleaved with another; a command change takes them all. Everything the
change needs from the store is looked up before the engine is touched, so a refused or
failed change leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gaia.bus import EventBus
from gaia.engine import views
from gaia.engine.instructions import (
    CancelTask,
    DeleteData,
    Emit,
    Instruction,
    StartTask,
    outputs_of,
)
from gaia.engine.keys import root_problem
from gaia.engine.limits import DEFAULT_LIMITS, Limits
from gaia.engine.lookup import Lookup
from gaia.engine.model import Command, ProcessSpec
from gaia.engine.namespace import MergePlan, Namespace
from gaia.engine.registry import Registry
from gaia.engine.tasks import Task
from gaia.errors import GaiaError, InvalidRequest, NotFound, StoreError
from gaia.store import Store
from gaia.wire import TaskState

__all__ = ["Kept", "Outcome", "Shell", "check_worker_keys", "encoded_flow"]

logger = logging.getLogger(__name__)


@dataclass
class Kept:
    """What one change did to a namespace, for the host to keep (see :meth:`Shell.keep`)."""

    specs: Sequence[ProcessSpec] = ()  # added or replaced
    dropped: Sequence[str] = ()  # spec keys removed
    tasks: list[Task] = field(default_factory=list)  # task records touched


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as its executor saw it. When it succeeded, ``staged`` may say
    where it left each output (container path -> location); a host that knows that by
    itself (a Job's staging folder) overrides :meth:`Shell.locate_outputs` instead."""

    ok: bool
    staged: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int | None = None
    log_tail: Sequence[str] = ()


class Shell:
    """Both hosts' common part; see the module docstring for what a host adds."""

    def __init__(self, store: Store, bus: EventBus, limits: Limits = DEFAULT_LIMITS) -> None:
        self.store = store
        self.bus = bus
        self.limits = limits
        self.registry = Registry()
        self.namespaces: dict[str, Namespace] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._commands_lock = asyncio.Lock()
        # root -> (graph version, namespace, its flow in JSON): see status()
        self._flow_json: dict[str, tuple[int, Namespace, orjson.Fragment]] = {}

    # -- what a host supplies ------------------------------------------------------------

    def run_task(self, namespace: Namespace, start: StartTask) -> None:
        """Start (or queue) the task. A task that cannot even be started is reported with
        :meth:`start_failed`."""
        raise NotImplementedError

    def cancel_task(self, namespace: Namespace, cancel: CancelTask) -> None:
        """Kill the task's processes (or delete its Job); it publishes nothing."""
        raise NotImplementedError

    async def look_up(self, root: str, keys: Iterable[str]) -> Lookup:
        """What the store holds of ``keys``; StoreError if it cannot say."""
        return await asyncio.to_thread(self.store.lookup, root, list(keys))

    def delete_data(self, root: str, keys: Sequence[str]) -> None:
        """Remove expired keys before anything recomputes them."""
        try:
            self.store.delete(root, keys)
        except GaiaError as exc:  # the producer's next publish replaces what is left
            logger.error("namespace %s: could not delete %s: %s", root, list(keys), exc)

    async def locate_outputs(
        self, namespace: Namespace, task: Task, outcome: Outcome, paths: Mapping[str, str]
    ) -> dict[str, Any]:
        """Where the task left each output it made: data key -> location, for ``paths``
        (data key -> container path). Outputs it did not make are left out."""
        return {key: outcome.staged[path] for key, path in paths.items() if path in outcome.staged}

    async def publish_outputs(self, root: str, staged: Mapping[str, Any]) -> None:
        """Move a task's staged outputs into place, all or none (StoreError)."""
        await asyncio.to_thread(self.store.publish, root, staged)

    def keep(self, namespace: Namespace, kept: Kept) -> None:
        """Keep what a change applied (specs, mode, tasks); a restart brings it back."""

    def keep_commands(self, commands: Iterable[Command]) -> None:
        """Keep commands that were added or replaced."""

    # -- namespaces ----------------------------------------------------------------------

    def namespace(self, root: object) -> Namespace:
        """The namespace ``root``; InvalidRequest or NotFound naming the problem."""
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        assert isinstance(root, str)
        namespace = self.namespaces.get(root)
        if namespace is None:
            known = ", ".join(sorted(self.namespaces)) or "none yet"
            raise NotFound(
                f"no namespace {root!r} (namespaces: {known}); merge processes into it first"
            )
        return namespace

    def new_namespace(self, root: str) -> Namespace:
        """An empty namespace of this host (not registered: a merge does that)."""
        return Namespace(root, self.registry, limits=self.limits)

    def lock(self, root: str) -> asyncio.Lock:
        return self._locks.setdefault(root, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _every_lock(self) -> AsyncIterator[None]:
        """All namespaces' locks, always taken in one order (no deadlock)."""
        async with contextlib.AsyncExitStack() as stack:
            for root in sorted(self.namespaces):
                await stack.enter_async_context(self.lock(root))
            yield

    # -- the calls of the API ------------------------------------------------------------

    async def change_commands(self, raw_commands: object) -> list[str]:
        """Add or replace commands; every namespace that uses a changed one recomputes
        what depends on it. All-or-nothing across namespaces: the registry changes only
        once every affected namespace has accepted the change. Returns the keys changed."""
        async with self._commands_lock:
            merged, changed = self.registry.prepare(raw_commands)
            async with self._every_lock():
                plans: dict[str, tuple[MergePlan, Lookup]] = {}
                for root, namespace in sorted(self.namespaces.items()):
                    plan = namespace.prepare_command_change(changed, merged)
                    if plan.specs:
                        lookup = await self.look_up(root, plan.keys)
                        _refuse_unusable(namespace, lookup)
                        plans[root] = (plan, lookup)
                self.registry.commit(merged)
                self.keep_commands(merged[key] for key in sorted(changed) if key in merged)
                for root, (plan, lookup) in plans.items():
                    namespace = self.namespaces[root]
                    kept = Kept(specs=plan.specs)
                    self.carry_out(namespace, namespace.apply(plan, lookup), kept)
        return sorted(changed)

    def check_upload(self, root: object, raw_commands: object, raw_processes: object) -> None:
        """Raise what an upload of these commands and processes would be refused for,
        changing nothing: the processes are planned with the commands as they would be."""
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        assert isinstance(root, str)
        merged, _ = self.registry.prepare(raw_commands)
        namespace = self.namespaces.get(root) or self.new_namespace(root)
        namespace.prepare_merge(raw_processes, merged)

    async def merge(
        self, root: object, raw_processes: object, *, replace_all: bool = False
    ) -> list[str]:
        """Add or update processes; with ``replace_all`` (a resource's whole list) drop
        the ones not listed. Returns the process keys created or changed (after fan-out).
        A refused merge (a bad process, a key the store cannot hold) changes nothing."""
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        assert isinstance(root, str)
        async with self.lock(root):
            namespace = self.namespaces.get(root) or self.new_namespace(root)
            with collector_paused():  # the lookup of its keys too: a list of all of them
                while True:
                    commands = self.registry.commands
                    plan = namespace.prepare_merge(raw_processes, commands, replace_all=replace_all)
                    lookup = await self.look_up(root, plan.keys)
                    # A namespace merged for the first time is not in self.namespaces yet,
                    # so a command change during the lookup neither waited for this merge
                    # nor planned it: plan again with the commands as they are now.
                    if self.registry.commands is commands:
                        break
                _refuse_unusable(namespace, lookup)
                self.namespaces[root] = namespace
                kept = Kept(specs=plan.specs, dropped=plan.dropped)
                self.carry_out(namespace, namespace.apply(plan, lookup), kept)
        return plan.changed

    async def trigger(self, root: object) -> None:
        """Look in the store again, retry failures, start whatever is runnable."""
        namespace = self.namespace(root)
        async with self.lock(namespace.root):
            lookup = await self.look_up(namespace.root, namespace.graph.data_keys)
            self.carry_out(namespace, namespace.trigger(lookup))

    async def halt(self, root: object) -> None:
        namespace = self.namespace(root)
        async with self.lock(namespace.root):
            self.carry_out(namespace, namespace.halt())

    async def expire(self, root: object, keys: object) -> dict[str, list[str]]:
        """Expire process or data keys and what depends on them; unknown keys expire
        nothing. Returns ``{"process": [...], "data": [...]}``."""
        namespace = self.namespace(root)
        async with self.lock(namespace.root):
            processes, data, instructions = namespace.expire(keys)
            self.carry_out(namespace, instructions)
        return {"process": processes, "data": data}

    def status(self, root: object, detail: object = True) -> dict[str, Any]:
        """The namespace's status; its graph (``flow``) comes encoded already, once per
        change of the graph, for the HTTP API to send as it is. Without ``detail``, only
        its state and counts: what a progress line needs, at no cost to the server."""
        namespace = self.namespace(root)
        if detail is False:
            return {
                "root": namespace.root,
                "status": {"state": namespace.state().value, "counts": namespace.counts()},
            }
        status = namespace.status(flow=False)
        version = namespace.graph.version
        cached = self._flow_json.get(namespace.root)
        if cached is None or cached[0] != version or cached[1] is not namespace:
            cached = (version, namespace, encoded_flow(namespace))
            self._flow_json[namespace.root] = cached
        status["flow"] = cached[2]
        return {"root": namespace.root, "status": status}

    def workflows(self) -> dict[str, Any]:
        return {"workflows": {r: n.state().value for r, n in sorted(self.namespaces.items())}}

    # -- the dashboard's views (pure functions of gaia.engine.views) ---------------------

    def overview(self) -> dict[str, Any]:
        return views.namespaces(self.namespaces)

    def graph(self, root: object, expand: object) -> dict[str, Any]:
        """The grouped graph, stamped with the newest event it reflects: a page that
        patches events in replays the newer ones over it, so a reply that crossed them
        on the way never sets a node back."""
        return {**views.graph(self.namespace(root), expand), "event": self.bus.last_id}

    def members(self, root: object, query: dict[str, Any]) -> dict[str, Any]:
        return views.members(self.namespace(root), query)

    def process(self, root: object, process: object) -> dict[str, Any]:
        return views.process(self.namespace(root), process, self.registry.commands)

    # -- restoring after a restart -------------------------------------------------------

    async def restore(self, root: str, raw_specs: Sequence[object]) -> Namespace:
        """Rebuild a namespace from its saved specs without starting anything; the host
        then restores or adopts its tasks and calls ``resume``. A spec that cannot be
        restored any more (a rule tightened, its command gone) is rejected on its own,
        with the reason in the status; the rest comes back."""
        namespace = self.new_namespace(root)
        rejected: dict[str, str] = {}
        with collector_paused():
            try:
                plan = namespace.prepare_merge(list(raw_specs), self.registry.commands)
            except GaiaError:  # find which, one spec at a time
                accepted, rejected = self._restorable(root, raw_specs)
                plan = namespace.prepare_merge(accepted, self.registry.commands)
            try:
                lookup = await self.look_up(root, plan.keys)
            except StoreError as exc:
                why = f"the store could not be read when the server started: {exc}"
                namespace.reject("*", why)
            else:
                namespace.load(plan, lookup)
        for key, problem in rejected.items():
            namespace.reject(key, problem)
            logger.error("namespace %s: process %s not restored: %s", root, key, problem)
        self.namespaces[root] = namespace
        return namespace

    def _restorable(
        self, root: str, raw_specs: Sequence[object]
    ) -> tuple[list[object], dict[str, str]]:
        """The specs that still apply, checked one at a time on a scratch namespace (so
        that one bad spec costs only itself), and, for the others, why not."""
        scratch = self.new_namespace(root)
        accepted: list[object] = []
        rejected: dict[str, str] = {}
        for index, raw in enumerate(raw_specs):
            try:
                plan = scratch.prepare_merge([raw], self.registry.commands)
            except GaiaError as exc:
                key = raw.get("key") if isinstance(raw, dict) else None
                rejected[str(key) if key else f"#{index}"] = str(exc)
                continue
            scratch.load(plan, Lookup())
            accepted.append(raw)
        return accepted, rejected

    # -- carrying out instructions -------------------------------------------------------

    def carry_out(
        self, namespace: Namespace, instructions: Iterable[Instruction], kept: Kept | None = None
    ) -> None:
        """Do what the engine asked, in order, then keep the change."""
        kept = kept or Kept()
        touched: dict[str, None] = {}
        for instruction in instructions:
            if isinstance(instruction, Emit):
                self.bus.publish(instruction.event)
            elif isinstance(instruction, StartTask):
                touched[instruction.process.key] = None
                self.run_task(namespace, instruction)
            elif isinstance(instruction, CancelTask):
                touched[instruction.process] = None
                self.cancel_task(namespace, instruction)
            elif isinstance(instruction, DeleteData):
                self.delete_data(instruction.root, instruction.keys)
        kept.tasks += [namespace.tasks[key] for key in touched if key in namespace.tasks]
        self.keep(namespace, kept)

    def start_failed(self, namespace: Namespace, start: StartTask, error: str) -> None:
        """The executor could not start the task at all (no image for a Job, say)."""
        instructions = namespace.task_failed(start.process.key, start.run, error)
        self.carry_out(namespace, instructions, Kept(tasks=[namespace.tasks[start.process.key]]))

    # -- reports from executors ----------------------------------------------------------

    def task_started(self, root: str, process: str, run: int, handle: dict[str, Any]) -> None:
        """A task's process (or pod) started. Needs no lock: it changes only that task's
        record, and a stale report changes nothing."""
        namespace = self.namespaces.get(root)
        task = None if namespace is None else namespace.current(process, run)
        if namespace is not None and task is not None:
            self.carry_out(
                namespace, namespace.task_started(process, run, handle), Kept(tasks=[task])
            )

    async def task_finished(
        self, root: str, process: str, run: int, outcome: Outcome
    ) -> TaskState | None:
        """A task ended: publish its outputs (all or none) and go on from there. Returns
        the task's final state, or None if the run is no longer current (cancelled,
        superseded): such a run publishes nothing."""
        async with self.lock(root):
            namespace = self.namespaces.get(root)
            task = None if namespace is None else namespace.current(process, run)
            if namespace is None or task is None:
                return None
            tail = list(outcome.log_tail)
            error = None if outcome.ok else outcome.error or "failed"
            if error is None:
                leaf = namespace.graph.processes[process]
                paths = outputs_of(leaf, self.registry.commands[leaf.command])
                try:
                    staged = await self.locate_outputs(namespace, task, outcome, paths)
                    if missing := sorted(paths[key] for key in paths.keys() - staged.keys()):
                        error = f"declared outputs {missing} were not produced"
                    else:
                        await self.publish_outputs(root, staged)
                except GaiaError as exc:
                    error = str(exc)
            if error is None:
                instructions = namespace.task_succeeded(process, run, outcome.exit_code or 0)
            else:
                instructions = namespace.task_failed(process, run, error, outcome.exit_code, tail)
            self.carry_out(namespace, instructions, Kept(tasks=[task]))
            return task.state


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a big change is planned, looked up
    and applied (another coroutine may run meanwhile, without collections for as long).
    Planning 1,000,000 processes makes millions of objects that all live on, and each
    full collection on the way walks every one of them: a quarter of such a merge's time
    in the engine (an eighth at 100,000). What a change leaves behind is freed by
    reference counting, or by the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:  # not when an enclosing change paused it
            gc.enable()


def encoded_flow(namespace: Namespace, size: int = 10_000) -> orjson.Fragment:
    """The namespace's graph (:meth:`Namespace.flow`) in JSON, encoded ``size`` keys at
    a time: the text takes a fifth of the memory the graph takes as dicts, and the
    dicts are never all there at once."""
    text = [b'{"process":{']
    at, first = "process", True
    for part, piece in namespace.flow_slices(size):
        if part != at:
            text.append(b'},"data":{')
            at, first = part, True
        if not first:
            text.append(b",")
        text.append(orjson.dumps(piece)[1:-1])  # '"key":{...},...' without its braces
        first = False
    if at == "process":
        text.append(b'},"data":{')
    text.append(b"}}")
    return orjson.Fragment(b"".join(text))  # one copy of the text, made at the end


def _refuse_unusable(namespace: Namespace, lookup: Lookup) -> None:
    """A change may not bring in keys the store cannot hold: refuse it, naming them."""
    if lookup.unusable:
        listed = "; ".join(f"{why}" for _, why in sorted(lookup.unusable.items()))
        raise InvalidRequest(f"namespace {namespace.root!r}: {listed}")


def check_worker_keys(
    keys: object, limits: Limits, running: int, problem_of: Any = None
) -> list[str]:
    """``launch``'s keys: a list of unique, valid names (``problem_of(key)`` says why a
    key is not valid for this host, or None), within the limits with ``running`` workers
    alive already."""
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise InvalidRequest("'keys' must be a list of worker names")
    limits.check_launch(len(keys), running)
    if problem_of is not None and (problems := [p for k in keys if (p := problem_of(k))]):
        raise InvalidRequest("; ".join(problems))
    if duplicates := sorted(k for k, n in Counter(keys).items() if n > 1):
        raise InvalidRequest(f"worker keys must be unique; repeated: {duplicates}")
    return list(keys)
