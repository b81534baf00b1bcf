"""The operator for real: kopf watching a real API server, the real Job controller, and a
fake kubelet running the Jobs' pods as local processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world

import gaia
from processes import alive
from waiting import eventually

pytestmark = pytest.mark.slow  # the control plane, an operator, the fake kubelet's tasks


TRIANGLE = Path(__file__).resolve().parents[2] / "examples" / "triangle"
SLEEPER = {
    "key": "sleeper",
    "image": "ubuntu",
    "command": ["sh", "-c", "sleep {{SECONDS}}; echo rested > /out/o"],
    "vars": {"SECONDS": "60"},
    "outputs": {"O": "/out/o"},
}


def nap(seconds: str | None = None, output: str = "rested") -> dict[str, Any]:
    """A process 'nap' of SLEEPER (60 s unless told otherwise) that writes ``output``."""
    process: dict[str, Any] = {"key": "nap", "command": "sleeper", "outputs": {"O": output}}
    if seconds is not None:
        process["vars"] = {"SECONDS": seconds}
    return process


def run_to_failure(
    cluster: Cluster,
    world: dict[str, Any],
    root: str,
    command: str,
    script: str,
    process: str = "bad",
    timeout: float = 60,
) -> dict[str, Any]:
    """Register ``command`` running ``script`` in sh, merge ``process`` of it into ``root``
    and wait for the namespace's error; its status."""
    flow = world["client"]
    outputs = {"O": "/out/o"}
    flow.command(
        [{"key": command, "image": "ubuntu", "command": ["sh", "-c", script], "outputs": outputs}]
    )
    flow.merge(root, [{"key": process, "command": command, "outputs": {"O": "never"}}])
    return wait_state(cluster, world["namespace"], root, ("error",), timeout)


