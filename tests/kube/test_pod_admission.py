"""The pods Gaia makes pass the `restricted` Pod Security Standard, as the real API
server's PodSecurity admission judges them (a server-side dry run of each pod in a
namespace that enforces it); a command that asks for root passes `baseline` only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cluster import Cluster
from test_pod_security import job

from gaia.kube.workers import build_worker

pytestmark = pytest.mark.slow  # the control plane


def task_pod(namespace: str, name: str, *, s3: bool = False, **fields: Any) -> dict[str, Any]:
    limited = {"resources": {"cpu": "500m", "memory": "256Mi"}, "timeout": 60, **fields}
    return pod(namespace, name, job("s3" if s3 else "pvc", **limited)["spec"]["template"]["spec"])


def pod(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def admitted(cluster: Cluster, manifest: dict[str, Any]) -> tuple[bool, str]:
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
    )
    return result.returncode == 0, result.stderr


def enforcing(cluster: Cluster, level: str) -> str:
    namespace = cluster.new_namespace(f"pss-{level}")
    cluster.kubectl("label", "namespace", namespace, f"pod-security.kubernetes.io/enforce={level}")
    return namespace


def test_task_and_worker_pods_pass_the_restricted_standard(cluster: Cluster) -> None:
    namespace = enforcing(cluster, "restricted")
    cluster.kubectl("create", "serviceaccount", "gaia-worker", "-n", namespace)
    worker = build_worker(
        "w1",
        namespace=namespace,
        image="gaia:dev",
        claim="gaia-data",
        api_url="http://gaia:24442",
        idle=60,
    )
    pods = [
        task_pod(namespace, "on-the-claim"),
        task_pod(namespace, "on-s3", s3=True),
        pod(namespace, "worker", worker["spec"]["template"]["spec"]),
    ]
    for manifest in pods:
        ok, why = admitted(cluster, manifest)
        assert ok, f"{manifest['metadata']['name']}: {why}"


@pytest.mark.parametrize("s3", [False, True], ids=["on the claim", "on s3"])
def test_a_root_task_pod_is_refused_by_restricted_and_passes_baseline(
    cluster: Cluster, s3: bool
) -> None:
    restricted = enforcing(cluster, "restricted")
    ok, why = admitted(cluster, task_pod(restricted, "root", s3=s3, runAsRoot=True))
    assert not ok
    assert 'violates PodSecurity "restricted' in why and "runAsNonRoot" in why, why
    baseline = enforcing(cluster, "baseline")
    ok, why = admitted(cluster, task_pod(baseline, "root", s3=s3, runAsRoot=True))
    assert ok, why
