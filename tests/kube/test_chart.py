"""The Helm chart (charts/gaia) against a real kube-apiserver: it lints, renders, passes the
API server's own validation (server-side dry-run), installs, and its ServiceAccount is
enough for the operator to compute a workflow.

helm is the binary `make components` builds (HELM= in .cache/components/components.env).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import CRDS, REPO, Cluster
from kubelet import FakeKubelet
from test_operator import wait_state

import gaia
from ports import free_port
from processes import start_service, stop_service
from waiting import eventually

pytestmark = pytest.mark.slow

CHART = REPO / "charts" / "gaia"
TRIANGLE = REPO / "examples" / "triangle"
TEMPLATE_KINDS = Counter(
    {
        "ServiceAccount": 2,  # the operator's, the workers'
        "ClusterRole": 3,  # the operator's, gaia-user, gaia-viewer
        "ClusterRoleBinding": 1,
        "Service": 1,
        "Deployment": 1,
        "PersistentVolumeClaim": 1,
    }
)

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm against the test cluster, its cache and config in a temporary directory."""
    binary = cluster.components.get("HELM", "")
    if not os.access(binary, os.X_OK):
        pytest.skip("helm is not built (no HELM= in components.env): run `make components`")
    home = tmp_path_factory.mktemp("helm")
    env = {
        **os.environ,
        **cluster.env,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`helm {' '.join(args)}` failed with exit {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    return run


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> list[str]:
    return cluster.apply_crds()


def render(helm: Helm, *args: str, namespace: str = "gaia", release: str = "gaia") -> str:
    return helm("template", release, str(CHART), "-n", namespace, *args).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = (d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"]))
    return found


def allowed(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in role["rules"]
    )


# --- offline: lint, render ------------------------------------------------------------


def test_lint_passes_also_strict(helm: Helm) -> None:
    for strict in ([], ["--strict"]):
        result = helm("lint", str(CHART), *strict)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_template_renders_the_operator(helm: Helm) -> None:
    docs = documents(render(helm))
    assert Counter(d["kind"] for d in docs) == TEMPLATE_KINDS
    assert all(d["metadata"]["name"] for d in docs)

    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == "gaia"
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "gaia:0.1.0"
    assert container["command"] == ["gaia", "operator"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GAIA_STORE_PATH"] == "/data"
    assert env["GAIA_STORE_CLAIM"] == "gaia-data"
    assert env["GAIA_API_HOST"] == "0.0.0.0"
    assert env["GAIA_API_PORT"] == "24442"
    assert env["GAIA_K8S_NAMESPACE"] == "gaia"
    assert (env["GAIA_RECHECK_SECONDS"], env["GAIA_STATUS_SECONDS"]) == ("10", "1")
    assert env["GAIA_JOBS_PER_SECOND"] == "20"
    assert container["ports"] == [{"name": "http", "containerPort": 24442, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Root with only the capabilities that moving task outputs (any uid) needs.
    assert container["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["DAC_OVERRIDE", "FOWNER"],
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsUser"] == 0
    # In the task pods' group, to give their staging folders to it (no CAP_CHOWN needed).
    assert pod["securityContext"]["supplementalGroups"] == [65532]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"] == {"claimName": "gaia-data"}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount", "gaia")["metadata"]["name"]
    assert pod["enableServiceLinks"] is False
    # The workers' account: no token of its own mounted anywhere, and no role.
    assert env["GAIA_WORKER_SERVICE_ACCOUNT"] == "gaia-worker"
    assert one(docs, "ServiceAccount", "gaia-worker")["automountServiceAccountToken"] is False
    assert "GAIA_WATCH_NAMESPACE" not in env

    service = one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 24442
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()

    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "gaia-data"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class

    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole", "gaia")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gaia", "namespace": "gaia"}]

    with_crds = documents(render(helm, "--include-crds"))
    crd_names = sorted(d["metadata"]["name"] for d in with_crds if d["kind"].startswith("Custom"))
    assert crd_names == ["gaiacommands.gaia.dev", "gaianamespaces.gaia.dev"]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def test_template_follows_the_values(helm: Helm) -> None:
    docs = documents(
        render(
            helm,
            "--set",
            "store.create=false,store.claimName=shared,serviceAccount.create=false",
            "--set",
            "rbac.create=false,api.port=8080,api.service.type=NodePort",
            "--set",
            "operator.statusSeconds=0.5,image.repository=registry.example/gaia,image.tag=dev",
            "--set",
            "workers.image=registry.example/tools:3,workers.takes=all,workers.idleSeconds=60",
            "--set",
            "workers.serviceAccount.create=false,workers.serviceAccount.name=robots",
            "--set",
            "rbac.userRoles=false",
            namespace="elsewhere",
            release="prod",
        )
    )
    assert Counter(d["kind"] for d in docs) == Counter(["Service", "Deployment"])
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == "prod-gaia"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GAIA_STORE_CLAIM"] == "shared" and env["GAIA_API_PORT"] == "8080"
    assert env["GAIA_K8S_NAMESPACE"] == "elsewhere" and env["GAIA_STATUS_SECONDS"] == "0.5"
    assert container["image"] == "registry.example/gaia:dev"
    assert env["GAIA_WORKER_IMAGE"] == "registry.example/tools:3"
    assert env["GAIA_WORKER_TAKES"] == "all" and env["GAIA_WORKER_IDLE_SECONDS"] == "60"
    assert env["GAIA_WORKER_SERVICE_ACCOUNT"] == "robots"
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "shared"}
    assert pod["serviceAccountName"] == "default"
    assert one(docs, "Service")["spec"]["type"] == "NodePort"

    unbound = documents(render(helm, "--set-string", "store.storageClassName=-"))
    assert one(unbound, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""


def test_template_runs_the_operator_in_the_node_network_when_told(helm: Helm) -> None:
    """For clusters whose pods cannot reach a Service: workers get the node's address."""

    def pod_and_env(*args: str) -> tuple[dict[str, Any], dict[str, str]]:
        pod = one(documents(render(helm, *args)), "Deployment")["spec"]["template"]["spec"]
        return pod, {e["name"]: e["value"] for e in pod["containers"][0]["env"]}

    pod, env = pod_and_env()
    assert "hostNetwork" not in pod
    assert env["GAIA_API_URL"] == "http://gaia.gaia.svc:24442"
    pod, env = pod_and_env("--set", "hostNetwork=true,api.url=http://10.9.0.2:24442")
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert env["GAIA_API_URL"] == "http://10.9.0.2:24442"


@pytest.mark.parametrize(
    "setting, complaint",
    [
        ("replicaCount=2", "replicaCount"),
        ("store.claimname=typo", "claimname"),
        ("operator.jobsPerSecond=0", "jobsPerSecond"),
        ("api.port=0", "api.port"),
        ("store.accessModes={ReadWriteAlways}", "accessModes"),
        ("store.type=s3", "store.s3.bucket is required"),
        ("store.type=nfs", "store.type"),
        ("workers.takes=some", "workers.takes"),
        ("api.url=gaia:24442", "api.url"),
        ("rbac.scope=cluster-wide", "rbac.scope"),
        ("networkPolicy.from[0].anywhere=true", "anywhere"),
        ("workers.serviceAccount.name=Robots", "workers.serviceAccount.name"),
    ],
)
def test_template_refuses_bad_values(helm: Helm, setting: str, complaint: str) -> None:
    result = helm("template", "gaia", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, result.stdout
    assert complaint in result.stderr


def test_the_object_store_needs_no_claim_and_reads_its_secret(helm: Helm) -> None:
    docs = documents(
        render(
            helm,
            "--set",
            "store.type=s3",
            "--set",
            "store.s3.bucket=results",
            "--set",
            "store.s3.endpoint=http://minio:9000",
        )
    )
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GAIA_STORE"]["value"] == "s3" and env["GAIA_S3_BUCKET"]["value"] == "results"
    assert env["GAIA_S3_ENDPOINT"]["value"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "gaia-s3"
    assert env["GAIA_IMAGE"]["value"] == "gaia:0.1.0"
    assert "data" not in {v["name"] for v in pod["volumes"]}


def test_cluster_role_grants_what_the_operator_does(helm: Helm) -> None:
    role = one(documents(render(helm)), "ClusterRole", "gaia")
    for group, resource, verbs in [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("gaia.dev", "gaiacommands", "get list watch create update patch"),
        ("gaia.dev", "gaianamespaces", "get list watch create update patch"),
        ("gaia.dev", "gaiacommands/status", "patch update"),
        ("gaia.dev", "gaianamespaces/status", "patch update"),
        ("batch", "jobs", "create delete get list watch patch"),  # patch: marked handled
        ("apps", "deployments", "create delete get"),
        ("", "pods", "get list watch"),
        ("", "pods/log", "get"),
        ("", "events", "create patch"),
        ("events.k8s.io", "events", "create patch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "get list watch"),
        ("", "namespaces", "list watch"),
    ]:
        for verb in verbs.split():
            assert allowed(role, group, resource, verb), (group, resource, verb)
    for group, resource, verb in [
        ("", "secrets", "get"),
        ("batch", "jobs", "update"),
        ("gaia.dev", "gaianamespaces", "delete"),
        ("", "pods", "delete"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "create"),
    ]:
        assert not allowed(role, group, resource, verb), (group, resource, verb)
    assert all("*" not in rule[key] for rule in role["rules"] for key in rule)


def test_namespaced_install_watches_its_namespace_with_a_role(helm: Helm) -> None:
    docs = documents(render(helm, "--set", "rbac.scope=namespace", namespace="team-a"))
    kinds = Counter(d["kind"] for d in docs)
    assert kinds == TEMPLATE_KINDS + Counter(["Role", "RoleBinding"])
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GAIA_WATCH_NAMESPACE"] == env["GAIA_K8S_NAMESPACE"] == "team-a"
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "gaia",
    }
    for group, resource, verb in [
        ("gaia.dev", "gaianamespaces", "patch"),
        ("gaia.dev", "gaianamespaces/status", "patch"),
        ("batch", "jobs", "create"),
        ("apps", "deployments", "delete"),
        ("", "pods", "get"),
    ]:
        assert allowed(role, group, resource, verb), (group, resource, verb)
    # In the ClusterRole, only what cannot be namespaced.
    cluster_role = one(docs, "ClusterRole", "gaia")
    assert sorted(r for rule in cluster_role["rules"] for r in rule["resources"]) == [
        "gaiacommands",
        "gaiacommands/status",
        "subjectaccessreviews",
        "tokenreviews",
    ]


def test_user_roles_grant_what_the_api_asks(helm: Helm) -> None:
    docs = documents(render(helm))
    user, viewer = one(docs, "ClusterRole", "gaia-user"), one(docs, "ClusterRole", "gaia-viewer")
    for resource, verbs in [
        ("gaianamespaces", "get list watch create patch update"),
        ("gaiacommands", "get list create update"),
        ("gaiaworkers", "create"),
    ]:
        for verb in verbs.split():
            assert allowed(user, "gaia.dev", resource, verb), (resource, verb)
    for resource in ("gaianamespaces", "gaiacommands"):
        for verb in ("get", "list", "watch"):
            assert allowed(viewer, "gaia.dev", resource, verb), (resource, verb)
    writes = {"create", "patch", "update", "delete"}
    assert not [rule for rule in viewer["rules"] if writes & set(rule["verbs"])]
    assert not allowed(user, "gaia.dev", "gaianamespaces", "delete")


def test_the_network_policy_lets_in_workers_and_the_listed_peers(helm: Helm) -> None:
    assert not [d for d in documents(render(helm)) if d["kind"] == "NetworkPolicy"]
    docs = documents(
        render(
            helm,
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.from[0].namespaceSelector.matchLabels.team=data",
        )
    )
    policy = one(docs, "NetworkPolicy")
    deployment = one(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(deployment).items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 24442, "protocol": "TCP"}]
    workers, listed = rule["from"]
    assert workers["podSelector"]["matchExpressions"] == [
        {"key": "gaia.dev/worker", "operator": "Exists"}
    ]
    assert listed == {"namespaceSelector": {"matchLabels": {"team": "data"}}}


def test_chart_crds_are_copies_of_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in sorted(CRDS.glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert top, f"no CRDs in {CRDS}"
    assert sorted(chart) == sorted(top), "charts/gaia/crds/ and crds/ hold different files"
    stale = [name for name in top if chart[name] != top[name]]
    assert not stale, f"charts/gaia/crds/ is stale: cp crds/*.yaml charts/gaia/crds/ ({stale})"


# --- against the API server -----------------------------------------------------------


def test_server_side_dry_run_accepts_every_object(
    cluster: Cluster, crds: list[str], helm: Helm
) -> None:
    namespace = cluster.new_namespace("chart")
    variants = [
        [],
        [
            "--set",
            "api.service.type=NodePort,store.size=1Ti,serviceAccount.name=gaia-op",
            "--set-string",
            "store.storageClassName=-,nodeSelector.disk=ssd",
            "--set",
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
            "--set",
            "operator.extraEnv[0].name=LOG,operator.extraEnv[0].value=debug",
        ],
        [
            "--set",
            "rbac.scope=namespace,networkPolicy.enabled=true",
            "--set",
            "networkPolicy.from[0].namespaceSelector.matchLabels.team=data",
            "--set",
            "networkPolicy.from[1].ipBlock.cidr=10.1.0.0/16",
        ],
    ]
    for index, (args, count) in enumerate(zip(variants, (9, 9, 12), strict=True)):
        text = render(helm, *args, namespace=namespace, release=f"gaia-v{index}")
        result = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-", input=text
        )
        lines = result.stdout.strip().splitlines()
        assert len(lines) == len(documents(text)) == count, result.stdout
        assert all(line.endswith("serverside-applied (server dry run)") for line in lines)


def test_helm_install_dry_run_against_the_server(
    cluster: Cluster, crds: list[str], helm: Helm
) -> None:
    namespace = cluster.new_namespace("chart")
    result = helm("install", "gaia", str(CHART), "-n", namespace, "--dry-run=server")
    assert "STATUS: pending-install" in result.stdout
    assert f"kubectl port-forward -n {namespace} svc/gaia 24442:24442" in result.stdout
    assert "gaia.Gaia({'gaia_host': 'localhost:24442'})" in result.stdout
    assert "kubectl create token <serviceaccount>" in result.stdout
    assert f"kubectl create rolebinding gaia-alice -n {namespace} --clusterrole=gaia-user" in (
        result.stdout
    )
    assert "kubectl get gaians -A" in result.stdout
    assert helm("list", "-n", namespace, "-q").stdout.strip() == ""  # nothing was installed


# --- installed for real, the operator running as its ServiceAccount ---------------------


@pytest.fixture(params=["cluster", "namespace"])
def release(
    request: pytest.FixtureRequest, cluster: Cluster, crds: list[str], helm: Helm
) -> Iterator[dict[str, Any]]:
    """`helm install` into a fresh namespace (no kubelet: the chart's pod never starts),
    with the operator's rights cluster-wide, or namespaced (``rbac.scope``)."""
    namespace = cluster.new_namespace("chart")
    name = f"gaia-{secrets.token_hex(3)}"
    helm(
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "operator.recheckSeconds=2",
        "--set",
        "operator.statusSeconds=0.2",
        "--set",
        f"rbac.scope={request.param}",
    )
    try:
        yield {"name": name, "namespace": namespace, "scope": request.param}
    finally:
        helm("uninstall", name, "-n", namespace, "--wait", check=False)


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.dir / "ca.crt"),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "test", "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    return path


def can(cluster: Cluster, account: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", f"--as={account}", *args, check=False)
    return result.stdout.strip() == "yes"


def test_the_installed_service_account_runs_the_operator(
    cluster: Cluster, helm: Helm, release: dict[str, Any], tmp_path: Path
) -> None:
    namespace, name = release["namespace"], release["name"]
    namespaced = release["scope"] == "namespace"
    installed = documents(helm("get", "manifest", name, "-n", namespace).stdout)
    extra = Counter(["Role", "RoleBinding"]) if namespaced else Counter()
    assert Counter(d["kind"] for d in installed) == TEMPLATE_KINDS + extra
    deployment = one(installed, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    cluster.kubectl("get", "deployment", name, "-n", namespace)
    cluster.kubectl("get", "pvc", "gaia-data", "-n", namespace)

    # The API server's authorizer, for the service account the chart binds: in its own
    # namespace, and elsewhere only with the ClusterRole of the cluster-wide install.
    who = f"system:serviceaccount:{namespace}:{account}"
    for where, granted in ((["-n", namespace], True), (["-n", "default"], not namespaced)):
        assert can(cluster, who, "create", "jobs.batch", *where) is granted
        assert can(cluster, who, "delete", "jobs.batch", *where) is granted
        status = ("gaianamespaces.gaia.dev", "--subresource=status")
        assert can(cluster, who, "patch", *status, *where) is granted
        assert can(cluster, who, "get", "pods", "--subresource=log", *where) is granted
        assert can(cluster, who, "create", "events.events.k8s.io", *where) is granted
        assert not can(cluster, who, "get", "secrets", *where)
        assert not can(cluster, who, "delete", "gaianamespaces.gaia.dev", *where)
    assert can(cluster, who, "update", "gaiacommands.gaia.dev", "--subresource=status")
    crds = "customresourcedefinitions.apiextensions.k8s.io"
    assert can(cluster, who, "watch", crds) is not namespaced
    assert can(cluster, who, "create", "tokenreviews.authentication.k8s.io")
    assert can(cluster, who, "create", "subjectaccessreviews.authorization.k8s.io")
    assert can(cluster, who, "list", "namespaces") is not namespaced

    # A user of the API: a ServiceAccount bound to the chart's user role in the release
    # namespace, as the notes say. Commands are cluster-scoped: a cluster admin registers
    # them.
    cluster.kubectl("create", "serviceaccount", "alice", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "alice-gaia",
        "-n",
        namespace,
        f"--clusterrole={name}-user",
        f"--serviceaccount={namespace}:alice",
    )
    alice = cluster.token("alice", namespace)

    # The operator as the chart runs it (its command and environment), but as a local
    # process with that service account's token, its store a local directory that the
    # fake kubelet mounts for the claim.
    store = tmp_path / "store"
    shutil.copytree(TRIANGLE / "data", store / "charted")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GAIA_K8S_NAMESPACE"] == namespace
    assert (env["GAIA_RECHECK_SECONDS"], env["GAIA_STATUS_SECONDS"]) == ("2", "0.2")
    port = free_port()
    env |= {"GAIA_STORE_PATH": str(store), "GAIA_API_HOST": "127.0.0.1"}
    env |= {"GAIA_API_PORT": str(port)}
    kubeconfig = service_account_kubeconfig(cluster, namespace, account, tmp_path / "sa.yaml")
    assert container["command"][0] == "gaia"
    log = tmp_path / "operator.log"
    api = cluster.api_client()
    kubelet = FakeKubelet(api, {env["GAIA_STORE_CLAIM"]: store}, namespace=namespace).start()
    try:
        operator = start_service(
            [sys.executable, "-m", "gaia.cli", *container["command"][1:]],
            log,
            f"http://127.0.0.1:{port}/health",
            env={**os.environ, **env, "KUBECONFIG": str(kubeconfig)},
        )
    except BaseException:
        kubelet.stop()
        api.close()
        raise
    try:
        address = f"127.0.0.1:{port}"
        admin = gaia.Gaia({"gaia_host": address, "timeout": 30, "token": cluster.admin_token()})
        flow = gaia.Gaia({"gaia_host": address, "timeout": 30, "token": alice})
        commands = gaia.load_yaml(TRIANGLE / "commands.yaml")
        with pytest.raises(gaia.Forbidden, match="alice may not create gaiacommands"):
            flow.command(commands)
        admin.command(commands)
        flow.merge("charted", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        status = wait_complete(cluster, namespace, "charted", log)
        assert status["counts"]["complete"] == 10
        assert flow.status("charted")["status"]["state"] == "complete"
        assert (store / "charted" / "hello" / "snake").read_text() == "hello snake world\n"

        # A spec the engine rejects: the operator posts a Warning event on it.
        bad = {
            "apiVersion": "gaia.dev/v1alpha1",
            "kind": "GaiaNamespace",
            "metadata": {"name": "refused"},
            "spec": {"processes": [{"key": "x", "command": "no-such-command"}]},
        }
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
        wait_for_event(cluster, namespace, "refused", log)
    finally:
        try:
            stop_service(operator, log)
        finally:
            kubelet.stop()
            api.close()
            cluster.kubectl("delete", "gaianamespaces", "--all", "-n", namespace, check=False)
    text = log.read_text(errors="replace")
    assert "forbidden" not in text.lower(), text[-3000:]
    assert "could not post event" not in text, text[-3000:]


def wait_complete(cluster: Cluster, namespace: str, name: str, log: Path) -> dict[str, Any]:
    """The GaiaNamespace's status once complete for its latest spec; else the operator's log."""
    try:
        return wait_state(cluster, namespace, name, ("complete",))
    except AssertionError as error:
        raise AssertionError(f"{error}\n{log.read_text()[-3000:]}") from None


def wait_for_event(cluster: Cluster, namespace: str, name: str, log: Path) -> None:
    selector = f"involvedObject.name={name}"

    def reasons() -> set[str | None]:
        out = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", selector, "-o", "json"
        ).stdout
        return {e.get("reason") for e in json.loads(out)["items"]}

    try:
        eventually(reasons, f"an Invalid event on {name}", 30, until=lambda r: "Invalid" in r)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{log.read_text()[-3000:]}") from None
