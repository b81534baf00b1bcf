"""The operator's store lanes: calls leave the event loop but keep their order."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gaia.kube.store_lanes import StoreLanes
from gaia.store import LocalStore


def test_a_lookup_sees_the_delete_queued_before_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "ns" / "md5").mkdir(parents=True)
    for name in ("rabbit", "snake"):
        (tmp_path / "ns" / "md5" / name).write_text(name)
    lanes = StoreLanes(store)

    async def scenario() -> set[str]:
        lanes.later("ns", "deleting", store.delete, "ns", ["md5/rabbit"])  # not awaited
        lookup = await lanes.call("ns", store.lookup, "ns", ["md5/rabbit", "md5/snake", "md5"])
        return set(lookup.existing)

    assert asyncio.run(scenario()) == {"md5/snake", "md5"}
    lanes.close()


def test_a_failure_queued_without_waiting_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lanes = StoreLanes(LocalStore(tmp_path))

    def broken() -> None:
        raise OSError("disk on fire")

    lanes.later("ns", "clearing a staging area", broken)
    lanes.close()  # waits for what is queued
    assert "namespace ns: clearing a staging area failed: disk on fire" in caplog.text
    assert any(record.levelno == logging.ERROR for record in caplog.records)
