"""What the engine asks its host to do. The host (standalone controller or operator)
carries them out in order; the engine itself never touches a process, file or API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gaia.engine.model import Command, Process

__all__ = ["CancelTask", "DeleteData", "Emit", "Instruction", "StartTask"]


@dataclass(frozen=True, slots=True)
class StartTask:
    root: str
    process: Process
    command: Command
    run: int

    @property
    def task(self) -> str:
        return f"{self.process.key}#{self.run}"


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
