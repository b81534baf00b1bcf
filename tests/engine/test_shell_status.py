"""The hosts' common status: the graph goes out encoded once per change of it."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from engine_host import TRIANGLE

import gaia
from gaia.bus.memory import EventBus
from gaia.engine.instructions import CancelTask, StartTask
from gaia.engine.namespace import Namespace
from gaia.errors import InvalidRequest
from gaia.shell import Shell, collector_paused
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


def test_a_merge_pauses_the_garbage_collector_and_always_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning a big change makes millions of lasting objects that full collections
    would walk again and again; the collector is off for the planning and the applying,
    and on again afterwards, after a refused merge too."""
    seen: list[bool] = []
    prepare, apply = Namespace.prepare_merge, Namespace.apply

    def watched(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(gc.isenabled())
            return method(*args, **kwargs)

        return call

    monkeypatch.setattr(Namespace, "prepare_merge", watched(prepare))
    monkeypatch.setattr(Namespace, "apply", watched(apply))

    async def scenario() -> None:
        shell = QuietShell(LocalStore(tmp_path), EventBus())
        await shell.change_commands(gaia.load_yaml(TRIANGLE / "commands.yaml"))
        await shell.merge("t", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        assert seen == [False, False] and gc.isenabled()
        with pytest.raises(InvalidRequest, match="unknown command"):
            await shell.merge("t", [{"key": "x", "command": "nope", "outputs": {}}])
        assert gc.isenabled()
        with collector_paused():  # an enclosing pause is left to its owner
            with collector_paused():
                pass
            assert not gc.isenabled()
        assert gc.isenabled()

    asyncio.run(scenario())


class HeldLookups(LocalStore):
    """A local store whose next lookup waits until the test lets it go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered, self.released = threading.Event(), threading.Event()

    def lookup(self, root: str, keys: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            self.released.wait(30)
        return super().lookup(root, keys)


def test_a_command_changed_during_a_new_namespaces_first_merge_is_the_one_it_uses(
    tmp_path: Path,
) -> None:
    """The first merge of a namespace waits on the store before the namespace exists, so
    a command change meanwhile did not see it: the merge went on with the old command's
    bindings, and the next trigger crashed on a binding the command no longer had."""
    copy = {"key": "copy", "image": "u", "command": ["cp", "/in/x", "/out/x"]}
    old = {**copy, "inputs": {"IN": "/in/x"}, "outputs": {"OUT": "/out/x"}}
    new = {**copy, "inputs": {"A": "/in/x"}, "outputs": {"OUT": "/out/x"}}
    process = {"key": "p", "command": "copy", "inputs": {"IN": "in"}, "outputs": {"OUT": "out"}}

    async def scenario() -> None:
        store = HeldLookups(tmp_path)
        shell = QuietShell(store, EventBus())
        await shell.change_commands([old])
        merging = asyncio.create_task(shell.merge("race", [process]))
        assert await asyncio.to_thread(store.entered.wait, 30)
        await shell.change_commands([new])  # the namespace does not exist yet: not held
        store.released.set()
        # As if the command had changed first: the merge is refused, naming the binding.
        with pytest.raises(InvalidRequest, match=r"inputs \['A'\] are not bound"):
            await merging
        assert "race" not in shell.namespaces

    asyncio.run(scenario())
