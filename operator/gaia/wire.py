"""The words Gaia's server, operator and clients share on the wire: the default address,
event names, the states a status reports and the Kafka topics. Kept in one place so the
engine, both hosts, the client and the CLI spell them the same way.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_TOPICS",
    "DataState",
    "Event",
    "FlowState",
    "TaskState",
]

DEFAULT_PORT = 24442
DEFAULT_HOST = f"localhost:{DEFAULT_PORT}"
# Kafka topics: log lines go to "log", every other event to "status".
DEFAULT_TOPICS = {"log": "sisyphus-log", "status": "sisyphus-status"}


class Event(StrEnum):
    """The ``event`` field of an event."""

    STEP_START = "step-start"
    LOG = "log"
    DATA_COMPLETE = "data-complete"
    STEP_COMPLETE = "step-complete"
    STEP_ERROR = "step-error"
    STEP_TERMINATED = "step-terminated"
    FLOW_COMPLETE = "flow-complete"
    FLOW_INCOMPLETE = "flow-incomplete"
    FLOW_ERROR = "flow-error"
    FLOW_HALTED = "flow-halted"
    WORKER_LAUNCHED = "worker-launched"
    WORKER_STOPPED = "worker-stopped"

    @property
    def ends_a_step(self) -> bool:
        return self in (Event.STEP_COMPLETE, Event.STEP_ERROR, Event.STEP_TERMINATED)


class FlowState(StrEnum):
    """A namespace's state, as ``status(root)["status"]["state"]`` reports it."""

    INITIALIZED = "initialized"
    RUNNING = "running"
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    HALTED = "halted"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        """Nothing runs or can run until something changes."""
        return self in (FlowState.COMPLETE, FlowState.INCOMPLETE, FlowState.ERROR)


class TaskState(StrEnum):
    QUEUED = "queued"  # handed to an executor, not yet started
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (TaskState.QUEUED, TaskState.RUNNING)


class DataState(StrEnum):
    MISSING = "missing"
    COMPUTING = "computing"
    COMPLETE = "complete"
