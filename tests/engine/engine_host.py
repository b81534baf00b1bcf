"""A host for the pure engine: carries out its instructions against a set of keys.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.lookup import Lookup
from gaia.engine.namespace import Namespace
from gaia.engine.registry import Registry

TRIANGLE = Path(__file__).resolve().parents[2] / "examples" / "triangle"


class Host:
    """Plays the controller: a set stands for the store, tasks finish when told to."""

    def __init__(self, commands: list[dict[str, Any]], store: set[str] | None = None) -> None:
        self.registry = Registry()
        self.command(commands)
        self.store: set[str] = set(store or ())
        self.ns = Namespace("test", self.registry, clock=lambda: 1000.0)
        # Keys the store cannot hold (say, a link that leads out of the namespace).
        self.unusable: dict[str, str] = {}
        self.queued: dict[str, int] = {}  # process -> run
        self.cancelled: list[str] = []
        self.deleted: list[str] = []
        self.events: list[dict[str, Any]] = []

    def command(self, commands: list[dict[str, Any]]) -> set[str]:
        merged, changed = self.registry.prepare(commands)
        self.registry.commit(merged)
        return changed

    def change_command(self, commands: list[dict[str, Any]]) -> list[str]:
        merged, changed = self.registry.prepare(commands)
        plan = self.ns.prepare_command_change(changed, merged)
        self.registry.commit(merged)
        self.carry_out(self.ns.apply(plan, self.lookup()))
        return plan.changed

    def lookup(self) -> Lookup:
        """What the store holds: the engine's only view of it."""
        return Lookup.of(self.store, self.unusable)

    def carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, StartTask):
                self.queued[instruction.process.key] = instruction.run
            elif isinstance(instruction, CancelTask):
                self.cancelled.append(instruction.process)
                self.queued.pop(instruction.process, None)
            elif isinstance(instruction, DeleteData):
                self.deleted += instruction.keys
                self.store.difference_update(instruction.keys)
            elif isinstance(instruction, Emit):
                self.events.append(instruction.event)

    def merge(self, processes: list[dict[str, Any]]) -> list[str]:
        plan = self.ns.prepare_merge(processes, self.registry.commands)
        self.carry_out(self.ns.apply(plan, self.lookup()))
        return plan.changed

    def trigger(self) -> None:
        self.carry_out(self.ns.trigger(self.lookup()))

    def finish(self, process: str, ok: bool = True) -> None:
        run = self.queued.pop(process)
        self.carry_out(self.ns.task_started(process, run, {"pid": 1}))
        if ok:
            self.store.update(self.ns.graph.processes[process].outputs.values())
            self.carry_out(self.ns.task_succeeded(process, run))
        else:
            self.carry_out(self.ns.task_failed(process, run, "exit code 1", 1, ["boom"]))

    def run_all(self) -> list[str]:
        """Finish every queued task until none is left; return the order they ran in."""
        order = []
        while self.queued:
            process = sorted(self.queued)[0]
            order.append(process)
            self.finish(process)
        return order

    def names(self) -> list[str]:
        return [event["event"] for event in self.events]


ECHO = {
    "key": "echo",
    "image": "alpine",
    "command": ["cp", "/in", "/out/o"],
    "inputs": {"IN": "/in"},
    "outputs": {"OUT": "/out/o"},
}
MAKE = {
    "key": "make",
    "image": "alpine",
    "command": ["touch", "/out/o"],
    "outputs": {"OUT": "/out/o"},
}


def step(key: str, src: str, dst: str) -> dict[str, Any]:
    return {"key": key, "command": "echo", "inputs": {"IN": src}, "outputs": {"OUT": dst}}
