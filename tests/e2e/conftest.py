"""The real-node tier's fixtures: one cluster per session (cluster.sh), and the Helm release
of the chart with the image that `make image` built.

Every test here is marked ``e2e``: a plain ``pytest`` leaves them out (pyproject's
addopts), ``make e2e`` runs them (``pytest -m e2e tests/e2e``), and so does ``make test``
after the rest, in a session of their own. The cluster needs root (containerd, the kubelet, network namespaces); without root the tier is
skipped with that reason. Whatever happens, the session ends with ``cluster.sh down``,
which fails the session if anything stayed behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from node import IMAGE, NAMESPACE, Node, Release

_failed: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and "node" in getattr(item, "fixturenames", ()):
        _failed.append(item.nodeid)


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The running cluster; ``.kubectl(...)``, ``.helm(...)``, ``.node_ip``."""
    if os.geteuid() != 0:
        pytest.skip("the real-node tier runs as root (containerd, kubelet, network namespaces)")
    cluster = Node(f"gaia-e2e-{os.getpid()}")
    # A SIGTERM (a CI runner giving up) ends the session as Ctrl-C does, through this
    # finally; a SIGKILL cannot, and the next `cluster.sh up` takes that cluster down.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster.up()
        yield cluster
    finally:
        signal.signal(signal.SIGTERM, previous)
        # On a failure, keep the components' logs where pytest keeps its temp files.
        logs = tmp_path_factory.mktemp("cluster-logs") if _failed else None
        cluster.down(logs)
        if logs is not None:
            print(f"\nthe cluster's logs are in {logs}")


@pytest.fixture(scope="session")
def release(node: Node) -> Release:
    return Release(node)


@pytest.fixture
def operator(release: Release) -> dict[str, Any]:
    """The chart with its defaults (and gaia:dev): the Ready operator pod."""
    return release.ensure()


@pytest.fixture(scope="session")
def image() -> str:
    return IMAGE


@pytest.fixture
def cleanup(node: Node) -> Iterator[list[str]]:
    """Names of GaiaNamespaces (in the release namespace) to delete after the test."""
    names: list[str] = []
    yield names
    for name in names:
        node.kubectl(
            "delete", "gaianamespace", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true"
        )
