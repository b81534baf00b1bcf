"""What GitOps tools see: `kubectl wait`, the kstatus conditions Flux reads, and Argo CD's
health check, on GaiaNamespaces a real operator runs (kopf against a real API server, the
real Job controller, the fake kubelet), and the examples/gitops kustomization applied."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd import GITOPS, health
from cluster import KUBECTL, Cluster
from gaia_operator import operator_world
from test_operator import TRIANGLE, resource, run_to_failure, seed, start_napping

from waiting import eventually

slow = pytest.mark.slow  # the control plane, an operator, the fake kubelet's tasks


def conditions(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = found.get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def summary(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {kind: (c["status"], c["reason"]) for kind, c in conditions(found).items()}


def wait_ready_reason(
    cluster: Cluster, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The resource once its Ready condition gives ``reason`` for its latest spec."""

    def current() -> dict[str, Any]:
        return resource(cluster, namespace, name)

    def there(found: dict[str, Any]) -> bool:
        ready = conditions(found).get("Ready") or {}
        return (
            ready.get("reason") == reason
            and ready.get("observedGeneration") == found["metadata"]["generation"]
        )

    return eventually(current, f"{name} Ready reason {reason}", timeout, until=there)


def kubectl_wait(cluster: Cluster, namespace: str, target: str, condition: str) -> None:
    """`kubectl wait --for=condition=...` as a user types it; it must exit 0."""
    cluster.kubectl(
        "wait", f"--for=condition={condition}", target, "-n", namespace, "--timeout=240s",
        timeout=260,
    )  # fmt: skip


@slow
def test_the_gitops_example_renders_the_triangle_example() -> None:
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(GITOPS)], capture_output=True, text=True, check=True
    ).stdout
    objects = list(yaml.safe_load_all(rendered))
    originals = [
        *yaml.safe_load_all((TRIANGLE / "kubernetes" / "commands.yaml").read_text()),
        yaml.safe_load((TRIANGLE / "kubernetes" / "namespace.yaml").read_text()),
    ]

    def identity(found: dict[str, Any]) -> tuple[str, str, str]:
        return found["kind"], found["metadata"]["name"], json.dumps(found["spec"], sort_keys=True)

    assert sorted(map(identity, objects)) == sorted(map(identity, originals))
    assert all("namespace" not in found["metadata"] for found in objects)


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An operator serving one fresh Kubernetes namespace only (the example's `triangle`
    may exist elsewhere in the test cluster)."""
    namespace = cluster.new_namespace("gitops")
    store = tmp_path / "store"
    store.mkdir()
    with operator_world(
        cluster,
        namespace,
        store,
        tmp_path / "operator.log",
        {"gaia-data": store},
        extra_env={"GAIA_WATCH_NAMESPACE": namespace},
    ) as world:
        yield world


@slow
def test_kubectl_apply_k_of_the_example_and_kubectl_wait_for_ready(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    seed(world["store"], "triangle")
    cluster.kubectl("apply", "-k", str(GITOPS), "-n", ns)
    kubectl_wait(cluster, ns, "gaians/triangle", "Ready")
    found = resource(cluster, ns, "triangle")
    status, generation = found["status"], found["metadata"]["generation"]
    assert status["state"] == "complete" and status["counts"]["complete"] == 10
    assert status["observedGeneration"] == generation
    assert summary(found) == {
        "Ready": ("True", "Complete"),
        "Complete": ("True", "Complete"),
        "Failed": ("False", "NoFailure"),
        "Reconciling": ("False", "Complete"),
        "Stalled": ("False", "Complete"),
        "Valid": ("True", "Accepted"),
    }
    assert all(c["observedGeneration"] == generation for c in status["conditions"])
    assert health(found) == {"status": "Healthy", "message": "Complete: all 10 processes complete"}
    command = json.loads(cluster.kubectl("get", "gaiacmd", "cat-wc", "-o", "json").stdout)
    assert summary(command) == {
        "Ready": ("True", "Accepted"),
        "Stalled": ("False", "Accepted"),
        "Valid": ("True", "Accepted"),
    }
    table = cluster.kubectl("get", "gaians", "triangle", "-n", ns).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "READY", "STATE"]
    assert table[1].split()[:3] == ["triangle", "True", "complete"]

    # A spec edit: the operator observes the new generation, conditions included.
    cluster.kubectl(
        "patch", "gaians", "triangle", "-n", ns, "--type=merge", "-p",
        json.dumps({"spec": {"trigger": "again"}}),
    )  # fmt: skip
    edited = wait_ready_reason(cluster, ns, "triangle", "Complete")
    assert edited["metadata"]["generation"] == generation + 1
    assert edited["status"]["observedGeneration"] == generation + 1
    ready_before = conditions(found)["Ready"]["lastTransitionTime"]
    assert conditions(edited)["Ready"]["lastTransitionTime"] == ready_before  # no flip
    kubectl_wait(cluster, ns, "gaians/triangle", "Ready")


@slow
def test_a_failing_process_is_failed_stalled_and_not_ready(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    run_to_failure(cluster, world, "failing", "failer", "exit 3")
    kubectl_wait(cluster, ns, "gaians/failing", "Failed")
    found = wait_ready_reason(cluster, ns, "failing", "Failed")
    got = summary(found)
    assert got["Ready"] == ("False", "Failed") and got["Complete"] == ("False", "Failed")
    assert got["Failed"] == ("True", "ProcessFailed") and got["Stalled"] == ("True", "Failed")
    assert got["Reconciling"][0] == "False"
    assert "bad" in conditions(found)["Failed"]["message"]
    verdict = health(found)
    assert verdict["status"] == "Degraded" and "bad" in verdict["message"]


@slow
def test_a_halted_namespace_is_not_ready_for_reason_halted(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    start_napping(world, "napping")
    running = wait_ready_reason(cluster, ns, "napping", "Running")
    assert summary(running)["Reconciling"] == ("True", "Running")
    assert health(running)["status"] == "Progressing"
    cluster.kubectl(
        "patch", "gaians", "napping", "-n", ns, "--type=merge", "-p",
        json.dumps({"spec": {"halted": True}}),
    )  # fmt: skip
    halted = wait_ready_reason(cluster, ns, "napping", "Halted")
    assert halted["status"]["state"] == "halted"
    assert summary(halted)["Ready"] == ("False", "Halted")
    assert summary(halted)["Reconciling"][0] == summary(halted)["Stalled"][0] == "False"
    assert health(halted)["status"] == "Suspended"


@slow
def test_a_refused_spec_is_not_ready_for_reason_invalid(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    manifest = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "refused"},
        "spec": {"processes": [{"key": "x", "command": "nope", "outputs": {"O": "o"}}]},
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    found = wait_ready_reason(cluster, ns, "refused", "Invalid")
    assert found["status"]["state"] == "error"  # never complete with 0 processes
    got = summary(found)
    assert got["Ready"] == ("False", "Invalid") and got["Valid"] == ("False", "Invalid")
    assert got["Stalled"] == ("True", "Invalid") and got["Complete"][0] == "False"
    assert "unknown command 'nope'" in conditions(found)["Ready"]["message"]
    verdict = health(found)
    assert verdict["status"] == "Degraded" and "unknown command 'nope'" in verdict["message"]
