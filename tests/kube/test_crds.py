"""The CRDs against a real kube-apiserver: they install, the examples apply, bad resources
are rejected by the API server itself with a message naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster import REPO, Cluster, ClusterError

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "triangle" / "kubernetes"
CRD_NAMES = ["gaiacommands.gaia.dev", "gaianamespaces.gaia.dev"]


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Iterator[list[str]]:
    """The CRDs installed; afterwards, the GaiaCommands these tests made are deleted again
    (they are cluster-wide, and an operator started later in the session would see them)."""
    names = cluster.apply_crds()
    before = set(cluster.kubectl("get", "gaiacmd", "-o", "name").stdout.split())
    yield names
    after = set(cluster.kubectl("get", "gaiacmd", "-o", "name").stdout.split())
    if made := sorted(after - before):
        cluster.kubectl("delete", "--wait=false", *made)


@pytest.fixture
def namespace(cluster: Cluster, crds: list[str]) -> Iterator[str]:
    """A fresh Kubernetes namespace; its GaiaNamespaces are deleted afterwards (there is no
    namespace controller to do it, and an operator would otherwise find them)."""
    name = cluster.new_namespace("crds")
    yield name
    cluster.kubectl("delete", "gaianamespaces", "--all", "-n", name, "--wait=false")


def manifest(kind: str, name: str, spec: object, **metadata: str) -> str:
    return json.dumps(
        {
            "apiVersion": "gaia.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, **metadata},
            "spec": spec,
        }
    )


def rejected(cluster: Cluster, document: str, namespace: str | None = None) -> str:
    """Create `document`; assert that the API server refuses it; return its explanation."""
    where = ["-n", namespace] if namespace else []
    result = cluster.kubectl("create", *where, "-f", "-", input=document, check=False)
    assert result.returncode != 0, f"accepted:\n{document}\n{result.stdout}"
    assert "is invalid" in result.stderr or "strict decoding error" in result.stderr, result.stderr
    return result.stderr


def accepted(cluster: Cluster, document: str, namespace: str | None = None) -> None:
    where = ["-n", namespace] if namespace else []
    cluster.kubectl("create", *where, "-f", "-", input=document)


LEAF = {"image": "ubuntu", "command": ["md5sum", "/in/in"], "inputs": {"INPUT": "/in/in"}}
COMPOSITE = {
    "inputs": ["A"],
    "outputs": ["B"],
    "steps": [
        {"key": "one", "command": "md5", "inputs": {"INPUT": "A"}, "outputs": {"OUTPUT": "B"}}
    ],
}


# --- installation and the examples ------------------------------------------------------


def test_crds_are_established(cluster: Cluster, crds: list[str]) -> None:
    from kubernetes import client

    assert sorted(crds) == CRD_NAMES
    with cluster.api_client() as api:
        for name in CRD_NAMES:
            crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in crd.status.conditions}
            assert conditions.get("Established") == "True", conditions
            assert conditions.get("NamesAccepted") == "True", conditions
            assert [v.name for v in crd.spec.versions] == ["v1alpha1"]
    scopes = {
        name: cluster.kubectl("get", "crd", name, "-o", "jsonpath={.spec.scope}").stdout
        for name in CRD_NAMES
    }
    assert scopes == {"gaiacommands.gaia.dev": "Cluster", "gaianamespaces.gaia.dev": "Namespaced"}


def test_applying_the_crds_again_changes_nothing(cluster: Cluster, crds: list[str]) -> None:
    assert sorted(cluster.apply_crds()) == CRD_NAMES


def test_the_triangle_example_applies(cluster: Cluster, namespace: str) -> None:
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE)).stdout
    assert "gaianamespace.gaia.dev/triangle created" in out
    for name in ("md5", "hello", "cat", "wc", "cat-wc"):
        assert f"gaiacommand.gaia.dev/{name} " in out
    stored = json.loads(
        cluster.kubectl("get", "gaians", "-n", namespace, "triangle", "-o", "json").stdout
    )
    source = yaml.safe_load((REPO / "examples" / "triangle" / "processes.yaml").read_text())
    assert stored["spec"]["processes"] == source  # nothing pruned or reshaped
    assert stored["spec"]["halted"] is False  # defaulted
    commands = yaml.safe_load((REPO / "examples" / "triangle" / "commands.yaml").read_text())
    for command in commands:
        got = json.loads(cluster.kubectl("get", "gaiacmd", command["key"], "-o", "json").stdout)
        assert {"key": got["metadata"]["name"], **got["spec"]} == command
    # Applying again is a no-op.
    again = cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE)).stdout
    assert again.count("unchanged") == 6, again


def test_short_names_and_printer_columns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    namespaces = cluster.kubectl("get", "gaians", "-n", namespace).stdout
    header = namespaces.splitlines()[0].split()
    assert header == [
        "NAME",
        "READY",
        "STATE",
        "PROCESSES",
        "COMPLETE",
        "MISSING",
        "RUNNING",
        "FAILED",
        "AGE",
    ]
    assert namespaces.splitlines()[1].startswith("triangle ")
    assert cluster.kubectl("get", "gns", "-n", namespace, "-o", "name").stdout.strip() == (
        "gaianamespace.gaia.dev/triangle"
    )
    wide = cluster.kubectl("get", "gaians", "-n", namespace, "-o", "wide").stdout.splitlines()[0]
    assert {"HALTED", "REASON", "MESSAGE"} <= set(wide.split())

    commands = cluster.kubectl("get", "gaiacmd").stdout.splitlines()
    assert commands[0].split() == ["NAME", "IMAGE", "COMMAND", "STEPS", "VALID", "AGE"]
    rows = {line.split()[0]: line for line in commands[1:]}
    assert {"md5", "hello", "cat", "wc", "cat-wc"} <= rows.keys()
    assert "ubuntu" in rows["md5"] and '["md5sum","/in/in"]' in rows["md5"]
    assert "cat-ab" in rows["cat-wc"]
    assert (
        cluster.kubectl("get", "gcmd", "md5", "-o", "name").stdout.strip()
        == "gaiacommand.gaia.dev/md5"
    )
    # The `gaia` category lists both kinds.
    everything = cluster.kubectl("get", "gaia", "-n", namespace, "-o", "name").stdout.split()
    assert "gaianamespace.gaia.dev/triangle" in everything
    assert "gaiacommand.gaia.dev/cat-wc" in everything


def test_explain_shows_the_descriptions(cluster: Cluster, crds: list[str]) -> None:
    processes = cluster.kubectl("explain", "gaianamespace.spec.processes").stdout
    assert "server-side apply" in processes and "merges this list by key" in processes
    for field in ("key", "command", "inputs", "outputs", "vars"):
        assert f"  {field}\t" in processes, processes
    assert "The key of the GaiaCommand this process invokes." in processes
    spec = cluster.kubectl("explain", "gaianamespace.spec").stdout
    assert "Any new value asks for a trigger" in spec and "expire" in spec
    command = cluster.kubectl("explain", "gaiacommand.spec").stdout
    assert "Exactly one of `command`" in command and "composite" in command
    status = cluster.kubectl("explain", "gaianamespace.status.state").stdout
    assert "incomplete" in status


def test_every_field_has_a_description() -> None:
    def walk(schema: dict[str, object], path: str) -> list[str]:
        missing = (
            []
            if schema.get("description") or path.endswith((".apiVersion", ".kind", ".metadata"))
            else [path]
        )
        properties = schema.get("properties") or {}
        assert isinstance(properties, dict)
        for name, child in properties.items():
            missing += walk(child, f"{path}.{name}")
        return missing

    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert walk(schema, crd["spec"]["names"]["kind"]) == []


# --- status ----------------------------------------------------------------------------


def test_status_keeps_unknown_fields_written_through_the_subresource(
    cluster: Cluster, namespace: str
) -> None:
    accepted(cluster, manifest("GaiaNamespace", "keep", {"processes": []}), namespace)
    status = {
        "state": "running",
        "counts": {
            "processes": 3,
            "complete": 1,
            "running": 1,
            "queued": 0,
            "failed": 1,
            "data": 5,
            "dataComplete": 2,
            "missing": 3,
        },
        "waiting": ["cat/rabbit"],
        "failures": [
            {
                "process": "md5-snake",
                "job": "gaia-md5-snake-1",
                "exitCode": 1,
                "error": "exit 1",
                "logTail": ["boom"],
            }
        ],
        "conditions": [
            {
                "type": "Valid",
                "status": "True",
                "reason": "Accepted",
                "message": "ok",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "observedGeneration": 1,
        "message": "1/3 processes complete",
        # Not in the schema: kept all the same.
        "handled": {"trigger": "t1", "expire": "e1"},
        "tasks": {"md5-rabbit": {"state": "complete", "run": 1, "started": 1.5}},
        "data": {"animals/rabbit": "complete"},
        "kopf": {"progress": {"handler": {"started": "2025-01-01T00:00:00Z", "retries": 0}}},
    }
    patch = json.dumps({"status": status})
    cluster.kubectl(
        "patch",
        "gaians",
        "keep",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    got = json.loads(cluster.kubectl("get", "gaians", "keep", "-n", namespace, "-o", "json").stdout)
    assert got["status"] == status
    assert got["metadata"]["generation"] == 1  # a status write is not a spec change

    row = cluster.kubectl("get", "gaians", "keep", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:7] == ["running", "3", "1", "3", "1", "1"]

    # The main resource ignores status; the status subresource ignores spec.
    cluster.kubectl(
        "patch",
        "gaians",
        "keep",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status": {"state": "error"}}',
    )
    cluster.kubectl(
        "patch",
        "gaians",
        "keep",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"spec": {"halted": true}}',
    )
    got = json.loads(cluster.kubectl("get", "gaians", "keep", "-n", namespace, "-o", "json").stdout)
    assert got["status"]["state"] == "running" and got["spec"]["halted"] is False


def test_command_status_keeps_unknown_fields(cluster: Cluster, crds: list[str]) -> None:
    accepted(cluster, manifest("GaiaCommand", "status-probe", LEAF))
    try:
        status = {
            "observedGeneration": 1,
            "users": 2,
            "conditions": [
                {
                    "type": "Valid",
                    "status": "False",
                    "reason": "Invalid",
                    "message": "no",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "extra": {"anything": ["goes"]},
        }
        cluster.kubectl(
            "patch",
            "gaiacmd",
            "status-probe",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        got = json.loads(cluster.kubectl("get", "gaiacmd", "status-probe", "-o", "json").stdout)
        assert got["status"] == status
        row = cluster.kubectl("get", "gaiacmd", "status-probe", "--no-headers").stdout
        assert " False " in row
    finally:
        cluster.kubectl("delete", "gaiacmd", "status-probe")


def test_declared_status_fields_are_still_validated(cluster: Cluster, namespace: str) -> None:
    accepted(cluster, manifest("GaiaNamespace", "strict-status", {}), namespace)
    result = cluster.kubectl(
        "patch",
        "gaians",
        "strict-status",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"state": "sleeping"}}',
        check=False,
    )
    assert result.returncode != 0
    assert "status.state" in result.stderr and "Unsupported value" in result.stderr


# --- GaiaNamespace validation -----------------------------------------------------------


def test_a_process_needs_a_command(cluster: Cluster, namespace: str) -> None:
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"processes": [{"key": "a"}]}), namespace
    )
    assert "spec.processes[0].command: Required value" in message


def test_process_keys_are_unique(cluster: Cluster, namespace: str) -> None:
    processes = [{"key": "a", "command": "md5"}, {"key": "a", "command": "wc"}]
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"processes": processes}), namespace
    )
    assert "spec.processes[1]: Duplicate value" in message and '"key":"a"' in message


def test_a_data_key_must_not_start_with_a_slash(cluster: Cluster, namespace: str) -> None:
    processes = [
        {
            "key": "a",
            "command": "md5",
            "inputs": {"INPUT": "/etc/passwd"},
            "outputs": {"OUTPUT": "ok"},
        }
    ]
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"processes": processes}), namespace
    )
    assert "spec.processes[0].inputs.INPUT" in message and "should match '^[^/]'" in message
    processes = [{"key": "a", "command": "md5", "outputs": {"OUTPUT": "/out"}}]
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"processes": processes}), namespace
    )
    assert "spec.processes[0].outputs.OUTPUT" in message


def test_halted_is_a_boolean(cluster: Cluster, namespace: str) -> None:
    message = rejected(cluster, manifest("GaiaNamespace", "bad", {"halted": "yes"}), namespace)
    assert "spec.halted" in message and "boolean" in message


@pytest.mark.parametrize(
    ("process", "field"),
    [
        ({"key": "-a", "command": "md5"}, "spec.processes[0].key"),
        ({"key": "a", "command": ""}, "spec.processes[0].command"),
        ({"key": "a", "command": "md5", "inputs": {"INPUT": 3}}, "spec.processes[0].inputs.INPUT"),
        (
            {"key": "a", "command": "md5", "outputs": {"OUTPUT": "x" * 1025}},
            "spec.processes[0].outputs.OUTPUT",
        ),
        ({"key": "a", "command": "md5", "vars": {"V": [1, 2]}}, "spec.processes[0].vars.V[0]"),
    ],
)
def test_bad_processes_are_rejected(
    cluster: Cluster, namespace: str, process: dict[str, object], field: str
) -> None:
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"processes": [process]}), namespace
    )
    assert field in message


def test_vars_take_scalars_and_lists(cluster: Cluster, namespace: str) -> None:
    process = {"key": "a", "command": "hello", "vars": {"N": 3, "S": "x", "L": ["a", "b"]}}
    accepted(cluster, manifest("GaiaNamespace", "vars", {"processes": [process]}), namespace)
    got = json.loads(cluster.kubectl("get", "gaians", "vars", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["processes"][0]["vars"] == {"N": 3, "S": "x", "L": ["a", "b"]}


def test_the_name_is_a_dns_label(cluster: Cluster, namespace: str) -> None:
    message = rejected(cluster, manifest("GaiaNamespace", "tri.angle", {}), namespace)
    assert "must be a DNS label" in message


def test_unknown_fields_are_refused(cluster: Cluster, namespace: str) -> None:
    message = rejected(cluster, manifest("GaiaNamespace", "typo", {"proceses": []}), namespace)
    assert 'unknown field "spec.proceses"' in message


def test_trigger_and_expire(cluster: Cluster, namespace: str) -> None:
    spec = {
        "trigger": "2025-01-01T00:00:00Z",
        "expire": {"token": "1", "keys": ["md5-rabbit", "hello/snake"]},
    }
    accepted(cluster, manifest("GaiaNamespace", "controls", spec), namespace)
    got = json.loads(
        cluster.kubectl("get", "gaians", "controls", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"] == {**spec, "processes": [], "halted": False}
    message = rejected(
        cluster, manifest("GaiaNamespace", "bad", {"expire": {"keys": "md5-rabbit"}}), namespace
    )
    assert "spec.expire.keys" in message


def test_server_side_apply_merges_processes_by_key(cluster: Cluster, namespace: str) -> None:
    def apply(manager: str, processes: list[dict[str, object]]) -> None:
        document = manifest(
            "GaiaNamespace", "merged", {"processes": processes}, namespace=namespace
        )
        cluster.kubectl(
            "apply", "--server-side", f"--field-manager={manager}", "-f", "-", input=document
        )

    apply("alice", [{"key": "a", "command": "md5"}])
    apply("bob", [{"key": "b", "command": "wc"}])
    apply("alice", [{"key": "a", "command": "cat"}])
    got = json.loads(
        cluster.kubectl("get", "gaians", "merged", "-n", namespace, "-o", "json").stdout
    )
    assert {p["key"]: p["command"] for p in got["spec"]["processes"]} == {"a": "cat", "b": "wc"}


# --- GaiaCommand validation -------------------------------------------------------------


def test_leaf_and_composite_commands_are_accepted(cluster: Cluster, crds: list[str]) -> None:
    documents = [
        manifest(
            "GaiaCommand",
            "probe-leaf",
            {**LEAF, "key": "Probe_Leaf", "vars": {"N": 3, "R": None}, "timeout": 1.5},
        ),
        manifest("GaiaCommand", "probe-composite", {**COMPOSITE, "vars": ["N"]}),
    ]
    try:
        for document in documents:
            accepted(cluster, document)
        leaf = json.loads(cluster.kubectl("get", "gaiacmd", "probe-leaf", "-o", "json").stdout)
        assert leaf["spec"]["vars"] == {"N": 3, "R": None}  # a var without default survives
    finally:
        cluster.kubectl("delete", "gaiacmd", "probe-leaf", "probe-composite", "--ignore-not-found")


@pytest.mark.parametrize(
    "spec",
    [{**LEAF, **COMPOSITE}, {"inputs": {"INPUT": "/in/in"}}],
    ids=["both", "neither"],
)
def test_a_command_has_exactly_one_of_command_and_steps(
    cluster: Cluster, crds: list[str], spec: dict[str, object]
) -> None:
    message = rejected(cluster, manifest("GaiaCommand", "bad", spec))
    assert "exactly one of spec.command" in message and "spec.steps" in message


def test_a_leaf_command_needs_an_image(cluster: Cluster, crds: list[str]) -> None:
    spec = {key: value for key, value in LEAF.items() if key != "image"}
    message = rejected(cluster, manifest("GaiaCommand", "bad", spec))
    assert "spec.image" in message and "required" in message


def test_a_composite_has_no_image(cluster: Cluster, crds: list[str]) -> None:
    message = rejected(cluster, manifest("GaiaCommand", "bad", {**COMPOSITE, "image": "ubuntu"}))
    assert "spec.image, spec.stdout and spec.timeout belong to leaf commands" in message


def test_container_paths_are_absolute(cluster: Cluster, crds: list[str]) -> None:
    message = rejected(
        cluster, manifest("GaiaCommand", "bad", {**LEAF, "inputs": {"INPUT": "in/in"}})
    )
    assert "spec.inputs.INPUT" in message and "should match '^/'" in message
    message = rejected(
        cluster, manifest("GaiaCommand", "bad", {**LEAF, "outputs": {"OUTPUT": "out"}})
    )
    assert "spec.outputs.OUTPUT" in message
    message = rejected(cluster, manifest("GaiaCommand", "bad", {**LEAF, "stdout": "out"}))
    assert "spec.stdout" in message


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**LEAF, "key": "-x"}, "spec.key"),
        ({**LEAF, "key": "x" * 201}, "spec.key"),
        ({**LEAF, "image": ""}, "spec.image"),
        ({**LEAF, "command": []}, "spec.command"),
        ({**LEAF, "command": "md5sum /in/in"}, "spec.command"),
        ({**LEAF, "timeout": 0}, "spec.timeout"),
        ({**LEAF, "timeout": "10s"}, "spec.timeout"),
        ({**COMPOSITE, "inputs": ["A", 3]}, "spec.inputs[1]"),
        ({**COMPOSITE, "steps": []}, "spec.steps"),
        ({**COMPOSITE, "steps": [{"key": "one"}]}, "spec.steps[0].command"),
        (
            {**COMPOSITE, "steps": [{"key": "s", "command": "md5"}, {"key": "s", "command": "wc"}]},
            "spec.steps[1]",
        ),
    ],
)
def test_bad_commands_are_rejected(
    cluster: Cluster, crds: list[str], spec: dict[str, object], field: str
) -> None:
    assert field in rejected(cluster, manifest("GaiaCommand", "bad", spec))


def test_env_network_and_resources_are_accepted(cluster: Cluster, crds: list[str]) -> None:
    spec = {
        **LEAF,
        "env": {"THREADS": "4", "_MODE": ""},
        "network": True,
        "resources": {"cpu": "500m", "memory": "256Mi", "processes": 64},
    }
    variants = [{"cpu": 2, "memory": 268435456}, {"cpu": "0.5", "memory": "1.5Gi"}]
    variants += [{"cpu": "2e-1", "memory": "129e6"}]
    names = [f"probe-sealed-{n}" for n in range(len(variants) + 1)]
    try:
        accepted(cluster, manifest("GaiaCommand", names[0], spec))
        for name, resources in zip(names[1:], variants, strict=True):
            accepted(cluster, manifest("GaiaCommand", name, {**spec, "resources": resources}))
    finally:
        cluster.kubectl("delete", "gaiacmd", *names, "--ignore-not-found")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"env": {"1A": "x"}}, "env names are variable names"),
        ({"env": {"N": 4}}, "spec.env.N"),
        ({"network": "yes"}, "spec.network"),
        ({"resources": {"cpu": "lots"}}, "cpu is a number of cores"),
        ({"resources": {"cpu": 0}}, "cpu is a number of cores"),
        ({"resources": {"memory": "256MB"}}, "memory is a number of bytes"),
        ({"resources": {"memory": 512}}, "memory is a number of bytes"),
        ({"resources": {"processes": 0}}, "spec.resources.processes"),
    ],
)
def test_bad_env_network_and_resources_are_rejected(
    cluster: Cluster, crds: list[str], fields: dict[str, object], message: str
) -> None:
    assert message in rejected(cluster, manifest("GaiaCommand", "bad", {**LEAF, **fields}))


def test_a_composite_has_no_env_network_or_resources(cluster: Cluster, crds: list[str]) -> None:
    message = rejected(cluster, manifest("GaiaCommand", "bad", {**COMPOSITE, "network": True}))
    assert "spec.env, spec.network and spec.resources belong to leaf commands" in message


# --- what a command cannot ask for: a pod's privileges ----------------------------------

PRIVILEGES = [
    ({"privileged": True}, "spec.privileged"),
    ({"hostNetwork": True}, "spec.hostNetwork"),
    ({"hostPID": True}, "spec.hostPID"),
    ({"hostPath": "/"}, "spec.hostPath"),
    ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "spec.volumes"),
    ({"securityContext": {"privileged": True, "runAsUser": 0}}, "spec.securityContext"),
    ({"resources": {"cpu": 1, "privileged": True}}, "spec.resources.privileged"),
]


@pytest.mark.parametrize(("fields", "field"), PRIVILEGES)
def test_a_command_asking_for_a_pods_privileges_is_refused(
    cluster: Cluster, crds: list[str], fields: dict[str, object], field: str
) -> None:
    document = manifest("GaiaCommand", "greedy", {**LEAF, **fields})
    applied = cluster.kubectl("apply", "-f", "-", input=document, check=False)
    assert applied.returncode != 0, applied.stdout
    assert f'unknown field "{field}"' in applied.stderr, applied.stderr


def test_without_strict_validation_they_are_pruned_and_never_reach_a_pod(
    cluster: Cluster, crds: list[str]
) -> None:
    from gaia.engine.instructions import StartTask
    from gaia.engine.model import Process, parse_command
    from gaia.kube.jobs import build_job
    from gaia.kube.resources import command_of

    greedy = {**LEAF, "outputs": {"OUTPUT": "/out/out"}}
    for fields, _ in PRIVILEGES:
        greedy = {**greedy, **fields}
    document = manifest("GaiaCommand", "greedy-pruned", greedy)
    try:
        cluster.kubectl("apply", "--validate=false", "-f", "-", input=document)
        stored = json.loads(cluster.kubectl("get", "gaiacmd", "greedy-pruned", "-o", "json").stdout)
        # What the operator reads is what the API server kept: none of them.
        assert set(stored["spec"]) == {"image", "command", "inputs", "outputs", "resources"}
        assert stored["spec"]["resources"] == {"cpu": 1}
        command = parse_command(command_of(stored))
        process = Process(
            key="p",
            spec="p",
            command=command.key,
            inputs={"INPUT": "in"},
            outputs={"OUTPUT": "out"},
            vars={},
            uses=frozenset({command.key}),
        )
        owner = {
            "apiVersion": "gaia.dev/v1alpha1",
            "kind": "GaiaNamespace",
            "metadata": {"name": "ns", "namespace": "default", "uid": "u"},
        }
        job = build_job(StartTask("ns", process, command, 1), claim="data", owner=owner)
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        (container,) = pod["containers"]
        assert container["securityContext"]["privileged"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert [volume["name"] for volume in pod["volumes"]] == ["gaia-data"]
        assert "hostPath" not in json.dumps(job)
    finally:
        cluster.kubectl("delete", "gaiacmd", "greedy-pruned", "--ignore-not-found")


def test_run_as_root_is_a_boolean_of_leaf_commands(cluster: Cluster, crds: list[str]) -> None:
    try:
        accepted(cluster, manifest("GaiaCommand", "probe-root", {**LEAF, "runAsRoot": True}))
    finally:
        cluster.kubectl("delete", "gaiacmd", "probe-root", "--ignore-not-found")
    assert "spec.runAsRoot" in rejected(
        cluster, manifest("GaiaCommand", "bad", {**LEAF, "runAsRoot": "yes"})
    )
    message = rejected(cluster, manifest("GaiaCommand", "bad", {**COMPOSITE, "runAsRoot": True}))
    assert "spec.runAsRoot belongs to leaf commands" in message


def test_only_inputs_outputs_and_vars_keep_unknown_fields() -> None:
    """A field the schema does not declare is pruned (or refused), except inside these
    three (a map or a list, checked by the operator), which never become pod settings."""

    def keeping(schema: dict[str, object], path: str) -> list[str]:
        found = [path] if schema.get("x-kubernetes-preserve-unknown-fields") else []
        properties = schema.get("properties") or {}
        assert isinstance(properties, dict)
        for name, child in properties.items():
            found += keeping(child, f"{path}.{name}")
        items = schema.get("items")
        if isinstance(items, dict):
            found += keeping(items, f"{path}[]")
        return found

    crd = yaml.safe_load((REPO / "crds" / "gaiacommand.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert keeping(spec, "spec") == ["spec.inputs", "spec.outputs", "spec.vars"]


def test_example_files_parse_as_kubernetes_documents() -> None:
    documents = [
        doc
        for path in sorted(EXAMPLE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in documents)
    assert kinds == [
        ("GaiaCommand", "cat"),
        ("GaiaCommand", "cat-wc"),
        ("GaiaCommand", "hello"),
        ("GaiaCommand", "md5"),
        ("GaiaCommand", "wc"),
        ("GaiaNamespace", "triangle"),
    ]
    assert all(doc["apiVersion"] == "gaia.dev/v1alpha1" for doc in documents)
    assert "kubectl apply" in (EXAMPLE / "README.md").read_text()


# --- the harness itself ----------------------------------------------------------------


def test_a_component_that_fails_to_start_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "etcd"
    broken.write_text("#!/bin/sh\nfor i in $(seq 1 40); do echo line $i; done\nexit 3\n")
    broken.chmod(0o755)
    failing = Cluster()
    failing.components = {**failing.components, "ETCD": str(broken)}
    with pytest.raises(ClusterError) as error:
        failing.start()
    message = str(error.value)
    assert "etcd exited" in message and "exited with code 3" in message
    assert "line 11\n" in message and "line 40" in message and "line 10\n" not in message
    assert not failing.dir.exists() and not failing.running
