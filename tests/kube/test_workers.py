"""Long-lived workers on a cluster (`launch`): a Deployment per worker, whose `gaia worker`
pod (run by the fake kubelet with this checkout's console script) takes tasks from the
operator's HTTP API instead of Jobs being created."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world
from test_operator import SLEEPER, TRIANGLE, jobs, nap, wait_state

import gaia
from gaia.errors import GaiaError
from waiting import eventually

World = dict[str, Any]


pytestmark = pytest.mark.slow  # the control plane, an operator process, worker pods


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def make_world(
    cluster: Cluster, crds: None, tmp_path: Path
) -> Iterator[Callable[..., contextlib.AbstractContextManager[World]]]:
    """``with make_world(idle=S, **env) as world``: a namespace, store, kubelet, operator.
    Workers run `ubuntu`, the image of the triangle's and the tests' commands."""

    @contextlib.contextmanager
    def make(idle: float = 30, **env: str) -> Iterator[World]:
        namespace = cluster.new_namespace("gaiaw")
        store = tmp_path / namespace
        store.mkdir()
        extra = {"GAIA_WORKER_IDLE_SECONDS": str(idle), "GAIA_WORKER_IMAGE": "ubuntu", **env}
        with operator_world(
            cluster,
            namespace,
            store,
            tmp_path / f"{namespace}.log",
            {"gaia-data": store},
            extra_env=extra,
        ) as world:
            try:
                yield world
            finally:
                cluster.kubectl(
                    "delete", "deployments", "--all", "-n", namespace, "--wait=false", check=False
                )

    yield make


def worker_token(world: World, key: str) -> str | None:
    """The token the kubelet projected into worker ``key``'s latest pod, if any yet."""
    found = sorted(
        (world["kubelet"].workdir / world["namespace"]).glob(
            f"gaia-worker-{key}-*/volumes/gaia-token/token"
        ),
        key=lambda path: path.stat().st_mtime,
    )
    return found[-1].read_text() if found else None


def post(world: World, path: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
    """POST as a worker would (or as whoever ``token`` is)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://{world['operator'].address}{path}",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=40) as response:
        reply: dict[str, Any] = json.loads(response.read())
    return reply


def deployments(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout
    return sorted(d["metadata"]["name"] for d in json.loads(out)["items"])


def wait_worker(world: World, key: str, timeout: float = 60) -> str:
    """Wait until worker ``key`` has asked for work; its pod's token."""

    def asked() -> bool:
        token = worker_token(world, key)
        return (
            bool(token) and key in post(world, "/work/workers", {"worker": key}, token)["workers"]
        )

    eventually(asked, f"worker {key} to ask for work", timeout)
    token = worker_token(world, key)
    assert token is not None
    return token


def worker_log(world: World, key: str) -> str:
    """What the pods of worker ``key`` have logged so far."""
    kubelet, namespace = world["kubelet"], world["namespace"]
    pods = [pod for ns, pod in kubelet.running() if pod.startswith(f"gaia-worker-{key}-")]
    return "".join(kubelet.logs(namespace, pod) for pod in pods)


def sleeping(seconds: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"sleep {seconds}"], capture_output=True).returncode == 0


def test_launch_creates_a_deployment_once(cluster: Cluster, make_world: Any) -> None:
    with make_world() as world:
        flow, ns = world["client"], world["namespace"]
        assert flow.launch(["w1"]) == {"launch": ["w1"], "running": []}
        assert deployments(cluster, ns) == ["gaia-worker-w1"]
        out = cluster.kubectl("get", "deployment", "gaia-worker-w1", "-n", ns, "-o", "json")
        deployment = json.loads(out.stdout)
        assert deployment["metadata"]["labels"]["gaia.dev/worker"] == "w1"
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][:4] == ["gaia", "worker", "--key", "w1"]
        assert container["command"][-2:] == [
            "--token-file",
            "/var/run/secrets/gaia.dev/worker/token",
        ]
        assert container["image"] == "ubuntu"
        assert container["volumeMounts"] == [
            {"name": "gaia-data", "mountPath": "/data"},
            {
                "name": "gaia-token",
                "mountPath": "/var/run/secrets/gaia.dev/worker",
                "readOnly": True,
            },
        ]
        # Its own token, for the operator alone, and no other.
        assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (
            "gaia-worker",
            False,
        )
        (projected,) = (v["projected"] for v in pod["volumes"] if "projected" in v)
        assert projected["sources"] == [
            {
                "serviceAccountToken": {
                    "audience": "gaia-worker",
                    "expirationSeconds": 3600,
                    "path": "token",
                }
            }
        ]
        assert flow.launch(["w1"]) == {"launch": [], "running": ["w1"]}
        with pytest.raises(GaiaError, match="DNS label"):
            flow.launch(["Bad_Key"])
        with pytest.raises(GaiaError, match="unique"):
            flow.launch(["w2", "w2"])
        assert deployments(cluster, ns) == ["gaia-worker-w1"]
        # Reports about runs the operator never gave out are refused or ignored.
        token = wait_worker(world, "w1")
        stale = {"worker": "w1", "root": "nowhere", "process": "p", "run": 1}
        assert post(world, "/work/heartbeat", stale, token) == {"cancel": True}
        assert post(world, "/work/done", {**stale, "ok": True}, token) == {"accepted": False}
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(world, "/work/take", {"worker": "w1", "wait": "soon"}, token)
        assert refused.value.code == 400
        # A worker speaks for itself only.
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(world, "/work/done", {**stale, "worker": "w9", "ok": True}, token)
        assert refused.value.code == 403
        assert "it may not speak for worker 'w9'" in json.loads(refused.value.read())["error"]


