"""The states of tasks, data keys and namespaces, and the task transitions allowed."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TRANSITIONS", "DataState", "FlowState", "Mode", "TaskState"]


class TaskState(StrEnum):
    QUEUED = "queued"  # handed to an executor, not yet started
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (TaskState.QUEUED, TaskState.RUNNING)


TRANSITIONS: frozenset[tuple[TaskState, TaskState]] = frozenset(
    {
        (TaskState.QUEUED, TaskState.RUNNING),
        (TaskState.QUEUED, TaskState.CANCELLED),
        (TaskState.QUEUED, TaskState.ERROR),  # the executor could not start it
        (TaskState.RUNNING, TaskState.COMPLETE),
        (TaskState.RUNNING, TaskState.ERROR),
        (TaskState.RUNNING, TaskState.CANCELLED),
    }
)


class DataState(StrEnum):
    MISSING = "missing"
    COMPUTING = "computing"
    COMPLETE = "complete"


class Mode(StrEnum):
    """What the user asked of a namespace; the visible state derives from it."""

    INITIALIZED = "initialized"  # created, never triggered
    ACTIVE = "active"  # triggered: start whatever becomes runnable
    HALTED = "halted"  # start nothing until the next trigger


class FlowState(StrEnum):
    INITIALIZED = "initialized"
    RUNNING = "running"
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    HALTED = "halted"
    ERROR = "error"
