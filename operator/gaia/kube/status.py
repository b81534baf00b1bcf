"""What the operator writes into a GaiaNamespace's status: small, whatever the size.

etcd refuses objects over about 1.5 MB, so the status carries counts, the first waiting
keys and failures, and full per-key and per-task detail only for small namespaces; the
HTTP API (`POST /status`) always has everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gaia.engine.namespace import Namespace
from gaia.engine.states import TaskState
from gaia.engine.tasks import Task
from gaia.kube.conditions import namespace_conditions
from gaia.wire import FlowState

__all__ = ["DETAIL_LIMIT", "summary"]

DETAIL_LIMIT = 200  # processes; above it, per-key and per-task maps are left out
LIST_LIMIT = 50  # waiting keys
FAILURE_LIMIT = 20  # failures listed, each with at most LOG_LINES lines of LINE_CHARS
LOG_LINES = 10
LINE_CHARS = 200


def summary(
    namespace: Namespace,
    *,
    handled: dict[str, Any],
    generation: int | None,
    problem: str | None,
    previous: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The status of the resource: its state (``error`` while its spec is refused, even if
    the processes accepted before are complete), counts, conditions (``previous``: the
    conditions written last, whose transition times carry over) and, when small, details."""
    counts = namespace.counts()
    counts["dataComplete"] = counts.pop("data_complete")
    counts["missing"] = counts["data"] - counts["dataComplete"]
    waiting = namespace.waiting()
    failed = sorted(key for key, task in namespace.tasks.items() if task.state is TaskState.ERROR)
    failures = [_failure(key, namespace.tasks[key]) for key in failed[:FAILURE_LIMIT]]
    state = namespace.state()
    progress = _message(counts, len(waiting), len(failed))
    conditions = namespace_conditions(
        state,
        counts,
        failed=failed,
        waiting=waiting,
        problem=problem,
        generation=generation,
        summary=progress,
        previous=previous,
    )
    status: dict[str, Any] = {
        "state": FlowState.ERROR.value if problem else state.value,
        "counts": counts,
        "waiting": waiting[:LIST_LIMIT],
        "failures": failures,
        "handled": dict(handled),  # a copy: the status written last is compared with it
        "conditions": conditions,
        "message": problem or progress,
    }
    if generation is not None:  # written with the conditions, in the same patch
        status["observedGeneration"] = generation
    if counts["processes"] <= DETAIL_LIMIT:
        status["data"] = {key: namespace.data_state(key).value for key in namespace.graph.data_keys}
        status["tasks"] = {
            key: {
                "state": task.state.value,
                "run": task.run,
                "job": task.handle.get("job"),
                "started": task.started,
                "ended": task.ended,
                "exitCode": task.exit_code,
            }
            for key, task in namespace.tasks.items()
        }
    else:
        status["data"] = None
        status["tasks"] = None
    return status


def _failure(process: str, task: Task) -> dict[str, Any]:
    return {
        "process": process,
        "job": task.handle.get("job"),
        "exitCode": task.exit_code,
        "error": task.error,
        "logTail": [line[:LINE_CHARS] for line in task.log_tail[-LOG_LINES:]],
    }


def _message(counts: dict[str, int], waiting: int, failures: int) -> str:
    parts = [f"{counts['complete']}/{counts['processes']} processes complete"]
    if counts["running"] or counts["queued"]:
        parts.append(f"{counts['running']} running, {counts['queued']} queued")
    if failures:
        parts.append(f"{failures} failed")
    if waiting:
        parts.append(f"{waiting} keys waiting")
    return "; ".join(parts)
