"""The engine's contract under random sequences of valid and invalid calls, task reports
and restarts (hypothesis, stateful). A set plays the store; the machine plays the host.

Invariants, after every step:
- a refused call leaves the namespace's dump identical;
- a key counts complete only if the store holds it, and a produced key only if its
  producer's latest run succeeded after its inputs last changed;
- the counts kept in step equal a recount;
- a restart (the namespace rebuilt from its specs, task records and the store) gives
  the same namespace.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from model import (
    COMMAND_CHANGES,
    COMMANDS,
    SETTINGS,
    SOURCES,
    dump,
    keys,
    merges,
    recount,
)

from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.lookup import Lookup
from gaia.engine.namespace import Namespace
from gaia.engine.registry import Registry
from gaia.errors import InvalidRequest

pytestmark = pytest.mark.slow  # hypothesis runs the machine for tens of seconds


class EngineContract(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry()
        self.registry.commit(self.registry.prepare(COMMANDS)[0])
        self.store: set[str] = set()
        self.unusable: dict[str, str] = {}  # keys the store cannot hold (a planted link)
        self.version: dict[str, int] = {}  # bumped at every change of a key in the store
        self.inputs_at_start: dict[tuple[str, int], dict[str, int]] = {}
        self.made_from: dict[str, dict[str, int]] = {}  # published key -> inputs it saw
        self.pending: dict[str, int] = {}  # process -> run the "executor" holds
        self.namespace = self._fresh()

    def _fresh(self) -> Namespace:
        return Namespace("ns", self.registry, clock=lambda: 1000.0)

    def lookup(self) -> Lookup:
        return Lookup.of(self.store - self.unusable.keys(), self.unusable)

    def carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, StartTask):
                process = instruction.process
                self.pending[process.key] = instruction.run
                self.inputs_at_start[(process.key, instruction.run)] = {
                    key: self.version.get(key, 0) for key in process.inputs.values()
                }
            elif isinstance(instruction, CancelTask):
                if self.pending.get(instruction.process) == instruction.run:
                    del self.pending[instruction.process]
            elif isinstance(instruction, DeleteData):
                for key in instruction.keys:
                    if key in self.store:
                        self.store.discard(key)
                        self._bump(key)
            else:
                assert isinstance(instruction, Emit)

    def _bump(self, key: str) -> None:
        self.version[key] = self.version.get(key, 0) + 1
        self.made_from.pop(key, None)

    def refused(self, call: Any) -> None:
        """``call`` may be refused; if it is, nothing changed."""
        before = dump(self.namespace)
        try:
            call()
        except InvalidRequest:
            assert dump(self.namespace) == before

    # -- calls ---------------------------------------------------------------------------

    @rule(specs=merges)
    def merge(self, specs: list[dict[str, Any]]) -> None:
        def call() -> None:
            plan = self.namespace.prepare_merge(specs, self.registry.commands)
            lookup = self.lookup()
            self.carry_out(self.namespace.apply(plan, lookup))

        self.refused(call)

    @rule(specs=merges)
    def replace_all(self, specs: list[dict[str, Any]]) -> None:
        def call() -> None:
            plan = self.namespace.prepare_merge(specs, self.registry.commands, replace_all=True)
            self.carry_out(self.namespace.apply(plan, self.lookup()))

        self.refused(call)

    @rule(change=st.sampled_from(COMMAND_CHANGES))
    def change_command(self, change: dict[str, Any]) -> None:
        def call() -> None:
            merged, changed = self.registry.prepare([change])
            plan = self.namespace.prepare_command_change(changed, merged)
            self.registry.commit(merged)
            self.carry_out(self.namespace.apply(plan, self.lookup()))

        commands = dict(self.registry.commands)
        before = dump(self.namespace)
        try:
            call()
        except InvalidRequest:
            assert dump(self.namespace) == before
            assert self.registry.commands == commands

    @rule(names=st.lists(st.one_of(keys, st.sampled_from(["p1", "p2", "p3", "nope"])), max_size=3))
    def expire(self, names: list[str]) -> None:
        self.refused(lambda: self.carry_out(self.namespace.expire(names)[2]))

    @rule()
    def trigger(self) -> None:
        self.carry_out(self.namespace.trigger(self.lookup()))

    @rule()
    def halt(self) -> None:
        self.carry_out(self.namespace.halt())

    # -- the executor ----------------------------------------------------------------------

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        process = data.draw(st.sampled_from(sorted(self.pending)))
        run = self.pending.pop(process)
        ns = self.namespace
        self.carry_out(ns.task_started(process, run, {"pid": 1}))
        if ok and ns.current(process, run) is not None:
            outputs = list(ns.graph.processes[process].outputs.values())
            for key in outputs:  # published, all at once
                self.store.add(key)
                self._bump(key)
                self.made_from[key] = self.inputs_at_start[(process, run)]
            self.carry_out(ns.task_succeeded(process, run))
        else:
            self.carry_out(ns.task_failed(process, run, "exit code 1", 1, ["boom"]))

    # -- the world outside -----------------------------------------------------------------

    @rule(key=st.sampled_from(SOURCES))
    def seed_a_source(self, key: str) -> None:
        """A user drops a source file in; the engine learns of it at the next trigger."""
        if key not in self.store and key not in self.namespace.graph.producer:
            self.store.add(key)
            self._bump(key)

    @rule(key=keys, planted=st.booleans())
    def plant_or_remove_a_link(self, key: str, planted: bool) -> None:
        if planted:
            self.unusable[key] = f"data key {key!r} resolves outside namespace 'ns'"
        else:
            self.unusable.pop(key, None)

    @rule()
    def restart(self) -> None:
        """The host stops and starts: the namespace is rebuilt from what it keeps."""
        old = self.namespace
        before = dump(old)
        fresh = self._fresh()
        plan = fresh.prepare_merge(list(old.specs.values()), self.registry.commands)
        fresh.load(plan, self.lookup())
        fresh.restore_tasks([copy.copy(t) for t in old.tasks.values()], dict(old.runs))
        self.pending.clear()
        self.namespace = fresh
        self.carry_out(fresh.resume(old.mode))
        after = dump(fresh)
        for part in ("specs", "processes", "mode", "rejected"):
            assert after[part] == before[part], part
        if not self.unusable.keys() - before["unusable"].keys():
            # A restart looks in the store again: it finds sources dropped in meanwhile.
            found = set(after["complete"]) - set(before["complete"])
            assert set(after["complete"]) >= set(before["complete"])
            assert found <= set(SOURCES), found
            # What was running runs again, but what touches a key gone bad fails instead.
            bad = {
                key
                for key, process in fresh.graph.processes.items()
                if {*process.inputs.values(), *process.outputs.values()} & self.unusable.keys()
            }
            assert set(after["active"]) >= set(before["active"]) - bad

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def counts_match_a_recount(self) -> None:
        assert self.namespace.counts() == recount(self.namespace)

    @invariant()
    def complete_keys_are_in_the_store_and_fresh(self) -> None:
        ns = self.namespace
        for key in ns.complete:
            assert key in self.store, f"{key} counts complete but the store lacks it"
            if key in ns.graph.producer and key in self.made_from:
                for source, seen in self.made_from[key].items():
                    assert self.version.get(source, 0) == seen, (
                        f"{key} counts complete but its input {source} changed since"
                    )

    @invariant()
    def failed_and_active_are_apart(self) -> None:
        assert not (self.namespace.failed & self.namespace.active)
        assert set(self.pending) <= self.namespace.active


EngineContract.TestCase.settings = SETTINGS
test_engine_contract = EngineContract.TestCase
