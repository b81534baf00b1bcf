"""The Kubernetes Job that runs one task, and how to read its outcome back.

With the shared-volume store (``GAIA_STORE=pvc``) the pod mounts the shared data volume (a PersistentVolumeClaim laid out like the
standalone store): each input at its exact container path, read-only (a subPath of
``<root>/<key>``), and each output directory from a private staging area
``.gaia/staging/<root>/<job>/``. Nothing is copied in or out by the pod; after the Job
succeeds the operator moves the declared outputs from staging into place, atomically and
only if the run is still current, so a failed, killed or superseded pod publishes nothing.

With the S3 store (``GAIA_STORE=s3``) the pod copies: an init container downloads the
inputs into an emptyDir, the command runs on it, and a second container uploads the
declared outputs to the staging prefix ``<prefix>/.gaia/staging/<root>/<job>/`` once the
command exited 0. The operator publishes from there just as from the volume.

Every pod runs unprivileged (pod_security.py): user 65532 unless the command says
``runAsRoot: true``, no capabilities, no API token, the command's ``resources`` as its
container's requests and limits, its ``timeout`` as the Job's ``activeDeadlineSeconds``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from gaia.engine.instructions import StartTask
from gaia.engine.keys import render
from gaia.engine.tasks import Task
from gaia.errors import TaskFailed
from gaia.kube.config import DEFAULT_IMAGE, S3Config
from gaia.kube.pod_security import container_resources, container_security, pod_security
from gaia.kube.resources import (
    HANDLED_LABEL,
    MANAGED_BY,
    OUTCOME_ANNOTATION,
    PROCESS_ANNOTATION,
    PROCESS_LABEL,
    ROOT_LABEL,
    RUN_LABEL,
)
from gaia.store import STAGING
from gaia.wire import TaskState
from gaia.worker.runner import KILL_GRACE

__all__ = [
    "JobOutcome",
    "build_job",
    "controller_uid",
    "handled_patch",
    "job_name",
    "outcome_of",
    "output_directories",
    "recorded_task",
    "refusal",
    "staging_dir",
]

MAX_NAME = 63
# Captures standard output into the `stdout` path while still sending it to the pod log,
# and exits with the command's own code (POSIX sh has no pipefail, hence fd 4).
STDOUT_WRAPPER = (
    'exec 3>&1; code=$( { { "$@"; echo $? >&4; } | tee "$GAIA_STDOUT" >&3; } 4>&1 ); exit "$code"'
)
# The S3 pod's main container also leaves its exit code in $GAIA_EXIT for the `wait`
# container (written aside, then renamed, so that it is never read half-written).
_RECORD_EXIT = 'echo "$code" > "$GAIA_EXIT.tmp"; mv "$GAIA_EXIT.tmp" "$GAIA_EXIT"; exit "$code"'
EXIT_WRAPPER = '"$@"; code=$?; ' + _RECORD_EXIT
STDOUT_EXIT_WRAPPER = (
    'exec 3>&1; code=$( { { "$@"; echo $? >&4; } | tee "$GAIA_STDOUT" >&3; } 4>&1 ); '
    + _RECORD_EXIT
)
WORK_VOLUME = "gaia-work"
WORK = "/gaia/work"  # where fetch and wait mount the pod's emptyDir
RUN_DIR = "/var/run/gaia"  # where main mounts its `run` folder (the exit code)
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


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
    """Where a Job's outputs land, relative to the data volume's root (or S3 prefix)."""
    return f"{STAGING}/{root}/{job}"


def build_job(
    start: StartTask,
    *,
    claim: str,
    owner: dict[str, Any],
    service_account: str | None = None,
    s3: S3Config | None = None,
    image: str = DEFAULT_IMAGE,
) -> dict[str, Any]:
    """The Job manifest for one task. ``owner`` is the GaiaNamespace resource.

    With ``s3`` the pod works on an emptyDir filled and emptied by Gaia's own helper
    containers (``image``), see :func:`_s3_pod`; else it mounts the claim (:func:`_pvc_pod`).
    """
    command, process, root = start.command, start.process, start.root
    if not command.image:
        raise TaskFailed(
            f"command {command.key!r} has no image; on Kubernetes every command needs one"
        )
    name = job_name(root, process.key, start.run)
    argv = [render(arg, process.vars) for arg in command.command]
    inputs = {command.inputs[i].rstrip("/"): key for i, key in process.inputs.items()}
    directories = output_directories(start)
    if s3 is None:
        pod_spec = _pvc_pod(start, name, argv, inputs, directories, claim)
    else:
        outputs = sorted(command.outputs[o] for o in process.outputs)
        pod_spec = _s3_pod(start, name, argv, inputs, directories, outputs, s3, image)
    labels = {
        **MANAGED_BY,
        ROOT_LABEL: root,
        PROCESS_LABEL: process_hash(root, process.key),
        RUN_LABEL: str(start.run),
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    # A task has no business with the Kubernetes API: no token in its pod.
    pod_spec["automountServiceAccountToken"] = False
    pod_spec["securityContext"] = pod_security(run_as_root=command.run_as_root)
    # Halt, expire and supersession delete the Job: its pod is killed as a local task is,
    # SIGTERM then SIGKILL, not after Kubernetes' default 30 s (a shell as PID 1 ignores
    # SIGTERM, so the task ran on for all of them).
    pod_spec["terminationGracePeriodSeconds"] = int(KILL_GRACE)
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # Gaia decides about retries (trigger), not the Job controller
        "template": {
            "metadata": {"labels": labels, "annotations": {PROCESS_ANNOTATION: process.key}},
            "spec": pod_spec,
        },
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


def output_directories(start: StartTask) -> list[str]:
    """The container directories a task's pod writes (its outputs' and stdout's), outermost
    only: each is a mount of its own, from the task's staging folder."""
    command, process = start.command, start.process
    writable = {posixpath.dirname(command.outputs[o].rstrip("/")) for o in process.outputs}
    if command.stdout:
        writable.add(posixpath.dirname(command.stdout))
    directories = _outermost(writable)
    if "/" in directories:
        raise TaskFailed(
            f"command {command.key!r}: outputs directly under '/' cannot be mounted; "
            "put them in a directory such as /out/"
        )
    return directories


