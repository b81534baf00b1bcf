"""`gaia operator` as a real subprocess against the test cluster, with its HTTP API.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cluster import Cluster
from kubelet import FakeKubelet

import gaia
from ports import free_port
from processes import start_service, stop_service

WORKER_ACCOUNT = "gaia-worker"  # GAIA_WORKER_SERVICE_ACCOUNT's default


class OperatorProcess:
    def __init__(
        self,
        cluster: Cluster,
        store: Path,
        namespace: str,
        log: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``extra_env`` is set last (e.g. GAIA_STORE=s3 and the bucket's settings)."""
        self.cluster, self.store, self.namespace, self.log = cluster, store, namespace, log
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            **self.cluster.env,
            "GAIA_STORE_PATH": str(self.store),
            "GAIA_STORE_CLAIM": "gaia-data",
            "GAIA_API_HOST": "127.0.0.1",
            "GAIA_API_PORT": str(self.port),
            "GAIA_K8S_NAMESPACE": self.namespace,
            "GAIA_RECHECK_SECONDS": "2",
            "GAIA_STATUS_SECONDS": "0.2",
            "GAIA_API_URL": f"http://{self.address}",  # for worker pods (fake kubelet)
            **self.extra_env,
        }
        self.process = start_service(
            [sys.executable, "-m", "gaia.cli", "operator", "--verbose"],
            self.log,
            f"http://{self.address}/health",
            env=env,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_service(self.process, self.log, sig)
        self.process = None


@contextlib.contextmanager
def operator_world(
    cluster: Cluster,
    namespace: str,
    store: Path,
    log: Path,
    volumes: dict[str, Path],
    extra_env: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """A fake kubelet and a running operator for one Kubernetes namespace; on the way out
    the namespace's GaiaNamespaces go, then the operator, then the kubelet. The client
    sends a cluster-admin token (Kubernetes RBAC decides what the operator's API allows);
    the workers' ServiceAccount (the chart's) is there for `launch`."""
    cluster.kubectl("create", "serviceaccount", WORKER_ACCOUNT, "-n", namespace)
    api = cluster.api_client()
    kubelet = FakeKubelet(api, volumes, namespace=namespace)
    kubelet.start()
    operator = OperatorProcess(cluster, store, namespace, log, extra_env=extra_env).start()
    try:
        yield {
            "namespace": namespace,
            "store": store,
            "kubelet": kubelet,
            "operator": operator,
            "client": gaia.Gaia(
                {"gaia_host": operator.address, "timeout": 30, "token": cluster.admin_token()}
            ),
        }
    finally:
        cluster.kubectl(
            "delete", "gaianamespaces", "--all", "-n", namespace, "--wait=false", check=False
        )
        operator.stop()
        kubelet.stop()
        api.close()
    assert not kubelet.errors, kubelet.errors
