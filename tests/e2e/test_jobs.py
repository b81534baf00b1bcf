"""Workflows applied with `kubectl apply` run as real containers: each task a Job whose pod
the kubelet runs with containerd, its inputs and outputs subPath mounts of the data claim."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from node import (
    NAMESPACE,
    TRIANGLE,
    Node,
    command,
    gaia_namespace,
    jobs,
    on_image,
    task_pods,
    wait_state,
)

pytestmark = pytest.mark.e2e


def put(node: Node, pod: str, root: str, key: str, text: str) -> None:
    """Write a source key onto the claim the way a person can: through the operator pod."""
    path = f"/data/{root}/{key}"
    script = f'mkdir -p "$(dirname {path})" && cat > {path}'
    node.kubectl("exec", "-i", "-n", NAMESPACE, pod, "--", "sh", "-c", script, input=text)


def started_pods(node: Node, prefix: str) -> set[str]:
    """Pods the kubelet started a container in (its `Started` events), by name prefix."""
    events = node.get("events", "-n", NAMESPACE, "--field-selector", "reason=Started")["items"]
    return {
        e["involvedObject"]["name"]
        for e in events
        if e["involvedObject"]["name"].startswith(prefix)
    }


def test_the_triangle_runs_as_real_containers_on_the_claim(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    pod = operator["metadata"]["name"]
    animals = {a: (TRIANGLE / "data" / "animals" / a).read_text() for a in ("rabbit", "snake")}
    for animal, text in animals.items():
        put(node, pod, "triangle", f"animals/{animal}", text)
    documents = [
        *yaml.safe_load_all((TRIANGLE / "kubernetes" / "commands.yaml").read_text()),
        *yaml.safe_load_all((TRIANGLE / "kubernetes" / "namespace.yaml").read_text()),
    ]
    cleanup.append("triangle")
    node.apply(on_image(documents))

    status = wait_state(node, "triangle", ["complete"], timeout=600)
    assert status["counts"]["complete"] == status["counts"]["processes"] == 10, status
    data = node.volume() / "triangle"
    for animal, text in animals.items():
        md5 = f"{hashlib.md5(text.encode()).hexdigest()}  /in/in\n"
        hello = f"hello {animal} world\n"
        assert (data / "md5" / animal).read_text() == md5
        assert (data / "hello" / animal).read_text() == hello
        assert (data / "cat" / animal).read_text() == md5 + hello
        cat = md5 + hello
        wc = [str(cat.count("\n")), str(len(cat.split())), str(len(cat.encode())), "/in/in"]
        assert (data / "wc" / animal).read_text().split() == wc
    both = "".join((data / "cat" / a).read_text() for a in ("rabbit", "snake"))
    assert (data / "wc" / "both").read_text().split()[:3] == [
        str(both.count("\n")),
        str(len(both.split())),
        str(len(both.encode())),
    ]
    # Each task was a pod the kubelet started; its Job stays, marked handled, for its TTL
    # (the chart's operator.jobTTLSeconds, 600 s), for `kubectl logs`.
    assert len(started_pods(node, "gaia-triangle-")) == 10
    kept = jobs(node, "triangle")
    assert len(kept) == 10
    assert all(job["metadata"]["labels"].get("gaia.dev/handled") == "true" for job in kept)
    assert {job["spec"].get("ttlSecondsAfterFinished") for job in kept} == {600}
    # A person reads the results the same way they put the sources there.
    out = node.kubectl("exec", "-n", NAMESPACE, pod, "--", "cat", "/data/triangle/hello/snake")
    assert out.stdout == "hello snake world\n"


def test_a_fan_out_runs_one_pod_per_value(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    values = [str(n) for n in range(1, 9)]
    square = command(
        "e2e-square",
        "echo $(( {{NUM}} * {{NUM}} )) > /out/square",
        vars={"NUM": "0"},
        outputs={"SQUARE": "/out/square"},
    )
    cube = command(
        "e2e-cube",
        "echo $(( $(cat /in/square) * {{NUM}} )) > /out/cube",
        vars={"NUM": "0"},
        inputs={"SQUARE": "/in/square"},
        outputs={"CUBE": "/out/cube"},
    )
    processes = [
        {"key": "square", "command": "e2e-square", "vars": {"NUM": values},
         "outputs": {"SQUARE": "squares/{{NUM}}"}},
        {"key": "cube", "command": "e2e-cube", "vars": {"NUM": values},
         "inputs": {"SQUARE": "squares/{{NUM}}"}, "outputs": {"CUBE": "cubes/{{NUM}}"}},
    ]  # fmt: skip
    cleanup.append("fanout")
    node.apply([square, cube, gaia_namespace("fanout", processes)])

    status = wait_state(node, "fanout", ["complete"], timeout=600)
    assert status["counts"]["processes"] == 16
    data = node.volume() / "fanout"
    for n in range(1, 9):
        assert (data / "squares" / str(n)).read_text() == f"{n * n}\n"
        assert (data / "cubes" / str(n)).read_text() == f"{n**3}\n"
    assert sorted(status["tasks"]) == sorted(
        [f"square-{n}" for n in values] + [f"cube-{n}" for n in values]
    )
    assert {task["run"] for task in status["tasks"].values()} == {1}
    assert len(started_pods(node, "gaia-fanout-")) == 16


def test_a_failing_task_shows_its_log_and_reason_in_the_status(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    failing = command(
        "e2e-fail",
        "echo reading the input; echo 'the input is corrupt' >&2; exit 3",
        outputs={"O": "/out/o"},
    )
    cleanup.append("failing")
    node.apply(
        [
            failing,
            gaia_namespace(
                "failing", [{"key": "bad", "command": "e2e-fail", "outputs": {"O": "never"}}]
            ),
        ]
    )
    status = wait_state(node, "failing", ["error"], timeout=300)
    (failure,) = status["failures"]
    assert failure["process"] == "bad"
    assert "the input is corrupt" in failure["logTail"], failure
    assert "reading the input" in failure["logTail"], failure
    assert failure["exitCode"] == 3 and "exit code 3" in failure["error"], failure
    assert status["tasks"]["bad"]["state"] == "error"
    assert not (node.volume() / "failing" / "never").exists()
    # The failed Job stays for `kubectl logs`, as the docs say.
    (job,) = jobs(node, "failing")
    logs = node.kubectl("logs", "-n", NAMESPACE, f"job/{job['metadata']['name']}").stdout
    assert "reading the input" in logs


def gate_command() -> dict[str, Any]:
    """A task that runs until a file appears in its input directory, then writes once."""
    return command(
        "e2e-gated",
        "while [ ! -e /gate/open ]; do sleep 0.2; done; date +%s%N > /out/o",
        inputs={"GATE": "/gate/"},
        outputs={"O": "/out/o"},
    )


def running_pod(node: Node, root: str) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        for pod in task_pods(node, root):
            if pod["status"].get("phase") == "Running":
                return pod
        return None

    return dict(node.wait_for(running, 300, f"a running task pod of {root}"))


def test_a_replaced_operator_adopts_the_running_job(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    gate = node.volume() / "adopt" / "gate"
    gate.mkdir(parents=True)
    cleanup.append("adopt")
    node.apply(
        [
            gate_command(),
            gaia_namespace(
                "adopt",
                [
                    {
                        "key": "gated",
                        "command": "e2e-gated",
                        "inputs": {"GATE": "gate/"},
                        "outputs": {"O": "out"},
                    }
                ],
            ),
        ]
    )
    task = running_pod(node, "adopt")

    # The operator pod goes; its Deployment starts another, which finds the Job running.
    node.kubectl("delete", "pod", "-n", NAMESPACE, operator["metadata"]["name"], "--wait=true")
    replacement = node.operator_pod()
    assert replacement["metadata"]["uid"] != operator["metadata"]["uid"]
    time.sleep(5)  # the new operator's first re-checks: it must not start the task again
    (job,) = jobs(node, "adopt")
    assert job["metadata"]["labels"]["gaia.dev/run"] == "1"
    (still,) = task_pods(node, "adopt")
    assert still["metadata"]["uid"] == task["metadata"]["uid"]
    assert still["status"]["phase"] == "Running"

    (gate / "open").touch()
    status = wait_state(node, "adopt", ["complete"], timeout=300)
    assert status["tasks"]["gated"]["run"] == 1
    assert (node.volume() / "adopt" / "out").read_text().strip().isdigit()
    assert started_pods(node, "gaia-adopt-") == {task["metadata"]["name"]}


def test_halt_deletes_the_running_pod_and_publishes_nothing(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    gate = node.volume() / "halting" / "gate"
    gate.mkdir(parents=True)
    cleanup.append("halting")
    node.apply(
        [
            gate_command(),
            gaia_namespace(
                "halting",
                [
                    {
                        "key": "gated",
                        "command": "e2e-gated",
                        "inputs": {"GATE": "gate/"},
                        "outputs": {"O": "out"},
                    }
                ],
            ),
        ]
    )
    task = running_pod(node, "halting")
    # killed as a local task is: SIGTERM, then SIGKILL 2 s later (not Kubernetes' 30 s)
    assert task["spec"]["terminationGracePeriodSeconds"] == 2
    node.kubectl(
        "patch", "gaianamespace", "halting", "-n", NAMESPACE, "--type=merge",
        "-p", '{"spec": {"halted": true}}',
    )  # fmt: skip
    wait_state(node, "halting", ["halted"], timeout=120)
    node.wait_for(lambda: not jobs(node, "halting"), 120, "the Job to be deleted")
    node.wait_for(lambda: not task_pods(node, "halting"), 120, "the task pod to be deleted")
    # Opening the gate now changes nothing: the task is gone, nothing is published.
    (gate / "open").touch()
    time.sleep(3)
    assert not (node.volume() / "halting" / "out").exists()
    staging = node.volume() / ".gaia" / "staging" / "halting"
    assert not list(staging.glob("*/*")), list(staging.rglob("*"))
    status = wait_state(node, "halting", ["halted"], timeout=30)
    assert status["tasks"]["gated"]["state"] == "cancelled"
    assert task["metadata"]["name"] not in {
        p["metadata"]["name"] for p in task_pods(node, "halting")
    }


def test_a_namespace_applied_before_its_command_runs_once_the_command_comes(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    """`kubectl apply` of a folder with both: the namespace's event may come first."""
    cleanup.append("early")
    process = {"key": "p", "command": "e2e-late", "outputs": {"O": "o"}}
    node.apply([gaia_namespace("early", [process])])

    def refused() -> bool:
        status = node.get("gaianamespace", "early", "-n", NAMESPACE).get("status") or {}
        return "unknown command 'e2e-late'" in (status.get("message") or "")

    node.wait_for(refused, 120, "the spec to be refused for its unknown command")
    node.apply([command("e2e-late", "echo late > /out/o", outputs={"O": "/out/o"})])
    status = wait_state(node, "early", ["complete"], timeout=300)
    assert status["counts"]["complete"] == 1
    assert (node.volume() / "early" / "o").read_text() == "late\n"


