"""The standalone server's embedded database (SQLite, in ``DIR/.gaia/state.db``).

It keeps what cannot be recomputed: commands, the users' process specs, each namespace's
mode, task records (run numbers never repeat) and the event history. Data state is not
kept here: the store is the truth (a key is complete iff it exists), so a restart looks
in the store again. Commands and specs come back as the plain dicts they were saved
from, so that one the rules no longer accept is refused on its own at restore time
rather than stopping the server.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gaia.engine.model import Command, ProcessSpec
from gaia.engine.states import Mode
from gaia.engine.tasks import Task

__all__ = ["StateDB"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (root TEXT PRIMARY KEY, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS specs (
    root TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (root, key));
CREATE TABLE IF NOT EXISTS tasks (
    root TEXT NOT NULL, process TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (root, process));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, root TEXT, body TEXT NOT NULL);
"""
EVENTS_KEPT = 100_000


class StateDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Explicit transactions only. Created on one thread, then used only by the server's
        # event loop thread (the embedded server starts it from another).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._events_written = 0
        # Writes wait for the end of the event loop's turn and go in one transaction:
        # a task's start, end and events would otherwise cost a commit each.
        self.defer: Callable[[Callable[[], None]], object] | None = None
        self._pending: list[tuple[str, list[tuple[Any, ...]]]] = []

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        self._pending.append((sql, list(rows)))
        if self.defer is None:
            self.flush()
        elif len(self._pending) == 1:
            self.defer(self.flush)

    def flush(self) -> None:
        """Write what waits, in one transaction."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        with self.db:
            self.db.execute("BEGIN")
            for sql, rows in pending:
                self.db.executemany(sql, rows)

    def close(self) -> None:
        self.flush()
        self.db.close()

    def save_commands(self, commands: Iterable[Command]) -> None:
        self._write(
            "INSERT OR REPLACE INTO commands VALUES (?, ?)",
            ((c.key, json.dumps(c.to_dict())) for c in commands),
        )

    def save(
        self,
        root: str,
        mode: Mode,
        *,
        specs: Iterable[ProcessSpec] = (),
        dropped: Iterable[str] = (),
        tasks: Iterable[Task] = (),
    ) -> None:
        """What one change applied to a namespace (written with the others of this turn
        of the event loop, in one transaction)."""
        self._write("INSERT OR REPLACE INTO namespaces VALUES (?, ?)", [(root, mode.value)])
        self._write(
            "INSERT OR REPLACE INTO specs VALUES (?, ?, ?)",
            ((root, s.key, json.dumps(s.to_dict())) for s in specs),
        )
        self._write("DELETE FROM specs WHERE root = ? AND key = ?", ((root, k) for k in dropped))
        self._write(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)",
            ((root, t.process, json.dumps(t.to_dict())) for t in tasks),
        )

    def save_event(self, event: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO events VALUES (?, ?, ?)",
            [(event["id"], event.get("root"), json.dumps(event))],
        )
        self._events_written += 1
        if self._events_written % 10_000 == 0:
            self._write("DELETE FROM events WHERE id <= ?", [(event["id"] - EVENTS_KEPT,)])

    def last_event_id(self) -> int:
        self.flush()
        row = self.db.execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]:
        self.flush()
        rows = self.db.execute(
            "SELECT body FROM events WHERE id > ? AND (? IS NULL OR root = ?) ORDER BY id",
            (after, root, root),
        )
        return [json.loads(body) for (body,) in rows]

    def load_commands(self) -> list[Any]:
        return [json.loads(body) for (body,) in self.db.execute("SELECT body FROM commands")]

    def load_namespaces(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT root, mode FROM namespaces"))

    def load_specs(self, root: str) -> list[Any]:
        rows = self.db.execute("SELECT body FROM specs WHERE root = ? ORDER BY rowid", (root,))
        return [json.loads(body) for (body,) in rows]

    def load_tasks(self, root: str) -> list[Task]:
        rows = self.db.execute("SELECT process, body FROM tasks WHERE root = ?", (root,))
        tasks = []
        for process, body in rows:
            try:
                tasks.append(Task.from_dict(process, json.loads(body)))
            except (ValueError, KeyError, TypeError):
                continue  # a record this version cannot read: its process runs again
        return tasks
