"""Who may call the operator's API, for real: Kubernetes tokens from `kubectl create token`,
checked by the real API server's TokenReview, each call decided by its RBAC (the chart's
gaia-user and gaia-viewer roles, bound per namespace); /work/* only for the worker pods
the operator launched. Every refusal changes nothing."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import REPO, Cluster
from gaia_operator import operator_world
from test_operator import SLEEPER, nap, wait_state

import gaia

pytestmark = pytest.mark.slow

World = dict[str, Any]
ECHO = {
    "key": "echo",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo {{WORD}} > /out/o"],
    "vars": {"WORD": "hello"},
    "outputs": {"O": "/out/o"},
}


def said(word: str, output: str = "said") -> dict[str, Any]:
    return {"key": "say", "command": "echo", "vars": {"WORD": word}, "outputs": {"O": output}}


# The chart's user roles, rendered for a release of this name (not "gaia": a ClusterRole
# that Helm did not make would stop test_chart.py's `helm install gaia`).
RELEASE = "gaia-authz"
USER, VIEWER = f"{RELEASE}-user", f"{RELEASE}-viewer"  # gaia-user, gaia-viewer for "gaia"


@pytest.fixture(scope="module")
def roles(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The chart's gaia-user and gaia-viewer ClusterRoles, as `helm template` renders them."""
    helm = cluster.components.get("HELM", "")
    assert os.access(helm, os.X_OK), "helm is not built: run `make components`"
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k) for k in ("CACHE", "CONFIG", "DATA")}}
    chart = str(REPO / "charts" / "gaia")
    rendered = subprocess.run(
        [helm, "template", RELEASE, chart, "-s", "templates/user-roles.yaml"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    names = [doc["metadata"]["name"] for doc in yaml.safe_load_all(rendered) if doc]
    assert names == [USER, VIEWER]
    cluster.kubectl("apply", "-f", "-", input=rendered)
    yield
    cluster.kubectl("delete", "-f", "-", input=rendered, check=False)


@pytest.fixture(scope="module")
def world(
    cluster: Cluster, roles: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One operator for the module, its Kubernetes namespace, and another one (``other``)
    holding a Gaia namespace of someone else's; users are ServiceAccounts of ``users``."""
    cluster.apply_crds()
    namespace = cluster.new_namespace("gaia-auth")
    store = tmp_path_factory.mktemp("auth-store")
    log = tmp_path_factory.mktemp("auth-log") / "operator.log"
    with operator_world(cluster, namespace, store, log, {"gaia-data": store}) as running:
        admin = running["client"]
        admin.command([ECHO, SLEEPER])
        admin.merge("kept", [said("kept")])
        wait_state(cluster, namespace, "kept", ("complete",))
        other = cluster.new_namespace("gaia-other")
        theirs = {
            "apiVersion": "gaia.dev/v1alpha1",
            "kind": "GaiaNamespace",
            "metadata": {"name": "theirs", "namespace": other},
            "spec": {"processes": [nap("1")]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(theirs))
        wait_state(cluster, other, "theirs", ("complete", "running", "error"))
        try:
            yield {**running, "other": other, "users": cluster.new_namespace("users")}
        finally:
            cluster.kubectl("delete", "gaians", "--all", "-n", other, "--wait=false", check=False)
            cluster.kubectl("delete", "deployments", "--all", "-n", namespace, check=False)


def user(cluster: Cluster, world: World, name: str, role: str | None = None) -> gaia.Gaia:
    """A client with the token of a new ServiceAccount ``name``, bound to ``role`` (a
    ClusterRole) in the operator's namespace, if given."""
    users = world["users"]
    cluster.kubectl("create", "serviceaccount", name, "-n", users)
    if role is not None:
        cluster.kubectl(
            "create",
            "rolebinding",
            f"{name}-{role}",
            "-n",
            world["namespace"],
            f"--clusterrole={role}",
            f"--serviceaccount={users}:{name}",
        )
    token = cluster.token(name, users)
    return gaia.Gaia({"gaia_host": world["operator"].address, "timeout": 30, "token": token})


def refused(call: Callable[[], object], *parts: str) -> str:
    """Call, expecting a 403 whose message holds each of ``parts``; the message."""
    with pytest.raises(gaia.Forbidden) as caught:
        call()
    message = str(caught.value)
    for part in parts:
        assert part in message, message
    return message


def resource(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "gaians", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def raw(
    world: World,
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A request as any program might send it; the status and the JSON reply."""
    host, port = world["operator"].address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
    reply = connection.getresponse()
    status, text = reply.status, reply.read()
    connection.close()
    return status, json.loads(text) if text else {}


def test_a_user_without_rbac_is_refused_and_nothing_changes(cluster: Cluster, world: World) -> None:
    ns, users = world["namespace"], world["users"]
    who = f"system:serviceaccount:{users}:mallory"
    mallory = user(cluster, world, "mallory")
    kept = resource(cluster, ns, "kept")
    assert kept is not None
    here = f"in the Kubernetes namespace '{ns}'"

    message = refused(lambda: mallory.merge("fresh", [said("x")]))
    assert message.startswith(f"{who} may not create gaianamespaces.gaia.dev {here}"), message
    assert "gaia-user" in message  # what to ask for
    assert resource(cluster, ns, "fresh") is None
    refused(lambda: mallory.status("kept"), f"{who} may not get gaianamespaces.gaia.dev 'kept'")
    patch = f"{who} may not patch gaianamespaces.gaia.dev 'kept' {here}"
    refused(lambda: mallory.merge("kept", [said("changed")]), patch)
    refused(lambda: mallory.trigger("kept"), patch)
    refused(lambda: mallory.halt("kept"), patch)
    refused(lambda: mallory.expire("kept", ["said"]), patch)
    evil = {**ECHO, "command": ["sh", "-c", "echo pwned > /out/o"]}
    refused(lambda: mallory.command([evil]), f"{who} may not create gaiacommands.gaia.dev")
    refused(lambda: mallory.launch(["w-mallory"]), f"may not create gaiaworkers.gaia.dev {here}")
    refused(mallory.workflows, "may not list gaianamespaces.gaia.dev in all")
    status, reply = raw(world, "POST", "/work/workers", {}, cluster.token("mallory", users))
    assert status == 403 and "may not list gaiaworkers.gaia.dev" in reply["error"], reply
    refused(lambda: mallory.events("kept"), "may not get gaianamespaces.gaia.dev 'kept'")
    # nothing changed
    after = resource(cluster, ns, "kept")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == kept["metadata"]["resourceVersion"]
    commands = world["client"].command([])["commands"]
    assert [c["command"] for c in commands if c["key"] == "echo"] == [ECHO["command"]]
    assert cluster.kubectl("get", "deployments", "-n", ns, "-o", "name").stdout.strip() == ""


def test_a_user_bound_in_one_namespace_works_there_and_nowhere_else(
    cluster: Cluster, world: World
) -> None:
    ns, other, store = world["namespace"], world["other"], world["store"]
    bob = user(cluster, world, "bob", USER)
    # A new Gaia namespace goes where the API creates them (the operator's namespace).
    assert bob.merge("bobs", [said("bob")]) == {"processes": {"bobs": ["say"]}}
    stream = bob.events("bobs", since=0)  # listen() sends the token too
    try:
        first = next(iter(stream))
        assert first["root"] == "bobs"
    finally:
        stream.close()
    wait_state(cluster, ns, "bobs", ("complete",))
    assert bob.status("bobs")["status"]["state"] == "complete"
    assert (store / "bobs" / "said").read_text() == "bob\n"
    assert bob.trigger("bobs") == {"trigger": "bobs"}
    assert bob.status("kept")["status"]["state"] == "complete"  # another's, same namespace

    # Someone else's Gaia namespace, in another Kubernetes namespace: not bob's.
    theirs = resource(cluster, other, "theirs")
    assert theirs is not None
    there = f"'theirs' in the Kubernetes namespace '{other}'"
    refused(lambda: bob.status("theirs"), f"may not get gaianamespaces.gaia.dev {there}")
    refused(
        lambda: bob.merge("theirs", [said("mine")]),
        f"may not patch gaianamespaces.gaia.dev {there}",
    )
    refused(lambda: bob.halt("theirs"), f"may not patch gaianamespaces.gaia.dev {there}")
    after = resource(cluster, other, "theirs")
    assert after is not None and after["spec"] == theirs["spec"]
    # Listing every namespace, and the cluster-scoped commands, take a ClusterRoleBinding.
    refused(bob.workflows, "may not list gaianamespaces.gaia.dev in all Kubernetes namespaces")
    refused(lambda: bob.command([]), "may not list gaiacommands.gaia.dev (cluster-scoped")
    binding = f"bob-gaia-{ns}"
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        f"--clusterrole={USER}",
        f"--serviceaccount={world['users']}:bob",
    )
    try:
        assert "echo" in {c["key"] for c in bob.command([])["commands"]}  # at once
        assert "theirs" in bob.workflows()["workflows"]
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding)


def test_a_viewer_may_read_but_not_change(cluster: Cluster, world: World) -> None:
    ns = world["namespace"]
    carol = user(cluster, world, "carol", VIEWER)
    before = resource(cluster, ns, "kept")
    assert carol.status("kept")["status"]["state"] == "complete"
    assert carol.graph("kept")["root"] == "kept"
    assert carol.process("kept", "say")["state"] == "complete"
    refused(
        lambda: carol.merge("kept", [said("carol was here")]),
        "carol may not patch gaianamespaces.gaia.dev 'kept'",
    )
    refused(lambda: carol.expire("kept", ["said"]), "carol may not patch")
    refused(lambda: carol.launch(["w-carol"]), "carol may not create gaiaworkers")
    # Which workers are alive is for viewers too (the workers' other routes are not).
    token = cluster.token("carol", world["users"])
    status, reply = raw(world, "POST", "/work/workers", {}, token)
    assert status == 200 and isinstance(reply["workers"], dict), reply
    status, reply = raw(world, "POST", "/work/take", {"worker": "w1", "wait": 0}, token)
    assert status == 403, reply
    after = resource(cluster, ns, "kept")
    assert before is not None and after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_no_token_is_401_saying_how_to_get_one(world: World) -> None:
    for method, path, body in (("POST", "/status", {"root": "kept"}), ("GET", "/events", None)):
        status, reply = raw(world, method, path, body)
        assert status == 401, reply
        assert "needs a bearer token" in reply["error"]
        assert "kubectl create token" in reply["error"] and "GAIA_TOKEN" in reply["error"]
    status, reply = raw(world, "POST", "/status", {"root": "kept"}, token="forged.jwt.token")
    assert status == 401 and "refused by Kubernetes" in reply["error"]
    assert raw(world, "GET", "/health") == (200, {"ok": True})
    with pytest.raises(gaia.Unauthorized, match="refused by Kubernetes"):
        gaia.Gaia({"gaia_host": world["operator"].address, "token": "forged"}).status("kept")


def test_other_sites_and_bodies_that_are_not_json_are_refused_even_with_a_token(
    cluster: Cluster, world: World
) -> None:
    token = cluster.admin_token()
    status, reply = raw(
        world,
        "POST",
        "/merge",
        {"root": "evil", "processes": []},
        token,
        {"Origin": "http://evil.example"},
    )
    assert status == 403 and "http://evil.example" in reply["error"]
    status, reply = raw(
        world,
        "POST",
        "/merge",
        {"root": "evil", "processes": []},
        token,
        {"Content-Type": "text/plain"},
    )
    assert status == 415
    assert resource(cluster, world["namespace"], "evil") is None


def test_the_client_finds_the_token_in_the_kubeconfig(
    cluster: Cluster, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC's config, `gaia_host` alone: the current kubeconfig context's token is sent."""
    dave = user(cluster, world, "dave", VIEWER)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": cluster.server}}],
        "users": [{"name": "dave", "user": {"token": dave.token}}],
        "contexts": [{"name": "dave", "context": {"cluster": "test", "user": "dave"}}],
        "current-context": "dave",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gaia/tokens of a local server
    monkeypatch.delenv("GAIA_TOKEN", raising=False)
    flow = gaia.Gaia({"gaia_host": world["operator"].address})
    assert flow.status("kept")["status"]["state"] == "complete"
    monkeypatch.setenv("GAIA_TOKEN", "forged")  # the environment comes first
    with pytest.raises(gaia.Unauthorized):
        flow.status("kept")


# --- the workers' protocol --------------------------------------------------------------


def test_the_workers_protocol_is_only_for_the_workers_launched(
    cluster: Cluster, world: World
) -> None:
    ns = world["namespace"]
    world["client"].launch(["w1"])
    stopped = {"worker": "w1"}
    others = {
        "a user's token (cluster-admin, even)": cluster.admin_token(),
        "a forged token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3MSJ9.c2lnbmVk",
        "the workers' account, for the API server": cluster.token("gaia-worker", ns),
        "the workers' account, for gaia-worker, bound to no pod": cluster.token(
            "gaia-worker", ns, "--audience=gaia-worker"
        ),
    }
    for what, token in others.items():
        for path, body in (
            ("/work/take", {"worker": "w1", "wait": 0}),
            (
                "/work/done",
                {"worker": "w1", "root": "kept", "process": "say", "run": 1, "ok": True},
            ),
            ("/work/stopped", stopped),
        ):
            status, reply = raw(world, "POST", path, body, token)
            assert status == 403, (what, path, reply)
            assert "only for the worker pods this operator launched" in reply["error"], what
    assert raw(world, "POST", "/work/take", {"worker": "w1", "wait": 0})[0] == 401
    # The worker itself, with the token its kubelet projected, is heard: it was launched.
    deadline = time.monotonic() + 60
    while True:
        found = sorted(
            (world["kubelet"].workdir / ns).glob("gaia-worker-w1-*/volumes/gaia-token/token")
        )
        if found and (token := found[-1].read_text()):
            status, reply = raw(world, "POST", "/work/workers", {"worker": "w1"}, token)
            if status == 200 and "w1" in reply["workers"]:
                break
        assert time.monotonic() < deadline, "worker w1 never asked for work"
        time.sleep(0.5)
    names = cluster.kubectl("get", "deployments", "-n", ns, "-o", "name").stdout.split()
    assert names == [
        "deployment.apps/gaia-worker-w1"
    ]  # nobody else stopped it, f"{who} may not get gaianamespaces.gaia.dev 'kept'")
