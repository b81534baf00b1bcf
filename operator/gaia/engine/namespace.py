"""One namespace's state machine: events in (merge, trigger, halt, expire, a task started,
succeeded or failed), instructions out (start or cancel a task, delete keys, emit events).

The host calls these methods one at a time and carries out the returned instructions in
order. Store lookups come in through an ``exists`` callback, so the engine stays free of
I/O. Costs follow what an event touches: a completion looks only at the consumers of its
outputs; only ``trigger`` and ``status`` walk the whole namespace (counts do not).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gaia.engine.complete import CompleteKeys
from gaia.engine.expand import expand
from gaia.engine.graph import Graph
from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.model import Command, Process, ProcessSpec, parse_process
from gaia.engine.states import TRANSITIONS, DataState, FlowState, Mode, TaskState
from gaia.engine.tasks import Task
from gaia.errors import InvalidRequest, NotFound

__all__ = ["MergePlan", "Namespace"]

Exists = Callable[[str], bool]
TERMINAL = (FlowState.COMPLETE, FlowState.INCOMPLETE, FlowState.ERROR)


@dataclass
class MergePlan:
    """A validated merge, ready to apply: nothing in the namespace has changed yet."""

    specs: list[ProcessSpec] = field(default_factory=list)
    processes: dict[str, list[Process]] = field(default_factory=dict)  # spec key -> leaves
    removed: set[str] = field(default_factory=set)  # leaf keys replaced or dropped
    dropped: list[str] = field(default_factory=list)  # spec keys removed altogether

    @property
    def changed(self) -> list[str]:
        return [p.key for spec in self.specs for p in self.processes[spec.key]]


class Namespace:
    def __init__(self, root: str, clock: Callable[[], float] = time.time) -> None:
        self.root = root
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
        self._flow_cache: tuple[int, dict[str, Any]] | None = None  # (graph version, flow)
        self.failed: set[str] = set()
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
        plan = MergePlan()
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
            self.graph.check_change(added, plan.removed)
        except InvalidRequest as exc:
            raise InvalidRequest(f"namespace {self.root!r}: {exc}") from None
        return plan

    def prepare_command_change(
        self, changed_commands: Iterable[str], commands: Mapping[str, Command]
    ) -> MergePlan:
        """Re-expand every spec that uses a changed command (checked, not applied)."""
        keys = set().union(*(self.users.get(c, set()) for c in changed_commands))
        specs = [self.specs[key] for key in sorted(keys)]
        return self.prepare_merge(specs, commands, force=keys)

    def apply(self, plan: MergePlan, exists: Exists) -> list[Instruction]:
        """Replace the plan's specs: expire what the old ones made, add the new ones,
        and (unless halted) start whatever became runnable."""
        out: list[Instruction] = []
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
        for spec in plan.specs:
            self._forget_spec(spec.key)
            leaves = plan.processes[spec.key]
            self.specs[spec.key] = spec
            self.expansion[spec.key] = tuple(p.key for p in leaves)
            for process in leaves:
                for fresh in self.graph.add(process):
                    if fresh not in expired_data and exists(fresh):
                        self.complete.add(fresh)
                self.complete.recheck(process.key)
                for command in process.uses:
                    self.users.setdefault(command, set()).add(spec.key)
            if not leaves:  # a fan-out over an empty list still uses its command
                self.users.setdefault(spec.command, set()).add(spec.key)
        for key in plan.removed - self.graph.processes.keys():
            self.tasks.pop(key, None)
        if self.mode is Mode.INITIALIZED and (plan.specs or plan.dropped):
            self.mode = Mode.ACTIVE
        candidates = {p.key for leaves in plan.processes.values() for p in leaves}
        self._schedule(candidates | (expired_processes & self.graph.processes.keys()), out)
        self._announce(out)
        return out

    def _forget_spec(self, key: str) -> None:
        """Drop a spec's entries from the command-users index (and the spec, if present)."""
        spec = self.specs.pop(key, None)
        self.expansion.pop(key, None)
        if spec is None:
            return
        for users in self.users.values():
            users.discard(key)

    def _outputs_of(self, process_keys: Iterable[str]) -> list[str]:
        return [d for key in process_keys for d in self.graph.processes[key].outputs.values()]

    # -- running -----------------------------------------------------------------------

    def trigger(self, exists: Exists) -> list[Instruction]:
        """Look in the store for what exists, retry failures, start everything runnable."""
        out: list[Instruction] = []
        self.mode = Mode.ACTIVE
        self.failed.clear()
        self.announced = None
        computing = {d for p in self.active for d in self.graph.processes[p].outputs.values()}
        for key in self.graph.data_keys:
            if key in computing:
                continue
            if exists(key):
                self.complete.add(key)
            else:
                self.complete.discard(key)
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
        out.append(self._event("flow-halted", state=FlowState.HALTED.value, counts=self.counts()))
        return out

    def resume(self) -> list[Instruction]:
        """After a restart: start what is runnable without retrying failures."""
        out: list[Instruction] = []
        if self.mode is Mode.ACTIVE:
            self._schedule(self.graph.processes.keys(), out)
        self.announced = self.state()
        return out

    def _runnable(self, process: Process) -> bool:
        if process.key in self.active or process.key in self.failed:
            return False
        complete = self.complete
        return all(d in complete for d in process.inputs.values()) and not all(
            d in complete for d in process.outputs.values()
        )

    def _schedule(self, candidates: Iterable[str], out: list[Instruction]) -> None:
        if self.mode is not Mode.ACTIVE:
            return
        processes = self.graph.processes
        for key in sorted(candidates):
            process = processes[key]
            if self._runnable(process):
                run = self.runs.get(key, 0) + 1
                self.runs[key] = run
                self.tasks[key] = Task(process=key, run=run, queued=self.clock())
                self.story.append((self.clock(), key, "", TaskState.QUEUED.value))
                self.active.add(key)
                out.append(StartTask(self.root, process, self._command_of(process), run))

    # The host resolves commands when it starts a task; the namespace keeps only keys.
    command_lookup: Callable[[str], Command] | None = None

    def _command_of(self, process: Process) -> Command:
        if self.command_lookup is None:
            raise RuntimeError("Namespace.command_lookup must be set by the host")
        return self.command_lookup(process.command)

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
        return [self._event("step-start", process=process, task=task.name, handle=task.handle)]

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
                "step-complete", process=process, task=task.name, duration=task.ended - started
            )
        )
        candidates: set[str] = set()
        for key in self.graph.processes[process].outputs.values():
            self.complete.add(key)
            out.append(self._event("data-complete", key=key, process=process))
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
                "step-error",
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
        out.append(self._event("step-terminated", process=process, task=task.name))

    # -- expiry ------------------------------------------------------------------------

    def expire(self, keys: object) -> tuple[list[str], list[str], list[Instruction]]:
        """Expire process or data keys and everything downstream; recompute if active.

        Returns the expired process keys, the expired data keys and the instructions."""
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InvalidRequest("'expire' must be a list of process or data keys")
        processes = self.graph.processes
        seeds: list[str] = []
        named: set[str] = set()
        unknown = []
        for key in keys:
            if key in processes:
                named.add(key)
            elif key in self.expansion:
                named.update(self.expansion[key])
            elif key in self.graph:
                producer = self.graph.producer.get(key)
                if producer is not None:
                    named.add(producer)
                else:  # a source: its contents changed, so its consumers recompute
                    named.update(self.graph.consumers.get(key, ()))
            else:
                unknown.append(key)
        if unknown:
            raise NotFound(f"namespace {self.root!r} has no process or data key {sorted(unknown)}")
        seeds = self._outputs_of(named)
        out: list[Instruction] = []
        expired_processes, expired_data = self._expire(seeds, named, out)
        self._schedule(expired_processes, out)
        self._announce(out)
        return sorted(expired_processes), sorted(expired_data), out

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
        if len(self.complete) == self.graph.data_count():
            return FlowState.COMPLETE
        return FlowState.ERROR if self.failed else FlowState.INCOMPLETE

    def _announce(self, out: list[Instruction]) -> None:
        state = self.state()
        if state is self.announced:
            return
        if state in TERMINAL:
            out.append(self._event(f"flow-{state.value}", state=state.value, counts=self.counts()))
        self.announced = state

    def _event(self, name: str, **fields: Any) -> Emit:
        return Emit({"event": name, "root": self.root, "time": self.clock(), **fields})

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

    def status(self) -> dict[str, Any]:
        """Everything about the namespace. The ``flow`` part (its graph) is shared between
        calls until the graph changes: treat the result as read-only."""
        graph = self.graph
        return {
            "state": self.state().value,
            "counts": self.counts(),
            "flow": self._flow(),
            "data": {key: self.data_state(key).value for key in graph.data_keys},
            "tasks": {key: task.to_dict() for key, task in self.tasks.items()},
            "waiting": self.waiting(),
        }

    def _flow(self) -> dict[str, Any]:
        """The graph as plain data: most of a big status's cost, and unchanged by runs."""
        graph = self.graph
        if self._flow_cache is not None and self._flow_cache[0] == graph.version:
            return self._flow_cache[1]
        flow = {
            "process": {
                key: {
                    "from": list(p.inputs.values()),
                    "to": list(p.outputs.values()),
                    "command": p.command,
                    "spec": p.spec,
                }
                for key, p in graph.processes.items()
            },
            "data": {
                key: {
                    "from": [graph.producer[key]] if key in graph.producer else [],
                    "to": sorted(graph.consumers.get(key, ())),
                }
                for key in graph.data_keys
            },
        }
        self._flow_cache = (graph.version, flow)
        return flow

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
