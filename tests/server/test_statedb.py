"""The standalone server's state database: its writes leave the event loop's thread."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gaia.standalone.statedb import StateDB


def event(number: int) -> dict[str, object]:
    return {"id": number, "root": "ns", "event": "step-start"}


def test_a_write_never_waits_for_a_busy_database(tmp_path: Path) -> None:
    """A commit runs on the writer's thread: the end of the loop's turn returns at once
    even while something else holds the database (a checkpoint's fsync, a backup), and
    a read waits for the writes before it."""
    db = StateDB(tmp_path / "state.db")
    turn_ends: list[Callable[[], None]] = []
    db.defer = turn_ends.append
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")

    db.save_event(event(1))
    db.save_event(event(2))
    assert len(turn_ends) == 1  # one transaction for the turn
    turn_ends.pop()()  # would wait for the lock, then fail, on the loop's thread

    other.execute("COMMIT")
    assert db.events_since(0, None) == [event(1), event(2)]
    db.close()


def test_a_failed_commit_is_logged_and_later_writes_go_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    db = StateDB(tmp_path / "state.db")
    db.save_event(event(1))
    db.flush()
    db.save_event(event(1))  # the same id again: this transaction fails
    db.flush()
    db.save_event(event(2))
    assert db.events_since(0, None) == [event(1), event(2)]
    assert "could not save the server's state: UNIQUE constraint failed" in caplog.text
    db.close()
