"""Every validation rule rejects the whole merge with a message naming the keys."""

from __future__ import annotations

import random
from typing import Any

import pytest
from engine_host import ECHO, MAKE, Host, step

from gaia.engine.keys import folders_of, is_plain_key, parents, plain_keys
from gaia.errors import InvalidRequest


def snapshot(host: Host) -> tuple[Any, ...]:
    ns = host.ns
    return (
        dict(ns.specs),
        dict(ns.graph.processes),
        dict(ns.graph.producer),
        set(ns.complete),
        dict(host.queued),
        ns.mode,
    )


@pytest.mark.parametrize(
    ("process", "message"),
    [
        ({"key": "x", "command": "nope"}, "process 'x' uses unknown command 'nope'"),
        (
            {"key": "x", "command": "echo", "outputs": {"OUT": "o"}},
            r"process 'x'.*inputs \['IN'\] are not bound",
        ),
        (
            {"key": "x", "command": "echo", "inputs": {"IN": "src"}},
            r"process 'x'.*outputs \['OUT'\] are not bound",
        ),
        (
            {
                "key": "x",
                "command": "echo",
                "inputs": {"IN": "src", "EXTRA": "e"},
                "outputs": {"OUT": "o"},
            },
            r"has no inputs \['EXTRA'\]",
        ),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "o/{{WHO}}"}},
            r"\['WHO'\], which name no var",
        ),
        ({"key": "x", "command": "make", "outputs": {"OUT": "/etc/passwd"}}, "absolute"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "../up"}}, "'..'"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "a/../../b"}}, "'..'"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "a\x00b"}}, "control character"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "a\x85b"}}, "control character"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "a\ud800b"}}, "lone surrogate"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "d/" + "é" * 128}}, "256 bytes"),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "o"}, "vars": {"V": "a\x00"}},
            r"var 'V'.*NUL",
        ),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "o"}, "vars": {"V": float("nan")}},
            "not a usable value",
        ),
        ({"key": "x", "command": "make", "outputs": {"OUT": "c"}}, "would have two producers"),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "c/x"}},
            r"'c/x' \(process 'x'\) would lie inside data key 'c' \(process 'cd'\)",
        ),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "src/x"}},
            r"'src/x' \(process 'x'\) would lie inside data key 'src'",
        ),
        ({"key": "x", "command": "make", "outputs": {"OUT": ""}}, "non-empty"),
        ({"key": "x", "command": "make", "outputs": {"OUT": ".private/p/M"}}, "reserved"),
        ({"key": "x", "command": "make", "outputs": {"OUT": "a//b"}}, "empty"),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "o/{{W}}"}, "vars": {"W": ".."}},
            "'..'",
        ),
        ({"key": "x", "command": "make", "outputs": {"OUT": "Bad_Bucket:x"}}, "bucket"),
        ({"key": "../x", "command": "make", "outputs": {"OUT": "o"}}, "process key '../x'"),
        (
            {"key": "x", "command": "make", "outputs": {"OUT": "o"}, "colour": "red"},
            r"unknown fields \['colour'\]",
        ),
        ({"key": "x", "command": "make", "outputs": ["o"]}, "'outputs' must be a mapping"),
        ("just a string", "a process must be a mapping"),
    ],
)
def test_bad_processes_are_rejected_and_change_nothing(
    chain: Host, process: Any, message: str
) -> None:
    before = snapshot(chain)
    good = step("fine", "c", "d")
    with pytest.raises(InvalidRequest, match=message):
        chain.merge([good, process])
    assert snapshot(chain) == before


def test_a_bucket_prefix_is_a_valid_key() -> None:
    host = Host([MAKE])
    assert host.merge(
        [{"key": "x", "command": "make", "outputs": {"OUT": "bucket:data/wcm/sim-out"}}]
    ) == ["x"]


