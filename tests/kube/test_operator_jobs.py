"""The operator's Jobs against the real API server: it reads only the Jobs it created for a
GaiaNamespace, and it keeps finished Jobs for their TTL without ever acting on them
twice, across restarts too."""

from __future__ import annotations

import datetime
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world

from gaia.kube.jobs import job_name
from gaia.kube.resources import HANDLED_LABEL
from waiting import eventually

pytestmark = pytest.mark.slow  # the control plane, an operator, the fake kubelet's tasks

ECHO = {
    "key": "echo",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo {{V}} > /out/o"],
    "vars": {"V": "v"},
    "outputs": {"O": "/out/o"},
}
# Writes half of its output, then takes its time: a look-alike's "success" must not
# publish what it wrote so far.
HALFWAY = {
    "key": "halfway",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo half > /out/o; sleep 3600; echo whole > /out/o"],
    "outputs": {"O": "/out/o"},
}
FAILER = {
    "key": "failer",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo oops >&2; exit 3"],
    "outputs": {"O": "/out/o"},
}
LOOK_ALIKE_MANAGER = "example.com/look-alike"  # so the Job controller leaves it alone


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


def make_world(cluster: Cluster, tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    namespace = cluster.new_namespace("gaiajobs")
    store = tmp_path / "store"
    store.mkdir()
    with operator_world(
        cluster, namespace, store, tmp_path / "operator.log", {"gaia-data": store}, env
    ) as world:
        yield world


@pytest.fixture
def world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An operator that keeps finished Jobs for 600 s (the default)."""
    yield from make_world(cluster, tmp_path, {"GAIA_JOB_TTL_SECONDS": "600"})


@pytest.fixture
def short_ttl_world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from make_world(cluster, tmp_path, {"GAIA_JOB_TTL_SECONDS": "2"})


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", *args, "-o", "json").stdout))


def our_jobs(cluster: Cluster, namespace: str, root: str) -> dict[str, dict[str, Any]]:
    found = get(cluster, "jobs", "-n", namespace, "-l", f"gaia.dev/namespace={root}")
    return {job["metadata"]["name"]: job for job in found["items"]}


def complete(flow: Any, root: str, timeout: float = 120, state: str = "complete") -> dict[str, Any]:
    """The namespace's status once nothing runs; it must be in ``state``."""
    status: dict[str, Any] = eventually(
        lambda: flow.status(root)["status"],
        f"{root} to end",
        timeout,
        until=lambda status: status["state"] in ("complete", "error"),
    )
    assert status["state"] == state, status.get("tasks")
    return status


def records(status: dict[str, Any]) -> dict[str, tuple[str, int, int | None]]:
    return {k: (t["state"], t["run"], t["exit_code"]) for k, t in status["tasks"].items()}


def job_writes(cluster: Cluster, namespace: str, since: float) -> list[tuple[str, str, str]]:
    """(verb, Job name, user agent) of every create, patch, update and delete of a Job
    that the API server carried out (a create refused with 409 changed nothing)."""
    return [
        (event["verb"], event["objectRef"].get("name", ""), event.get("userAgent", ""))
        for event in cluster.audit(since)
        if event["objectRef"].get("resource") == "jobs"
        and event["objectRef"].get("namespace") == namespace
        and not event["objectRef"].get("subresource")
        and event.get("verb") in ("create", "patch", "update", "delete")
        and (event.get("responseStatus") or {}).get("code", 0) < 400
    ]


def listings_since(cluster: Cluster, namespace: str, since: float) -> int:
    """How many times the operator listed the namespace's Jobs (adoption, re-checks)."""
    return sum(
        1
        for event in cluster.audit(since)
        if event.get("verb") == "list"
        and event["objectRef"].get("resource") == "jobs"
        and event["objectRef"].get("namespace") == namespace
        and not any(
            other in event.get("userAgent", "") for other in ("kube-controller-manager", "kubectl")
        )
    )


def settled(cluster: Cluster, namespace: str, since: float) -> None:
    """Wait until the operator has listed the namespace's Jobs twice after ``since``: the
    re-checks run one after the other, so whatever the first listing showed has been
    acted on by the time the second is made."""
    eventually(
        lambda: listings_since(cluster, namespace, since),
        "two listings of the Jobs by the operator",
        60,
        until=lambda n: n >= 2,
    )


# -- look-alike Jobs ------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plant_look_alike(
    cluster: Cluster,
    namespace: str,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    owner: dict[str, Any] | None,
) -> dict[str, Any]:
    """Create a Job that carries a task's name, labels and annotation (and ``owner`` as
    its controller, if given), and mark it succeeded through its status subresource, as
    the Job controller would. Its ``spec.managedBy`` keeps the real Job controller away;
    returns the Job as it is once complete."""
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "managedBy": LOOK_ALIKE_MANAGER,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ubuntu", "command": ["true"]}],
                }
            },
        },
    }
    if owner is not None:
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    stamp = now()
    succeeded = {
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
    }
    status = {
        "status": {
            "startTime": stamp,
            "completionTime": stamp,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", **succeeded},
                {"type": "Complete", **succeeded},
            ],
        }
    }
    cluster.kubectl(
        "patch", "job", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    job = get(cluster, "job", name, "-n", namespace)
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    return job


def decoy(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """A ConfigMap to stand as a look-alike's controller: an owner that exists (the
    garbage collector deletes a Job whose owner does not), but is not the GaiaNamespace."""
    cluster.kubectl("create", "configmap", "decoy", "-n", namespace)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        **{"metadata": get(cluster, "configmap", "decoy", "-n", namespace)["metadata"]},
    }


def foreign_job_warnings(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = get(
        cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [e["message"] for e in events if e["type"] == "Warning" and e["reason"] == "ForeignJob"]


def test_look_alike_jobs_are_refused_and_the_victims_task_goes_on(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """Finished Jobs named and labelled as the victim's task, in another Kubernetes
    namespace or in its own but not controlled by the GaiaNamespace, publish nothing,
    delete nothing, end nothing: each gets a Warning event and is left as it is."""
    flow, ns, store = world["client"], world["namespace"], world["store"]
    flow.command([HALFWAY])
    flow.merge("victim", [{"key": "slow", "command": "halfway", "outputs": {"O": "result"}}])
    real_name = job_name("victim", "slow", 1)
    staged = store / ".gaia" / "staging" / "victim" / real_name / "out" / "o"
    eventually(lambda: staged.exists() and staged.read_text() == "half\n", "half an output")
    real = get(cluster, "job", real_name, "-n", ns)
    labels, annotations = real["metadata"]["labels"], real["metadata"]["annotations"]

    began = time.time()
    elsewhere = cluster.new_namespace("gaia-attacker")
    # The exact name, labels and annotation of the running task's Job, next door.
    across = plant_look_alike(cluster, elsewhere, real_name, labels, annotations, None)
    # In the victim's own namespace, under another name, with a controller of its own.
    owner = decoy(cluster, ns)
    beside_name = real_name[:-2] + "-x-1"
    beside = plant_look_alike(cluster, ns, beside_name, labels, annotations, owner)
    settled(cluster, ns, time.time())

    # Nothing of the victim moved: its task runs on in its own Job, nothing was published.
    assert not (store / "victim" / "result").exists()
    assert staged.read_text() == "half\n"
    still = get(cluster, "job", real_name, "-n", ns)
    assert still["metadata"]["uid"] == real["metadata"]["uid"]
    assert "deletionTimestamp" not in still["metadata"]
    assert list(world["kubelet"].running().values()), "the victim's pod was killed"
    task = flow.status("victim")["status"]["tasks"]["slow"]
    assert (task["state"], task["run"]) == ("running", 1)

    # One squatting the name that the next task's Job will have, before it is made: the
    # task waits for its own Job rather than taking that one's end for its own.
    squat_name = job_name("victim", "next", 1)
    squat = plant_look_alike(cluster, ns, squat_name, labels, {"gaia.dev/process": "next"}, owner)
    flow.command([ECHO])
    slow = {"key": "slow", "command": "halfway", "outputs": {"O": "result"}}
    flow.merge("victim", [slow, {"key": "next", "command": "echo", "outputs": {"O": "next"}}])
    settled(cluster, ns, time.time())
    assert not (store / "victim" / "next").exists()
    assert flow.status("victim")["status"]["tasks"]["next"]["state"] == "queued"

    # The look-alikes are as they were planted, and each is named in a Warning event.
    for job in (across, beside, squat):
        meta = job["metadata"]
        now_job = get(cluster, "job", meta["name"], "-n", meta["namespace"])
        assert now_job["metadata"]["resourceVersion"] == meta["resourceVersion"], meta["name"]
    writes = [
        write
        for write in job_writes(cluster, ns, began)
        if not any(other in write[2] for other in ("kube-controller", "kubectl"))
    ]
    assert writes == [], writes  # the operator wrote to no Job
    warnings = eventually(
        lambda: foreign_job_warnings(cluster, ns, "victim"),
        "Warning events about the look-alikes",
        until=lambda found: len(found) >= 3,
    )
    assert any(f"{elsewhere}/{real_name}" in w and "Kubernetes namespace" in w for w in warnings)
    assert any(f"{ns}/{beside_name}" in w and "controller's UID" in w for w in warnings)
    assert any(f"{ns}/{squat_name}" in w and "controller's UID" in w for w in warnings)


# -- finished Jobs kept for their TTL -------------------------------------------------


def test_finished_jobs_stay_until_their_ttl_and_no_task_runs_twice(
    cluster: Cluster, short_ttl_world: dict[str, Any]
) -> None:
    """With a TTL of 2 s the operator marks each finished Job handled and sets its TTL;
    the ttl-after-finished controller, not the operator, deletes it afterwards."""
    world = short_ttl_world
    flow, ns, store = world["client"], world["namespace"], world["store"]
    flow.command([ECHO])
    began = time.time()
    values = ["a", "b", "c"]
    fan = {"key": "e", "command": "echo", "vars": {"V": values}, "outputs": {"O": "o/{{V}}"}}
    flow.merge("brief", [fan])
    status = complete(flow, "brief")
    expected = {job_name("brief", f"e-{value}", 1) for value in values}
    assert {t["handle"]["job"] for t in status["tasks"].values()} == expected
    assert {v: (store / "brief" / "o" / v).read_text() for v in values} == {
        v: f"{v}\n" for v in values
    }
    eventually(
        lambda: our_jobs(cluster, ns, "brief"),
        "the TTL to take the Jobs",
        60,
        until=lambda j: not j,
    )

    writes = job_writes(cluster, ns, began)
    by_operator = Counter((v, n) for v, n, agent in writes if "kube-controller" not in agent)
    assert by_operator == Counter(
        {(verb, name): 1 for name in expected for verb in ("create", "patch")}
    ), writes  # each Job made once and marked handled once; the operator deleted none
    deleted = Counter(n for v, n, agent in writes if v == "delete" and "ttl-after" in agent)
    assert deleted == Counter(dict.fromkeys(expected, 1)), writes
    ran = Counter(pod[1].rsplit("-", 1)[0] for pod in world["kubelet"].ended())
    assert ran == Counter(dict.fromkeys(expected, 1))  # each task's pod ran once
    assert {t["run"] for t in flow.status("brief")["status"]["tasks"].values()} == {1}


def test_a_restart_with_kept_jobs_changes_nothing(cluster: Cluster, world: dict[str, Any]) -> None:
    """Finished Jobs kept for their TTL are recorded runs: a restarted operator neither
    publishes them again nor starts a task again, and later runs take new names."""
    flow, ns, store, operator = (
        world["client"], world["namespace"], world["store"], world["operator"]
    )  # fmt: skip
    flow.command([ECHO])
    fan = {"key": "e", "command": "echo", "vars": {"V": ["a", "b"]}, "outputs": {"O": "o/{{V}}"}}
    flow.merge("kept", [fan])
    before = records(complete(flow, "kept"))
    assert before == {"e-a": ("complete", 1, 0), "e-b": ("complete", 1, 0)}
    flow.command([FAILER])
    flow.merge("keptbad", [{"key": "bad", "command": "failer", "outputs": {"O": "never"}}])
    failed = complete(flow, "keptbad", state="error")["tasks"]["bad"]
    assert (failed["run"], failed["exit_code"]) == (1, 3)

    def all_handled() -> dict[str, dict[str, Any]]:
        found = our_jobs(cluster, ns, "kept")
        return (
            found if all(HANDLED_LABEL in j["metadata"]["labels"] for j in found.values()) else {}
        )

    kept = eventually(all_handled, "both Jobs marked handled", until=lambda found: len(found) == 2)
    bad_job = job_name("keptbad", "bad", 1)
    eventually(
        lambda: our_jobs(cluster, ns, "keptbad").get(bad_job, {}).get("metadata", {}),
        "the failed Job marked handled",
        until=lambda meta: HANDLED_LABEL in meta.get("labels", {}),
    )
    assert set(kept) == {job_name("kept", "e-a", 1), job_name("kept", "e-b", 1)}
    for job in kept.values():  # still there, for `kubectl logs`, until the TTL
        assert job["spec"]["ttlSecondsAfterFinished"] == 600
        assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    outputs = {p: (p.read_text(), p.stat().st_ino, p.stat().st_mtime_ns) for p in (
        store / "kept" / "o" / "a", store / "kept" / "o" / "b")}  # fmt: skip

    operator.stop(signal.SIGKILL)
    restarted = time.time()
    operator.start()
    settled(cluster, ns, restarted)
    assert records(complete(flow, "kept")) == before  # the kept Jobs' records
    # A failure stays one (retried only by a trigger), with its exit code and log.
    after_bad = complete(flow, "keptbad", state="error")["tasks"]["bad"]
    assert {k: after_bad[k] for k in ("run", "exit_code", "error", "log_tail")} == {
        k: failed[k] for k in ("run", "exit_code", "error", "log_tail")
    }
    assert job_writes(cluster, ns, restarted) == []  # nothing created, patched, deleted
    after = our_jobs(cluster, ns, "kept")
    assert {n: j["metadata"]["resourceVersion"] for n, j in after.items()} == {
        n: j["metadata"]["resourceVersion"] for n, j in kept.items()
    }
    assert {p: (p.read_text(), p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs} == outputs

    # A result removed by hand is computed again by a trigger: as run 2, in a Job of
    # its own, never by taking the kept Job of run 1 for it.
    (store / "kept" / "o" / "a").unlink()
    flow.trigger("kept")
    status = complete(flow, "kept")
    assert status["tasks"]["e-a"]["run"] == 2 and status["tasks"]["e-b"]["run"] == 1
    assert (store / "kept" / "o" / "a").read_text() == "a\n"
    assert job_name("kept", "e-a", 2) in our_jobs(cluster, ns, "kept")
    ran = Counter(pod[1].rsplit("-", 1)[0] for pod in world["kubelet"].ended())
    assert ran == Counter(
        {
            job_name("kept", "e-a", 1): 1,
            job_name("kept", "e-b", 1): 1,
            job_name("kept", "e-a", 2): 1,
            bad_job: 1,
        }
    )


@pytest.fixture
def no_ttl_world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from make_world(cluster, tmp_path, {"GAIA_JOB_TTL_SECONDS": "0"})


def test_a_ttl_of_0_deletes_succeeded_jobs_at_once_as_before(
    cluster: Cluster, no_ttl_world: dict[str, Any]
) -> None:
    world = no_ttl_world
    flow, ns = world["client"], world["namespace"]
    flow.command([ECHO, FAILER])
    began = time.time()
    flow.merge("gone", [{"key": "e", "command": "echo", "outputs": {"O": "o"}}])
    flow.merge("stays", [{"key": "bad", "command": "failer", "outputs": {"O": "never"}}])
    complete(flow, "gone")
    complete(flow, "stays", state="error")
    eventually(lambda: our_jobs(cluster, ns, "gone"), "the Job to go", until=lambda j: not j)
    deleters = {agent for verb, name, agent in job_writes(cluster, ns, began) if verb == "delete"}
    assert deleters and not any("kube-controller" in agent for agent in deleters), deleters
    # The failed one stays for `kubectl logs`, unmarked, without a TTL, until a new run.
    (failed,) = our_jobs(cluster, ns, "stays").values()
    assert HANDLED_LABEL not in failed["metadata"]["labels"]
    assert "ttlSecondsAfterFinished" not in failed["spec"]