def start_napping(world: dict[str, Any], root: str, seconds: str | None = None) -> int:
    """Merge a nap into ``root``; return its command's pid once the kubelet runs it."""
    world["client"].command([SLEEPER])
    world["client"].merge(root, [nap(seconds)])
    running = eventually(world["kubelet"].running, f"the nap in {root} to start", 30)
    (pid,) = running.values()
    return int(pid)


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def world(cluster: Cluster, crds: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh Kubernetes namespace, store, fake kubelet and operator."""
    namespace = cluster.new_namespace("gaia")
    store = tmp_path / "store"
    store.mkdir()
    with operator_world(
        cluster, namespace, store, tmp_path / "operator.log", {"gaia-data": store}
    ) as world:
        yield world


def resource(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "gaians", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out)


def wait_state(
    cluster: Cluster, namespace: str, name: str, states: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    """The GaiaNamespace's status once it is in one of ``states`` for its latest spec."""

    def latest() -> tuple[bool, dict[str, Any]]:
        found = resource(cluster, namespace, name)
        status = found.get("status") or {}
        current = status.get("observedGeneration") == found["metadata"]["generation"]
        return current and status.get("state") in states, status

    _, status = eventually(
        latest, f"{name} to be {' or '.join(states)}", timeout, until=lambda got: got[0]
    )
    return status


def jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "jobs", "-n", namespace, "-l", "app.kubernetes.io/managed-by=gaia", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def seed(store: Path, root: str) -> None:
    shutil.copytree(TRIANGLE / "data", store / root, dirs_exist_ok=True)


def count(events: list[dict[str, Any]], name: str) -> int:
    return sum(event["event"] == name for event in events)


def kept_events(
    flow: gaia.Gaia, root: str, enough: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The events the server replays for a stream opened since event 0, up to ``enough``."""
    seen: list[dict[str, Any]] = []
    stream = flow.events(root, since=0)

    def read() -> None:
        for event in stream:
            seen.append(event)
            if enough(seen):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # a guard: a replay comes at once
    stream.close()
    assert enough(seen), [event["event"] for event in seen]
    return seen


def test_kubectl_apply_computes_the_triangle(cluster: Cluster, world: dict[str, Any]) -> None:
    ns, store = world["namespace"], world["store"]
    seed(store, "triangle")
    cluster.kubectl("apply", "-n", ns, "-f", str(TRIANGLE / "kubernetes"))
    status = wait_state(cluster, ns, "triangle", ("complete",))
    assert status["counts"]["processes"] == 10 and status["counts"]["complete"] == 10
    assert status["counts"]["missing"] == 0
    space = store / "triangle"
    digest = hashlib.md5((space / "animals/rabbit").read_bytes()).hexdigest()
    assert (space / "md5/rabbit").read_text().split()[0] == digest
    assert (space / "hello/snake").read_text() == "hello snake world\n"
    both = (space / "cat/rabbit").read_text() + (space / "cat/snake").read_text()
    assert (space / "wc/both").read_text().split()[:3] == [
        str(both.count("\n")),
        str(len(both.split())),
        str(len(both.encode())),
    ]
    assert status["tasks"]["both:wc-ab"]["state"] == "complete"
    table = cluster.kubectl("get", "gaians", "-n", ns).stdout
    assert "triangle" in table and "complete" in table
    assert not list((store / ".gaia" / "staging" / "triangle").glob("*/*"))  # all published


def test_the_client_drives_the_operator_like_gaia_serve(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    flow, ns, store = world["client"], world["namespace"], world["store"]
    seed(store, "viaclient")
    commands = gaia.load_yaml(TRIANGLE / "commands.yaml")
    assert {c["key"] for c in flow.command(commands)["commands"]} >= {"md5", "cat-wc"}
    reply = flow.merge("viaclient", gaia.load_yaml(TRIANGLE / "processes.yaml"))
    assert len(reply["processes"]["viaclient"]) == 10
    wait_state(cluster, ns, "viaclient", ("complete",))
    assert flow.status("viaclient")["status"]["state"] == "complete"
    assert resource(cluster, ns, "viaclient")["spec"]["processes"][0]["key"] == "md5-rabbit"

    before = {k: t["run"] for k, t in flow.status("viaclient")["status"]["tasks"].items()}
    (store / "viaclient/animals/snake").write_text("A different snake.\n")
    expired = flow.expire("viaclient", ["animals/snake"])["expire"]
    assert expired["process"] == ["both:cat-ab", "both:wc-ab", "cat-snake", "md5-snake", "wc-snake"]
    eventually(  # live, not the resource
        lambda: flow.status("viaclient")["status"],
        "viaclient to be complete again",
        until=lambda status: status["state"] == "complete",
    )
    after = {k: t["run"] for k, t in flow.status("viaclient")["status"]["tasks"].items()}
    rerun = sorted(k for k in after if after[k] != before[k])
    assert rerun == expired["process"]
    digest = hashlib.md5(b"A different snake.\n").hexdigest()
    assert (store / "viaclient/md5/snake").read_text().split()[0] == digest

    # The operator keeps recent events: a stream opened "since" replays both runs.
    kept = kept_events(flow, "viaclient", lambda seen: count(seen, "flow-complete") == 2)
    assert count(kept, "flow-complete") == 2 and count(kept, "step-start") == 10 + 5
    assert [e["id"] for e in kept] == sorted({e["id"] for e in kept})

    with pytest.raises(gaia.InvalidRequest, match="unknown command 'nope'"):
        flow.merge("viaclient", [{"key": "x", "command": "nope"}])
    with pytest.raises(gaia.NotFound, match="no process or data key"):
        flow.expire("viaclient", ["nope"])


def test_halt_deletes_running_jobs_and_trigger_resumes(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    flow, ns, kubelet = world["client"], world["namespace"], world["kubelet"]
    pid = start_napping(world, "sleepy")
    flow.halt("sleepy")
    status = wait_state(cluster, ns, "sleepy", ("halted",))
    assert status["counts"]["running"] == 0
    eventually(
        lambda: (jobs(cluster, ns), kubelet.running()),
        "the Job and its process to go",
        30,
        until=lambda left: left == ([], {}),
    )
    assert not alive(pid)
    assert not (world["store"] / "sleepy" / "rested").exists()
    flow.trigger("sleepy")
    wait_state(cluster, ns, "sleepy", ("running",))
    assert flow.status("sleepy")["status"]["tasks"]["nap"]["run"] == 2


def test_a_restarted_operator_neither_duplicates_nor_loses_a_task(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    flow, ns, operator = world["client"], world["namespace"], world["operator"]
    start_napping(world, "restart", seconds="4")
    started = kept_events(flow, "restart", lambda seen: count(seen, "step-start") == 1)[-1]
    operator.stop(signal.SIGKILL)  # mid-run, no goodbye
    ended = eventually(  # the task finishes while no operator watches
        world["kubelet"].ended, "the nap's pod to end and be reported", 30
    )
    assert list(ended.values()) == [0], ended
    operator.start()
    status = wait_state(cluster, ns, "restart", ("complete",))
    assert (world["store"] / "restart" / "rested").read_text() == "rested\n"
    assert status["tasks"]["nap"]["run"] == 1  # followed, not started again
    names = {
        e["metadata"]["name"]
        for e in json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)[
            "items"
        ]
        if e.get("involvedObject", {}).get("kind") == "Job"
    }
    assert len({n.split(".")[0] for n in names}) <= 1  # one Job ever existed for it
    # Event ids go on growing across the restart, so a listener resuming "since" the
    # last event it saw before the restart gets what came after.
    kept = kept_events(flow, "restart", lambda seen: count(seen, "flow-complete") == 1)
    assert kept[-1]["event"] == "flow-complete" and kept[-1]["id"] > started["id"]


def test_an_invalid_namespace_is_reported_and_changes_nothing(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    manifest = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "broken", "namespace": ns},
        "spec": {"processes": [{"key": "x", "command": "nope", "outputs": {"O": "o"}}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def valid() -> list[dict[str, Any]]:
        status = resource(cluster, ns, "broken").get("status") or {}
        return [c for c in status.get("conditions") or [] if c["type"] == "Valid"]

    (condition,) = eventually(
        valid,
        "condition Valid=False on broken",
        30,
        until=lambda c: c and c[0]["status"] == "False",
    )
    assert "unknown command 'nope'" in condition["message"]
    assert jobs(cluster, ns) == []
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=broken", "-o", "json"
    ).stdout
    assert "unknown command 'nope'" in events


def test_a_job_that_stages_a_link_fails_by_name_and_publishes_nothing(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """A Job's container writes its outputs straight onto the data volume: a link it
    leaves there would be published into the data, pointing into every reader's machine.
    The operator refuses it as a worker does, naming the output."""
    script = "ln -s /etc/hostname /out/o"
    status = run_to_failure(cluster, world, "linking", "linker", script)
    (failure,) = status["failures"]
    assert failure["process"] == "bad"
    assert "output /out/o is a symbolic link (-> /etc/hostname)" in failure["error"]
    assert not os.path.lexists(world["store"] / "linking" / "never")
    assert not list((world["store"] / ".gaia" / "staging" / "linking").glob("*/*"))


def test_a_failed_job_reports_its_exit_code_and_publishes_nothing(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    ns = world["namespace"]
    status = run_to_failure(cluster, world, "failing", "failer", "echo half > /out/o; exit 3")
    (failure,) = status["failures"]
    assert failure["process"] == "bad" and failure["exitCode"] == 3
    assert "exit code 3" in failure["error"]
    assert status["waiting"] == ["never"]
    assert not (world["store"] / "failing" / "never").exists()
    assert not list((world["store"] / ".gaia" / "staging" / "failing").glob("*/*"))
    table = cluster.kubectl("get", "gaians", "failing", "-n", ns).stdout
    assert "error" in table


def test_a_gaia_namespace_name_is_unique_across_the_cluster(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    first, second = world["namespace"], cluster.new_namespace("gaia-other")
    manifest = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "twice"},
        "spec": {"processes": []},
    }
    cluster.kubectl("apply", "-n", first, "-f", "-", input=json.dumps(manifest))
    wait_state(cluster, first, "twice", ("complete", "initialized"))
    cluster.kubectl("apply", "-n", second, "-f", "-", input=json.dumps(manifest))
    try:
        status = wait_state(cluster, second, "twice", ("error",))
        assert f"already defined in Kubernetes namespace '{first}'" in status["message"]
    finally:
        cluster.kubectl("delete", "gaians", "twice", "-n", second, check=False)


def test_changing_a_command_recomputes_its_users(cluster: Cluster, world: dict[str, Any]) -> None:
    ns, store = world["namespace"], world["store"]
    seed(store, "triangle")
    cluster.kubectl("apply", "-n", ns, "-f", str(TRIANGLE / "kubernetes"))
    before = wait_state(cluster, ns, "triangle", ("complete",))
    hello = json.loads(cluster.kubectl("get", "gaiacmd", "hello", "-o", "json").stdout)
    hello["spec"]["command"] = ["echo", "goodbye", "{{BETWEEN}}"]
    del hello["metadata"]["resourceVersion"]
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(hello))
        expected = [
            "both:cat-ab",
            "both:wc-ab",
            "cat-rabbit",
            "cat-snake",
            "hello-rabbit",
            "hello-snake",
            "wc-rabbit",
            "wc-snake",
        ]

        def state_and_rerun() -> tuple[str | None, list[str]]:
            after = resource(cluster, ns, "triangle").get("status") or {}
            tasks = after.get("tasks") or {}
            rerun = sorted(k for k, t in tasks.items() if t["run"] != before["tasks"][k]["run"])
            return after.get("state"), rerun

        eventually(
            state_and_rerun,
            "triangle complete with the hello users run again",
            until=lambda got: got == ("complete", expected),
        )
        assert (store / "triangle/hello/snake").read_text() == "goodbye snake\n"
        assert "goodbye snake" in (store / "triangle/cat/snake").read_text()
    finally:
        cluster.kubectl("apply", "-f", str(TRIANGLE / "kubernetes" / "commands.yaml"))


def test_the_operator_rides_out_an_api_server_outage(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """The task ends while the API server is away: once it is back the operator's watches
    and re-check carry the end in; calls that need the API server fail clearly meanwhile."""
    flow, ns, store = world["client"], world["namespace"], world["store"]
    pid = start_napping(world, "outage", seconds="2")
    # Kubernetes said who this caller is and that they may read it: during the outage
    # that answer still counts (a caller never seen before would get 503).
    assert flow.status("outage")["status"]["tasks"]["nap"]["run"] == 1
    with cluster.apiserver_outage():
        eventually(lambda: not alive(pid), "the nap to end during the outage", 30)
        second = {**nap("2", "rested2"), "key": "nap2"}
        with pytest.raises(gaia.Unavailable, match="API server cannot be reached") as caught:
            flow.merge("outage", [nap("2"), second])
        assert "nothing was changed, try again" in str(caught.value)
        assert flow.status("outage")["status"]["tasks"]["nap"]["run"] == 1  # from memory
    status = wait_state(cluster, ns, "outage", ("complete",), timeout=120)
    assert status["tasks"]["nap"]["run"] == 1  # followed across the outage, not rerun
    assert (store / "outage" / "rested").read_text() == "rested\n"
    assert "nap2" not in flow.status("outage")["status"]["tasks"]  # the failed merge: nothing
