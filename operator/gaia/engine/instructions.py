"""What the engine asks its host to do. The host (standalone controller or operator)
carries them out in order; the engine itself never touches a process, file or API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gaia.engine.keys import render
from gaia.engine.model import Command, Process

__all__ = ["CancelTask", "DeleteData", "Emit", "Instruction", "StartTask", "outputs_of"]


@dataclass(frozen=True, slots=True)
class StartTask:
    root: str
    process: Process
    command: Command
    run: int

    @property
    def task(self) -> str:
        return f"{self.process.key}#{self.run}"

    @property
    def argv(self) -> list[str]:
        """The command line, its ``{{VARS}}`` substituted: what every executor runs."""
        return [render(arg, self.process.vars) for arg in self.command.command]

    @property
    def inputs(self) -> dict[str, str]:
        """Container path -> the data key the task reads there."""
        return {self.command.inputs[name]: key for name, key in self.process.inputs.items()}

    @property
    def outputs(self) -> dict[str, str]:
        """Data key -> the container path where the task writes it."""
        return outputs_of(self.process, self.command)


def outputs_of(process: Process, command: Command) -> dict[str, str]:
    """Data key -> container path of each output of ``process`` (a leaf of ``command``)."""
    return {key: command.outputs[name] for name, key in process.outputs.items()}


@dataclass(frozen=True, slots=True)
class CancelTask:
    root: str
    process: str
    run: int


@dataclass(frozen=True, slots=True)
class DeleteData:
    """Remove expired keys from the store before anything recomputes them."""

    root: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Emit:
    event: dict[str, Any]


Instruction = StartTask | CancelTask | DeleteData | Emit
