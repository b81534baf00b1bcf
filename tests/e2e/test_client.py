"""The Python client (`gaia.Gaia`) against the operator in the cluster, through
`kubectl port-forward` to the chart's Service, exactly as the chart's notes say."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from node import IMAGE, TRIANGLE, Node, wait_state

import gaia

pytestmark = pytest.mark.e2e


def test_the_client_drives_the_operator_through_port_forward(
    node: Node, operator: dict[str, Any], cleanup: list[str]
) -> None:
    data = node.volume() / "viaclient"
    (data / "animals").mkdir(parents=True)
    for animal in ("rabbit", "snake"):
        (data / "animals" / animal).write_bytes((TRIANGLE / "data/animals" / animal).read_bytes())
    commands = [
        {**c, "image": IMAGE} if "image" in c else c
        for c in gaia.load_yaml(TRIANGLE / "commands.yaml")
    ]
    cleanup.append("viaclient")
    with node.port_forward("svc/gaia", 24442) as port:
        flow = gaia.Gaia(
            {"gaia_host": f"127.0.0.1:{port}", "timeout": 60, "token": node.admin_token()}
        )
        listed = flow.command(commands)["commands"]
        assert {c["key"] for c in commands} <= {c["key"] for c in listed}
        merged = flow.merge("viaclient", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        assert len(merged["processes"]["viaclient"]) == 10
        node.wait_for(
            lambda: flow.status("viaclient")["status"]["state"] == "complete",
            600,
            "the triangle to complete (client's view)",
        )
        # The resource tells the same story as the API.
        assert wait_state(node, "viaclient", ["complete"])["counts"]["complete"] == 10

        # Change a source and expire it: what depends on it is computed again, as pods.
        first = (data / "md5" / "snake").read_text()
        (data / "animals" / "snake").write_text("a different snake\n")
        expired = flow.expire("viaclient", ["animals/snake"])["expire"]
        assert "md5-snake" in expired["process"]
        node.wait_for(
            lambda: flow.status("viaclient")["status"]["state"] == "complete",
            600,
            "the expired keys to be computed again",
        )
        again = (data / "md5" / "snake").read_text()
        assert again != first
        assert again == hashlib.md5(b"a different snake\n").hexdigest() + "  /in/in\n"
        assert (data / "hello" / "rabbit").read_text() == "hello rabbit world\n"
        tasks = flow.status("viaclient")["status"]["tasks"]
        assert tasks["md5-snake"]["run"] == 2 and tasks["md5-rabbit"]["run"] == 1
