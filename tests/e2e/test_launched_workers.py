"""`launch` on a real node: worker pods (a Deployment each) take tasks from the operator's
HTTP API instead of Jobs, and go away when idle.

The cluster has no kube-proxy and no cluster DNS, so a worker pod cannot use the chart's
Service name: the chart runs the operator in the node's network (`hostNetwork`) and tells
workers the node's address (`api.url`), as a person would on such a cluster.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from node import IMAGE, NAMESPACE, Node, Release, gaia_namespace, jobs, wait_state

import gaia

# A worker idles out this long after its start or its last task: long enough for both
# workers' pods to start on a loaded machine before the tasks come (checked below).
IDLE = 60
WORKER_PODS = "gaia.dev/worker"

pytestmark = pytest.mark.e2e


def workers(port: int, token: str) -> list[str]:
    """The workers the operator heard from lately (its `/work/workers` route, which a
    person who may list gaiaworkers reads too)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/work/workers",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return list(json.loads(reply.read())["workers"])


def test_launched_workers_take_the_tasks_and_go_when_idle(
    node: Node, release: Release, cleanup: list[str]
) -> None:
    operator = release.ensure(
        "hostNetwork=true", f"api.url=http://{node.node_ip}:24442", f"workers.idleSeconds={IDLE}"
    )
    assert operator["spec"]["hostNetwork"] is True
    square = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaCommand",
        "metadata": {"name": "e2e-w-square"},
        "spec": {
            "image": IMAGE,  # the workers' image: they take these tasks
            "command": ["sh", "-c", "echo $(( {{NUM}} * {{NUM}} )) > /out/o"],
            "vars": {"NUM": "0"},
            "outputs": {"O": "/out/o"},
        },
    }
    values = [str(n) for n in range(1, 7)]
    process = {"key": "sq", "command": "e2e-w-square", "vars": {"NUM": values}}
    process["outputs"] = {"O": "sq/{{NUM}}"}
    cleanup.append("byworkers")
    # Halted until the workers ask: with no worker alive, tasks would be Jobs.
    node.apply([square, gaia_namespace("byworkers", [process], halted=True)])
    wait_state(node, "byworkers", ["halted"])

    with node.port_forward("svc/gaia", 24442) as port:
        token = node.admin_token()
        flow = gaia.Gaia({"gaia_host": f"127.0.0.1:{port}", "timeout": 60, "token": token})
        launched = time.monotonic()
        assert flow.launch(["w1", "w2"])["launch"] == ["w1", "w2"]
        node.wait_for(
            lambda: {"w1", "w2"} <= set(workers(port, token)), IDLE, "both workers to ask"
        )
        assert time.monotonic() - launched < IDLE - 10, "the workers started too late to test"
        flow.trigger("byworkers")  # resumes: the tasks go to the workers' queue
        wait_state(node, "byworkers", ["complete"], timeout=300)
        tasks = flow.status("byworkers")["status"]["tasks"]
        assert {t["handle"].get("worker") for t in tasks.values()} <= {"w1", "w2"}, tasks
        assert all("job" not in t["handle"] for t in tasks.values()), tasks
    assert jobs(node, "byworkers") == []
    data = node.volume() / "byworkers" / "sq"
    assert {p.name: p.read_text() for p in data.iterdir()} == {
        str(n): f"{n * n}\n" for n in range(1, 7)
    }
    assert not list((node.volume() / ".gaia" / "staging" / "byworkers").glob("*/*"))
    # Each worker is a real pod of the Gaia image, on the pod network.
    pods = node.pods(NAMESPACE, WORKER_PODS)
    assert sorted(p["metadata"]["labels"][WORKER_PODS] for p in pods) == ["w1", "w2"]
    assert all(p["spec"]["containers"][0]["image"] == IMAGE for p in pods)

    # Idle workers stop: their Deployments are deleted and their pods go.
    node.wait_for(
        lambda: not node.get("deployments", "-n", NAMESPACE, "-l", WORKER_PODS)["items"],
        IDLE + 120,
        "the idle workers' Deployments to go",
    )
    node.wait_for(lambda: not node.pods(NAMESPACE, WORKER_PODS), 120, "the worker pods to go")
