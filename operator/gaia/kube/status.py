"""What the operator writes into a GaiaNamespace's status: small, whatever the size.

etcd refuses objects over about 1.5 MB, so the status carries counts, the first waiting
keys and failures, and full per-key and per-task detail only for small namespaces; the
HTTP API (`POST /status`) always has everything.
"""

from __future__ import annotations

import time
from typing import Any

from gaia.engine.namespace import Namespace
from gaia.engine.states import TaskState
from gaia.engine.tasks import Task

__all__ = ["DETAIL_LIMIT", "summary", "valid_condition"]

DETAIL_LIMIT = 200  # processes; above it, per-key and per-task maps are left out
LIST_LIMIT = 50  # waiting keys
FAILURE_LIMIT = 20  # failures listed, each with at most LOG_LINES lines of LINE_CHARS
LOG_LINES = 10
LINE_CHARS = 200


def summary(
    namespace: Namespace, *, handled: dict[str, Any], generation: int | None, problem: str | None
) -> dict[str, Any]:
    counts = namespace.counts()
    counts["dataComplete"] = counts.pop("data_complete")
    counts["missing"] = counts["data"] - counts["dataComplete"]
    waiting = namespace.waiting()
    failed = sorted(key for key, task in namespace.tasks.items() if task.state is TaskState.ERROR)
    failures = [_failure(key, namespace.tasks[key]) for key in failed[:FAILURE_LIMIT]]
    status: dict[str, Any] = {
        "state": namespace.state().value,
        "counts": counts,
        "waiting": waiting[:LIST_LIMIT],
        "failures": failures,
        "handled": handled,
        "observedGeneration": generation,
        "conditions": [valid_condition(problem, "the processes are valid")],
        "message": problem or _message(counts, len(waiting), len(failed)),
    }
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


def valid_condition(problem: str | None, fine: str, reason: str = "Invalid") -> dict[str, Any]:
    """The ``Valid`` condition of a resource: ``fine`` when there is no ``problem``."""
    return {
        "type": "Valid",
        "status": "False" if problem else "True",
        "reason": reason if problem else "Accepted",
        "message": problem or fine,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
