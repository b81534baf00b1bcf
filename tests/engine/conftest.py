"""Fixtures for the engine tests: the triangle example and a small chain."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from engine_host import ECHO, MAKE, TRIANGLE, Host, step


@pytest.fixture
def triangle_commands() -> list[dict[str, Any]]:
    return yaml.safe_load((TRIANGLE / "commands.yaml").read_text())


@pytest.fixture
def triangle_processes() -> list[dict[str, Any]]:
    return yaml.safe_load((TRIANGLE / "processes.yaml").read_text())


@pytest.fixture
def triangle(
    triangle_commands: list[dict[str, Any]], triangle_processes: list[dict[str, Any]]
) -> Host:
    host = Host(triangle_commands, {"animals/rabbit", "animals/snake"})
    host.merge(triangle_processes)
    return host


@pytest.fixture
def chain() -> Host:
    """a -> b -> c -> d from a source key 'src'."""
    host = Host([ECHO, MAKE], {"src"})
    host.merge([step("ab", "src", "a"), step("bc", "a", "b"), step("cd", "b", "c")])
    return host
