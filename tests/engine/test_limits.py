"""Limits: counted before anything is expanded, each refusal naming the limit."""

from __future__ import annotations

import time

import pytest
from engine_host import ECHO, MAKE, Host

from gaia.engine.limits import Limits, key_chars_of, processes_of
from gaia.engine.model import parse_process
from gaia.errors import InvalidRequest

TWICE = {
    "key": "twice",
    "inputs": ["IN"],
    "outputs": ["OUT"],
    "steps": [
        {"key": "a", "command": "echo", "inputs": {"IN": "IN"}, "outputs": {"OUT": "MID"}},
        {"key": "b", "command": "echo", "inputs": {"IN": "MID"}, "outputs": {"OUT": "OUT"}},
    ],
}


def fan(key: str, *sizes: int) -> dict[str, object]:
    names = [f"V{n}" for n in range(len(sizes))]
    out = f"{key}/" + "/".join(f"{{{{{name}}}}}" for name in names)
    values = {name: [f"x{i}" for i in range(size)] for name, size in zip(names, sizes, strict=True)}
    return {"key": key, "command": "make", "outputs": {"OUT": out}, "vars": values}


def test_a_cartesian_product_of_ten_million_is_refused_at_once() -> None:
    host = Host([ECHO, MAKE])
    began = time.process_time()
    with pytest.raises(
        InvalidRequest,
        match=r"10,000,000 processes, over the limit of 1,000,000 per merge \(GAIA_MAX_PROCESSES_PER_MERGE\)",
    ):
        host.merge([fan("huge", 1000, 100, 100)])
    assert time.process_time() - began < 1  # counted, not expanded
    assert host.ns.graph.processes == {}


def test_a_composite_counts_each_of_its_steps() -> None:
    host = Host([ECHO, MAKE, TWICE])
    spec = parse_process(
        {
            "key": "t",
            "command": "twice",
            "inputs": {"IN": "s/{{V}}"},
            "outputs": {"OUT": "o/{{V}}"},
            "vars": {"V": ["a", "b", "c"]},
        }
    )
    assert processes_of(spec, host.registry.commands) == 6


def test_the_namespace_total_counts_what_stays_and_what_comes() -> None:
    host = Host([ECHO, MAKE])
    host.ns.limits = Limits(processes_per_namespace=10)
    host.merge([fan("a", 6)])
    with pytest.raises(
        InvalidRequest, match=r"bring the namespace to 12 processes, over the limit of 10"
    ):
        host.merge([fan("b", 6)])
    host.merge([fan("a", 4), fan("b", 6)])  # a shrinks as b comes: 10 in all


def test_a_var_over_its_size_is_refused() -> None:
    host = Host([ECHO, MAKE])
    host.ns.limits = Limits(var_bytes=8)
    process = {"key": "p", "command": "make", "outputs": {"OUT": "o"}, "vars": {"V": "x" * 9}}
    with pytest.raises(
        InvalidRequest, match=r"var 'V' is over the limit of 8 bytes \(GAIA_MAX_VAR_BYTES\)"
    ):
        host.merge([process])


def test_limits_come_from_the_environment() -> None:
    assert Limits.from_env({"GAIA_MAX_WORKERS": "3"}).workers == 3
    with pytest.raises(
        InvalidRequest, match=r"GAIA_MAX_WORKERS='lots': use a positive whole number"
    ):
        Limits.from_env({"GAIA_MAX_WORKERS": "lots"})
    with pytest.raises(
        InvalidRequest, match=r"over the limit of 2 \(GAIA_MAX_WORKERS_PER_LAUNCH\)"
    ):
        Limits(workers_per_launch=2).check_launch(3, 0)


def test_keys_of_too_many_characters_are_refused_before_any_is_made() -> None:
    """300 outputs of 760-character keys fanned out over 3,000 values: a request of 255
    KB that made 900,000 keys and took 1.1 GB before this limit."""
    wide = {
        "key": "wide",
        "image": "alpine",
        "command": ["true"],
        "outputs": {f"O{i}": f"/out/o{i}" for i in range(300)},
    }
    host = Host([wide])
    long = "/".join(("a" * 250, "b" * 250, "c" * 250))
    spec = {
        "key": "p",
        "command": "wide",
        "vars": {"V": [str(i) for i in range(3000)]},
        "outputs": {f"O{i}": f"k{i}/{long}/{{{{V}}}}" for i in range(300)},
    }
    with pytest.raises(
        InvalidRequest,
        match=r"data keys of 6\d\d,\d{3},\d{3} characters in all, over the limit of "
        r"128,000,000 per merge \(GAIA_MAX_KEY_CHARS_PER_MERGE\)",
    ):
        host.merge([spec])
    assert host.ns.graph.processes == {}


def test_the_key_limit_leaves_room_for_a_million_processes_with_usual_keys() -> None:
    """1,000,000 processes binding three keys of 40 characters each: allowed."""
    host = Host([ECHO, MAKE])
    values = [f"sample-{i:07d}" for i in range(500_000)]
    spec = parse_process(
        {
            "key": "align",
            "command": "echo",
            "vars": {"S": values},
            "inputs": {"IN": "reads/{{S}}/reads.fastq.gz"},
            "outputs": {"OUT": "results/{{S}}/aligned.bam"},
        }
    )
    chars = key_chars_of(spec, host.registry.commands)
    # twice as many processes (1,000,000), binding three keys each instead of two
    assert chars * 2 * 3 // 2 < Limits().key_chars_per_merge


def test_a_composites_private_keys_count_too() -> None:
    """A registered composite of 100 steps, each writing a private key the next reads,
    makes 99 keys per process that no spec names: a small spec fanned out 10,000 times
    would bind 990,000 private keys of 200 characters and more."""
    long_name = "n" * 190
    relay = {
        "key": "relay",
        "inputs": ["IN"],
        "outputs": ["OUT"],
        "steps": [
            {
                "key": f"s{i}",
                "command": "echo",
                "inputs": {"IN": "IN" if i == 0 else f"{long_name}{i - 1}"},
                "outputs": {"OUT": "OUT" if i == 99 else f"{long_name}{i}"},
            }
            for i in range(100)
        ],
    }
    host = Host([ECHO, MAKE, relay])
    spec = {
        "key": "r",
        "command": "relay",
        "vars": {"V": [str(i) for i in range(10_000)]},
        "inputs": {"IN": "in/{{V}}"},
        "outputs": {"OUT": "out/{{V}}"},
    }
    with pytest.raises(InvalidRequest, match=r"GAIA_MAX_KEY_CHARS_PER_MERGE"):
        host.merge([spec])
    assert key_chars_of(parse_process(spec), host.registry.commands) > 99 * 10_000 * 200
    # The composite of two steps over 500,000 values (1,000,000 processes) still fits.
    twice = Host([ECHO, TWICE])
    half = {**spec, "command": "twice", "vars": {"V": [f"v{i}" for i in range(500_000)]}}
    assert key_chars_of(parse_process(half), twice.registry.commands) < Limits().key_chars_per_merge
