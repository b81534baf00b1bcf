"""The states of tasks, data keys and namespaces, and the task transitions allowed.

The states themselves are wire vocabulary (:mod:`gaia.wire`); what the user asked of a
namespace (:class:`Mode`) and the transition table are the engine's own."""

from __future__ import annotations

from enum import StrEnum

from gaia.wire import DataState, FlowState, TaskState

__all__ = ["TRANSITIONS", "DataState", "FlowState", "Mode", "TaskState"]


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


class Mode(StrEnum):
    """What the user asked of a namespace; the visible state derives from it."""

    INITIALIZED = "initialized"  # created, never triggered
    ACTIVE = "active"  # triggered: start whatever becomes runnable
    HALTED = "halted"  # start nothing until the next trigger
