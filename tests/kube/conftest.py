"""The session's Kubernetes control plane: real etcd, kube-apiserver and kube-controller-manager.

Started once per test session (a few seconds) by the `cluster` fixture; see cluster.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster import Cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A running control plane; `.kubectl(...)`, `.api_client()`, `.new_namespace(prefix)`."""
    with Cluster() as running:
        yield running
