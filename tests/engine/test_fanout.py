"""Fan-out: list vars make one process per value (or combination), named by the values."""

from __future__ import annotations

import dataclasses

import pytest
from engine_host import ECHO, MAKE, Host

from gaia.errors import InvalidRequest

HELLO = {
    "key": "hello",
    "image": "ubuntu",
    "command": ["echo", "{{A}}", "{{B}}"],
    "vars": {"A": "x", "B": "y"},
    "stdout": "/out/o",
    "outputs": {"OUT": "/out/o"},
}


def test_one_process_per_value_named_by_the_value() -> None:
    host = Host([HELLO])
    changed = host.merge(
        [
            {
                "key": "hello",
                "command": "hello",
                "vars": {"A": ["rabbit", "snake"]},
                "outputs": {"OUT": "hello/{{A}}"},
            }
        ]
    )
    assert changed == ["hello-rabbit", "hello-snake"]
    assert host.ns.graph.processes["hello-snake"].outputs == {"OUT": "hello/snake"}
    assert host.ns.graph.processes["hello-snake"].vars == {"A": "snake", "B": "y"}


def test_several_list_vars_give_the_product_ordered_by_var_name() -> None:
    host = Host([HELLO])
    changed = host.merge(
        [
            {
                "key": "p",
                "command": "hello",
                "vars": {"B": ["1", "2"], "A": ["a", "b"]},
                "outputs": {"OUT": "o/{{A}}/{{B}}"},
            }
        ]
    )
    assert changed == ["p-a-1", "p-a-2", "p-b-1", "p-b-2"]


def test_values_are_reduced_to_letters_digits_and_dashes() -> None:
    host = Host([HELLO])
    changed = host.merge(
        [
            {
                "key": "p",
                "command": "hello",
                "vars": {"A": ["big cat", "v1.5", "x-y/z"]},
                "outputs": {"OUT": "o/{{A}}"},
            }
        ]
    )
    assert changed == ["p-bigcat", "p-v15", "p-x-yz"]
    assert host.ns.graph.processes["p-v15"].outputs == {"OUT": "o/v1.5"}


PAIR = {
    "key": "pair",
    "image": "ubuntu",
    "command": ["cat", "{{A}}"],
    "vars": {"A": "x", "B": None},
    "inputs": {"L": "/in/l", "R": "/in/r"},
    "outputs": {"OUT": "/out/o", "LOG": "/out/log"},
}


@pytest.mark.parametrize(
    "spec",
    [
        {"vars": {"A": ["v1", "v2", "v3"], "B": "b"}, "outputs": {"OUT": "o/{{A}}"}},
        {  # a var for the keys alone, two placeholders, a value reduced
            "vars": {"A": ["x.y", "a b", "q"], "B": "b", "ONLY_KEYS": "k"},
            "inputs": {"L": "l/{{ONLY_KEYS}}/{{A}}", "R": "r/{{A}}-{{B}}"},
            "outputs": {"OUT": "o/{{A}}", "LOG": "logs/{{B}}/{{A}}.log"},
        },
        {"vars": {"B": ["1", "2", "3", "4"]}, "inputs": {"L": "in", "R": "in2/{{B}}"}},
        {"vars": {"A": ["one", "two"], "B": ["x", "y"]}, "outputs": {"OUT": "o/{{A}}/{{B}}"}},
    ],
)
def test_each_fanned_out_process_is_the_process_its_values_make_alone(spec: dict) -> None:
    """The oracle: a spec with one value per var (no fan-out) is expanded the general way;
    every process of the fan-out must equal the one its values make so."""
    command = {**PAIR, "inputs": {}, "outputs": {}}
    command["inputs"] = {name: f"/in/{name.lower()}" for name in spec.get("inputs", {})}
    command["outputs"] = {name: f"/out/{name.lower()}" for name in spec.get("outputs", {})}
    host = Host([command])
    fanned = {"key": "p", "command": "pair", **spec}
    keys = host.merge([fanned])
    assert len(keys) > 1
    lists = {name: value for name, value in spec["vars"].items() if isinstance(value, list)}
    for process in (host.ns.graph.processes[key] for key in keys):
        alone = Host([command])
        values = {name: process.vars.get(name) for name in lists}
        if None in values.values():  # a list var the command does not declare
            continue
        (key,) = alone.merge([{**fanned, "key": process.key, "vars": {**spec["vars"], **values}}])
        assert dataclasses.replace(alone.ns.graph.processes[key], spec="p") == process


def test_values_that_reduce_to_the_same_name_are_an_error() -> None:
    host = Host([HELLO])
    with pytest.raises(InvalidRequest, match=r"values \{'A': 'a.b'\} and \{'A': 'ab'\} .*'p-ab'"):
        host.merge(
            [
                {
                    "key": "p",
                    "command": "hello",
                    "vars": {"A": ["a.b", "ab"]},
                    "outputs": {"OUT": "o/{{A}}"},
                }
            ]
        )


def test_numbers_fan_out_like_strings() -> None:
    host = Host([HELLO])
    assert host.merge(
        [{"key": "p", "command": "hello", "vars": {"A": [1, 2]}, "outputs": {"OUT": "o/{{A}}"}}]
    ) == ["p-1", "p-2"]


def test_an_empty_list_makes_no_process() -> None:
    host = Host([HELLO])
    assert (
        host.merge(
            [{"key": "p", "command": "hello", "vars": {"A": []}, "outputs": {"OUT": "o/{{A}}"}}]
        )
        == []
    )


def test_scalar_vars_substitute_into_data_keys_without_fanning_out() -> None:
    host = Host([ECHO, MAKE])
    assert host.merge(
        [{"key": "p", "command": "make", "vars": {"WHO": "me"}, "outputs": {"OUT": "o/{{WHO}}"}}]
    ) == ["p"]
    assert "o/me" in host.ns.graph


def test_a_placeholder_naming_no_var_in_a_data_key_is_an_error() -> None:
    host = Host([ECHO, MAKE])
    with pytest.raises(InvalidRequest, match=r"process 'p'.*OUT.*\['WHO'\]"):
        host.merge([{"key": "p", "command": "make", "outputs": {"OUT": "o/{{WHO}}"}}])


def test_triangle_expands_to_ten_processes_and_twelve_keys(triangle: Host) -> None:
    assert sorted(triangle.ns.graph.processes) == sorted(
        [
            "md5-rabbit",
            "md5-snake",
            "hello-rabbit",
            "hello-snake",
            "cat-rabbit",
            "cat-snake",
            "wc-rabbit",
            "wc-snake",
            "both:cat-ab",
            "both:wc-ab",
        ]
    )
    assert triangle.ns.graph.data_count() == 12
