"""The hosts' common status: the graph goes out encoded once per change of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from engine_host import TRIANGLE

import gaia
from gaia.bus.memory import EventBus
from gaia.engine.instructions import CancelTask, StartTask
from gaia.engine.namespace import Namespace
from gaia.shell import Shell
from gaia.store.local import LocalStore


class QuietShell(Shell):
    """A Shell whose tasks never run: what is left is the shared part under test."""

    def run_task(self, namespace: Namespace, start: StartTask) -> None:
        pass

    def cancel_task(self, namespace: Namespace, cancel: CancelTask) -> None:
        pass


def test_the_graph_is_encoded_once_until_a_merge_changes_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        shell = QuietShell(LocalStore(tmp_path), EventBus())
        await shell.change_commands(gaia.load_yaml(TRIANGLE / "commands.yaml"))
        await shell.merge("t", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        first = shell.status("t")["status"]
        assert shell.status("t")["status"]["flow"] is first["flow"]  # not encoded again
        await shell.halt("t")  # tasks change, the graph does not
        assert shell.status("t")["status"]["flow"] is first["flow"]
        flow = orjson.loads(orjson.dumps(first["flow"]))
        assert flow == shell.namespace("t").flow() and len(flow["process"]) == 10
        extra = {"key": "extra", "command": "hello", "outputs": {"OUTPUT": "hello/cat"}}
        await shell.merge("t", [extra])
        after = orjson.loads(orjson.dumps(shell.status("t")["status"]["flow"]))
        assert after["process"]["extra"]["to"] == ["hello/cat"] and len(after["process"]) == 11

    asyncio.run(scenario())
