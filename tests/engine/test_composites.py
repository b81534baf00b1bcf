"""Composite commands: steps become '<process>:<step>', intermediates are private."""

from __future__ import annotations

from typing import Any

import pytest
from engine_host import ECHO, MAKE, Host

from gaia.errors import InvalidRequest

PAIR = {
    "key": "pair",
    "inputs": ["A"],
    "outputs": ["Z"],
    "vars": ["TAG"],
    "steps": [
        {"key": "first", "command": "echo", "inputs": {"IN": "A"}, "outputs": {"OUT": "M"}},
        {"key": "second", "command": "echo", "inputs": {"IN": "M"}, "outputs": {"OUT": "Z"}},
    ],
}


def test_steps_become_processes_keyed_process_colon_step() -> None:
    host = Host([ECHO, PAIR], {"src"})
    changed = host.merge(
        [
            {
                "key": "p",
                "command": "pair",
                "inputs": {"A": "src"},
                "outputs": {"Z": "out"},
                "vars": {"TAG": "t"},
            }
        ]
    )
    assert changed == ["p:first", "p:second"]
    first = host.ns.graph.processes["p:first"]
    assert first.inputs == {"IN": "src"}
    assert first.outputs == {"OUT": ".private/p/M"}
    assert host.ns.graph.processes["p:second"].outputs == {"OUT": "out"}
    assert first.uses == {"pair", "echo"}


def test_each_invoking_process_gets_its_own_intermediate() -> None:
    host = Host([ECHO, PAIR], {"s1", "s2"})
    host.merge(
        [
            {
                "key": "p",
                "command": "pair",
                "inputs": {"A": "s1"},
                "outputs": {"Z": "o1"},
                "vars": {"TAG": "t"},
            },
            {
                "key": "q",
                "command": "pair",
                "inputs": {"A": "s2"},
                "outputs": {"Z": "o2"},
                "vars": {"TAG": "t"},
            },
        ]
    )
    assert (
        host.ns.graph.processes["p:first"].outputs["OUT"]
        != host.ns.graph.processes["q:first"].outputs["OUT"]
    )


def test_composites_nest() -> None:
    outer = {
        "key": "outer",
        "inputs": ["X"],
        "outputs": ["Y"],
        "steps": [
            {
                "key": "inner",
                "command": "pair",
                "inputs": {"A": "X"},
                "outputs": {"Z": "Y"},
                "vars": {"TAG": "n"},
            }
        ],
    }
    host = Host([ECHO, PAIR, outer], {"src"})
    assert host.merge(
        [{"key": "o", "command": "outer", "inputs": {"X": "src"}, "outputs": {"Y": "y"}}]
    ) == ["o:inner:first", "o:inner:second"]
    assert host.ns.graph.processes["o:inner:first"].uses == {"outer", "pair", "echo"}
    assert host.run_all() == ["o:inner:first", "o:inner:second"]
    assert host.ns.state().value == "complete"


def test_composite_vars_flow_into_step_vars() -> None:
    say = {
        "key": "say",
        "image": "i",
        "command": ["echo", "{{WORD}}"],
        "vars": {"WORD": "hi"},
        "outputs": {"OUT": "/out/o"},
    }
    wrap = {
        "key": "wrap",
        "outputs": ["O"],
        "vars": ["W"],
        "steps": [
            {"key": "s", "command": "say", "outputs": {"OUT": "O"}, "vars": {"WORD": "<{{W}}>"}}
        ],
    }
    host = Host([say, wrap])
    host.merge(
        [{"key": "p", "command": "wrap", "outputs": {"O": "o/{{W}}"}, "vars": {"W": ["a", "b"]}}]
    )
    assert host.ns.graph.processes["p-b:s"].vars == {"WORD": "<b>"}


def test_a_composite_var_without_a_value_is_an_error() -> None:
    host = Host([ECHO, PAIR], {"src"})
    with pytest.raises(InvalidRequest, match=r"var 'TAG'.*no value"):
        host.merge([{"key": "p", "command": "pair", "inputs": {"A": "src"}, "outputs": {"Z": "o"}}])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"steps": [{"key": "s", "command": "nope", "inputs": {}, "outputs": {"OUT": "Z"}}]},
            "unknown command 'nope'",
        ),
        (
            {"steps": [{"key": "s", "command": "echo", "inputs": {}, "outputs": {"OUT": "Z"}}]},
            r"inputs \['IN'\] are not bound",
        ),
        (
            {
                "steps": [
                    {"key": "s", "command": "echo", "inputs": {"IN": "Q"}, "outputs": {"OUT": "Z"}}
                ]
            },
            "reads 'Q'",
        ),
        (
            {
                "steps": [
                    {"key": "s", "command": "echo", "inputs": {"IN": "A"}, "outputs": {"OUT": "M"}}
                ]
            },
            "output 'Z' is produced by no step",
        ),
        (
            {
                "steps": [
                    {
                        "key": "s",
                        "command": "echo",
                        "inputs": {"IN": "A"},
                        "outputs": {"OUT": "Z"},
                        "vars": {"X": "{{NOPE}}"},
                    }
                ]
            },
            "NOPE",
        ),
    ],
)
def test_invalid_composites_are_rejected(change: dict[str, Any], message: str) -> None:
    host = Host([ECHO])
    with pytest.raises(InvalidRequest, match=message):
        host.command([{**PAIR, **change}])
    assert "pair" not in host.registry


def test_a_composite_that_contains_itself_is_rejected() -> None:
    loop = {
        "key": "loop",
        "inputs": ["A"],
        "outputs": ["B"],
        "steps": [{"key": "s", "command": "loop", "inputs": {"A": "A"}, "outputs": {"B": "B"}}],
    }
    host = Host([MAKE])
    with pytest.raises(InvalidRequest, match="loop -> loop"):
        host.command([loop])