def test_two_producers_of_one_key_are_rejected_naming_both(chain: Host) -> None:
    before = snapshot(chain)
    with pytest.raises(InvalidRequest, match=r"'b' would have two producers: 'bc' and 'other'"):
        chain.merge([step("other", "src", "b")])
    with pytest.raises(InvalidRequest, match=r"'z' would have two producers: 'p' and 'q'"):
        chain.merge([step("p", "src", "z"), step("q", "src", "z")])
    assert snapshot(chain) == before


def test_a_cycle_is_rejected_naming_its_processes_and_keys(chain: Host) -> None:
    before = snapshot(chain)
    message = r"cycle: ab -> \[a\] -> bc -> \[b\] -> cd -> \[c\] -> ab"
    with pytest.raises(InvalidRequest, match=message):
        chain.merge([step("ab", "c", "a")])
    assert snapshot(chain) == before


def test_a_process_reading_its_own_output_is_a_cycle() -> None:
    host = Host([ECHO])
    with pytest.raises(InvalidRequest, match="cycle"):
        host.merge([step("self", "x", "x")])


def test_replacing_a_producer_in_the_same_merge_is_not_a_duplicate(chain: Host) -> None:
    assert chain.merge([step("bc", "src", "b")]) == ["bc"]


def test_a_process_key_may_appear_once_per_merge() -> None:
    host = Host([ECHO])
    with pytest.raises(InvalidRequest, match="'p' appears twice"):
        host.merge([step("p", "a", "b"), step("p", "a", "c")])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ({"key": "c", "command": ["echo", "{{WHO}}"]}, r"\{\{WHO\}\} but declares no var 'WHO'"),
        ({"key": "c", "command": "echo hi"}, "must be a list"),
        ({"key": "c", "command": []}, "non-empty list"),
        ({"key": "c", "command": ["x"], "inputs": {"A": "relative"}}, "absolute container path"),
        (
            {"key": "c", "command": ["x"], "inputs": {"A": "/p/q"}, "outputs": {"B": "/p/q"}},
            "both an input and an output",
        ),
        ({"key": "c c", "command": ["x"]}, "command key 'c c'"),
        ({"key": "c", "command": ["x"], "timeout": -1}, "timeout"),
        (
            {"key": "c", "command": ["x"], "outputs": {"O": "/o"}},
            r"output 'O' path '/o' is a file directly under '/'; .* such as '/out/o'",
        ),
        ({"key": "c", "command": ["x"], "stdout": "/log"}, "'stdout' path '/log' is a file"),
    ],
)
def test_bad_commands_are_rejected(command: dict[str, Any], message: str) -> None:
    host = Host([MAKE])
    with pytest.raises(InvalidRequest, match=message):
        host.command([MAKE, command])
    assert "c" not in host.registry


@pytest.mark.slow  # merges 5,000 processes: about a second
def test_large_merges_check_cycles_without_recursion_limits() -> None:
    host = Host([ECHO], {"k0"})
    n = 5000
    host.merge([step(f"s{i}", f"k{i}", f"k{i + 1}") for i in range(n)])
    with pytest.raises(InvalidRequest, match="cycle"):
        host.merge([step("s0", f"k{n}", "k1")])


def test_keys_inside_keys_are_refused_within_one_merge_too() -> None:
    host = Host([ECHO, MAKE], {"src"})
    with pytest.raises(
        InvalidRequest,
        match=r"'out/x' \(process 'b'\) would lie inside data key 'out' \(process 'a'\)",
    ):
        host.merge([step("a", "src", "out"), step("b", "src", "out/x")])
    with pytest.raises(
        InvalidRequest,
        match=r"'d/e/f' \(process 'a'\) would lie inside data key 'd' \(process 'b'\)",
    ):
        host.merge([step("a", "src", "d/e/f"), step("b", "src", "d")])
    assert host.ns.graph.processes == {}


def test_the_folders_of_keys_are_every_folder_on_their_way() -> None:
    keys = ["a/b/c/d", "a/b/e", "a/x", "top", "bucket:f/g"]
    assert folders_of(keys) == {"a", "a/b", "a/b/c", "bucket:f"}
    assert folders_of(keys) == {p for key in keys for p in parents(key)}


