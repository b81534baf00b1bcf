"""Reading a task pod's status: how its command ended, as the kubelet reports it.

Pure functions over pod dicts (as listed through the API), so that what the operator
concludes from a pod is tested without one.
"""

from __future__ import annotations

from typing import Any

from gaia.kube.jobs import JobOutcome, outcome_of

__all__ = ["killed_command", "main_exit_code"]

MAIN = "main"  # the container that runs the command (jobs.py)
WAIT = "wait"  # the S3 pod's uploader, which waits for main's exit code


def _statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []}


def main_exit_code(pod: dict[str, Any]) -> int | None:
    """The command's exit code, once its container terminated."""
    terminated = ((_statuses(pod).get(MAIN) or {}).get("state") or {}).get("terminated")
    return terminated.get("exitCode") if terminated else None


def killed_command(pod: dict[str, Any]) -> tuple[JobOutcome, str, int] | None:
    """On the object store a `wait` container uploads after the command; a command killed
    by a signal (OOM, eviction) leaves it no exit code, and `wait` would wait forever.
    Such a pod gives (its Job's outcome, why it was killed, the exit code); others None."""
    statuses = _statuses(pod)
    main, wait = statuses.get(MAIN), statuses.get(WAIT)
    killed = ((main or {}).get("state") or {}).get("terminated") or {}
    if wait is None or not killed or killed.get("exitCode", 0) < 128:
        return None
    if "running" not in (wait.get("state") or {}):
        return None
    meta = pod.get("metadata") or {}
    job = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name", "")
    outcome = outcome_of({"metadata": {**meta, "name": job}})
    if outcome is None:
        return None
    reason = killed.get("reason") or "killed"
    return outcome, reason, int(killed["exitCode"])
