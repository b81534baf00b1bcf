"""observedGeneration speaks for a spec only once that spec is applied.

`kubectl wait --for=jsonpath='{.status.observedGeneration}'=N` and GitOps tools read the
status that carries generation N as the outcome of spec N. Applying a spec awaits the
store (the merge looks its keys up), and the status is flushed meanwhile: the operator's
host runs here in the test's own process against the real API server, with a store
whose lookup the test holds, so the status can be flushed and read at that moment.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster

from gaia.engine.lookup import Lookup
from gaia.kube.cluster import Cluster as KubeCluster
from gaia.kube.host import KubeHost
from gaia.store import LocalStore

pytestmark = pytest.mark.slow

COMMAND_NAME = f"held-{secrets.token_hex(3)}"  # commands are cluster-wide: one of our own
COMMAND = {
    "apiVersion": "gaia.dev/v1alpha1",
    "kind": "GaiaCommand",
    "metadata": {"name": COMMAND_NAME},
    "spec": {
        "image": "ubuntu",
        "command": ["sh", "-c", "echo made > /out/o"],
        "outputs": {"O": "/out/o"},
    },
}


class HeldStore(LocalStore):
    """A local store whose lookups wait, once armed, until the test lets them go (as a
    slow S3 endpoint or a busy volume does)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def lookup(self, root: str, keys: Iterable[str]) -> Lookup:
        if self.armed:
            self.entered.set()
            self.released.wait(30)
        return super().lookup(root, keys)


def namespace_manifest(ns: str, processes: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "held", "namespace": ns},
        "spec": {
            "halted": True,  # no Jobs: only the spec's bookkeeping is under test
            "processes": [
                {"key": key, "command": COMMAND_NAME, "outputs": {"O": key}} for key in processes
            ],
        },
    }


def test_a_status_written_while_a_spec_is_applied_speaks_for_the_previous_spec(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.apply_crds()
    ns = cluster.new_namespace("generation")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(COMMAND))

    def applied(processes: list[str]) -> dict[str, Any]:
        manifest = json.dumps(namespace_manifest(ns, processes))
        cluster.kubectl("apply", "-f", "-", input=manifest)
        return json.loads(
            cluster.kubectl("get", "gaianamespace", "held", "-n", ns, "-o", "json").stdout
        )

    def status() -> dict[str, Any]:
        found = cluster.kubectl("get", "gaianamespace", "held", "-n", ns, "-o", "json").stdout
        return json.loads(found).get("status") or {}

    store = HeldStore(tmp_path / "data")
    api = cluster.api_client()

    async def scenario() -> None:
        host = KubeHost(KubeCluster(api), tmp_path / "data", "gaia-data", store=store)
        command = json.loads(
            cluster.kubectl("get", "gaiacommand", COMMAND_NAME, "-o", "json").stdout
        )
        await host.apply_command(command)
        first = await asyncio.to_thread(applied, ["a"])
        assert first["metadata"]["generation"] == 1
        await host.apply_namespace(first)
        await host.flush_status()
        before = await asyncio.to_thread(status)
        assert (before["observedGeneration"], before["counts"]["processes"]) == (1, 1)

        second = await asyncio.to_thread(applied, ["a", "b"])
        assert second["metadata"]["generation"] == 2
        store.armed = True
        applying = asyncio.create_task(host.apply_namespace(second))
        assert await asyncio.to_thread(store.entered.wait, 30), "the merge never looked up"
        host.dirty.add("held")  # as any task event would mark it, at any moment
        await host.flush_status()
        meanwhile = await asyncio.to_thread(status)
        # Spec 2 is not applied yet: a status with 1 process must not claim generation 2.
        assert meanwhile["counts"]["processes"] == 1
        assert meanwhile.get("observedGeneration") != 2, meanwhile

        store.released.set()
        await applying
        await host.flush_status()
        after = await asyncio.to_thread(status)
        assert (after["observedGeneration"], after["counts"]["processes"]) == (2, 2)

    try:
        asyncio.run(scenario())
    finally:
        store.released.set()
        api.close()


def test_a_command_seen_twice_is_registered_before_either_call_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The API's `/command` applies the GaiaCommand it wrote, and the watch's event for
    it may come first: the second call found the generation seen and returned while the
    first was still applying it, so a merge right after the API's reply met "unknown
    command" (one CI run)."""
    cluster.apply_crds()
    name = f"twice-{secrets.token_hex(3)}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps({**COMMAND, "metadata": {"name": name}}))
    resource = json.loads(cluster.kubectl("get", "gaiacommand", name, "-o", "json").stdout)
    api = cluster.api_client()

    async def scenario() -> None:
        host = KubeHost(
            KubeCluster(api), tmp_path / "data", "gaia-data", store=LocalStore(tmp_path)
        )
        await (
            host._commands_lock.acquire()
        )  # the first application waits here, as on a busy operator
        first = asyncio.create_task(host.apply_command(resource))
        second = asyncio.create_task(host.apply_command(resource))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done(), "returned before the command was registered"
        host._commands_lock.release()
        await asyncio.gather(first, second)
        assert name in host.registry.commands

    try:
        asyncio.run(scenario())
    finally:
        api.close()
