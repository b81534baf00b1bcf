"""A pod's run on the test kubelet, and its status as a kubelet reports it.

The kubelet (kubelet.py) keeps a :class:`PodRun` per pod it runs, with a
:class:`ContainerRun` per container; the functions here turn them into the pod status a
real kubelet writes (phase, conditions, container states, exit codes, termination
messages), which the Job controller and the API server's validation then judge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gaia.worker.runner import TaskResult, TaskSpec

__all__ = [
    "KILLED_EXIT_CODE",
    "LOST_MESSAGE",
    "ContainerRun",
    "Pod",
    "PodKey",
    "PodRun",
    "exit_code",
    "finished_status",
    "now",
    "read_log",
    "running_status",
]

PodKey = tuple[str, str]  # (namespace, name)
Pod = dict[str, Any]  # a Pod as the API server sends it (camelCase JSON)

KILLED_EXIT_CODE = 128 + signal.SIGTERM  # a container stopped because its pod was deleted
START_ERROR_EXIT_CODE = 128  # what a kubelet reports when a container cannot start
LOST_EXIT_CODE = 128 + signal.SIGKILL
LOST_MESSAGE = "The container could not be located when the pod was terminated"  # kubelet's
NEVER = "1970-01-01T00:00:00Z"  # startedAt of a container that never started
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048  # terminationMessagePolicy limits


@dataclass
class ContainerRun:
    name: str
    image: str
    spec: TaskSpec | None  # None: cannot run (see error)
    error: str | None = None
    fallback_to_logs: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the container's spec
    skipped: bool = False  # never started: an init container failed before it
    workdir: Path | None = None
    task: asyncio.Task[TaskResult] | None = None
    pid: int | None = None
    exit_code: int | None = None  # None: killed, or never started
    lost_id: str | None = None  # started by another kubelet (containerID): not run again
    started_at: str | None = None
    finished_at: str | None = None
    # What it printed so far (both streams, in arrival order): the runner writes its log
    # file buffered, so a running container's file can lag far behind.
    lines: list[str] = field(default_factory=list)


@dataclass
class PodRun:
    """One pod this kubelet runs: its containers and why it may have been stopped."""

    key: PodKey
    uid: str
    workdir: Path
    containers: list[ContainerRun] = field(default_factory=list)
    init: list[ContainerRun] = field(default_factory=list)  # initContainers, in order
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> decoded data
    # projected volumes: name -> the directory holding their files, or why it cannot be made
    projected: dict[str, Path | str] = field(default_factory=dict)
    renewing: asyncio.Task[None] | None = None  # renews the projected tokens while it runs
    future: concurrent.futures.Future[None] | None = None
    stop_reason: str | None = None  # "deleted" or "stopping" once cancelled
    gone: bool = False  # the pod no longer exists in the API server

    def cancel(self) -> None:
        """Kill every container (call on the event loop)."""
        for container in [*self.init, *self.containers]:
            if container.task is not None:
                container.task.cancel()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the status of a pod --------------------------------------------------


def _condition(kind: str, status: bool, at: str, reason: str | None = None) -> dict[str, Any]:
    condition = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": at}
    if reason:
        condition["reason"] = reason
    return condition


def _container_id(container: ContainerRun) -> str:
    if container.lost_id is not None:
        return container.lost_id
    return f"fake://{container.pid}" if container.pid is not None else ""


def running_status(pod: Pod, run: PodRun) -> dict[str, Any]:
    at = now()
    containers = run.containers
    ready = all(c.pid is not None and c.finished_at is None for c in containers)
    statuses: list[dict[str, Any]] = []
    for container in containers:
        if container.finished_at is not None:
            statuses += _terminated_statuses([container], at)
            continue
        status: dict[str, Any] = {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "restartCount": 0,
            "ready": container.pid is not None,
            "started": container.pid is not None,
        }
        if container.pid is not None:
            status["containerID"] = _container_id(container)
            status["state"] = {"running": {"startedAt": container.started_at}}
        else:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        statuses.append(status)
    reason = None if ready else "ContainersNotReady"
    status: dict[str, Any] = {
        "phase": "Running",
        "startTime": pod.get("status", {}).get("startTime") or at,
        "conditions": [
            _condition("PodReadyToStartContainers", True, at),
            _condition("Initialized", True, at),
            _condition("ContainersReady", ready, at, reason),
            _condition("Ready", ready, at, reason),
        ],
        "containerStatuses": statuses,
    }
    if run.init:
        status["initContainerStatuses"] = _terminated_statuses(run.init, at)
    return status


def finished_status(pod: Pod, run: PodRun) -> dict[str, Any]:
    at = now()
    containers = run.containers
    ok = bool(containers) and all(c.exit_code == 0 for c in [*run.init, *containers])
    phase = "Succeeded" if ok else "Failed"
    reason = "PodCompleted" if ok else "PodFailed"
    initialized = not any(c.skipped for c in containers)
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": pod.get("status", {}).get("startTime") or at,
        "conditions": [
            _condition("PodReadyToStartContainers", False, at),
            _condition("Initialized", initialized, at, "PodCompleted" if initialized else None),
            _condition("ContainersReady", False, at, reason),
            _condition("Ready", False, at, reason),
        ],
        "containerStatuses": _terminated_statuses(containers, at),
    }
    if run.init:
        status["initContainerStatuses"] = _terminated_statuses(run.init, at)
    return status


def _not_running(container: ContainerRun, state: dict[str, Any]) -> dict[str, Any]:
    """The status of a container neither ready nor started, in ``state``."""
    return {
        "name": container.name,
        "image": container.image,
        "imageID": "",
        "restartCount": 0,
        "ready": False,
        "started": False,
        "state": state,
    }


def _terminated_statuses(containers: list[ContainerRun], at: str) -> list[dict[str, Any]]:
    """Each container's final status; one that never got to start is still waiting."""
    statuses = []
    for container in containers:
        if container.skipped or (
            container.spec is None and container.lost_id is None and container.error is None
        ):
            statuses.append(_not_running(container, {"waiting": {"reason": "PodInitializing"}}))
            continue
        code = container.exit_code
        if code is None and container.lost_id is not None:
            code = LOST_EXIT_CODE
        elif code is None:
            code = KILLED_EXIT_CODE if container.pid is not None else START_ERROR_EXIT_CODE
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": _termination_reason(container, code),
            "startedAt": container.started_at or NEVER,
            "finishedAt": container.finished_at or at,
        }
        if _container_id(container):
            terminated["containerID"] = _container_id(container)
        message = _termination_message(container, code)
        if message:
            terminated["message"] = message
        status = _not_running(container, {"terminated": terminated})
        if _container_id(container):
            status["containerID"] = _container_id(container)
        statuses.append(status)
    return statuses


