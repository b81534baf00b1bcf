"""A real one-node cluster for the real-node tier: ``tests/e2e/cluster.sh up`` / ``down``.

(A module of its own, not conftest.py: tests import from it by name.)

The cluster is containerd + runc + kubelet + kube-scheduler beside etcd, kube-apiserver and
kube-controller-manager, all in a network namespace of their own (see cluster.sh). Tests
drive it as a person would, from this machine: the Debian ``kubectl``, the ``helm`` that
``make components`` builds, ``kubectl port-forward`` for the operator's HTTP API, and the
images that ``make image`` builds (``gaia:dev``). The cluster's state directory holds the
node's volumes, so a test may also look at the data claim's files directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tests" / "e2e" / "cluster.sh"
CHART = REPO / "charts" / "gaia"
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
IMAGE = "gaia:dev"  # what `make image` builds; the tasks' image too (sh, coreutils, python)
RELEASE = "gaia"
NAMESPACE = "gaia"  # the release's namespace, and the GaiaNamespaces'


class NodeError(RuntimeError):
    """The cluster could not be brought up (the message has cluster.sh's output)."""


def components() -> dict[str, str]:
    cache = Path(os.environ.get("GAIA_CACHE") or REPO / ".cache")
    values = {}
    for line in (cache / "components" / "components.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name] = value
    return values


class Node:
    """One cluster from cluster.sh; ``up()`` and ``down()`` run the script."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kubeconfig = Path()
        self.settings: dict[str, str] = {}
        self.helm_binary = ""

    # --- lifecycle -----------------------------------------------------------------------

    def up(self, timeout: float = 1800) -> Node:
        env = {**os.environ, "GAIA_E2E_OWNER": str(os.getpid())}
        result = subprocess.run(
            ["bash", str(CLUSTER_SH), "up", self.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        last = (result.stdout.strip().splitlines() or [""])[-1]
        if result.returncode != 0 or not last.startswith("KUBECONFIG="):
            raise NodeError(
                f"`cluster.sh up {self.name}` failed with exit {result.returncode}:\n"
                f"{result.stderr[-6000:]}{result.stdout[-2000:]}"
            )
        self.kubeconfig = Path(last.partition("=")[2])
        state = self.kubeconfig.parent
        for line in (state / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            self.settings[key] = value
        self.helm_binary = components()["HELM"]
        return self

    def down(self, logs: Path | None = None) -> str:
        """Take the cluster down; returns cluster.sh's report. Raises if anything stayed."""
        env = dict(os.environ)
        if logs is not None:
            env["GAIA_E2E_LOGS"] = str(logs)
        result = subprocess.run(
            ["bash", str(CLUSTER_SH), "down", self.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        report = result.stderr + result.stdout
        if result.returncode != 0 or "LEFT BEHIND" in report:
            raise NodeError(f"`cluster.sh down {self.name}` did not clean up:\n{report}")
        return report

    @property
    def node_ip(self) -> str:
        return self.settings["NODE_IP"]

    @property
    def state(self) -> Path:
        return self.kubeconfig.parent

    # --- kubectl and helm, as a person runs them ------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def admin_token(self) -> str:
        """A token of a ServiceAccount bound to cluster-admin (made if missing): what the
        tests' clients send to the operator's API, which lets Kubernetes RBAC decide."""
        manifests = [
            ("serviceaccount", "gaia-e2e-admin", "-n", "kube-system"),
            (
                "clusterrolebinding",
                "gaia-e2e-admin",
                "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:gaia-e2e-admin",
            ),
        ]
        for manifest in manifests:
            made = self.kubectl("create", *manifest, "--dry-run=client", "-o", "yaml")
            self.kubectl("apply", "-f", "-", input=made.stdout)
        token = self.kubectl("create", "token", "gaia-e2e-admin", "-n", "kube-system")
        return token.stdout.strip()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run([KUBECTL, *args], input, check, timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.helm_binary, *args], None, check, timeout)

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, documents: Sequence[dict[str, Any]], namespace: str = NAMESPACE) -> None:
        """``kubectl apply`` of the documents, sent as JSON: as YAML, kubectl would read
        a key such as ``N`` or ``y`` as a boolean (YAML 1.1)."""
        items = {"apiVersion": "v1", "kind": "List", "items": list(documents)}
        self.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(items))

    def _run(
        self, argv: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and result.returncode != 0:
            shown = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
            raise AssertionError(
                f"`{shown}` failed with exit {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    # --- waiting and looking --------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.5
    ) -> Any:
        """Poll until ``predicate()`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(every)

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        return list(self.get(*args)["items"])

    def operator_pod(self, namespace: str = NAMESPACE) -> dict[str, Any]:
        """The Running, Ready operator pod (waits for it)."""

        def ready() -> dict[str, Any] | None:
            for pod in self.pods(namespace, "app.kubernetes.io/component=operator"):
                conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
                if pod["metadata"].get("deletionTimestamp") is None and (
                    conditions.get("Ready") == "True"
                ):
                    return pod
            return None

        return dict(self.wait_for(ready, 300, f"a Ready operator pod in {namespace}"))

    def volume(self, claim: str = "gaia-data", namespace: str = NAMESPACE) -> Path:
        """The node's directory behind a bound claim (a local PersistentVolume)."""
        name = self.get("pvc", claim, "-n", namespace)["spec"]["volumeName"]
        return Path(self.get("pv", name)["spec"]["local"]["path"])

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int, namespace: str = NAMESPACE) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` (e.g. ``svc/gaia``) on a free local port;
        yields that port."""
        process = subprocess.Popen(
            [KUBECTL, "port-forward", "--address=127.0.0.1", "-n", namespace, target, f":{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "Forwarding from 127.0.0.1:41234 -> 24442"
            found = re.search(r"127\.0\.0\.1:(\d+) ->", line)
            if not found:
                process.kill()
                raise AssertionError(
                    f"kubectl port-forward {target} did not start: {line}"
                    f"{process.stderr.read() if process.stderr else ''}"
                )
            yield int(found.group(1))
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Release:
    """The chart installed as the docs say, with ``helm upgrade --install`` when a test
    needs other values. Only one release runs at a time: the operator watches every
    namespace, and two of them would both reconcile every GaiaNamespace."""

    BASE = ("--set", "image.repository=gaia", "--set", "image.tag=dev")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.values: tuple[str, ...] | None = None

    def ensure(self, *values: str) -> dict[str, Any]:
        """Installed (or upgraded) with exactly ``--set`` ``values`` on top of the image;
        returns the Ready operator pod."""
        if self.values != values:
            settings = [arg for value in values for arg in ("--set", value)]
            self.node.helm(
                "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE,
                "--create-namespace", "--reset-values", *self.BASE, *settings,
                "--wait", "--timeout", "5m",
            )  # fmt: skip
            self.values = values
        return self.node.operator_pod()

    def uninstall(self) -> None:
        self.node.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
        self.values = None


# --- Gaia resources ------------------------------------------------------------------------

TRIANGLE = REPO / "examples" / "triangle"


def on_image(documents: Sequence[dict[str, Any]], image: str = IMAGE) -> list[dict[str, Any]]:
    """The documents with every GaiaCommand's image set to ``image``: no registry is
    reachable here, and ``gaia:dev`` has the programs the examples use (sh, coreutils)."""
    out = []
    for doc in documents:
        doc = json.loads(json.dumps(doc))
        if doc.get("kind") == "GaiaCommand" and "image" in doc.get("spec", {}):
            doc["spec"]["image"] = image
        out.append(doc)
    return out


def command(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A GaiaCommand running ``script`` with ``sh -c`` in gaia:dev."""
    return {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaCommand",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, "command": ["sh", "-c", script], **spec},
    }


def gaia_namespace(name: str, processes: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": name},
        "spec": {"processes": processes, **spec},
    }


def wait_state(
    node: Node, name: str, states: Sequence[str], timeout: float = 300, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """The GaiaNamespace's status once its state is one of ``states`` for its current
    generation, with a valid spec. ``timeout`` is a hang guard for a loaded machine, not
    an expectation."""
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        found = node.get("gaianamespace", name, "-n", namespace)
        status = found.get("status") or {}
        seen.update(status=status)
        valid = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Valid")
        if (
            status.get("state") in states
            and status.get("observedGeneration") == found["metadata"]["generation"]
            and valid == "True"
        ):
            return dict(status)
        return None

    try:
        return dict(node.wait_for(reached, timeout, f"{name} to be {' or '.join(states)}"))
    except TimeoutError as error:
        status = seen.get("status") or {}
        raise AssertionError(
            f"{error}; it is {status.get('state')!r}: {status.get('message')}\n"
            f"failures: {status.get('failures')}"
        ) from None


def jobs(node: Node, root: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    return list(node.get("jobs", "-n", namespace, "-l", f"gaia.dev/namespace={root}")["items"])


def task_pods(node: Node, root: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    return node.pods(namespace, f"gaia.dev/namespace={root}")
