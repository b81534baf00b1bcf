"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

(A module of its own, not conftest.py: tests import from it by name.)

The binaries are the ones `make components` builds (tests/components/build.sh); their paths
are in `.cache/components/components.env`. The flags are those of tests/components/smoke.sh.
There is no kubelet: the controller-manager runs the real Job, Deployment, ReplicaSet,
ServiceAccount, garbage collector and ttl-after-finished controllers, and a test that needs a Pod to finish
plays the kubelet itself.

Everything lives in one temporary directory (certificates, etcd data, kubeconfig and one log
per component) on free ports of 127.0.0.1, so parallel sessions do not clash. Set
GAIA_KEEP_CLUSTER=1 to keep that directory after the session.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ports import free_port
from waiting import eventually

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
BUILD = REPO / "tests" / "components" / "build.sh"
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
LOG_TAIL = 30


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, delete, patch, update, list]
  resources:
  - group: batch
    resources: [jobs]
  - group: gaia.dev
    resources: [gaianamespaces, gaianamespaces/status]
  - group: ""
    resources: [pods]
- level: None
"""


class ClusterError(RuntimeError):
    """The control plane could not be started (the message has the component's log tail)."""


def components_env() -> Path:
    cache = Path(os.environ.get("GAIA_CACHE") or REPO / ".cache")
    return cache / "components" / "components.env"


def read_components(build: bool = True) -> dict[str, str]:
    """The KEY=value lines of components.env; runs build.sh once if they are missing."""
    path = components_env()
    wanted = ("ETCD", "KUBE_APISERVER", "KUBE_CONTROLLER_MANAGER")

    def load() -> dict[str, str] | None:
        if not path.is_file():
            return None
        values = {}
        for line in path.read_text().splitlines():
            name, sep, value = line.strip().partition("=")
            if sep and not name.startswith("#"):
                values[name] = value
        if all(os.access(values.get(key, ""), os.X_OK) for key in wanted):
            return values
        return None

    values = load()
    if values is None and build:
        result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL:])
            raise ClusterError(
                f"the Kubernetes test components are not built and {BUILD} failed "
                f"(exit {result.returncode}); run `make components`.\n{tail}"
            )
        values = load()
    if values is None:
        raise ClusterError(
            f"the Kubernetes test components are missing ({path} lists no usable "
            f"{', '.join(wanted)}); run `make components`"
        )
    return values


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies, so no component outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class Component:
    """One started binary, its log file, and how to stop it."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C on pytest reaches the fixture, not us
                preexec_fn=_die_with_parent,
            )

    def failure(self, what: str) -> ClusterError:
        code = self.process.poll()
        state = "is still running" if code is None else f"exited with code {code}"
        return ClusterError(
            f"{self.name} {what} ({state}); last {LOG_TAIL} lines of {self.log.name} "
            f"(GAIA_KEEP_CLUSTER=1 keeps {self.log.parent}):\n{_tail(self.log)}"
        )

    def stop(self, timeout: float = 15.0) -> float:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the seconds it took."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
        return time.monotonic() - started


class Cluster:
    """etcd + kube-apiserver + kube-controller-manager in a temporary directory.

    `Cluster().start()` returns when the API server is ready; `stop()` tears everything
    down. Use it through the session fixture `cluster` of tests/kube/conftest.py.
    """

    def __init__(self) -> None:
        self.components = read_components()
        self.dir = Path(tempfile.mkdtemp(prefix="gaia-kube-"))
        self.kubeconfig = self.dir / "kubeconfig"
        self.ports = {
            name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "controller-manager")
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.env = {"KUBECONFIG": str(self.kubeconfig)}
        self.running: list[Component] = []
        self.timings: dict[str, float] = {}
        self._client: Any = None
        self._admin_token: str | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Cluster:
        started = time.monotonic()
        try:
            self._certificates()
            self._write_kubeconfig()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop controller-manager, apiserver, then etcd, each fully before the next one.

        (An apiserver whose etcd is already gone spends ~20 s retrying before it exits.)
        """
        started = time.monotonic()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        while self.running:
            component = self.running.pop()
            self.timings[f"stop {component.name}"] = component.stop()
        if os.environ.get("GAIA_KEEP_CLUSTER"):
            print(f"kept the test cluster's directory {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.timings["stop"] = time.monotonic() - started

    @contextlib.contextmanager
    def apiserver_outage(self) -> Iterator[None]:
        """Kill the API server for the ``with`` block, then start it again on the same port
        (etcd keeps the state): an outage as clients see one. Call it from the main thread:
        components die with the thread that started them."""
        index = [component.name for component in self.running].index("kube-apiserver")
        crashed = self.running.pop(index).process
        crashed.kill()
        crashed.wait()
        try:
            yield
        finally:
            self._start_apiserver()
            self.running.insert(index, self.running.pop())  # stopped in the same order

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use ------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with check, a failure raises with its stderr."""
        argv = [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self._env()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`kubectl {' '.join(args)}` failed with exit {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    def api_client(self) -> Any:
        """A new kubernetes.client.ApiClient for this cluster (close it when done)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def new_namespace(self, prefix: str = "test", timeout: float = 30) -> str:
        """Create a fresh namespace; return its name once its `default` ServiceAccount exists.

        (The ServiceAccount admission plugin rejects Pods until then.)
        """
        from kubernetes import client

        core = client.CoreV1Api(self._shared_client())
        name = f"{prefix}-{secrets.token_hex(3)}"[:63].strip("-")
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

        def has_default_account() -> bool:
            try:
                core.read_namespaced_service_account("default", name)
            except client.ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        eventually(has_default_account, f"the default ServiceAccount in {name}", timeout)
        return name

    def token(self, account: str, namespace: str, *args: str) -> str:
        """`kubectl create token ACCOUNT -n NAMESPACE [ARGS]`: a token of that
        ServiceAccount, for the API server's audience unless ARGS say otherwise."""
        return self.kubectl("create", "token", account, "-n", namespace, *args).stdout.strip()

    def admin_token(self) -> str:
        """A token of a ServiceAccount bound to cluster-admin, made once: what the tests'
        clients send to the operator's API, which lets Kubernetes RBAC decide."""
        if self._admin_token is None:
            self.kubectl("create", "serviceaccount", "gaia-test-admin", "-n", "kube-system")
            self.kubectl(
                "create",
                "clusterrolebinding",
                "gaia-test-admin",
                "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:gaia-test-admin",
            )
            self._admin_token = self.token("gaia-test-admin", "kube-system", "--duration=24h")
        return self._admin_token

    def apply_crds(self, paths: Iterable[Path] | None = None, timeout: float = 30) -> list[str]:
        """`kubectl apply` the CRDs (default: every crds/*.yaml) and wait until Established.

        Returns the names of the CustomResourceDefinitions; safe to call repeatedly.
        """
        files = sorted(paths) if paths is not None else sorted(CRDS.glob("*.yaml"))
        args = [arg for path in files for arg in ("-f", str(path))]
        self.kubectl("apply", "--server-side", "--force-conflicts", *args)
        out = self.kubectl("get", *args, "-o", "name").stdout.split()
        names = [n.split("/", 1)[1] for n in out if n.startswith("customresourcedefinition")]
        self.kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            *(f"crd/{name}" for name in names),
        )
        return names

    # --- internals -----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _shared_client(self) -> Any:
        if self._client is None:
            self._client = self.api_client()
        return self._client

    def _openssl(self, *args: str) -> None:
        result = subprocess.run(
            ["openssl", *args], cwd=self.dir, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ClusterError(f"openssl {' '.join(args)} failed:\n{result.stderr}")

    def _certificates(self) -> None:
        """A CA, the apiserver's serving cert, an admin client cert, a service-account key.

        As in smoke.sh, but with P-256 keys: generating four RSA keys takes most of a second.
        """

        def run(command: str) -> None:  # no argument of these contains a space
            self._openssl(*command.split())

        for name in ("ca", "apiserver", "admin", "sa"):
            run(f"genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {name}.key")
        run("req -x509 -new -key ca.key -days 2 -subj /CN=gaia-test-ca -out ca.crt")
        (self.dir / "apiserver.ext").write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n"
        )
        (self.dir / "admin.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject in (
            ("apiserver", "/CN=kube-apiserver"),
            ("admin", "/O=system:masters/CN=admin"),
        ):
            run(f"req -new -key {name}.key -subj {subject} -out {name}.csr")
            run(
                f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2"
                f" -extfile {name}.ext -out {name}.crt"
            )
        run("pkey -in sa.key -pubout -out sa.pub")

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.dir / name).read_bytes()).decode()

        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: gaia-test
  cluster:
    server: {self.server}
    certificate-authority-data: {b64("ca.crt")}