# What a task learns about itself: its user and groups, its capabilities, whether it may
# gain privileges, its seccomp mode, and whether an API token is mounted.
PROBE = (
    "mkdir -p /out/probe && {"
    ' echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)";'
    " grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status;"
    " if [ -e /var/run/secrets/kubernetes.io/serviceaccount/token ];"
    " then echo token=mounted; else echo token=none; fi;"
    " } > /out/probe/who"
)


def probed(path: Path) -> dict[str, str]:
    pairs = (line.replace(":", "=", 1).split("=", 1) for line in path.read_text().splitlines())
    return {name.strip(): value.strip() for name, value in pairs}


def test_a_task_pod_runs_as_a_user_without_capabilities_unless_it_asks_for_root(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    plain = command("e2e-probe", PROBE, outputs={"PROBE": "/out/probe/"})
    root = command("e2e-probe-root", PROBE, outputs={"PROBE": "/out/probe/"}, runAsRoot=True)
    processes = [
        {"key": "plain", "command": "e2e-probe", "outputs": {"PROBE": "probe/plain/"}},
        {"key": "root", "command": "e2e-probe-root", "outputs": {"PROBE": "probe/root/"}},
    ]
    cleanup.append("secure")
    node.apply([plain, root, gaia_namespace("secure", processes)])

    wait_state(node, "secure", ["complete"], timeout=600)
    probe = node.volume() / "secure" / "probe"
    nothing = "0000000000000000"
    unprivileged = probed(probe / "plain" / "who")
    assert unprivileged["uid"] == "65532" and unprivileged["gid"] == "65532", unprivileged
    assert unprivileged["groups"].split() == ["65532"], unprivileged
    as_root = probed(probe / "root" / "who")
    assert as_root["uid"] == "0" and as_root["gid"] == "0", as_root
    assert "65532" in as_root["groups"].split(), as_root  # fsGroup: it shares the claim too
    for seen in (unprivileged, as_root):
        for kind in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert seen[kind] == nothing, (kind, seen)
        assert seen["NoNewPrivs"] == "1", seen  # allowPrivilegeEscalation: false
        assert seen["Seccomp"] == "2", seen  # a filter: RuntimeDefault
        assert seen["token"] == "none", seen
    # What the unprivileged task wrote was published (moved by the operator), and the
    # operator deletes it too: expire it while halted, so nothing computes it again.
    assert (probe / "plain").stat().st_uid == 65532
    node.apply(
        [gaia_namespace("secure", processes, halted=True, expire={"token": "1", "keys": ["plain"]})]
    )
    node.wait_for(lambda: not (probe / "plain").exists(), 120, "the expired output to go")
    assert (probe / "root" / "who").exists()
    staging = node.volume() / ".gaia" / "staging" / "secure"
    node.wait_for(lambda: not list(staging.glob("*/*")), 120, "the staging folders to go")
