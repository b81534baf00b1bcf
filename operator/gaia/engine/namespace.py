"""One namespace's state machine: events in (merge, trigger, halt, expire, a task started,
succeeded or failed), instructions out (start or cancel a task, delete keys, emit events).

The host calls these methods one at a time and carries out the returned instructions in
order. What the store holds comes in as data (a :class:`Lookup` the host made before the
call: see :attr:`MergePlan.keys`), so the engine does no I/O and a call that is handed its
data cannot fail half-way. Costs follow what an event touches: a completion looks only
at the consumers of its outputs; only ``trigger`` and ``status`` walk the whole
namespace (counts do not).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gaia.engine.complete import CompleteKeys
from gaia.engine.expand import expand
from gaia.engine.graph import Graph
from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.keys import normalise_data_key
from gaia.engine.limits import DEFAULT_LIMITS, Limits, key_chars_of, processes_of
from gaia.engine.lookup import Lookup
from gaia.engine.model import Command, Process, ProcessSpec, parse_process
from gaia.engine.registry import Registry
from gaia.engine.states import TRANSITIONS, DataState, FlowState, Mode, TaskState
from gaia.engine.tasks import Task
from gaia.errors import InvalidRequest, NotFound
from gaia.wire import Event

__all__ = ["MergePlan", "Namespace"]


@dataclass
class MergePlan:
    """A validated merge, ready to apply: nothing in the namespace has changed yet."""

    specs: list[ProcessSpec] = field(default_factory=list)
    processes: dict[str, list[Process]] = field(default_factory=dict)  # spec key -> leaves
    removed: set[str] = field(default_factory=set)  # leaf keys replaced or dropped
    dropped: list[str] = field(default_factory=list)  # spec keys removed altogether
    replace_all: bool = False  # the specs are the namespace's whole list
    # Every data key the plan's processes read or write: what to look up in the store
    # before :meth:`Namespace.apply` (gathered by the graph's checks on the way).
    keys: set[str] = field(default_factory=set)

    @property
    def changed(self) -> list[str]:
        return [p.key for spec in self.specs for p in self.processes[spec.key]]


class Namespace:
    def __init__(
        self,
        root: str,
        registry: Registry,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.root = root
        self.registry = registry  # the global commands, for the tasks it starts
        self.limits = limits
        self.clock = clock
        self.graph = Graph()
        self.specs: dict[str, ProcessSpec] = {}
        self.expansion: dict[str, tuple[str, ...]] = {}  # spec key -> leaf keys
        self.users: dict[str, set[str]] = {}  # command key -> spec keys using it
        self.complete = CompleteKeys(self.graph)
        self.tasks: dict[str, Task] = {}
        self.runs: dict[str, int] = {}  # kept after a process goes, so run numbers never repeat
        self.active: set[str] = set()  # processes with a queued or running task
        self.running: set[str] = set()  # those whose task is running (counted often)
        self.failed: set[str] = set()
        # data key -> why the store cannot hold it, as the latest lookup found
        self.unusable: dict[str, str] = {}
        # spec key -> why a stored spec could not be restored (the rules tightened)
        self.rejected: dict[str, str] = {}
        self.mode = Mode.INITIALIZED
        self.announced: FlowState | None = None
        self.story: deque[tuple[float, str, str, str]] = deque(maxlen=5000)

    # -- merging ---------------------------------------------------------------------

    def prepare_merge(
        self,
        raw_processes: object,
        commands: Mapping[str, Command],
        force: Iterable[str] = (),
        *,
        replace_all: bool = False,
    ) -> MergePlan:
        """Parse, expand and check a merge; raise InvalidRequest and change nothing if bad.

        Specs equal to the ones present are skipped, unless named in ``force`` (their
        command changed). With ``replace_all`` (a declarative resource's whole list),
        present specs missing from the list are dropped with everything they produced."""
        if not isinstance(raw_processes, list):
            raise InvalidRequest(f"namespace {self.root!r}: 'processes' must be a list")
        specs: dict[str, ProcessSpec] = {}
        for raw in raw_processes:
            spec = raw if isinstance(raw, ProcessSpec) else parse_process(raw)
            if spec.key in specs:
                raise InvalidRequest(f"process {spec.key!r} appears twice in one merge")
            specs[spec.key] = spec
        forced = set(force)
        plan = MergePlan(replace_all=replace_all)
        self._check_size(specs, commands, forced, replace_all)
        for spec in specs.values():
            if spec.key not in forced and self.specs.get(spec.key) == spec:
                continue
            try:
                plan.processes[spec.key] = expand(spec, commands)
            except InvalidRequest as exc:
                raise InvalidRequest(f"namespace {self.root!r}: {exc}") from None
            plan.specs.append(spec)
            plan.removed.update(self.expansion.get(spec.key, ()))
        if replace_all:
            plan.dropped = [key for key in self.specs if key not in specs]
            for key in plan.dropped:
                plan.removed.update(self.expansion[key])
        added = [p for processes in plan.processes.values() for p in processes]
        try:
            plan.keys = self.graph.check_change(added, plan.removed)
        except InvalidRequest as exc:
            raise InvalidRequest(f"namespace {self.root!r}: {exc}") from None
        return plan

    def _check_size(
        self,
        specs: Mapping[str, ProcessSpec],
        commands: Mapping[str, Command],
        forced: set[str],
        replace_all: bool,
    ) -> None:
        """The limits, counted before anything is expanded: a fan-out of 10^7 is refused
        at once, without making 10^7 of anything."""
        count = 0
        leaving = 0
        chars = 0
        for spec in specs.values():
            if spec.key not in forced and self.specs.get(spec.key) == spec:
                continue
            self.limits.check_vars(spec)
            count += processes_of(spec, commands)
            chars += key_chars_of(spec, commands)
            leaving += len(self.expansion.get(spec.key, ()))
        if replace_all:
            leaving += sum(len(self.expansion[k]) for k in self.specs if k not in specs)
        self.limits.check_merge(self.root, count, len(self.graph.processes) - leaving + count)
        self.limits.check_key_chars(self.root, chars)

    def prepare_command_change(
        self, changed_commands: Iterable[str], commands: Mapping[str, Command]
    ) -> MergePlan:
        """Re-expand every spec that uses a changed command (checked, not applied)."""
        keys = set().union(*(self.users.get(c, set()) for c in changed_commands))
        specs = [self.specs[key] for key in sorted(keys)]
        return self.prepare_merge(specs, commands, force=keys)

    def apply(self, plan: MergePlan, lookup: Lookup) -> list[Instruction]:
        """Replace the plan's specs: expire what the old ones made, add the new ones,
        and (unless halted) start whatever became runnable. ``lookup`` covers
        :attr:`MergePlan.keys`."""
        out: list[Instruction] = []
        candidates = self._apply(plan, lookup, out)
        if self.mode is Mode.INITIALIZED and (plan.specs or plan.dropped):
            self.mode = Mode.ACTIVE
        self._fail_unusable(candidates, out)
        self._schedule(candidates, out)
        self._announce(out)
        return out

    def load(self, plan: MergePlan, lookup: Lookup) -> None:
        """After a restart: add what was saved without starting anything; the host then
        restores tasks or adopts running ones, and calls :meth:`resume`."""
        self._apply(plan, lookup, [])

    def _apply(self, plan: MergePlan, lookup: Lookup, out: list[Instruction]) -> set[str]:
        """The change itself; returns the processes that may have become runnable."""
        expired_processes, expired_data = self._expire(
            self._outputs_of(plan.removed), plan.removed, out
        )
        for key in plan.removed:
            self.active.discard(key)
            self.failed.discard(key)
            for gone in self.graph.remove(key):
                self.complete.discard(gone)
            self.complete.forget(key)
        for key in plan.dropped:
            self._forget_spec(key)
        if plan.replace_all:  # a whole list that passed: nothing saved is refused any more
            self.rejected.clear()
        for spec in plan.specs:
            self._forget_spec(spec.key)
            leaves = plan.processes[spec.key]
            self.specs[spec.key] = spec
            self.expansion[spec.key] = tuple(p.key for p in leaves)
            self.rejected.pop(spec.key, None)
            fresh = self.graph.add(leaves)
            unusable = lookup.unusable
            if unusable:
                self.unusable.update((key, unusable[key]) for key in fresh if key in unusable)
            for key in lookup.existing.intersection(fresh):  # as long as fresh, or shorter
                if key not in unusable and key not in expired_data:
                    self.complete.add(key)
            self.complete.recheck(leaves)
            # a fan-out over an empty list still uses its command
            uses = {p.uses for p in leaves} or {frozenset((spec.command,))}
            for command in frozenset().union(*uses):
                self.users.setdefault(command, set()).add(spec.key)
        for key in plan.removed - self.graph.processes.keys():
            self.tasks.pop(key, None)
        for key in [k for k in self.unusable if k not in self.graph]:
            del self.unusable[key]
        candidates = {p.key for leaves in plan.processes.values() for p in leaves}
        return candidates | (expired_processes & self.graph.processes.keys())

    def _forget_spec(self, key: str) -> None:
        """Drop a spec's entries from the command-users index (and the spec, if present)."""
        spec = self.specs.pop(key, None)
        self.expansion.pop(key, None)
        if spec is None:
            return
        for users in self.users.values():
            users.discard(key)

    def uses_command(self, command: str) -> bool:
        """Whether a process of this namespace uses ``command`` (directly or nested)."""
        return bool(self.users.get(command))

    def _outputs_of(self, process_keys: Iterable[str]) -> list[str]:
        return [d for key in process_keys for d in self.graph.processes[key].outputs.values()]

    # -- running -----------------------------------------------------------------------

    def trigger(self, lookup: Lookup) -> list[Instruction]:
        """Take what the store holds (``lookup`` covers every data key of the graph),
        retry failures, start everything runnable. Processes that read or write a key
        the store cannot hold fail, naming it; the rest run."""
        out: list[Instruction] = []
        self.mode = Mode.ACTIVE
        self.failed.clear()
        self.announced = None
        computing = {d for p in self.active for d in self.graph.processes[p].outputs.values()}
        self.unusable = {k: why for k, why in lookup.unusable.items() if k in self.graph}
        for key in self.graph.data_keys:
            if key in computing:
                continue
            if key in lookup and key not in self.unusable:
                self.complete.add(key)
            else:
                self.complete.discard(key)
        self._fail_unusable(self.graph.processes.keys(), out)
        self._schedule(self.graph.processes.keys(), out)
        self._announce(out)
        return out

    def halt(self) -> list[Instruction]:
        """Cancel every running task and start nothing until the next trigger."""
        out: list[Instruction] = []
        self.mode = Mode.HALTED
        for key in sorted(self.active):
            self._cancel(key, out)
        self.active.clear()
        self.announced = FlowState.HALTED
        out.append(
            self._event(Event.FLOW_HALTED, state=FlowState.HALTED.value, counts=self.counts())
        )
        return out

    def resume(self, mode: Mode) -> list[Instruction]:
        """After a restart (:meth:`load`, then tasks restored or adopted): take up the
        saved ``mode`` and start what is runnable, without retrying failures."""
        out: list[Instruction] = []
        self.mode = mode
        if self.mode is Mode.ACTIVE:
            self._fail_unusable(self.graph.processes.keys(), out)
            self._schedule(self.graph.processes.keys(), out)
        self.announced = self.state()
        return out

    def reject(self, spec: str, problem: str) -> None:
        """After a restart: a saved spec that cannot be restored (a rule tightened since
        it was merged). The namespace reports it and ends in ``error``; merging that key
        again replaces it."""
        self.rejected[spec] = problem

    def _runnable(self, process: Process) -> bool:
        if process.key in self.active or process.key in self.failed:
            return False
        complete = self.complete.keys  # loops over the set itself: no generator, no
        # __contains__ call per key, on the path of every completion and merge
        for key in process.inputs.values():
            if key not in complete:
                return False
        for key in process.outputs.values():  # noqa: SIM110 (any() makes a generator)
            if key not in complete:
                return True
        return False

    def _schedule(self, candidates: Iterable[str], out: list[Instruction]) -> None:
        if self.mode is not Mode.ACTIVE:
            return
        processes = self.graph.processes
        commands = self.registry.commands
        for key in sorted(candidates):
            process = processes[key]
            if self._runnable(process):
                task = self._new_task(key)
                self.active.add(key)
                out.append(StartTask(self.root, process, commands[process.command], task.run))

    def _new_task(self, process: str) -> Task:
        run = self.runs.get(process, 0) + 1
        self.runs[process] = run
        task = self.tasks[process] = Task(process=process, run=run, queued=self.clock())
        self.story.append((self.clock(), process, "", TaskState.QUEUED.value))
        return task

    def _fail_unusable(self, candidates: Iterable[str], out: list[Instruction]) -> None:
        """Fail each candidate that reads or writes a key the store cannot hold, with a
        task record that says which key and why, instead of starting it."""
        if not self.unusable or self.mode is not Mode.ACTIVE:
            return
        processes = self.graph.processes
        for key in sorted(set(candidates) - self.active - self.failed):
            process = processes[key]
            bad = [
                k
                for k in (*process.inputs.values(), *process.outputs.values())
                if k in self.unusable
            ]
            if not bad:
                continue
            task = self._new_task(key)
            self._transition(task, TaskState.ERROR)
            task.ended = self.clock()
            task.error = "; ".join(
                f"data key {k!r} cannot be used: {self.unusable[k]}" for k in bad
            )
            self.failed.add(key)
            out.append(self._event(Event.STEP_ERROR, process=key, task=task.name, error=task.error))

    # -- task events -----------------------------------------------------------------

    def current(self, process: str, run: int) -> Task | None:
        """The task if it is the live run of ``process``; stale reports get None."""
        task = self.tasks.get(process)
        if task is None or task.run != run or not task.state.active:
            return None
        return task

    def task_started(self, process: str, run: int, handle: Mapping[str, Any]) -> list[Instruction]:
        task = self.current(process, run)
        if task is None or task.state is not TaskState.QUEUED:
            return []
        self._transition(task, TaskState.RUNNING)
        task.started = self.clock()
        task.handle = dict(handle)
        return [self._event(Event.STEP_START, process=process, task=task.name, handle=task.handle)]

    def set_handle(self, process: str, run: int, handle: Mapping[str, Any]) -> None:
        """The executor's handle of a live task changed (a Job named, a worker took it)."""
        task = self.current(process, run)
        if task is not None:
            task.handle = dict(handle)

    def task_succeeded(self, process: str, run: int, exit_code: int = 0) -> list[Instruction]:
        """The task's outputs have been published: mark them and start what they unblock."""
        task = self.current(process, run)
        if task is None:
            return []
        out: list[Instruction] = []
        if task.state is TaskState.QUEUED:  # some executors report only the end
            self._transition(task, TaskState.RUNNING)
        self._transition(task, TaskState.COMPLETE)
        task.ended, task.exit_code = self.clock(), exit_code
        self.active.discard(process)
        started = task.started or task.queued or task.ended
        out.append(
            self._event(
                Event.STEP_COMPLETE, process=process, task=task.name, duration=task.ended - started
            )
        )
        candidates: set[str] = set()
        for key in self.graph.processes[process].outputs.values():
            self.complete.add(key)
            out.append(self._event(Event.DATA_COMPLETE, key=key, process=process))
            candidates |= self.graph.consumers.get(key, set())
        self._schedule(candidates, out)
        self._announce(out)
        return out

    def task_failed(
        self,
        process: str,
        run: int,
        error: str,
        exit_code: int | None = None,
        log_tail: Iterable[str] = (),
    ) -> list[Instruction]:
        task = self.current(process, run)
        if task is None:
            return []
        self._transition(task, TaskState.ERROR)
        task.ended, task.exit_code, task.error = self.clock(), exit_code, error
        task.log_tail = tuple(log_tail)
        self.active.discard(process)
        self.failed.add(process)
        out: list[Instruction] = [
            self._event(
                Event.STEP_ERROR,
                process=process,
                task=task.name,
                error=error,
                exit_code=exit_code,
                log_tail=list(task.log_tail),
            )
        ]
        self._announce(out)
        return out

    def _transition(self, task: Task, to: TaskState) -> None:
        if (task.state, to) not in TRANSITIONS:
            raise RuntimeError(f"task {task.name}: no transition {task.state.value} -> {to.value}")
        self.story.append((self.clock(), task.process, task.state.value, to.value))
        task.state = to
        if to is TaskState.RUNNING:
            self.running.add(task.process)
        else:
            self.running.discard(task.process)

    def _cancel(self, process: str, out: list[Instruction]) -> None:
        task = self.tasks[process]
        self._transition(task, TaskState.CANCELLED)
        task.ended = self.clock()
        out.append(CancelTask(self.root, process, task.run))
        out.append(self._event(Event.STEP_TERMINATED, process=process, task=task.name))

    # -- expiry ------------------------------------------------------------------------

    def expire(self, keys: object) -> tuple[list[str], list[str], list[Instruction]]:
        """Expire process or data keys and everything downstream; recompute if active.

        Returns the expired process keys, the expired data keys and the instructions."""
        named = self.check_expire(keys)
        out: list[Instruction] = []
        expired_processes, expired_data = self._expire(self._outputs_of(named), named, out)
        self._fail_unusable(expired_processes, out)
        self._schedule(expired_processes, out)
        self._announce(out)
        return sorted(expired_processes), sorted(expired_data), out

    def check_expire(self, keys: object) -> set[str]:
        """The processes that expiring ``keys`` names (before what is downstream);
        InvalidRequest or NotFound, naming the unknown keys, if any is not known."""
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InvalidRequest("'expire' must be a list of process or data keys")
        processes = self.graph.processes
        named: set[str] = set()
        unknown = []
        for key in keys:
            if key in processes:
                named.add(key)
            elif key in self.expansion:
                named.update(self.expansion[key])
            elif (data_key := normalise_data_key(key)) in self.graph:  # "dir/", as merged
                producer = self.graph.producer.get(data_key)
                if producer is not None:
                    named.add(producer)
                else:  # a source: its contents changed, so its consumers recompute
                    named.update(self.graph.consumers.get(data_key, ()))
            else:
                unknown.append(key)
        if unknown:
            raise NotFound(f"namespace {self.root!r} has no process or data key {sorted(unknown)}")
        return named

    def _expire(
        self, seeds: Iterable[str], also: Iterable[str], out: list[Instruction]
    ) -> tuple[set[str], set[str]]:
        processes, data = self.graph.downstream(seeds)
        processes |= set(also)
        for key in sorted(processes & self.active):
            self._cancel(key, out)
        self.active -= processes
        self.failed -= processes
        produced = tuple(sorted(d for d in data if d in self.graph.producer))
        self.complete.difference_update(produced)
        if produced:
            out.append(DeleteData(self.root, produced))
        return processes, set(produced)

    # -- state -------------------------------------------------------------------------

    def state(self) -> FlowState:
        if self.mode is Mode.INITIALIZED:
            return FlowState.INITIALIZED
        if self.mode is Mode.HALTED:
            return FlowState.HALTED
        if self.active:
            return FlowState.RUNNING
        if len(self.complete) == self.graph.data_count() and not self.rejected:
            return FlowState.COMPLETE
        return FlowState.ERROR if self.failed or self.rejected else FlowState.INCOMPLETE

    def _announce(self, out: list[Instruction]) -> None:
        state = self.state()
        if state is self.announced:
            return
        if state.terminal:
            ending = Event(f"flow-{state.value}")
            out.append(self._event(ending, state=state.value, counts=self.counts()))
        self.announced = state

    def _event(self, name: Event, **fields: Any) -> Emit:
        return Emit({"event": name.value, "root": self.root, "time": self.clock(), **fields})

    def counts(self) -> dict[str, int]:
        complete = self.complete
        running = len(self.running)
        return {
            "processes": len(self.graph.processes),
            "complete": len(complete.done),
            "running": running,
            "queued": len(self.active) - running,
            "failed": len(self.failed),
            "data": self.graph.data_count(),
            "data_complete": len(complete),
        }

    def data_state(self, key: str) -> DataState:
        if key in self.complete:
            return DataState.COMPLETE
        producer = self.graph.producer.get(key)
        return DataState.COMPUTING if producer in self.active else DataState.MISSING

    def waiting(self) -> list[str]:
        """Missing keys that nothing will produce: sources absent from the store, and
        outputs of failed processes."""
        return sorted(
            key
            for key in self.graph.data_keys
            if key not in self.complete
            and (self.graph.producer.get(key) is None or self.graph.producer[key] in self.failed)
        )

    def status(self, flow: bool = True) -> dict[str, Any]:
        """Everything about the namespace; without ``flow``, all but the graph (which
        only merges change: a host may keep it, see :meth:`flow_slices`)."""
        graph = self.graph
        status = {
            "state": self.state().value,
            "counts": self.counts(),
            "data": {key: self.data_state(key).value for key in graph.data_keys},
            "tasks": {key: task.to_dict() for key, task in self.tasks.items()},
            "waiting": self.waiting(),
            "unusable": dict(self.unusable),
            "rejected": dict(self.rejected),
        }
        if flow:
            status["flow"] = self.flow()
        return status

    def flow(self) -> dict[str, dict[str, Any]]:
        """The graph as plain data: ``process`` and ``data``, each key -> its edges."""
        flow: dict[str, dict[str, Any]] = {"process": {}, "data": {}}
        for part, piece in self.flow_slices():
            flow[part].update(piece)
        return flow

    def flow_slices(self, size: int = 10_000) -> Iterator[tuple[str, dict[str, Any]]]:
        """:meth:`flow` a slice at a time, ``(part, {key: entry})`` with at most ``size``
        keys each, none empty: at 10^6 processes the whole of it as dicts is about a GiB,
        which a host encoding it slice by slice never holds."""
        graph = self.graph
        producer, consumers = graph.producer, graph.consumers
        processes = (
            (
                key,
                {
                    "from": list(p.inputs.values()),
                    "to": list(p.outputs.values()),
                    "command": p.command,
                    "spec": p.spec,
                },
            )
            for key, p in graph.processes.items()
        )
        data = (
            (
                key,
                {
                    "from": [producer[key]] if key in producer else [],
                    "to": sorted(consumers.get(key, ())),
                },
            )
            for key in graph.data_keys
        )
        for part, entries in (("process", processes), ("data", data)):
            while piece := dict(itertools.islice(entries, size)):
                yield part, piece

    def adopt(self, process: str, run: int, handle: Mapping[str, Any]) -> bool:
        """After a restart: a task found still running (a Job) becomes the live run, so
        that it is followed rather than started twice. False if it is not adoptable."""
        if run < self.runs.get(process, 0) or process not in self.graph.processes:
            return False
        if process in self.active:
            return self.tasks[process].run == run
        self.runs[process] = run
        now = self.clock()
        self.tasks[process] = Task(
            process, run, TaskState.RUNNING, queued=now, started=now, handle=dict(handle)
        )
        self.active.add(process)
        self.running.add(process)
        return True

    def restore_tasks(self, tasks: Iterable[Task], runs: Mapping[str, int]) -> None:
        """Reload task records after a restart; tasks that were live died with the host."""
        self.runs.update(runs)
        for task in tasks:
            self.runs[task.process] = max(self.runs.get(task.process, 0), task.run)
            if task.process not in self.graph.processes:
                continue
            if task.state.active:
                task.state, task.error = TaskState.CANCELLED, "interrupted: the server stopped"
                task.ended = task.ended or self.clock()
            elif task.state is TaskState.ERROR:
                self.failed.add(task.process)
            self.tasks[task.process] = task
