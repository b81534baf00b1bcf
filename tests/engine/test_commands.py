"""Changing a command recomputes every process that uses it, directly or in a composite."""

from __future__ import annotations

import pytest
from engine_host import ECHO, Host

from gaia.errors import InvalidRequest


def test_an_identical_command_changes_nothing(triangle: Host, triangle_commands: list) -> None:
    triangle.run_all()
    assert triangle.change_command(triangle_commands) == []
    assert triangle.queued == {}


def test_a_changed_leaf_recomputes_its_users_composites_and_downstream(
    triangle: Host, triangle_commands: list
) -> None:
    triangle.run_all()
    cat = next(c for c in triangle_commands if c["key"] == "cat")
    changed = triangle.change_command([{**cat, "command": ["cat", "/in/B", "/in/A"]}])
    assert sorted(changed) == ["both:cat-ab", "both:wc-ab", "cat-rabbit", "cat-snake"]
    assert set(triangle.deleted) == {
        "cat/rabbit",
        "cat/snake",
        "wc/rabbit",
        "wc/snake",
        ".private/both/AB",
        "wc/both",
    }
    assert sorted(triangle.queued) == ["cat-rabbit", "cat-snake"]  # both:cat-ab waits for them
    triangle.run_all()
    assert triangle.ns.state().value == "complete"


def test_a_command_change_that_breaks_a_process_is_rejected(triangle: Host) -> None:
    broken = {**ECHO, "key": "md5"}  # input named IN, while processes bind INPUT
    merged, changed = triangle.registry.prepare([broken])
    with pytest.raises(
        InvalidRequest, match=r"process .md5-rabbit.: command .md5. inputs \[.IN.\] are not bound"
    ):
        triangle.ns.prepare_command_change(changed, merged)