def _pvc_pod(
    start: StartTask,
    name: str,
    argv: list[str],
    inputs: dict[str, str],
    directories: list[str],
    claim: str,
) -> dict[str, Any]:
    """Inputs in place on the claim, outputs into its staging area."""
    root, command = start.root, start.command
    staging = staging_dir(root, name)
    mounts: list[dict[str, Any]] = [
        {"name": "gaia-data", "mountPath": path, "subPath": f"{root}/{key}", "readOnly": True}
        for path, key in inputs.items()
    ]
    mounts += [
        {"name": "gaia-data", "mountPath": directory, "subPath": f"{staging}{directory}"}
        for directory in directories
    ]
    container: dict[str, Any] = {
        "name": "main",
        "image": command.image,
        "command": argv,
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }
    if resources := container_resources(command.resources):
        container["resources"] = resources
    if command.stdout:
        container["command"] = ["/bin/sh", "-c", STDOUT_WRAPPER, "gaia-task", *argv]
        container["env"] = [{"name": "GAIA_STDOUT", "value": command.stdout}]
    return {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "gaia-data", "persistentVolumeClaim": {"claimName": claim}}],
    }


def _s3_pod(
    start: StartTask,
    name: str,
    argv: list[str],
    inputs: dict[str, str],
    directories: list[str],
    outputs: list[str],
    s3: S3Config,
    image: str,
) -> dict[str, Any]:
    """An emptyDir ``gaia-work``: ``fetch`` (init) downloads the inputs to ``fs/``, ``main``
    sees them at their container paths and writes its outputs to ``fs/`` too, and records
    its exit code in ``run/exit``; ``wait`` then uploads the outputs to the staging prefix
    (only after exit code 0) and exits with main's code."""
    root, command = start.root, start.command
    work = {"name": WORK_VOLUME, "mountPath": WORK}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(s3.env().items())]
    env += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": s3.secret, "key": var}}}
        for var in SECRET_KEYS
    ]
    fetch_args = ["gaia", "task", "fetch", "--root", root, "--work", WORK]
    for path, key in inputs.items():
        fetch_args += ["--input", path, key]
    upload_args = ["gaia", "task", "upload", "--root", root, "--job", name, "--work", WORK]
    for path in outputs:
        upload_args += ["--output", path]
    mounts: list[dict[str, Any]] = [
        {"name": WORK_VOLUME, "mountPath": path, "subPath": f"fs{path}", "readOnly": True}
        for path in inputs
    ]
    mounts += [
        {"name": WORK_VOLUME, "mountPath": directory, "subPath": f"fs{directory}"}
        for directory in directories
    ]
    mounts.append({"name": WORK_VOLUME, "mountPath": RUN_DIR, "subPath": "run"})
    main_env = [{"name": "GAIA_EXIT", "value": f"{RUN_DIR}/exit"}]
    script = EXIT_WRAPPER
    if command.stdout:
        script = STDOUT_EXIT_WRAPPER
        main_env.append({"name": "GAIA_STDOUT", "value": command.stdout})
    main: dict[str, Any] = {
        "name": "main",
        "image": command.image,
        "command": ["/bin/sh", "-c", script, "gaia-task", *argv],
        "env": main_env,
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }
    if resources := container_resources(command.resources):
        main["resources"] = resources
    # The helpers hold the store's credentials: they stay unprivileged even when the
    # command runs as root. The emptyDir is writable by all (0777, and the pod's group),
    # and so are the subPath folders the kubelet makes in it, which take its mode.
    return {
        "restartPolicy": "Never",
        "initContainers": [
            {
                "name": "fetch",
                "image": image,
                "command": fetch_args,
                "env": env,
                "volumeMounts": [work],
                "securityContext": container_security(unprivileged=True),
            }
        ],
        "containers": [
            main,
            {
                "name": "wait",
                "image": image,
                "command": upload_args,
                "env": env,
                "volumeMounts": [work],
                "securityContext": container_security(unprivileged=True),
            },
        ],
        "volumes": [{"name": WORK_VOLUME, "emptyDir": {}}],
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
    namespace: str = ""  # the Job's Kubernetes namespace
    uid: str = ""
    handled: bool = False  # the operator recorded its outcome (HANDLED_LABEL)


def controller_uid(thing: dict[str, Any]) -> str | None:
    """The UID in an object's controller owner reference, or None if it has none."""
    for reference in (thing.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid") or "")
    return None


def refusal(job: dict[str, Any], owner: dict[str, Any]) -> str | None:
    """Why ``job`` is not a Job that the GaiaNamespace ``owner`` created, or None if it
    is. Labels, annotations and names say which task a Job claims to be, and anyone who
    may create Jobs can write them; only a Job in the resource's own Kubernetes
    namespace whose controller is the resource itself (by UID) is read."""
    meta, owner_meta = job.get("metadata") or {}, owner["metadata"]
    where, home = meta.get("namespace"), owner_meta.get("namespace")
    if where != home:
        return f"it is in Kubernetes namespace {where!r}, not {home!r} where the GaiaNamespace is"
    uid = controller_uid(job)
    if uid is None:
        return "it has no controller owner reference"
    if uid != owner_meta.get("uid"):
        return f"its controller's UID is {uid!r}, not the GaiaNamespace's {owner_meta.get('uid')!r}"
    return None


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
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid") or ""),
        handled=HANDLED_LABEL in labels,
    )


def handled_patch(task: Task, ttl: int) -> dict[str, Any]:
    """The merge patch that marks a Job's outcome recorded: the label, the task's record
    (for a restart) and, with ``ttl``, the TTL after which Kubernetes deletes it."""
    record = {
        "state": task.state.value,
        "started": task.started,
        "ended": task.ended,
        "exit_code": task.exit_code,
        "error": (task.error or "")[:2000] or None,
        "log_tail": [line[:500] for line in task.log_tail[-20:]],
    }
    patch: dict[str, Any] = {
        "metadata": {
            "labels": {HANDLED_LABEL: "true"},
            "annotations": {OUTCOME_ANNOTATION: json.dumps(record)},
        }
    }
    if ttl:
        patch["spec"] = {"ttlSecondsAfterFinished": ttl}
    return patch


def recorded_task(job: dict[str, Any], outcome: JobOutcome) -> Task:
    """The task record of a handled Job, as :func:`handled_patch` left it (or, without
    one, as its conditions say)."""
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(OUTCOME_ANNOTATION)
    try:
        record = json.loads(raw) if raw else {}
        state = TaskState(str(record.get("state")))
    except (ValueError, TypeError, AttributeError):
        record = {}
        state = TaskState.COMPLETE if outcome.succeeded else TaskState.ERROR
    if state.active:  # never recorded as such; an odd annotation is not a running task
        state = TaskState.ERROR
    error = record.get("error") or (None if state is TaskState.COMPLETE else outcome.error)
    return Task(
        outcome.process,
        outcome.run,
        state,
        started=record.get("started"),
        ended=record.get("ended"),
        exit_code=record.get("exit_code"),
        handle={"job": outcome.name},
        error=error,
        log_tail=tuple(str(line) for line in record.get("log_tail") or ()),
    )
