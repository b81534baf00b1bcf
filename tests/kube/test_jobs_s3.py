"""The S3 task pod's manifest: fetch (init), main and wait share one emptyDir."""

from __future__ import annotations

from gaia.engine.instructions import StartTask
from gaia.engine.model import Command, Process
from gaia.kube.config import S3Config
from gaia.kube.jobs import build_job

OWNER = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaNamespace",
    "metadata": {"name": "triangle", "namespace": "k8s-ns", "uid": "u-1"},
}


def test_the_s3_pod_fetches_runs_and_uploads() -> None:
    command = Command(
        key="md5",
        image="ubuntu",
        command=("md5sum", "/in/in"),
        inputs={"INPUT": "/in/in"},
        outputs={"OUTPUT": "/out/out"},
        stdout="/out/out",
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
    s3 = S3Config(bucket="b", prefix="p", endpoint="http://s3:9000", secret="creds")
    job = build_job(StartTask("triangle", process, command, 1), claim="unused", owner=OWNER, s3=s3)
    pod = job["spec"]["template"]["spec"]
    name = job["metadata"]["name"]
    assert pod["volumes"] == [{"name": "gaia-work", "emptyDir": {}}]
    (fetch,) = pod["initContainers"]
    main, wait = pod["containers"]
    assert fetch["image"] == wait["image"] == "gaia:0.1.0"
    assert fetch["command"] == [
        *("gaia", "task", "fetch", "--root", "triangle", "--work", "/gaia/work"),
        *("--input", "/in/in", "animals/rabbit"),
    ]
    assert wait["command"] == [
        *("gaia", "task", "upload", "--root", "triangle", "--job", name),
        *("--work", "/gaia/work", "--output", "/out/out"),
    ]
    env = {v["name"]: v for v in fetch["env"]}
    assert env["GAIA_S3_BUCKET"]["value"] == "b" and env["GAIA_S3_PREFIX"]["value"] == "p"
    assert env["GAIA_S3_ENDPOINT"]["value"] == "http://s3:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "creds",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert wait["env"] == fetch["env"]
    assert main["image"] == "ubuntu"
    assert main["command"][:2] == ["/bin/sh", "-c"] and main["command"][3:] == [
        "gaia-task",
        "md5sum",
        "/in/in",
    ]
    assert '"$GAIA_EXIT"' in main["command"][2] and "tee" in main["command"][2]
    assert {
        (m["mountPath"], m["subPath"], m.get("readOnly", False)) for m in main["volumeMounts"]
    } == {
        ("/in/in", "fs/in/in", True),
        ("/out", "fs/out", False),
        ("/var/run/gaia", "run", False),
    }
    pvc = build_job(StartTask("triangle", process, command, 1), claim="data", owner=OWNER)
    assert "initContainers" not in pvc["spec"]["template"]["spec"]
