"""The fake kubelet runs the pods of Jobs, and the real Job controller believes it."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubelet import FakeKubelet
from kubernetes import client

from processes import alive, sleep_marker, sleepers
from waiting import eventually

pytestmark = pytest.mark.slow

MANAGED = {"app.kubernetes.io/managed-by": "gaia"}
TIMEOUT = 20.0


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The host directory behind the claim gaia-data, with one input file in it."""
    rabbit = tmp_path / "data" / "triangle" / "animals" / "rabbit"
    rabbit.parent.mkdir(parents=True)
    rabbit.write_text("a white rabbit\n")
    return tmp_path / "data"


@pytest.fixture
def namespace(cluster: Any) -> str:
    name: str = cluster.new_namespace("kubelet")
    return name


@pytest.fixture
def api(cluster: Any) -> Iterator[Any]:
    api_client = cluster.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def sandbox() -> str:
    return "auto"


@pytest.fixture
def kubelet(api: Any, data: Path, namespace: str, sandbox: str) -> Iterator[FakeKubelet]:
    with FakeKubelet(api, {"gaia-data": data}, namespace=namespace, sandbox=sandbox) as running:
        yield running
    assert running.errors == []


def _bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    probe = ["bwrap", "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


BWRAP = pytest.param("bwrap", marks=pytest.mark.skipif(not _bwrap_works(), reason="no bwrap"))
SANDBOXES = pytest.mark.parametrize("sandbox", [BWRAP, "rewrite"])


def gaia_job(name: str, script: str) -> dict[str, Any]:
    """A Job whose pod looks like the ones the Gaia operator creates."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": MANAGED},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": MANAGED},
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [
                        {"name": "gaia-data", "persistentVolumeClaim": {"claimName": "gaia-data"}}
                    ],
                    "containers": [
                        {
                            "name": "main",
                            "image": "ubuntu",
                            "command": ["sh", "-c", script],
                            "env": [
                                {"name": "GAIA_STDOUT", "value": "/out/out"},
                                {"name": "ANIMAL", "value": "rabbit"},
                            ],
                            "volumeMounts": [
                                {
                                    "name": "gaia-data",
                                    "mountPath": "/in/in",
                                    "subPath": "triangle/animals/rabbit",
                                    "readOnly": True,
                                },
                                {
                                    "name": "gaia-data",
                                    "mountPath": "/out",
                                    "subPath": f".gaia/staging/triangle/{name}/out",
                                },
                            ],
                        }
                    ],
                },
            },
        },
    }


def batch(api: Any) -> Any:
    return client.BatchV1Api(api)


def core(api: Any) -> Any:
    return client.CoreV1Api(api)


def run_job(api: Any, namespace: str, name: str, script: str, **changes: Any) -> None:
    job = gaia_job(name, script)
    job["spec"]["template"]["spec"].update(changes)
    batch(api).create_namespaced_job(namespace, job)


def job_conditions(api: Any, namespace: str, name: str) -> dict[str, str]:
    job = batch(api).read_namespaced_job(name, namespace)
    return {c.type: c.status for c in job.status.conditions or []}


def only_pod(api: Any, namespace: str, job: str) -> Any:
    pods = core(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    return pods.items[0]


@SANDBOXES
def test_a_job_completes_and_its_output_is_on_the_host(
    api: Any, namespace: str, data: Path, kubelet: FakeKubelet
) -> None:
    # $(ANIMAL) is expanded as Kubernetes does, and $$ is a single $ for the shell.
    run_job(api, namespace, "copy", 'cat /in/in > /out/copy && echo "a $(ANIMAL) $$ANIMAL"')

    conditions = eventually(
        lambda: job_conditions(api, namespace, "copy"),
        "the Job controller to complete the Job",
        until=lambda c: c.get("Complete") == "True",
    )
    # Kubernetes 1.31+ first marks a Job SuccessCriteriaMet, then Complete.
    assert conditions == {"SuccessCriteriaMet": "True", "Complete": "True"}
    job = batch(api).read_namespaced_job("copy", namespace)
    assert job.status.succeeded == 1 and not job.status.failed and not job.status.active

    # A writable subPath that did not exist was created, as a kubelet does.
    out = data / ".gaia" / "staging" / "triangle" / "copy" / "out"
    assert (out / "copy").read_text() == "a white rabbit\n"

    pod = only_pod(api, namespace, "copy")
    assert pod.status.phase == "Succeeded"
    (status,) = pod.status.container_statuses
    assert status.state.terminated.exit_code == 0
    assert status.state.terminated.reason == "Completed"
    assert status.container_id.startswith("fake://")
    assert kubelet.logs(namespace, pod.metadata.name) == "a rabbit rabbit\n"
    assert kubelet.wait_idle(5) and kubelet.running() == {}


def test_a_failing_command_fails_the_job(api: Any, namespace: str, kubelet: FakeKubelet) -> None:
    run_job(api, namespace, "fail", "echo 'no such animal' >&2; exit 3")

    conditions = eventually(
        lambda: job_conditions(api, namespace, "fail"),
        "the Job controller to fail the Job",
        until=lambda c: c.get("Failed") == "True",
    )
    assert conditions == {"FailureTarget": "True", "Failed": "True"}
    job = batch(api).read_namespaced_job("fail", namespace)
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 1

    pod = only_pod(api, namespace, "fail")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert kubelet.logs(namespace, pod.metadata.name) == "no such animal\n"


@SANDBOXES
def test_deleting_a_running_job_kills_its_processes(
    api: Any, namespace: str, kubelet: FakeKubelet
) -> None:
    marker = sleep_marker()
    run_job(api, namespace, "sleepy", f"sleep {marker} & sleep {marker}")

    ((key, pid),) = eventually(lambda: list(kubelet.running().items()), "the pod to run")
    assert key[0] == namespace and key[1].startswith("sleepy-")
    eventually(lambda: sleepers(marker), "both sleeps to start", until=lambda s: len(s) == 2)
    eventually(
        lambda: batch(api).read_namespaced_job("sleepy", namespace).status.ready,
        "the Job controller to count a ready pod",
        until=lambda ready: ready == 1,
    )
    pod = core(api).read_namespaced_pod(key[1], namespace)
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].container_id == f"fake://{pid}"

    batch(api).delete_namespaced_job("sleepy", namespace, propagation_policy="Background")

    eventually(lambda: not alive(pid), f"pid {pid} to die")
    eventually(lambda: sleepers(marker), "the sleeps to die", until=lambda s: s == [])
    assert kubelet.wait_idle(TIMEOUT)
    eventually(
        lambda: [
            p.metadata.name
            for p in core(api)
            .list_namespaced_pod(namespace, label_selector="job-name=sleepy")
            .items
        ],
        "the pod to be gone",
        until=lambda names: names == [],
    )


def test_deleting_a_running_pod_reports_it_failed(
    api: Any, namespace: str, kubelet: FakeKubelet
) -> None:
    marker = sleep_marker()
    run_job(api, namespace, "victim", f"sleep {marker}")
    ((key, pid),) = eventually(lambda: list(kubelet.running().items()), "the pod to run")

    core(api).delete_namespaced_pod(key[1], namespace)

    # The kubelet kills the process, reports the pod Failed and deletes it for good; the
    # Job controller counts the failure (backoffLimit 0: the Job fails).
    eventually(lambda: not alive(pid) and sleepers(marker) == [], "the process to die")
    eventually(
        lambda: job_conditions(api, namespace, "victim"),
        "the Job controller to fail the Job",
        until=lambda c: c.get("Failed") == "True",
    )
    assert batch(api).read_namespaced_job("victim", namespace).status.failed == 1
    eventually(
        lambda: [
            p.metadata.name
            for p in core(api)
            .list_namespaced_pod(namespace, label_selector="job-name=victim")
            .items
        ],
        "the pod to be gone",
        until=lambda names: names == [],
    )


def test_a_pod_that_cannot_run_fails_with_the_reason(
    api: Any, namespace: str, kubelet: FakeKubelet
) -> None:
    volumes = [{"name": "gaia-data", "persistentVolumeClaim": {"claimName": "elsewhere"}}]
    run_job(api, namespace, "lost", "true", volumes=volumes)

    eventually(
        lambda: job_conditions(api, namespace, "lost"),
        "the Job controller to fail the Job",
        until=lambda c: c.get("Failed") == "True",
    )
    terminated = only_pod(api, namespace, "lost").status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert terminated.message == "claim 'elsewhere' is not one of the fake kubelet's (gaia-data)"


def test_a_pod_started_by_another_kubelet_is_reported_lost_not_run_again(
    api: Any, namespace: str, data: Path
) -> None:
    template = gaia_job("again", "touch /out/ran")["spec"]["template"]
    pod = {"metadata": {"name": "again", "labels": MANAGED}, "spec": template["spec"]}
    core(api).create_namespaced_pod(namespace, pod)
    # What the kubelet that started it reported before it went away.
    status: dict[str, Any] = {
        "name": "main",
        "image": "ubuntu",
        "imageID": "",
        "containerID": "fake://1",
        "ready": True,
        "restartCount": 0,
        "started": True,
        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
    }
    body = {"status": {"phase": "Running", "containerStatuses": [status]}}
    core(api).patch_namespaced_pod_status("again", namespace, body)

    with FakeKubelet(api, {"gaia-data": data}, namespace=namespace) as kubelet:
        phase = eventually(
            lambda: core(api).read_namespaced_pod("again", namespace).status.phase,
            "the pod to be reported",
            until=lambda phase: phase in ("Succeeded", "Failed"),
        )
    assert phase == "Failed" and kubelet.errors == []
    terminated = (
        core(api)
        .read_namespaced_pod("again", namespace)
        .status.container_statuses[0]
        .state.terminated
    )
    assert (terminated.exit_code, terminated.reason) == (137, "ContainerStatusUnknown")
    assert terminated.container_id == "fake://1"
    assert not (data / ".gaia" / "staging" / "triangle" / "again" / "out" / "ran").exists()


# --- the watch itself, against a scripted API server ---------------------------------------


class _Response:
    """A streamed watch response that plays given lines, then ends."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        self.data = "{}"
        self.lines = lines

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            yield json.dumps(line).encode() + b"\n"

    def close(self) -> None: ...
    def release_conn(self) -> None: ...


def test_the_watch_lists_again_after_410_and_survives_api_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    done = threading.Event()

    class Scripted(FakeKubelet):
        def _list_call(self, **kwargs: Any) -> Any:
            if not kwargs.get("watch"):
                calls.append("list")
                response = _Response([])
                response.data = json.dumps({"metadata": {"resourceVersion": "7"}, "items": []})
                return response
            calls.append(f"watch@{kwargs['resource_version']}")
            if len(calls) == 2:
                return _Response([{"type": "ERROR", "object": {"code": 410, "message": "gone"}}])
            if len(calls) == 4:
                raise client.ApiException(status=500, reason="etcd is sad")
            if len(calls) == 5:
                bookmark = {"metadata": {"resourceVersion": "9"}}
                return _Response([{"type": "BOOKMARK", "object": bookmark}])
            done.set()
            self._stopping.wait()
            return _Response([])

    caplog.set_level(logging.INFO)
    kubelet = Scripted(None, {}, workdir=tmp_path)
    with kubelet:
        assert done.wait(TIMEOUT)
    assert calls[:6] == ["list", "watch@7", "list", "watch@7", "watch@7", "watch@9"]
    assert kubelet.errors == []
    assert "watch expired" in caplog.text and "etcd is sad" in caplog.text


TOKEN_DIR = "/var/run/secrets/gaia.dev/worker"


def token_pod(account: str) -> dict[str, Any]:
    """A Job whose pod reads its projected token twice, a second apart, into outputs."""
    read = f"cat {TOKEN_DIR}/token > /out/first; sleep 3; cat {TOKEN_DIR}/token > /out/second"
    job = gaia_job("tokens", read)
    pod = job["spec"]["template"]["spec"]
    pod["serviceAccountName"] = account
    pod["automountServiceAccountToken"] = False
    source = {"audience": "gaia-worker", "expirationSeconds": 3600, "path": "token"}
    pod["volumes"].append(
        {"name": "token", "projected": {"sources": [{"serviceAccountToken": source}]}}
    )
    mounts = pod["containers"][0]["volumeMounts"]
    mounts.append({"name": "token", "mountPath": TOKEN_DIR, "readOnly": True})
    return job


def review(api: Any, token: str) -> Any:
    spec = {"token": token, "audiences": ["gaia-worker"]}
    return client.AuthenticationV1Api(api).create_token_review({"spec": spec}).status


@SANDBOXES
def test_a_pod_gets_its_projected_token_and_it_is_renewed(
    api: Any, namespace: str, data: Path, sandbox: str, cluster: Any
) -> None:
    """As a kubelet does: a token of the pod's ServiceAccount, for the volume's audience,
    bound to the pod, written where the volume is mounted, and renewed while it runs."""
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    with FakeKubelet(
        api, {"gaia-data": data}, namespace=namespace, sandbox=sandbox, token_renewal=1.0
    ) as kubelet:
        batch(api).create_namespaced_job(namespace, token_pod("robot"))
        eventually(
            lambda: job_conditions(api, namespace, "tokens").get("Complete") == "True",
            "the Job to complete",
        )
    assert kubelet.errors == []
    out = data / ".gaia" / "staging" / "triangle" / "tokens" / "out"
    first, second = (out / "first").read_text(), (out / "second").read_text()
    assert first and second and first != second  # renewed meanwhile, read anew
    pod = only_pod(api, namespace, "tokens")
    status = review(api, second)
    assert status.authenticated and status.audiences == ["gaia-worker"]
    assert status.user.username == f"system:serviceaccount:{namespace}:robot"
    assert status.user.extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]


def test_a_pod_whose_account_is_gone_gets_no_token_and_fails_saying_so(
    api: Any, namespace: str, data: Path, cluster: Any
) -> None:
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    batch(api).create_namespaced_job(namespace, token_pod("robot"))
    eventually(
        lambda: core(api).list_namespaced_pod(namespace, label_selector="job-name=tokens").items,
        "the Job controller to create the pod",
    )
    cluster.kubectl("delete", "serviceaccount", "robot", "-n", namespace)
    with FakeKubelet(api, {"gaia-data": data}, namespace=namespace) as kubelet:
        eventually(
            lambda: job_conditions(api, namespace, "tokens").get("Failed") == "True",
            "the Job controller to fail the Job",
        )
    assert kubelet.errors == []
    terminated = only_pod(api, namespace, "tokens").status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError"
    assert terminated.message.startswith("volume 'token': no token for ServiceAccount 'robot' (404")
