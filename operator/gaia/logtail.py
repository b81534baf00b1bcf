"""``gaia logs -f``: a process's log, then its new lines as the task prints them.

The event stream is opened *before* the log is read, so no line falls between the two;
the lines that arrived while the log was being read are matched against its end, so none
is printed twice. Following ends with the task (as ``kubectl logs -f`` does with its
container): a process that is not running prints its latest log and returns; one that is
queued is waited for.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from gaia.client import Event, Gaia
from gaia.errors import GaiaError

__all__ = ["follow", "join_lines"]

ENDS = ("step-complete", "step-error", "step-terminated")


def join_lines(fetched: list[str], streamed: list[str]) -> list[str]:
    """The streamed lines that the fetched log does not already end with."""
    for k in range(min(len(streamed), len(fetched)), 0, -1):
        if fetched[-k:] == streamed[:k]:
            return streamed[k:]
    return streamed


def follow(
    client: Gaia, root: str, process: str, write: Callable[[str], None]
) -> tuple[str, dict[str, Any] | None]:
    """Write the log of ``process``'s latest task, then its lines live until the task ends.

    Returns how it ended (``complete``, ``error``, ``cancelled``, or the state it was in
    when it was not running) and the ending event, if one was seen."""
    events: queue.Queue[Event | None] = queue.Queue()
    source = client.events(root)

    def read() -> None:
        try:
            for event in source:
                if event.get("process") == process:
                    events.put(event)
        except GaiaError:
            pass
        events.put(None)  # the stream ended

    threading.Thread(target=read, name="gaia-logs", daemon=True).start()
    try:
        detail = client.process(root, process)
        task = detail.get("task") or {}
        state = str(task.get("state") or "")
        if state not in ("queued", "running"):
            fetched = _lines(client.logs(root, process).get("log"))
            for line in fetched:
                write(line)
            return state or "not run", None
        following = task.get("task")
        fetched = _lines(client.logs(root, process).get("log")) if state == "running" else []
        for line in fetched:
            write(line)
        early: list[Event] = []
        while not events.empty():
            event = events.get_nowait()
            if event is None:
                return state, None
            early.append(event)
        lines = [str(e.get("line", "")) for e in early if _logs_of(e, following)]
        for line in join_lines(fetched, lines):
            write(line)
        ending = next(
            (e for e in early if e.get("event") in ENDS and e.get("task") == following), None
        )
        while ending is None:
            event = events.get()
            if event is None:
                return "disconnected", None
            if _logs_of(event, following):
                write(str(event.get("line", "")))
            elif event.get("event") in ENDS and event.get("task") == following:
                ending = event
        kind = str(ending.get("event"))
        return {"step-complete": "complete", "step-error": "error"}.get(kind, "cancelled"), ending
    finally:
        source.close()


def _logs_of(event: Event, task: object) -> bool:
    return event.get("event") == "log" and event.get("task") == task


def _lines(text: object) -> list[str]:
    return str(text or "").splitlines()