def _termination_reason(container: ContainerRun, code: int) -> str:
    if container.lost_id is not None:
        return "ContainerStatusUnknown"
    if container.pid is None:
        return "StartError"
    return "Completed" if code == 0 else "Error"


def _termination_message(container: ContainerRun, code: int) -> str | None:
    if container.pid is None:  # never started here: says why
        return container.error
    if code != 0 and container.fallback_to_logs and container.workdir is not None:
        lines = read_log(container.workdir).splitlines()[-FALLBACK_LOG_LINES:]
        return "\n".join(lines)[-FALLBACK_LOG_BYTES:]
    return None


def exit_code(result: TaskResult, started: bool) -> int:
    """The container's exit code as a kubelet reports it (128 + n for signal n)."""
    if result.exit_code is not None:
        return result.exit_code
    if not started:
        return START_ERROR_EXIT_CODE
    found = re.search(r"killed by signal (\w+)$", result.error or "")
    if found:
        with contextlib.suppress(KeyError, ValueError):
            name = found.group(1)
            number = signal.Signals[name] if not name.isdigit() else int(name)
            return 128 + int(number)
    return KILLED_EXIT_CODE


def read_log(workdir: Path | None) -> str:
    if workdir is None:
        return ""
    try:
        return (workdir / "log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
