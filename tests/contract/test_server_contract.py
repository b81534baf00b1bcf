"""The standalone host's contract with its real store and database (hypothesis,
stateful): random merges, command changes, expiries, task ends, links planted in the data
directory and restarts, each checked as in test_engine_contract.py, plus what only a
host can break: a refused call saves nothing, and the state after a restart (a new host
over the same directory) equals the state before it.

The executor is the one part played here: tasks wait until a rule finishes them, by
staging files as the runner would. Everything else is the server's own code.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from model import COMMAND_CHANGES, COMMANDS, SETTINGS, SOURCES, dump, keys, merges, recount

from gaia.engine.instructions import CancelTask, StartTask
from gaia.engine.namespace import Namespace
from gaia.errors import InvalidRequest
from gaia.shell import Outcome
from gaia.standalone.host import StandaloneHost

pytestmark = pytest.mark.slow  # hypothesis runs the machine for tens of seconds


ROOT = "ns"


class HeldTasks(StandaloneHost):
    """The standalone host, its tasks held for the test to finish."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, workers=0)
        self.held: dict[str, StartTask] = {}

    def run_task(self, namespace: Namespace, start: StartTask) -> None:
        self.held[start.process.key] = start

    def cancel_task(self, namespace: Namespace, cancel: CancelTask) -> None:
        start = self.held.get(cancel.process)
        if start is not None and start.run == cancel.run:
            del self.held[cancel.process]


def saved(db: Path) -> list[Any]:
    """What the database holds of the namespace, but the events."""
    with sqlite3.connect(db) as connection:
        return [
            sorted(connection.execute(f"SELECT * FROM {table}"))
            for table in ("commands", "namespaces", "specs", "tasks")
        ]


class ServerContract(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="gaia-contract-"))
        self.data = self.dir / "data"
        self.outside = self.dir / "outside"
        self.outside.mkdir()
        self.loop = asyncio.new_event_loop()
        self.host = self._start()
        self.run(self.host.change_commands(COMMANDS))
        self.runs = 0

    def teardown(self) -> None:
        self.run(self.host.close())
        self.loop.close()
        shutil.rmtree(self.dir)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def _start(self) -> HeldTasks:
        host = HeldTasks(self.data)
        self.run(host.start())
        return host

    @property
    def namespace(self) -> Namespace | None:
        return self.host.namespaces.get(ROOT)

    def snapshot(self) -> tuple[Any, Any]:
        namespace = self.namespace
        db = self.data / ".gaia" / "state.db"
        self.host.db.flush()  # what this turn of the loop wrote
        return (dump(namespace) if namespace else None), saved(db)

    def refused(self, coroutine: Any) -> None:
        """The call may be refused; if it is, nothing changed, in memory or on disk."""
        before = self.snapshot()
        try:
            self.run(coroutine)
        except InvalidRequest:
            assert self.snapshot() == before

    # -- calls -----------------------------------------------------------------------------

    @rule(specs=merges)
    def merge(self, specs: list[dict[str, Any]]) -> None:
        self.refused(self.host.merge(ROOT, specs))

    @rule(change=st.sampled_from(COMMAND_CHANGES))
    def change_command(self, change: dict[str, Any]) -> None:
        self.refused(self.host.change_commands([change]))

    @precondition(lambda self: self.namespace is not None)
    @rule(names=st.lists(st.one_of(keys, st.sampled_from(["p1", "p2", "nope"])), max_size=3))
    def expire(self, names: list[str]) -> None:
        self.refused(self.host.expire(ROOT, names))

    @precondition(lambda self: self.namespace is not None)
    @rule()
    def trigger(self) -> None:
        self.run(self.host.trigger(ROOT))

    @precondition(lambda self: self.namespace is not None)
    @rule()
    def halt(self) -> None:
        self.run(self.host.halt(ROOT))

    # -- the executor ----------------------------------------------------------------------

    @precondition(lambda self: self.host.held)
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data: st.DataObject, ok: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.host.held)))
        start = self.host.held.pop(key)
        self.host.task_started(ROOT, key, start.run, {"pid": 1})
        staged: dict[str, Path] = {}
        if ok:
            self.runs += 1
            for path in start.outputs.values():
                staged[path] = self.dir / "staging" / str(self.runs) / path.strip("/")
                staged[path].parent.mkdir(parents=True, exist_ok=True)
                staged[path].write_text(f"{key} run {start.run}\n")
        outcome = Outcome(ok=ok, staged=staged, error=None if ok else "exit code 1", exit_code=0)
        self.run(self.host.task_finished(ROOT, key, start.run, outcome))

    # -- the world outside -----------------------------------------------------------------

    @rule(key=st.sampled_from(SOURCES))
    def seed_a_source(self, key: str) -> None:
        path = self.data / ROOT / key
        namespace = self.namespace
        produced = namespace is not None and key in namespace.graph.producer
        if not path.exists() and not path.is_symlink() and not produced:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("source\n")

    @rule(key=keys)
    def plant_a_link(self, key: str) -> None:
        """A link out of the namespace where a key's parent folder would be."""
        parent = (self.data / ROOT / key).parent
        if parent != self.data / ROOT and not parent.exists() and not parent.is_symlink():
            parent.parent.mkdir(parents=True, exist_ok=True)
            parent.symlink_to(self.outside)

    @rule()
    def restart(self) -> None:
        before = self.snapshot()[0]
        self.run(self.host.close())
        self.host = self._start()
        after = self.snapshot()[0]
        if before is None:
            assert after is None
            return
        for part in ("specs", "processes", "mode", "rejected"):
            assert after[part] == before[part], part
        # What touches a key that went bad (a link planted) fails at the restart.
        namespace = self.namespace
        assert namespace is not None
        bad = {
            key
            for key, process in namespace.graph.processes.items()
            if {*process.inputs.values(), *process.outputs.values()} & namespace.unusable.keys()
        }
        assert set(after["failed"]) - bad == set(before["failed"]) - bad
        assert set(after["complete"]) >= set(before["complete"])
        assert set(after["complete"]) - set(before["complete"]) <= set(SOURCES)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def counts_match_a_recount(self) -> None:
        if self.namespace is not None:
            assert self.namespace.counts() == recount(self.namespace)

    @invariant()
    def complete_keys_exist_on_disk(self) -> None:
        if self.namespace is not None:
            for key in self.namespace.complete:
                assert (self.data / ROOT / key).exists(), key


ServerContract.TestCase.settings = SETTINGS
test_server_contract = ServerContract.TestCase
