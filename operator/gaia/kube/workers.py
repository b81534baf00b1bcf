"""Long-lived workers on a cluster, the sisyphus way (``launch``), for the shared-volume
store: each worker is a Deployment of one ``gaia worker`` pod that mounts the data claim
at :data:`WORKER_DATA` and asks the operator's HTTP API for tasks (``/work/take``).

While a worker has asked within :data:`WORKER_ALIVE` seconds, the operator hands new
tasks to workers instead of creating Jobs. A worker runs a task in a private directory,
moves its declared outputs into the staging folder the operator named (on the claim) and
reports ``/work/done``; the operator then publishes exactly as after a succeeded Job.
The queue of tasks waiting for a worker lives in the operator's memory: a restart loses
it, the engine starts those tasks again, and a late report of an old run is ignored.

A worker proves who it is with a token the kubelet projects into its pod: one of the
workers' ServiceAccount (``account``, made by the chart, with no rights of its own), for
the audience ``gaia-worker`` and bound to the pod, rotated by the kubelet (the worker reads
the file before each call). No other token is mounted (``automountServiceAccountToken:
false``). The operator accepts nothing else on ``/work/*`` (kube/access.py).

A worker pod runs unprivileged as task pods do (pod_security.py): user 65532, the data
group, no capabilities. It takes no task of a command that asks for root (those run as
Jobs).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from gaia.kube.jobs import MAX_NAME, _dns
from gaia.kube.pod_security import container_security, pod_security
from gaia.kube.resources import MANAGED_BY

__all__ = [
    "WORKER_ALIVE",
    "WORKER_AUDIENCE",
    "WORKER_DATA",
    "WORKER_LABEL",
    "WORKER_TOKEN",
    "build_worker",
    "deployment_name",
    "key_problem",
    "worker_task_name",
]

WORKER_ALIVE = 60.0  # seconds: a worker not heard from for this long counts as gone
WORKER_DATA = "/data"  # where a worker pod mounts the data claim
WORKER_LABEL = "gaia.dev/worker"
WORKER_AUDIENCE = "gaia-worker"  # the audience of a worker pod's projected token
TOKEN_DIR = "/var/run/secrets/gaia.dev/worker"
WORKER_TOKEN = f"{TOKEN_DIR}/token"  # where a worker pod finds it
TOKEN_SECONDS = 3600  # the token's lifetime; the kubelet renews it at 80%
DEPLOYMENT_PREFIX = "gaia-worker-"
MAX_KEY = MAX_NAME - len(DEPLOYMENT_PREFIX)
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def key_problem(key: object) -> str | None:
    if not isinstance(key, str) or len(key) > MAX_KEY or not DNS_LABEL.fullmatch(key):
        return (
            f"worker key {key!r} must be a DNS label of at most {MAX_KEY} characters: "
            "lowercase letters, digits and '-'"
        )
    return None


def deployment_name(key: str) -> str:
    return DEPLOYMENT_PREFIX + key


def worker_task_name(root: str, process: str, run: int, worker: str) -> str:
    """Like jobs.job_name, for a task run by a worker: its staging folder's name. The
    worker is part of it, so a task given to a second worker (the first went silent)
    never shares a folder with the first."""
    digest = hashlib.sha256(f"{root}\0{process}".encode()).hexdigest()[:8]
    tail = f"-{digest}-{run}-{worker}"
    head = _dns(f"gaia-w-{root}-{process}")[: max(MAX_NAME - len(tail), 8)].rstrip("-")
    return head + tail


def build_worker(
    key: str,
    *,
    namespace: str,
    image: str,
    claim: str,
    api_url: str,
    idle: float,
    account: str = "gaia-worker",
) -> dict[str, Any]:
    """The Deployment of worker ``key``: one pod running ``gaia worker`` as ``account``."""
    labels = {**MANAGED_BY, WORKER_LABEL: key}
    command = ["gaia", "worker", "--key", key, "--api", api_url, "--idle", f"{idle:g}"]
    # The pod is the task's sandbox: a pod may not make the namespaces bubblewrap needs
    # (RuntimeDefault seccomp, no CAP_SYS_ADMIN), and its tasks share the worker's trust
    # (docs/security.md).
    command += ["--sandbox", "none"]
    container = {
        "name": "worker",
        "image": image,
        "command": [*command, "--token-file", WORKER_TOKEN],
        # where the claim is, for `gaia worker` (the operator names paths under /data)
        "env": [{"name": "GAIA_WORKER_DATA", "value": WORKER_DATA}],
        "volumeMounts": [
            {"name": "gaia-data", "mountPath": WORKER_DATA},
            {"name": "gaia-token", "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": container_security(),
    }
    token = {"audience": WORKER_AUDIENCE, "expirationSeconds": TOKEN_SECONDS, "path": "token"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(key), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [
                        {"name": "gaia-data", "persistentVolumeClaim": {"claimName": claim}},
                        {
                            "name": "gaia-token",
                            "projected": {"sources": [{"serviceAccountToken": token}]},
                        },
                    ],
                },
            },
        },
    }
