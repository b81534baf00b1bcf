"""`helm install` of the chart with the image `make image` built: the operator runs as a
real pod, under the chart's ServiceAccount, security context and probes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from node import NAMESPACE, Node, Release

CAP_DAC_OVERRIDE, CAP_FOWNER = 1, 3

pytestmark = pytest.mark.e2e


def proc_status(node: Node, pod: str) -> dict[str, str]:
    """/proc/1/status of the operator container: what the kernel says of its process."""
    out = node.kubectl("exec", "-n", NAMESPACE, pod, "--", "cat", "/proc/1/status").stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_the_operator_runs_as_a_real_pod_as_the_chart_says(
    node: Node, release: Release, operator: dict[str, Any]
) -> None:
    name = operator["metadata"]["name"]
    spec, status = operator["spec"], operator["status"]
    assert spec["serviceAccountName"] == "gaia"
    assert spec["nodeName"] == node.name
    (container,) = status["containerStatuses"]
    # Ready: the startup and readiness probes (GET /health) passed, through the pod network.
    assert container["ready"] and container["started"], container
    assert container["image"] == "docker.io/library/gaia:dev"
    assert status["podIP"] != node.node_ip  # a pod of its own, not the node's network

    # The security context, as the kernel enforces it in the container's process.
    proc = proc_status(node, name)
    assert proc["Uid"].split() == ["0"] * 4 and proc["Gid"].split() == ["0"] * 4
    assert int(proc["CapEff"], 16) == (1 << CAP_DAC_OVERRIDE) | (1 << CAP_FOWNER), proc
    assert int(proc["CapBnd"], 16) == int(proc["CapEff"], 16)
    assert proc["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert proc["Seccomp"] == "2"  # RuntimeDefault: a seccomp filter
    readonly = node.kubectl("exec", "-n", NAMESPACE, name, "--", "touch", "/x", check=False)
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr
    # /tmp is the emptyDir, /data the claim: both writable.
    node.kubectl("exec", "-n", NAMESPACE, name, "--", "touch", "/tmp/x", "/data/.write-test")
    node.kubectl("exec", "-n", NAMESPACE, name, "--", "rm", "/tmp/x", "/data/.write-test")

    # The claim bound to the node's volume through the default StorageClass.
    claim = node.get("pvc", "gaia-data", "-n", NAMESPACE)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local"
    assert node.volume().is_dir()

    # Once started (the startup probe fails until the API listens, as it should), the
    # kubelet's readiness and liveness probes never failed; the API answers the Service.
    events = node.get("events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name}")
    failed = [
        e["message"]
        for e in events["items"]
        if e["reason"] == "Unhealthy" and not e["message"].startswith("Startup probe")
    ]
    assert not failed, failed
    with (
        node.port_forward("svc/gaia", 24442) as port,
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as reply,
    ):
        assert reply.status == 200
        json.loads(reply.read())


def test_the_service_account_has_what_the_operator_uses_and_no_more(
    node: Node, operator: dict[str, Any]
) -> None:
    who = f"--as=system:serviceaccount:{NAMESPACE}:gaia"

    def can(*args: str) -> bool:
        return node.kubectl("auth", "can-i", who, *args, check=False).stdout.strip() == "yes"

    assert can("create", "jobs.batch", "-n", "default")
    assert can("patch", "gaianamespaces.gaia.dev", "--subresource=status", "-n", "default")
    assert can("get", "pods", "--subresource=log", "-n", "default")
    assert not can("get", "secrets", "-n", NAMESPACE)
    assert not can("delete", "gaianamespaces.gaia.dev", "-n", NAMESPACE)
    # What the operator did so far, it did with that account: the API server refused nothing.
    log = node.kubectl("logs", "-n", NAMESPACE, operator["metadata"]["name"]).stdout
    assert "forbidden" not in log.lower(), log[-3000:]
