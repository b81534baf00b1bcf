"""A task: one execution of one process, and its record for status and storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gaia.engine.states import TaskState

__all__ = ["Task"]


@dataclass(slots=True)
class Task:
    process: str
    run: int
    state: TaskState = TaskState.QUEUED
    queued: float | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    handle: dict[str, Any] = field(default_factory=dict)  # pid, Job name, worker key
    error: str | None = None
    log_tail: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.process}#{self.run}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state.value,
            "run": self.run,
            "task": self.name,
            "queued": self.queued,
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "handle": self.handle,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.state is TaskState.ERROR:
            out["log_tail"] = list(self.log_tail)
        return out

    @classmethod
    def from_dict(cls, process: str, raw: dict[str, Any]) -> Task:
        return cls(
            process=process,
            run=int(raw["run"]),
            state=TaskState(raw["state"]),
            queued=raw.get("queued"),
            started=raw.get("started"),
            ended=raw.get("ended"),
            exit_code=raw.get("exit_code"),
            handle=dict(raw.get("handle") or {}),
            error=raw.get("error"),
            log_tail=tuple(raw.get("log_tail") or ()),
        )
