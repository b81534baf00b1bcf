"""The Kubernetes Job that runs one task, and how to read its outcome back.

The pod mounts the shared data volume (a PersistentVolumeClaim laid out like the
standalone store): each input at its exact container path, read-only (a subPath of
``<root>/<key>``), and each output directory from a private staging area
``.gaia/staging/<root>/<job>/``. Nothing is copied in or out by the pod; after the Job
succeeds the operator moves the declared outputs from staging into place, atomically and
only if the run is still current, so a failed, killed or superseded pod publishes nothing.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from gaia.engine.instructions import StartTask
from gaia.engine.keys import render
from gaia.errors import TaskFailed
from gaia.kube.resources import (
    MANAGED_BY,
    PROCESS_ANNOTATION,
    PROCESS_LABEL,
    ROOT_LABEL,
    RUN_LABEL,
)

__all__ = ["JobOutcome", "build_job", "job_name", "outcome_of", "staging_dir"]

MAX_NAME = 63
# Captures standard output into the `stdout` path while still sending it to the pod log,
# and exits with the command's own code (POSIX sh has no pipefail, hence fd 4).
STDOUT_WRAPPER = (
    'exec 3>&1; code=$( { { "$@"; echo $? >&4; } | tee "$GAIA_STDOUT" >&3; } 4>&1 ); exit "$code"'
)


def _dns(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def job_name(root: str, process: str, run: int) -> str:
    """Deterministic and unique per (namespace, process, run); a DNS label."""
    digest = hashlib.sha256(f"{root}\0{process}".encode()).hexdigest()[:8]
    tail = f"-{digest}-{run}"
    head = _dns(f"gaia-{root}-{process}")[: MAX_NAME - len(tail)].rstrip("-")
    return head + tail


def process_hash(root: str, process: str) -> str:
    """A label-safe stand-in for a process key (keys may hold ':' and exceed 63 chars)."""
    return hashlib.sha256(f"{root}\0{process}".encode()).hexdigest()[:16]


def staging_dir(root: str, job: str) -> str:
    """Where a Job's outputs land, relative to the data volume's root."""
    return f".gaia/staging/{root}/{job}"


def build_job(
    start: StartTask,
    *,
    claim: str,
    owner: dict[str, Any],
    service_account: str | None = None,
) -> dict[str, Any]:
    """The Job manifest for one task. ``owner`` is the GaiaNamespace resource."""
    command, process, root = start.command, start.process, start.root
    if not command.image:
        raise TaskFailed(
            f"command {command.key!r} has no image; on Kubernetes every command needs one"
        )
    name = job_name(root, process.key, start.run)
    staging = staging_dir(root, name)
    argv = [render(arg, process.vars) for arg in command.command]
    mounts: list[dict[str, Any]] = []
    for input_name, key in process.inputs.items():
        path = command.inputs[input_name].rstrip("/")
        mounts.append(
            {"name": "gaia-data", "mountPath": path, "subPath": f"{root}/{key}", "readOnly": True}
        )
    writable = {posixpath.dirname(command.outputs[o].rstrip("/")) for o in process.outputs}
    if command.stdout:
        writable.add(posixpath.dirname(command.stdout))
    for directory in _outermost(writable):
        if directory == "/":
            raise TaskFailed(
                f"command {command.key!r}: outputs directly under '/' cannot be mounted; "
                "put them in a directory such as /out/"
            )
        mounts.append(
            {"name": "gaia-data", "mountPath": directory, "subPath": f"{staging}{directory}"}
        )
    container: dict[str, Any] = {
        "name": "main",
        "image": command.image,
        "command": argv,
        "volumeMounts": mounts,
    }
    if command.stdout:
        container["command"] = ["/bin/sh", "-c", STDOUT_WRAPPER, "gaia-task", *argv]
        container["env"] = [{"name": "GAIA_STDOUT", "value": command.stdout}]
    labels = {
        **MANAGED_BY,
        ROOT_LABEL: root,
        PROCESS_LABEL: process_hash(root, process.key),
        RUN_LABEL: str(start.run),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "gaia-data", "persistentVolumeClaim": {"claimName": claim}}],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # Gaia decides about retries (trigger), not the Job controller
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if command.timeout:
        spec["activeDeadlineSeconds"] = int(command.timeout + 0.999)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": labels,
            "annotations": {PROCESS_ANNOTATION: process.key},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _outermost(directories: set[str]) -> list[str]:
    """Directories not inside another one of the set: nested mounts would hide files."""
    ordered = sorted(directories)
    kept: list[str] = []
    for directory in ordered:
        if not any(directory == k or directory.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(directory)
    return kept


@dataclass(frozen=True)
class JobOutcome:
    root: str
    process: str
    run: int
    name: str
    finished: bool
    succeeded: bool
    error: str | None
    exit_code: int | None


def outcome_of(job: dict[str, Any]) -> JobOutcome | None:
    """Read a Gaia Job (as a dict, e.g. from a watch); None if it is not one of ours."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    process = (meta.get("annotations") or {}).get(PROCESS_ANNOTATION)
    if ROOT_LABEL not in labels or RUN_LABEL not in labels or not process:
        return None
    conditions = {
        c.get("type"): c
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    failed = conditions.get("Failed")
    succeeded = "Complete" in conditions
    error = None
    if failed is not None:
        error = failed.get("message") or failed.get("reason") or "the Job failed"
    return JobOutcome(
        root=labels[ROOT_LABEL],
        process=process,
        run=int(labels[RUN_LABEL]),
        name=meta.get("name", ""),
        finished=succeeded or failed is not None,
        succeeded=succeeded,
        error=error,
        exit_code=0 if succeeded else None,
    )
