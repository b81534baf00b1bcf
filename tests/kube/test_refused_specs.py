"""A GaiaNamespace refused for a command that does not exist yet runs once the command
comes: `kubectl apply -f dir/` of both may deliver the namespace's event first, and a
GitOps tool may apply them in either order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world
from test_operator import resource, wait_state

from waiting import eventually

pytestmark = pytest.mark.slow  # the control plane, an operator, the fake kubelet

LATE = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaCommand",
    "metadata": {"name": "late"},
    "spec": {"image": "ubuntu", "command": ["sh", "-c", "echo late > /out/o"],
             "outputs": {"O": "/out/o"}},
}  # fmt: skip
EARLY = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaNamespace",
    "metadata": {"name": "early"},
    "spec": {"processes": [{"key": "p", "command": "late", "outputs": {"O": "o"}}]},
}


@pytest.fixture
def world(cluster: Cluster, tmp_path: Path) -> Iterator[dict[str, Any]]:
    cluster.apply_crds()
    namespace = cluster.new_namespace("refused")
    store = tmp_path / "store"
    store.mkdir()
    log = tmp_path / "operator.log"
    with operator_world(cluster, namespace, store, log, {"gaia-data": store}) as world:
        yield world


def test_a_spec_refused_for_an_unknown_command_runs_when_the_command_comes(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    namespace = world["namespace"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(EARLY))
    eventually(
        lambda: (resource(cluster, namespace, "early").get("status") or {}).get("message") or "",
        "the spec to be refused",
        30,
        until=lambda message: "unknown command 'late'" in message,
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(LATE))
    status = wait_state(cluster, namespace, "early", ("complete",))
    assert status["counts"]["processes"] == status["counts"]["complete"] == 1
    assert (world["store"] / "early" / "o").read_text() == "late\n"


STEP = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaCommand",
    "metadata": {"name": "late-step"},
    "spec": {"image": "ubuntu", "command": ["sh", "-c", "echo step > /out/o"],
             "outputs": {"O": "/out/o"}},
}  # fmt: skip
COMPOSITE = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaCommand",
    "metadata": {"name": "early-composite"},
    "spec": {"outputs": ["O"],
             "steps": [{"key": "s", "command": "late-step", "outputs": {"O": "O"}}]},
}  # fmt: skip


def command_conditions(cluster: Cluster, name: str) -> dict[str, str]:
    found = json.loads(cluster.kubectl("get", "gaiacmd", name, "-o", "json").stdout)
    return {c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []}


def test_a_composite_refused_for_an_unknown_step_command_is_accepted_when_it_comes(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """kustomize, Flux and Argo CD apply commands in name order, not leaves first."""
    namespace = world["namespace"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(COMPOSITE))
    eventually(
        lambda: command_conditions(cluster, "early-composite"),
        "the composite to be refused",
        30,
        until=lambda found: found.get("Valid") == "False" and found.get("Stalled") == "True",
    )
    using = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "composed"},
        "spec": {"processes": [{"key": "p", "command": "early-composite", "outputs": {"O": "o"}}]},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(using))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(STEP))
    eventually(
        lambda: command_conditions(cluster, "early-composite"),
        "the composite to be accepted",
        30,
        until=lambda found: found.get("Valid") == found.get("Ready") == "True",
    )
    status = wait_state(cluster, namespace, "composed", ("complete",))
    assert status["counts"]["processes"] == status["counts"]["complete"] == 1
    assert (world["store"] / "composed" / "o").read_text() == "step\n"
