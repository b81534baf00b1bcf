"""The operator on the S3 store: a real API server and Job controller, the fake kubelet
running each task pod's three containers (fetch, main, wait) as local processes, and a
real S3-compatible server (moto) that the operator and the pods talk to over HTTP."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world
from test_operator import TRIANGLE, jobs, run_to_failure, wait_state

from waiting import eventually

PREFIX = "team/gaia"
SECRET = "gaia-s3-test"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def world(
    cluster: Cluster,
    crds: None,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    """A fresh Kubernetes namespace with the S3 Secret, a fresh bucket, a fake kubelet
    (no volumes: the pods only use emptyDirs) and an operator configured for S3."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    from gaia.store.s3 import make_client

    s3 = make_client(s3_endpoint, "us-east-1")
    bucket = f"gaia-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    namespace = cluster.new_namespace("gaia-s3")
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        SECRET,
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=testing",
        "--from-literal=AWS_SECRET_ACCESS_KEY=testing",
    )
    store = tmp_path / "unused-store"
    store.mkdir()
    settings = {
        "GAIA_STORE": "s3",
        "GAIA_S3_BUCKET": bucket,
        "GAIA_S3_PREFIX": PREFIX,
        "GAIA_S3_ENDPOINT": s3_endpoint,
        "GAIA_S3_REGION": "us-east-1",
        "GAIA_S3_SECRET": SECRET,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    log = tmp_path / "operator.log"
    with operator_world(cluster, namespace, store, log, {}, extra_env=settings) as world:
        yield {**world, "s3": s3, "bucket": bucket}


def read(world: dict[str, Any], key: str) -> bytes:
    reply = world["s3"].get_object(Bucket=world["bucket"], Key=f"{PREFIX}/{key}")
    body: bytes = reply["Body"].read()
    return body


def names(world: dict[str, Any], under: str) -> list[str]:
    reply = world["s3"].list_objects_v2(Bucket=world["bucket"], Prefix=f"{PREFIX}/{under}")
    return sorted(item["Key"] for item in reply.get("Contents") or [])


def seed(world: dict[str, Any]) -> None:
    """The triangle's source files, in the bucket under namespace 'triangle'."""
    for source in sorted((TRIANGLE / "data").rglob("*")):
        if source.is_file():
            key = source.relative_to(TRIANGLE / "data").as_posix()
            world["s3"].put_object(
                Bucket=world["bucket"], Key=f"{PREFIX}/triangle/{key}", Body=source.read_bytes()
            )


def test_the_triangle_runs_on_the_object_store(cluster: Cluster, world: dict[str, Any]) -> None:
    ns = world["namespace"]
    seed(world)
    cluster.kubectl("apply", "-n", ns, "-f", str(TRIANGLE / "kubernetes"))
    status = wait_state(cluster, ns, "triangle", ("complete", "error"), timeout=180)
    assert status["state"] == "complete", status.get("failures")
    assert status["counts"]["complete"] == 10
    digest = hashlib.md5(read(world, "triangle/animals/rabbit")).hexdigest()
    assert read(world, "triangle/md5/rabbit").split()[0].decode() == digest
    assert read(world, "triangle/hello/snake") == b"hello snake world\n"
    both = read(world, "triangle/cat/rabbit") + read(world, "triangle/cat/snake")
    assert read(world, "triangle/wc/both").split()[:3] == [
        str(both.count(b"\n")).encode(),
        str(len(both.split())).encode(),
        str(len(both)).encode(),
    ]
    assert names(world, ".gaia/staging/") == []  # everything published, nothing left behind


def test_a_failing_command_publishes_nothing(cluster: Cluster, world: dict[str, Any]) -> None:
    ns = world["namespace"]
    script = "echo half > /out/o; exit 3"
    status = run_to_failure(cluster, world, "failing", "failer-s3", script, timeout=120)
    (failure,) = status["failures"]
    assert failure["process"] == "bad" and failure["exitCode"] == 3
    assert "exit code 3" in failure["error"]
    assert names(world, "failing/") == []
    assert names(world, ".gaia/staging/") == []
    assert jobs(cluster, ns)  # the failed Job stays for inspection (as with the volume)


def test_a_command_killed_by_a_signal_fails_instead_of_hanging(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """`kill -9 0` takes the whole container (the exit-code wrapper too): no exit code is
    ever written, so only the operator's re-check can end the pod."""
    status = run_to_failure(
        cluster, world, "killed", "killed-s3", "kill -9 0", process="victim", timeout=120
    )
    (failure,) = status["failures"]
    assert failure["process"] == "victim" and failure["exitCode"] == 137
    assert "the command was killed" in failure["error"]
    assert names(world, "killed/") == []


def test_a_store_that_cannot_be_reached_is_reported_then_retried(
    cluster: Cluster, world: dict[str, Any]
) -> None:
    """The operator asks the store what exists before the engine changes anything: a
    store that fails leaves the namespace untouched, says so, and the re-check retries."""
    ns, s3, bucket = world["namespace"], world["s3"], world["bucket"]
    s3.delete_bucket(Bucket=bucket)  # every call on it fails from now on
    cluster.kubectl("apply", "-n", ns, "-f", str(TRIANGLE / "kubernetes"))
    warnings = eventually(
        lambda: store_warnings(cluster, ns), "a StoreUnavailable event", interval=0.5
    )
    assert "nothing changed: namespace 'triangle': cannot look up" in warnings[0]
    assert "NoSuchBucket" in warnings[0] and "retrying" in warnings[0]
    assert jobs(cluster, ns) == []
    s3.create_bucket(Bucket=bucket)
    seed(world)
    # The re-check may have merged between the bucket's return and the last source's
    # upload (then a source was missing and nothing could run): a user whose inputs
    # arrived asks for a trigger, which looks in the store again.
    cluster.kubectl(
        "patch", "gaians", "triangle", "-n", ns, "--type=merge", "-p",
        json.dumps({"spec": {"trigger": "seeded"}}),
    )  # fmt: skip
    status = wait_state(cluster, ns, "triangle", ("complete", "error"), timeout=180)
    assert status["state"] == "complete", status.get("failures")
    assert read(world, "triangle/hello/snake") == b"hello snake world\n"


def store_warnings(cluster: Cluster, namespace: str) -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    return [
        event.get("message", "")
        for event in events["items"]
        if event.get("reason") == "StoreUnavailable"
        and event.get("involvedObject", {}).get("name") == "triangle"
    ]
