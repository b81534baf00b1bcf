"""`helm upgrade` and `helm uninstall` keep the data claim, as the chart promises: the new
operator finds the results where they were and computes nothing again."""

from __future__ import annotations

import pytest
from node import NAMESPACE, Node, Release, command, gaia_namespace, wait_state

pytestmark = pytest.mark.e2e


def test_upgrade_and_uninstall_keep_the_claim_and_its_data(
    node: Node, release: Release, cleanup: list[str]
) -> None:
    first = release.ensure()
    stamp = command("e2e-stamp", "date +%s%N > /out/o", outputs={"O": "/out/o"})
    cleanup.append("kept")
    node.apply(
        [
            stamp,
            gaia_namespace("kept", [{"key": "p", "command": "e2e-stamp", "outputs": {"O": "o"}}]),
        ]
    )
    wait_state(node, "kept", ["complete"])
    claim = node.get("pvc", "gaia-data", "-n", NAMESPACE)["metadata"]["uid"]
    result = node.volume() / "kept" / "o"
    written = result.read_text()

    # An upgrade (another value) replaces the operator pod; the claim and data stay.
    upgraded = release.ensure("operator.statusSeconds=0.5")
    assert upgraded["metadata"]["uid"] != first["metadata"]["uid"]
    assert node.get("pvc", "gaia-data", "-n", NAMESPACE)["metadata"]["uid"] == claim
    wait_state(node, "kept", ["complete"])
    assert result.read_text() == written  # a second run would have written another time

    # Uninstall: the operator goes, the claim (helm.sh/resource-policy: keep) and the
    # Gaia resources (CRDs are never deleted by Helm) stay.
    release.uninstall()
    node.wait_for(
        lambda: not node.pods(NAMESPACE, "app.kubernetes.io/component=operator"),
        60,
        "the operator pod to go",
    )
    kept = node.get("pvc", "gaia-data", "-n", NAMESPACE)
    assert kept["metadata"]["uid"] == claim and kept["status"]["phase"] == "Bound"
    assert node.get("gaianamespace", "kept", "-n", NAMESPACE)["metadata"]["name"] == "kept"
    assert result.read_text() == written

    # Installing again adopts the claim; the operator finds the result and runs nothing.
    release.ensure()
    assert node.get("pvc", "gaia-data", "-n", NAMESPACE)["metadata"]["uid"] == claim
    wait_state(node, "kept", ["complete"])
    assert result.read_text() == written
    # The one Job there is the first run's, kept for its TTL and marked handled.
    (job,) = node.get("jobs", "-n", NAMESPACE, "-l", "gaia.dev/namespace=kept")["items"]
    assert job["metadata"]["labels"]["gaia.dev/run"] == "1"
    assert job["metadata"]["labels"].get("gaia.dev/handled") == "true"
