"""The engine: pure Python, no I/O. Events in (merge, trigger, halt, expire, task reports),
instructions out (start or cancel a task, delete keys, emit events)."""

from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.lookup import Lookup
from gaia.engine.model import Command, Process, ProcessSpec
from gaia.engine.namespace import MergePlan, Namespace
from gaia.engine.registry import Registry
from gaia.engine.states import DataState, FlowState, Mode, TaskState

__all__ = [
    "CancelTask",
    "Command",
    "DataState",
    "DeleteData",
    "Emit",
    "FlowState",
    "Instruction",
    "Lookup",
    "MergePlan",
    "Mode",
    "Namespace",
    "Process",
    "ProcessSpec",
    "Registry",
    "StartTask",
    "TaskState",
]
