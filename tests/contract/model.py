"""The pieces both contract machines share: a small universe of commands, keys and
processes to draw from (many combinations are invalid on purpose), a canonical dump of
a namespace, and a recount of what the engine keeps counted.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from gaia.engine.namespace import Namespace
from gaia.engine.states import TaskState

# A bounded run in `make test`; GAIA_CONTRACT_EXAMPLES=2000 (say) for a long one.
EXAMPLES = int(os.environ.get("GAIA_CONTRACT_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,  # a loaded CI machine must not turn slowness into failures
    derandomize=EXAMPLES <= 60,  # CI runs the same examples every time
    database=None,
)

COPY = {
    "key": "copy",
    "image": "ubuntu",
    "command": ["cp", "/in/i", "/out/o"],
    "inputs": {"IN": "/in/i"},
    "outputs": {"OUT": "/out/o"},
}
COPY_AGAIN = {**COPY, "command": ["cp", "-p", "/in/i", "/out/o"]}  # a change its users see
COPY_BROKEN = {**COPY, "inputs": {"SRC": "/in/i"}}  # would unbind every user: refused
MAKE = {
    "key": "make",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo {{V}} > /out/o"],
    "vars": {"V": "v"},
    "outputs": {"OUT": "/out/o"},
}
PAIR = {
    "key": "pair",
    "image": "ubuntu",
    "command": ["sh", "-c", "cp /in/i /out/a; cp /in/i /out/b"],
    "inputs": {"IN": "/in/i"},
    "outputs": {"A": "/out/a", "B": "/out/b"},
}
TWICE = {  # a composite: its intermediate is private to each process
    "key": "twice",
    "inputs": ["IN"],
    "outputs": ["OUT"],
    "steps": [
        {"key": "one", "command": "copy", "inputs": {"IN": "IN"}, "outputs": {"OUT": "MID"}},
        {"key": "two", "command": "copy", "inputs": {"IN": "MID"}, "outputs": {"OUT": "OUT"}},
    ],
}
COMMANDS = [COPY, MAKE, PAIR, TWICE]
COMMAND_CHANGES = [COPY_AGAIN, COPY, COPY_BROKEN, {**MAKE, "vars": {"V": "w"}}]

SOURCES = ["s1", "s2"]
KEYS = ["s1", "s2", "a", "b", "c", "d", "d/x", "e", "f/v1", "f/v2"]
PROCESS_KEYS = ["p1", "p2", "p3", "p4", "p5"]

keys = st.sampled_from(KEYS)


@st.composite
def process_specs(draw: st.DrawFn) -> dict[str, Any]:
    """One process spec; about a third are invalid (unknown command, missing binding,
    a cycle, two producers, a key inside another, a bad key)."""
    command = draw(st.sampled_from(["copy", "copy", "make", "pair", "twice", "nope"]))
    spec: dict[str, Any] = {"key": draw(st.sampled_from(PROCESS_KEYS)), "command": command}
    if command in ("copy", "pair", "twice") or draw(st.booleans()):
        spec["inputs"] = {"IN": draw(keys)}
    if command == "pair":
        spec["outputs"] = {"A": draw(keys), "B": draw(keys)}
    elif draw(st.integers(0, 9)) == 0:
        spec["outputs"] = {"OUT": draw(st.sampled_from(["../up", "/abs", "a\x85b"]))}
    elif command == "make" and draw(st.booleans()):  # a fan-out
        spec["outputs"] = {"OUT": "f/{{V}}"}
        spec["vars"] = {"V": ["v1", "v2"]}
    else:
        spec["outputs"] = {"OUT": draw(keys)}
    return spec


merges = st.lists(process_specs(), min_size=1, max_size=3)


def dump(namespace: Namespace) -> dict[str, Any]:
    """Everything a call may change, in plain data: equal dumps, equal namespaces."""
    return {
        "specs": {key: spec.to_dict() for key, spec in namespace.specs.items()},
        "processes": {
            key: (dict(p.inputs), dict(p.outputs), p.command, dict(p.vars))
            for key, p in namespace.graph.processes.items()
        },
        "complete": sorted(namespace.complete),
        "active": sorted(namespace.active),
        "failed": sorted(namespace.failed),
        "mode": namespace.mode.value,
        "unusable": dict(namespace.unusable),
        "rejected": dict(namespace.rejected),
        "tasks": {key: (t.state.value, t.run) for key, t in namespace.tasks.items()},
        "state": namespace.state().value,
    }


def recount(namespace: Namespace) -> dict[str, int]:
    """``counts()`` computed the slow way, from the graph and the tasks."""
    graph = namespace.graph
    running = sum(1 for key in namespace.active if namespace.tasks[key].state is TaskState.RUNNING)
    return {
        "processes": len(graph.processes),
        "complete": sum(
            1
            for p in graph.processes.values()
            if all(k in namespace.complete for k in p.outputs.values())
        ),
        "running": running,
        "queued": len(namespace.active) - running,
        "failed": len(namespace.failed),
        "data": sum(1 for _ in graph.data_keys),
        "data_complete": sum(1 for k in graph.data_keys if k in namespace.complete),
    }