NESTED_KEYS = ["a", "a/b", "a/b/c", "a/c", "b", "b/x/y", "c"]


def nested(keys: set[str]) -> bool:
    return any(other.startswith(key + "/") for key in keys for other in keys)


def problems(processes: list[tuple[str, str | None, str]]) -> set[str]:
    """What is wrong with a graph of (process, input, output), counted from scratch."""
    found = set()
    keys = {key for _, source, target in processes for key in (source, target) if key}
    if nested(keys):
        found.add("would lie inside")
    outputs = [target for _, _, target in processes]
    if len(set(outputs)) != len(outputs):
        found.add("two producers")
    producer = {target: name for name, _, target in processes}
    after = {name: producer.get(source) for name, source, _ in processes if source}
    for name in after:  # a cycle: following producers of inputs comes back
        seen, at = set(), after.get(name)
        while at is not None and at not in seen:
            seen.add(at)
            at = after.get(at)
        if at == name or (at is not None and at in seen and name in seen):
            found.add("cycle")
    return found


@pytest.mark.parametrize("seed", range(40))
def test_a_merge_is_refused_exactly_when_the_graph_it_would_make_is_bad(seed: int) -> None:
    """Against the rules themselves, counted from scratch: a merge that replaces
    processes, adds some and reuses keys is refused if and only if the graph it would
    leave has keys inside keys, a key with two producers or a cycle, and the message
    names one of its problems."""
    rng = random.Random(seed)
    host = Host([ECHO, MAKE], set())
    for _ in range(40):
        specs = []
        for key in rng.sample([f"p{i}" for i in range(6)], rng.randint(1, 3)):
            source, target = rng.sample(NESTED_KEYS, 2)
            if rng.random() < 0.2:
                specs.append({"key": key, "command": "make", "outputs": {"OUT": target}})
            else:
                specs.append(step(key, source, target))
        merging = {spec["key"] for spec in specs}
        would_be = [
            (p.key, p.inputs.get("IN"), p.outputs["OUT"])
            for p in host.ns.graph.processes.values()
            if p.spec not in merging
        ] + [
            (spec["key"], spec.get("inputs", {}).get("IN"), spec["outputs"]["OUT"])
            for spec in specs
        ]
        expected = problems(would_be)
        try:
            host.merge(specs)
        except InvalidRequest as exc:
            assert any(problem in str(exc) for problem in expected), (exc, expected)
            continue
        assert not expected
        graph = host.ns.graph
        assert {
            (p.key, p.inputs.get("IN"), p.outputs["OUT"]) for p in graph.processes.values()
        } == set(would_be)


def test_a_key_may_become_a_directory_when_its_process_is_replaced(chain: Host) -> None:
    """The key ``c`` leaves the graph in the same merge that brings ``c/x``."""
    chain.merge([step("cd", "b", "c/x")])
    assert chain.ns.graph.producer["c/x"] == "cd" and "c" not in chain.ns.graph
    with pytest.raises(
        InvalidRequest, match=r"'c/x/y' \(process 'de'\) would lie inside data key 'c/x'"
    ):
        chain.merge([step("de", "c/x", "c/x/y")])


@pytest.mark.parametrize("seed", range(20))
def test_many_keys_are_found_plain_exactly_as_each_one_is(seed: int) -> None:
    """The bulk check against the per-key one, on keys built from the characters that
    matter: separators, dots, newlines, a non-ASCII letter."""
    rng = random.Random(seed)
    alphabet = ["a", "b", "0", "_", "-", ".", "/", "\n", " ", "é", "x" * 250]
    for _ in range(300):
        keys = ["".join(rng.choices(alphabet, k=rng.randint(0, 5))) for _ in range(3)]
        assert plain_keys(keys) == all(is_plain_key(key) for key in keys), keys
    keys = [f"gen/v{i}" for i in range(1000)]
    assert plain_keys(keys)
    assert not plain_keys([*keys, "gen/a\nb"])  # two plain keys, on the face of it
