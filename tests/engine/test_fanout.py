"""Fan-out: list vars make one process per value (or combination), named by the values."""

from __future__ import annotations

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


def test_values_that_reduce_to_the_same_name_are_an_error() -> None:
    host = Host([HELLO])
    with pytest.raises(InvalidRequest, match="'p-ab'"):
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
