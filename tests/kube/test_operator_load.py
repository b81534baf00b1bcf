"""The operator under load, against the real API server: Jobs wait in the operator's rate
limiter while its re-check runs again and again, and yet each task runs once, each Job is
asked for once, and no Job stays behind."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world

from gaia.kube.jobs import job_name
from waiting import eventually

pytestmark = pytest.mark.slow  # the control plane, an operator, the fake kubelet's tasks

ECHO = {
    "key": "echo",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo {{V}} > /out/o"],
    "vars": {"V": "v"},
    "outputs": {"O": "/out/o"},
}
TASKS = 30


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def busy_world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Jobs at 3 a second and a re-check every 0.3 s: most Jobs are still waiting in the
    limiter when the re-check looks for them, many times over. Finished Jobs are kept 1 s
    once handled: the re-check meets them, marked, many times over too."""
    namespace = cluster.new_namespace("gaiaload")
    store = tmp_path / "store"
    store.mkdir()
    env = {"GAIA_JOBS_PER_SECOND": "3", "GAIA_RECHECK_SECONDS": "0.3", "GAIA_JOB_TTL_SECONDS": "1"}
    with operator_world(
        cluster, namespace, store, tmp_path / "operator.log", {"gaia-data": store}, env
    ) as world:
        yield world


def jobs_left(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout
    return [job["metadata"]["name"] for job in json.loads(out)["items"]]


def test_each_task_runs_once_and_each_job_is_asked_for_once(
    cluster: Cluster, busy_world: dict[str, Any]
) -> None:
    flow, namespace = busy_world["client"], busy_world["namespace"]
    flow.command([ECHO])
    began = time.time()
    values = [f"v{n}" for n in range(TASKS)]
    flow.merge(
        "load",
        [{"key": "e", "command": "echo", "vars": {"V": values}, "outputs": {"O": "o/{{V}}"}}],
    )
    eventually(
        lambda: flow.status("load")["status"],
        "the namespace to complete",
        180,
        until=lambda status: status["state"] == "complete",
    )
    expected = {job_name("load", f"e-{value}", 1) for value in values}

    creates = Counter(
        event["objectRef"].get("name")
        for event in cluster.audit(began)
        if event.get("verb") == "create"
        and event["objectRef"].get("resource") == "jobs"
        and event["objectRef"].get("namespace") == namespace
    )
    assert set(creates) == expected
    assert [name for name, count in creates.items() if count != 1] == []  # no 409 retries

    ran = Counter(
        job
        for pod in busy_world["kubelet"].ended()
        for job in expected
        if pod[1].startswith(job + "-")
    )
    assert ran == Counter(dict.fromkeys(expected, 1))  # each task's pod ran once
    eventually(
        lambda: jobs_left(cluster, namespace),
        "the finished Jobs to go once their TTL passed",
        60,
        until=lambda j: j == [],
    )