users:
- name: admin
  user:
    client-certificate-data: {b64("admin.crt")}
    client-key-data: {b64("admin.key")}
contexts:
- name: gaia-test
  context: {{cluster: gaia-test, user: admin}}
current-context: gaia-test
"""
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        clean = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ETCD", "KUBE", "KUBECONFIG"))  # etcd reads ETCD_* as flags
        }
        component = Component(name, argv, self.dir / f"{name}.log", env or clean)
        self.running.append(component)
        return component

    def _wait_healthy(
        self, component: Component, url: str, context: ssl.SSLContext | None, timeout: float
    ) -> None:
        started = time.monotonic()

        def healthy() -> bool:
            if component.process.poll() is not None:
                raise component.failure(f"exited before {url} answered")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                    return bool(reply.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        try:
            eventually(healthy, f"{component.name} at {url}", timeout)
        except AssertionError:
            raise component.failure(f"was not healthy at {url} within {timeout} s") from None
        self.timings[component.name] = time.monotonic() - started

    def _start_etcd(self) -> None:
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        etcd = self._start(
            "etcd",
            [
                self.components["ETCD"],
                "--name=gaia-test",
                f"--data-dir={self.dir / 'etcd-data'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=gaia-test=http://127.0.0.1:{peer}",
                "--heartbeat-interval=10",  # a single member: elect itself at once
                "--election-timeout=100",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_healthy(etcd, f"http://127.0.0.1:{client}/health", None, 30)

    @property
    def audit_log(self) -> Path:
        """The API server's log of Job, pod and GaiaNamespace writes and lists (JSON)."""
        return self.dir / "audit.log"

    def _audit_policy(self) -> Path:
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return policy

    def audit(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Audit events (ResponseComplete) received at or after ``since`` (epoch s), each
        with its time as ``t``."""
        events: list[dict[str, Any]] = []
        if not self.audit_log.exists():
            return events
        with self.audit_log.open() as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("stage") != "ResponseComplete":
                        continue
                    stamp = event["requestReceivedTimestamp"].replace("Z", "+00:00")
                    event["t"] = datetime.datetime.fromisoformat(stamp).timestamp()
                    if event["t"] >= since:
                        events.append(event)
        return events

    def _start_apiserver(self) -> None:
        d = self.dir
        apiserver = self._start(
            "kube-apiserver",
            [
                self.components["KUBE_APISERVER"],
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                f"--service-account-key-file={d / 'sa.pub'}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                "--v=1",
            ],
        )
        context = ssl.create_default_context(cafile=str(d / "ca.crt"))
        context.load_cert_chain(str(d / "admin.crt"), str(d / "admin.key"))
        self._wait_healthy(apiserver, f"{self.server}/readyz", context, 60)

    def _start_controller_manager(self) -> None:
        d, kubeconfig = self.dir, str(self.kubeconfig)
        manager = self._start(
            "kube-controller-manager",
            [
                self.components["KUBE_CONTROLLER_MANAGER"],
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authentication-skip-lookup=true",
                "--controllers=job,deployment,replicaset,serviceaccount,garbagecollector,"
                "ttl-after-finished",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                # Each Job costs its controllers about five requests: the default of 20
                # per second would cap the test bed at about 4 Jobs a second.
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={d / 'kcm-certs'}",
                "--v=1",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.ports['controller-manager']}/healthz"
        self._wait_healthy(manager, url, insecure, 60)
