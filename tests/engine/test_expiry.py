"""Expiry: what each kind of key expires, and that nothing stale survives."""

from __future__ import annotations

import pytest
from engine_host import Host

from gaia.errors import NotFound


def expire(host: Host, keys: list[str]) -> tuple[list[str], list[str]]:
    processes, data, instructions = host.ns.expire(keys)
    host.carry_out(instructions)
    return processes, data


def test_expiring_a_process_expires_its_outputs_and_downstream(chain: Host) -> None:
    chain.run_all()
    assert expire(chain, ["bc"]) == (["bc", "cd"], ["b", "c"])
    assert sorted(chain.deleted) == ["b", "c"]
    assert chain.queued == {"bc": 2}
    assert chain.run_all() == ["bc", "cd"]


def test_expiring_a_produced_key_recomputes_its_producer(chain: Host) -> None:
    chain.run_all()
    assert expire(chain, ["b"]) == (["bc", "cd"], ["b", "c"])


def test_a_key_may_be_named_with_the_trailing_slash_it_was_merged_with(chain: Host) -> None:
    """A directory key is merged as "b/" and shown as "b": expire takes either."""
    chain.run_all()
    assert expire(chain, ["b/"]) == (["bc", "cd"], ["b", "c"])


def test_expiring_a_source_recomputes_its_consumers_and_keeps_the_source(chain: Host) -> None:
    chain.run_all()
    assert expire(chain, ["src"]) == (["ab", "bc", "cd"], ["a", "b", "c"])
    assert "src" in chain.store and "src" not in chain.deleted
    assert chain.run_all() == ["ab", "bc", "cd"]


def test_expiring_a_fanned_out_spec_expires_every_expansion(triangle: Host) -> None:
    triangle.run_all()
    processes, _ = expire(triangle, ["hello"])
    assert {"hello-rabbit", "hello-snake", "cat-rabbit", "cat-snake", "both:cat-ab"} <= set(
        processes
    )
    assert "md5-rabbit" not in processes


def test_a_source_change_recomputes_exactly_its_downstream(triangle: Host) -> None:
    triangle.run_all()
    processes, data = expire(triangle, ["animals/snake"])
    assert processes == ["both:cat-ab", "both:wc-ab", "cat-snake", "md5-snake", "wc-snake"]
    assert data == [".private/both/AB", "cat/snake", "md5/snake", "wc/both", "wc/snake"]
    assert sorted(triangle.run_all()) == processes


def test_expiry_cancels_running_tasks_downstream(chain: Host) -> None:
    chain.finish("ab")
    assert chain.queued == {"bc": 1}
    expire(chain, ["a"])
    assert chain.cancelled == ["bc"]
    assert chain.queued == {"ab": 2}
    assert "a" not in chain.ns.complete


def test_unknown_keys_are_an_error_and_nothing_is_expired(chain: Host) -> None:
    chain.run_all()
    with pytest.raises(NotFound, match=r"no process or data key \['nope'\]"):
        expire(chain, ["a", "nope"])
    assert chain.deleted == [] and chain.ns.state().value == "complete"


def test_expiry_in_a_halted_namespace_starts_nothing(chain: Host) -> None:
    chain.run_all()
    chain.carry_out(chain.ns.halt())
    expire(chain, ["b"])
    assert chain.queued == {}
    assert chain.ns.status()["data"]["b"] == "missing"


def test_expiring_recovers_a_failed_process(chain: Host) -> None:
    chain.finish("ab", ok=False)
    expire(chain, ["ab"])
    assert chain.queued == {"ab": 2}
