"""What a task or worker pod may do on its node: the security context and the resources
that Gaia writes into every pod it makes (Job pods, jobs.py; worker pods, workers.py).

A pod runs as an unprivileged user, :data:`TASK_USER`, in group :data:`TASK_GROUP`, with
no capability, no privilege escalation (``no_new_privs``), the container runtime's
default seccomp profile and no API token. The data claim is shared through the group:
``fsGroup`` gives every container of the pod :data:`TASK_GROUP` as a supplementary
group (and, on volumes whose ownership Kubernetes manages, the volume too), and the
operator creates each task's staging folder writable by that group (setgid, so what the
task writes there keeps the group); see ``LocalStore.prepare_staging``.

A command with ``runAsRoot: true`` runs its container as root (uid and gid 0), still
without capabilities; Gaia's own helper containers stay unprivileged.
"""

from __future__ import annotations

from typing import Any

from gaia.engine.resources import Resources

__all__ = [
    "TASK_GROUP",
    "TASK_USER",
    "container_resources",
    "container_security",
    "pod_security",
]

# The user and group of task and worker pods: the "nonroot" user of distroless images,
# which no common base image gives a login or files of its own.
TASK_USER = 65532
TASK_GROUP = 65532


def pod_security(*, run_as_root: bool = False) -> dict[str, Any]:
    """The pod's ``securityContext``: who its containers run as, and its data group."""
    user = 0 if run_as_root else TASK_USER
    return {
        "runAsNonRoot": not run_as_root,
        "runAsUser": user,
        "runAsGroup": 0 if run_as_root else TASK_GROUP,
        # Every container gets the group, so it can write the staging folders the operator
        # made for it; a volume whose ownership Kubernetes manages gets it once, at its
        # root (not a walk through the whole claim at each pod).
        "fsGroup": TASK_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(*, unprivileged: bool = False) -> dict[str, Any]:
    """A container's ``securityContext``: nothing to gain. ``unprivileged`` pins the user
    too, for Gaia's helper containers in the pod of a command that runs as root."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if unprivileged:
        context |= {"runAsNonRoot": True, "runAsUser": TASK_USER, "runAsGroup": TASK_GROUP}
    return context


def container_resources(resources: Resources | None) -> dict[str, Any]:
    """A command's ``resources`` as the container's requests and limits (equal: the node
    reserves what the task may use, and the task may use no more). ``processes`` has no
    per-container counterpart in Kubernetes (the kubelet's ``podPidsLimit`` is the node's
    setting): it is enforced by the task runner on one machine only."""
    if resources is None:
        return {}
    amounts = resources.to_dict()
    wanted = {name: str(amounts[name]) for name in ("cpu", "memory") if name in amounts}
    if not wanted:
        return {}
    return {"requests": dict(wanted), "limits": dict(wanted)}
