"""Fixtures: a fresh `gaia serve` per test, and the triangle example merged into it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gaia_server import TRIANGLE, Server

import gaia


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data").start()
    yield running
    running.stop()


@pytest.fixture
def triangle(server: Server) -> gaia.Gaia:
    """The triangle example merged into namespace 'triangle', sources seeded."""
    shutil.copytree(TRIANGLE / "data", server.data / "triangle")
    flow = server.client()
    flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
    flow.merge("triangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))
    return flow
