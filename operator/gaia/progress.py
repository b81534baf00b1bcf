"""How the CLI shows a namespace's progress: live while it runs, and as a summary.

:class:`Progress` follows one namespace: a background thread reads its events
(``GET /events?root=NS``) and the caller's thread polls ``status`` about every half second.
On a terminal it redraws one status line::

    triangle  running  7/10 processes  2 running  0 failed  [##############......] 3.2s

and prints a permanent line per finished step (``✓ md5-rabbit  0.05s``, or ``✗ cat-rabbit
exit code 1`` and the tail of its log). Elsewhere (CI, pipes) it prints only the permanent
lines and a counts line when the counts change. :func:`render_status` is the summary that
``gaia status`` prints.
"""

from __future__ import annotations

import logging
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from gaia.client import Event, EventSource, Gaia
from gaia.errors import GaiaError

__all__ = [
    "FINAL_STATES",
    "Progress",
    "counts_of",
    "format_duration",
    "listing",
    "render_status",
    "render_summary",
]

logger = logging.getLogger(__name__)

FINAL_STATES = frozenset({"complete", "incomplete", "error", "halted"})
LOG_TAIL_LINES = 10
LISTED_KEYS = 20


class Progress:
    """Follow namespace ``root`` until it reaches a final state; ``out=None`` shows nothing.

    Call :meth:`start` before triggering, so that no event is missed, then :meth:`wait`.
    """

    def __init__(
        self,
        client: Gaia,
        root: str,
        out: TextIO | None = sys.stdout,
        *,
        tty: bool | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.client, self.root, self.out = client, root, out
        self.tty = bool(out is not None and out.isatty()) if tty is None else tty
        self.poll_interval = poll_interval
        self.ok, self.failed = _symbols(out)
        self._events: queue.Queue[Event] = queue.Queue()
        self._source: EventSource | None = None
        self._reported: set[str] = set()  # "process#run" of steps already shown
        self._status: dict[str, Any] = {}
        self._last_counts: tuple[Any, ...] = ()
        self._started = time.monotonic()

    def start(self) -> None:
        """Subscribe to events and note which steps had finished before this run."""
        self._started = time.monotonic()
        self._status = self.client.status(self.root).get("status") or {}
        for process, task in (self._status.get("tasks") or {}).items():
            if task.get("state") not in ("queued", "running"):
                self._reported.add(f"{process}#{task.get('run')}")
        if self.out is None:
            return
        try:
            self._source = self.client.events(self.root)
        except GaiaError as exc:  # still works, from status alone
            logger.info("no event stream for %s (%s); following its status only", self.root, exc)
            return
        threading.Thread(target=self._read_events, name="gaia-progress", daemon=True).start()

    def wait(self) -> dict[str, Any]:
        """Block until the namespace's state is final; return its last ``status``."""
        next_poll = 0.0
        try:
            while True:
                self._drain(timeout=0.1)
                if time.monotonic() >= next_poll:
                    asked = time.monotonic()
                    self._status = self.client.status(self.root).get("status") or {}
                    # Poll a huge namespace no more than a fifth of the time.
                    next_poll = time.monotonic() + max(
                        self.poll_interval, 4 * (time.monotonic() - asked)
                    )
                    if self._status.get("state") in FINAL_STATES:
                        self._drain(timeout=0.2)  # the last events, in their order
                        self._report_from_status()
                        self._show_counts()
                        return self._status
                    self._report_from_status()
                    self._show_counts()
                if self.tty:
                    width = shutil.get_terminal_size().columns - 1
                    self._write("\r" + self.status_line(width) + "\x1b[K")
        finally:
            self.close()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self.tty:
            self._write("\r\x1b[K")

    def status_line(self, width: int | None = None) -> str:
        """The counts; given a terminal ``width``, also a bar and the time, within it."""
        counts = counts_of(self._status)
        done, total = counts["complete"], counts["processes"]
        line = (
            f"{self.root}  {self._status.get('state', 'starting')}  {done}/{total} processes  "
            f"{counts['running']} running  {counts['failed']} failed"
        )
        if width is None:
            return line
        took = "  " + format_duration(time.monotonic() - self._started)
        bar = min(20, width - len(line) - 12)  # steady, whatever the time's length
        if bar >= 5:
            filled = round(bar * done / total) if total else 0
            took = f"  [{'#' * filled}{'.' * (bar - filled)}]{took[1:]}"
        line += took
        return line if len(line) <= width else line[: max(width - 3, 0)] + "..."

    def _read_events(self) -> None:
        source = self._source
        try:
            for event in source or ():
                self._events.put(event)
        except GaiaError as exc:
            logger.info("event stream of %s ended: %s", self.root, exc)

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
            while True:
                self._on_event(event)
                event = self._events.get_nowait()
        except queue.Empty:
            return

    def _on_event(self, event: Event) -> None:
        kind, process = event.get("event"), str(event.get("process", ""))
        task = str(event.get("task") or f"{process}#?")
        if kind not in ("step-complete", "step-error", "step-terminated") or task in self._reported:
            return
        self._reported.add(task)
        if kind == "step-complete":
            duration = event.get("duration")
            took = format_duration(duration) if isinstance(duration, int | float) else ""
            self._print(f"{self.ok} {process}  {took}".rstrip())
        elif kind == "step-error":
            self._print_failure(process, event.get("error"), event.get("log_tail"))
        else:
            self._print(f"- {process}  cancelled")

    def _report_from_status(self) -> None:
        """Show finished steps whose events never came (no stream, or they were missed)."""
        for process, task in (self._status.get("tasks") or {}).items():
            state, name = task.get("state"), f"{process}#{task.get('run')}"
            if state in ("queued", "running") or name in self._reported:
                continue
            self._reported.add(name)
            if state == "complete":
                started, ended = task.get("started"), task.get("ended")
                took = format_duration(ended - started) if started and ended else ""
                self._print(f"{self.ok} {process}  {took}".rstrip())
            elif state == "error":
                self._print_failure(process, task.get("error"), task.get("log_tail"))
            elif state == "cancelled":
                self._print(f"- {process}  cancelled")

    def _print_failure(self, process: str, error: Any, log_tail: Any) -> None:
        self._print(f"{self.failed} {process}  {error or 'failed'}")
        for line in list(log_tail or [])[-LOG_TAIL_LINES:]:
            self._print(f"    | {str(line).rstrip()}")

    def _show_counts(self) -> None:
        counts = counts_of(self._status)
        key = (self._status.get("state"), counts["complete"], counts["running"], counts["failed"])
        if not self.tty and key != self._last_counts:
            self._print(self.status_line())
        self._last_counts = key

    def _print(self, text: str) -> None:
        self._write(("\r\x1b[K" if self.tty else "") + text + "\n")

    def _write(self, text: str) -> None:
        if self.out is not None:
            self.out.write(text)
            self.out.flush()


def counts_of(status: dict[str, Any]) -> dict[str, int]:
    """The ``counts`` of a status, completed from its tasks and data if the server omits any."""
    counts = {k: int(v) for k, v in (status.get("counts") or {}).items() if isinstance(v, int)}
    tasks = [t.get("state") for t in (status.get("tasks") or {}).values()]
    data = list((status.get("data") or {}).values())
    processes = (status.get("flow") or {}).get("process") or {}
    counts.setdefault("processes", len(processes) or len(tasks))
    for name in ("complete", "running", "queued"):
        counts.setdefault(name, tasks.count(name))
    counts.setdefault("failed", tasks.count("error"))
    counts.setdefault("data", len(data))
    counts.setdefault("data_complete", data.count("complete"))
    return counts


def format_duration(seconds: float) -> str:
    """``0.05s``, ``3.2s``, ``2m05s``, ``1h02m``."""
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def render_status(reply: dict[str, Any]) -> str:
    """A readable summary of a ``status`` reply: state, counts, failures, waiting keys."""
    root, status = reply.get("root", "?"), reply.get("status") or {}
    counts = counts_of(status)
    ok, failed = _symbols(sys.stdout)
    lines = [
        f"{root}: {status.get('state', 'unknown')}",
        f"  processes  {counts['processes']} total, {counts['complete']} complete, "
        f"{counts['running']} running, {counts['queued']} queued, {counts['failed']} failed",
        f"  data       {counts['data']} keys, {counts['data_complete']} complete",
    ]
    tasks = status.get("tasks") or {}
    failures = sorted(p for p, t in tasks.items() if t.get("state") == "error")
    if failures:
        lines.append(f"failed ({len(failures)}):")
        for process in failures[:LISTED_KEYS]:
            task = tasks[process]
            lines.append(f"  {failed} {process}  {task.get('error') or 'failed'}")
            lines += [f"      | {line}" for line in list(task.get("log_tail") or [])[-5:]]
        lines += _more(len(failures))
    running = sorted(p for p, t in tasks.items() if t.get("state") == "running")
    if running:
        lines.append(f"running ({len(running)}): " + ", ".join(running[:LISTED_KEYS]))
        lines += _more(len(running))
    waiting = list(status.get("waiting") or [])
    if waiting:
        lines.append(f"waiting for ({len(waiting)}):")
        lines += [f"  {key}" for key in waiting[:LISTED_KEYS]] + _more(len(waiting))
    if status.get("state") == "complete":
        lines.append(f"  {ok} every key is complete")
    return "\n".join(lines)


def render_summary(
    root: str, status: dict[str, Any], elapsed: float, results: Path | None, host: str
) -> str:
    """The end of ``gaia run``: outcome, failures, and the produced keys under ``results``."""
    counts, state = counts_of(status), status.get("state")
    lines = [
        f"{root} {state} in {format_duration(elapsed)}: {counts['complete']}/"
        f"{counts['processes']} processes, {counts['data_complete']}/{counts['data']} data keys"
    ]
    failed = sorted(p for p, t in (status.get("tasks") or {}).items() if t.get("state") == "error")
    if failed:
        lines.append(f"failed: {listing(failed)}; see `gaia logs {root} {failed[0]}`")
    if state == "incomplete":
        lines.append(f"waiting for keys that nothing produces: {listing(status.get('waiting'))}")
    if state == "halted":
        lines.append(f"halted; resume with `gaia trigger {root}`")
    data, nodes = status.get("data") or {}, (status.get("flow") or {}).get("data") or {}
    produced = sorted(  # not the private intermediates of composites (".private/...")
        k
        for k, n in nodes.items()
        if n.get("from") and data.get(k) == "complete" and not k.startswith(".")
    )
    where = f"{results}/" if results else f"the data store of the server at {host}"
    lines.append(f"results in {where}" + (":" if produced else " (none produced)"))
    for key in produced[:LISTED_KEYS]:
        path = results / key if results else None
        lines.append(
            f"  {key}" + (f"  {path.stat().st_size} bytes" if path and path.is_file() else "")
        )
    return "\n".join(lines + _more(len(produced)))


def listing(keys: Any) -> str:
    """``a, b, c`` of at most LISTED_KEYS keys, then ``... and N more``."""
    keys = list(keys or [])
    more = f" ... and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return ", ".join(map(str, keys[:LISTED_KEYS])) + more


def _more(total: int) -> list[str]:
    return [f"  ... and {total - LISTED_KEYS} more"] if total > LISTED_KEYS else []


def _symbols(out: TextIO | None) -> tuple[str, str]:
    """✓ and ✗ where the output can encode them, else + and x."""
    try:
        "✓✗".encode(getattr(out, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return "+", "x"
    return "✓", "✗"