def test_workers_run_the_triangle_without_jobs(cluster: Cluster, make_world: Any) -> None:
    with make_world(idle=30) as world:
        flow, ns, store = world["client"], world["namespace"], world["store"]
        shutil.copytree(TRIANGLE / "data", store / "wtriangle", dirs_exist_ok=True)
        flow.launch(["w1"])
        wait_worker(world, "w1")
        flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
        flow.merge("wtriangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        status = wait_state(cluster, ns, "wtriangle", ("complete",), timeout=120)
        assert status["counts"]["complete"] == 10
        tasks = flow.status("wtriangle")["status"]["tasks"]
        assert {t["handle"].get("worker") for t in tasks.values()} == {"w1"}, tasks
        assert jobs(cluster, ns) == []
        space = store / "wtriangle"
        assert (space / "hello/snake").read_text() == "hello snake world\n"
        assert (space / "wc/both").read_text().split()
        assert not list((store / ".gaia" / "staging" / "wtriangle").glob("*/*"))
        # A command of another image runs as a Job: workers have only their own programs.
        other = {**SLEEPER, "key": "sleeper-alpine", "image": "alpine"}
        flow.command([other])
        flow.merge("wother", [{**nap("1"), "command": "sleeper-alpine"}])
        wait_state(cluster, ns, "wother", ("complete",), timeout=60)
        assert "job" in flow.status("wother")["status"]["tasks"]["nap"]["handle"]


def test_halt_kills_the_workers_task(cluster: Cluster, make_world: Any) -> None:
    with make_world(idle=30) as world:
        flow, ns, store = world["client"], world["namespace"], world["store"]
        flow.launch(["w1"])
        wait_worker(world, "w1")
        flow.command([SLEEPER])
        flow.merge("wsleepy", [nap("4247")])
        eventually(lambda: sleeping("4247"), "the worker to start sleep 4247")
        task = flow.status("wsleepy")["status"]["tasks"]["nap"]
        assert task["handle"] == {"worker": "w1"}
        flow.halt("wsleepy")
        wait_state(cluster, ns, "wsleepy", ("halted",))
        eventually(lambda: not sleeping("4247"), "the worker to kill sleep 4247", 30)
        eventually(  # and to drop the run: it never reports it, nothing is published
            lambda: worker_log(world, "w1"),
            "the worker to drop the cancelled run",
            30,
            until=lambda log: "nap#1 of wsleepy cancelled by the operator" in log,
        )
        assert not (store / "wsleepy" / "rested").exists()
        assert jobs(cluster, ns) == []
        # the worker is still there, and takes the next run
        flow.merge("wsleepy", [nap("1")])
        flow.trigger("wsleepy")
        wait_state(cluster, ns, "wsleepy", ("complete",), timeout=60)
        assert (store / "wsleepy" / "rested").read_text() == "rested\n"
        assert jobs(cluster, ns) == []


def test_an_idle_worker_stops_and_its_deployment_goes(cluster: Cluster, make_world: Any) -> None:
    with make_world(idle=3) as world:
        flow, ns = world["client"], world["namespace"]
        flow.launch(["w1"])
        wait_worker(world, "w1")
        eventually(
            lambda: deployments(cluster, ns), "the Deployment to go", until=lambda d: d == []
        )
        # Without workers, tasks are Jobs again: w1 was heard from within the last minute,
        # so a task would wait for it, had its goodbye not been heard.
        flow.command([SLEEPER])
        flow.merge("wjob", [nap("1", output="r")])
        assert "job" in flow.status("wjob")["status"]["tasks"]["nap"]["handle"]
        wait_state(cluster, ns, "wjob", ("complete",), timeout=60)
        assert jobs(cluster, ns) or (world["store"] / "wjob" / "r").exists()


def test_launch_on_the_s3_store_is_refused(cluster: Cluster, make_world: Any) -> None:
    env = {
        "GAIA_STORE": "s3",
        "GAIA_S3_BUCKET": "nowhere",
        "GAIA_S3_ENDPOINT": "http://127.0.0.1:9",
    }
    with make_world(**env) as world:
        with pytest.raises(GaiaError, match="shared volume store"):
            world["client"].launch(["w1"])
        assert deployments(cluster, world["namespace"]) == []
