"""What task and worker pods may do on their node, as their manifests say it: unprivileged
(user 65532 unless the command asks for root), no capabilities, no privilege escalation,
RuntimeDefault seccomp, no API token; the command's resources as requests and limits, its
timeout as the Job's deadline. (On a real node: tests/e2e/test_jobs.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from gaia.engine.instructions import StartTask
from gaia.engine.model import Process, parse_command
from gaia.kube.config import S3Config
from gaia.kube.jobs import build_job
from gaia.kube.workers import WORKER_TOKEN, build_worker

OWNER = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaNamespace",
    "metadata": {"name": "triangle", "namespace": "k8s-ns", "uid": "u-1"},
}
S3 = S3Config(bucket="b", prefix="p", endpoint="http://s3:9000", secret="creds")
UNPRIVILEGED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
NOTHING_TO_GAIN = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}
HELPER = {**NOTHING_TO_GAIN, "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532}


def job(store: str, **fields: Any) -> dict[str, Any]:
    command = parse_command(
        {
            "key": "md5",
            "image": "ubuntu",
            "command": ["md5sum", "/in/in"],
            "inputs": {"INPUT": "/in/in"},
            "outputs": {"OUTPUT": "/out/out"},
            "stdout": "/out/out",
            **fields,
        }
    )
    process = Process(
        key="md5-rabbit",
        spec="md5-rabbit",
        command="md5",
        inputs={"INPUT": "animals/rabbit"},
        outputs={"OUTPUT": "md5/rabbit"},
        vars={},
        uses=frozenset({"md5"}),
    )
    start = StartTask("triangle", process, command, 1)
    return build_job(start, claim="data", owner=OWNER, s3=S3 if store == "s3" else None)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    every = [*pod.get("initContainers", []), *pod["containers"]]
    return {container["name"]: container for container in every}


@pytest.mark.parametrize("store", ["pvc", "s3"])
def test_a_task_pod_runs_unprivileged_without_a_token(store: str) -> None:
    pod = job(store)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == UNPRIVILEGED
    for name, container in containers(pod).items():
        expected = NOTHING_TO_GAIN if name == "main" else HELPER
        assert container["securityContext"] == expected, name
    assert not any("hostPath" in volume for volume in pod["volumes"])
    assert not any(pod.get(field) for field in ("hostNetwork", "hostPID", "hostIPC"))


@pytest.mark.parametrize("store", ["pvc", "s3"])
def test_a_command_that_asks_for_root_gets_root_and_nothing_more(store: str) -> None:
    pod = job(store, runAsRoot=True)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        **UNPRIVILEGED,
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
    }
    every = containers(pod)
    assert every["main"]["securityContext"] == NOTHING_TO_GAIN  # root, without capabilities
    # The helpers hold the store's credentials: they stay unprivileged.
    for name in set(every) - {"main"}:
        assert every[name]["securityContext"] == HELPER, name


@pytest.mark.parametrize("store", ["pvc", "s3"])
def test_resources_are_requests_and_limits_and_the_timeout_a_deadline(store: str) -> None:
    manifest = job(
        store, resources={"cpu": "500m", "memory": "256Mi", "processes": 64}, timeout=90.5
    )
    assert manifest["spec"]["activeDeadlineSeconds"] == 91
    every = containers(manifest["spec"]["template"]["spec"])
    wanted = {"cpu": "500m", "memory": "256Mi"}  # processes: enforced on one machine only
    assert every["main"]["resources"] == {"requests": wanted, "limits": wanted}
    assert not any("resources" in every[name] for name in set(every) - {"main"})


def test_whole_cores_and_plain_bytes_are_quantities() -> None:
    manifest = job("pvc", resources={"cpu": 2, "memory": 129_000_000})
    (main,) = manifest["spec"]["template"]["spec"]["containers"]
    wanted = {"cpu": "2", "memory": "129000000"}
    assert main["resources"] == {"requests": wanted, "limits": wanted}


def test_without_resources_or_timeout_nothing_is_set() -> None:
    manifest = job("pvc", resources={"processes": 8})
    assert "activeDeadlineSeconds" not in manifest["spec"]
    (main,) = manifest["spec"]["template"]["spec"]["containers"]
    assert "resources" not in main


def test_a_worker_pod_runs_unprivileged_with_its_projected_token_only() -> None:
    deployment = build_worker(
        "w1", namespace="gaia", image="gaia:dev", claim="data", api_url="http://gaia:24442", idle=60
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == UNPRIVILEGED
    (container,) = pod["containers"]
    assert container["securityContext"] == NOTHING_TO_GAIN
    assert container["command"][-2:] == ["--token-file", WORKER_TOKEN]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (source,) = volumes["gaia-token"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "gaia-worker"
    assert not any("hostPath" in volume for volume in pod["volumes"])
