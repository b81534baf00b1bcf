"""How the CLI shows namespaces, through ``rich``: live progress while one runs, and the
summaries of ``gaia status``, ``gaia run`` and friends.

:class:`Progress` follows one namespace: a background thread reads its events
(``GET /events?root=NS``) and the caller's thread polls ``status`` about every half
second. It prints a permanent line per finished step (``✓ md5-rabbit  0.05s``, or
``✗ cat-rabbit  exit code 1`` and the tail of its log); on a terminal, a live line under
them keeps the counts, a bar and the time::

    ⠋ triangle  running  7/10 processes  2 running  0 failed ━━━━━━━━━━━━━━╺━━━━━ 0:00:03

Elsewhere (CI logs, pipes) rich writes no colours and no control codes: the permanent
lines, and a counts line whenever the counts change. The ``*_view`` functions build rich
renderables; ``render_*`` give the same as plain text.
"""

from __future__ import annotations

import io
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as LiveBar
from rich.table import Table
from rich.text import Text

from gaia.client import Event, EventSource, Gaia
from gaia.errors import GaiaError

__all__ = [
    "FINAL_STATES",
    "Progress",
    "commands_view",
    "console_for",
    "counts_of",
    "format_duration",
    "listing",
    "namespaces_view",
    "plain",
    "render_status",
    "render_summary",
    "show",
    "status_view",
    "summary_view",
]

logger = logging.getLogger(__name__)

FINAL_STATES = frozenset({"complete", "incomplete", "error", "halted"})
LOG_TAIL_LINES = 10
LISTED_KEYS = 20
STATE_STYLES = {
    "complete": "green",
    "running": "blue",
    "queued": "cyan",
    "error": "red",
    "incomplete": "yellow",
    "halted": "yellow",
    "cancelled": "yellow",
    "initialized": "dim",
}


def console_for(out: TextIO | None = None, tty: bool | None = None) -> Console:
    """A console on ``out`` (default stdout): colours and live lines on a terminal; plain,
    unwrapped lines elsewhere (``tty`` overrides the guess)."""
    out = out if out is not None else sys.stdout
    terminal = out.isatty() if tty is None else tty
    return Console(
        file=out,
        force_terminal=terminal,
        no_color=not terminal,
        highlight=False,
        emoji=False,
        soft_wrap=not terminal,  # a log line stays one line in CI logs
    )


def show(renderable: RenderableType, console: Console | None = None) -> None:
    """Print ``renderable``: styled on a terminal, else as plain lines without the
    trailing blanks that tables pad with."""
    console = console or console_for()
    if console.is_terminal:
        console.print(renderable)
    else:
        console.file.write(plain(renderable, console.width) + "\n")


def plain(renderable: RenderableType, width: int = 120) -> str:
    """What ``renderable`` prints on a console that is not a terminal."""
    out = io.StringIO()
    console = Console(
        file=out, width=width, color_system=None, highlight=False, emoji=False, soft_wrap=True
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())


def styled_state(state: object) -> Text:
    text = str(state or "unknown")
    return Text(text, style=STATE_STYLES.get(text, ""))


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
        self.console = console_for(out, self.tty) if out is not None else None
        self.poll_interval = poll_interval
        self.ok, self.failed = _symbols(out)
        self._events: queue.Queue[Event] = queue.Queue()
        self._source: EventSource | None = None
        self._reported: set[str] = set()  # "process#run" of steps already shown
        self._status: dict[str, Any] = {}
        self._last_counts: tuple[Any, ...] = ()
        self._started = time.monotonic()
        self._bar: LiveBar | None = None
        self._task: Any = None
        self._streaming = False  # events are coming: the status's summary is enough

    def start(self) -> None:
        """Subscribe to events and note which steps had finished before this run."""
        self._started = time.monotonic()
        self._status = self.client.status(self.root).get("status") or {}
        for process, task in (self._status.get("tasks") or {}).items():
            if task.get("state") not in ("queued", "running"):
                self._reported.add(f"{process}#{task.get('run')}")
        if self.console is None:
            return
        if self.tty:
            self._bar = LiveBar(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,  # the summary replaces it
            )
            self._task = self._bar.add_task(self.status_line(), total=None)
            self._bar.start()
        try:
            self._source = self.client.events(self.root)
        except GaiaError as exc:  # still works, from status alone
            logger.info("no event stream for %s (%s); following its status only", self.root, exc)
            return
        threading.Thread(target=self._read_events, name="gaia-progress", daemon=True).start()

    def wait(self) -> dict[str, Any]:
        """Block until the namespace's state is final; return its last ``status``.

        Steps are shown from the event stream; while it flows, the counts come from the
        status's summary (state and counts: nothing for the server to build), and the
        whole status only once, at the end. Without a stream, the whole status."""
        next_poll = 0.0
        try:
            while True:
                self._drain(timeout=0.1)
                if time.monotonic() >= next_poll:
                    asked = time.monotonic()
                    summary = self._streaming
                    reply = self.client.status(self.root, detail=not summary)
                    self._status = reply.get("status") or {}
                    if summary and self._status.get("state") in FINAL_STATES:
                        self._status = self.client.status(self.root).get("status") or {}
                    # Poll a huge namespace no more than a fifth of the time.
                    next_poll = time.monotonic() + max(
                        self.poll_interval, 4 * (time.monotonic() - asked)
                    )
                    final = self._status.get("state") in FINAL_STATES
                    if final:
                        self._drain(timeout=0.2)  # the last events, in their order
                    self._report_from_status()
                    self._show_counts()
                    if final:
                        return self._status
        finally:
            self.close()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def status_line(self) -> str:
        counts = counts_of(self._status)
        return (
            f"{self.root}  {self._status.get('state', 'starting')}  {counts['complete']}/"
            f"{counts['processes']} processes  {counts['running']} running  "
            f"{counts['failed']} failed"
        )

    def _read_events(self) -> None:
        source = self._source
        self._streaming = True
        try:
            for event in source or ():
                self._events.put(event)
        except GaiaError as exc:
            logger.info("event stream of %s ended: %s", self.root, exc)
        finally:  # the whole status again: it shows what no event will tell any more
            self._streaming = False

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
            self._done(process, took)
        elif kind == "step-error":
            self._print_failure(process, event.get("error"), event.get("log_tail"))
        else:
            self._print(Text.assemble(("- ", "yellow"), process, ("  cancelled", "yellow")))

    def _report_from_status(self) -> None:
        """Show finished steps whose events never came (no stream, or they were missed)."""
        for process, task in (self._status.get("tasks") or {}).items():
            state, name = task.get("state"), f"{process}#{task.get('run')}"
            if state in ("queued", "running") or name in self._reported:
                continue
            self._reported.add(name)
            if state == "complete":
                started, ended = task.get("started"), task.get("ended")
                self._done(process, format_duration(ended - started) if started and ended else "")
            elif state == "error":
                self._print_failure(process, task.get("error"), task.get("log_tail"))
            elif state == "cancelled":
                self._print(Text.assemble(("- ", "yellow"), process, ("  cancelled", "yellow")))

    def _done(self, process: str, took: str) -> None:
        line = Text.assemble((f"{self.ok} ", "green"), process)
        if took:
            line.append(f"  {took}", style="dim")
        self._print(line)

    def _print_failure(self, process: str, error: Any, log_tail: Any) -> None:
        self._print(
            Text.assemble((f"{self.failed} ", "red"), process, (f"  {error or 'failed'}", "red"))
        )
        for line in list(log_tail or [])[-LOG_TAIL_LINES:]:
            self._print(Text(f"    | {str(line).rstrip()}", style="dim"))

    def _show_counts(self) -> None:
        counts = counts_of(self._status)
        key = (self._status.get("state"), counts["complete"], counts["running"], counts["failed"])
        if self._bar is not None:
            self._bar.update(
                self._task,
                description=self.status_line(),
                completed=counts["complete"],
                total=counts["processes"] or None,
                refresh=True,
            )
        elif key != self._last_counts:
            self._print(Text(self.status_line()))
        self._last_counts = key

    def _print(self, text: Text) -> None:
        if self.console is not None:
            self.console.print(text)


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


def status_view(reply: dict[str, Any]) -> RenderableType:
    """A ``status`` reply as people read it: state, counts, failures, waiting keys."""
    root, status = reply.get("root", "?"), reply.get("status") or {}
    counts = counts_of(status)
    ok, failed = _symbols(sys.stdout)
    parts: list[RenderableType] = [
        Text.assemble(f"{root}: ", styled_state(status.get("state"))),
        Text(
            f"  processes  {counts['processes']} total, {counts['complete']} complete, "
            f"{counts['running']} running, {counts['queued']} queued, {counts['failed']} failed"
        ),
        Text(f"  data       {counts['data']} keys, {counts['data_complete']} complete"),
    ]
    tasks = status.get("tasks") or {}
    failures = sorted(p for p, t in tasks.items() if t.get("state") == "error")
    if failures:
        parts.append(Text(f"failed ({len(failures)}):", style="red"))
        for process in failures[:LISTED_KEYS]:
            task = tasks[process]
            parts.append(
                Text.assemble(
                    (f"  {failed} ", "red"), process, f"  {task.get('error') or 'failed'}"
                )
            )
            parts += [
                Text(f"      | {line}", style="dim")
                for line in list(task.get("log_tail") or [])[-5:]
            ]
        parts += _more(len(failures))
    running = sorted(p for p, t in tasks.items() if t.get("state") == "running")
    if running:
        parts.append(Text(f"running ({len(running)}): " + ", ".join(running[:LISTED_KEYS])))
        parts += _more(len(running))
    waiting = list(status.get("waiting") or [])
    if waiting:
        parts.append(Text(f"waiting for ({len(waiting)}):", style="yellow"))
        parts += [Text(f"  {key}") for key in waiting[:LISTED_KEYS]] + _more(len(waiting))
    if status.get("state") == "complete":
        parts.append(Text(f"  {ok} every key is complete", style="green"))
    return Group(*parts)


def render_status(reply: dict[str, Any]) -> str:
    return plain(status_view(reply))


def summary_view(
    root: str, status: dict[str, Any], elapsed: float, results: Path | None, host: str
) -> RenderableType:
    """The end of ``gaia run``: outcome, failures, and the produced keys under ``results``."""
    counts, state = counts_of(status), status.get("state")
    parts: list[RenderableType] = [
        Text.assemble(
            f"{root} ",
            styled_state(state),
            f" in {format_duration(elapsed)}: {counts['complete']}/{counts['processes']} "
            f"processes, {counts['data_complete']}/{counts['data']} data keys",
        )
    ]
    failed = sorted(p for p, t in (status.get("tasks") or {}).items() if t.get("state") == "error")
    if failed:
        parts.append(Text(f"failed: {listing(failed)}; see `gaia logs {root} {failed[0]}`", "red"))
    if state == "incomplete":
        parts.append(
            Text(f"waiting for keys that nothing produces: {listing(status.get('waiting'))}")
        )
    if state == "halted":
        parts.append(Text(f"halted; resume with `gaia trigger {root}`"))
    data, nodes = status.get("data") or {}, (status.get("flow") or {}).get("data") or {}
    produced = sorted(  # not the private intermediates of composites (".private/...")
        k
        for k, n in nodes.items()
        if n.get("from") and data.get(k) == "complete" and not k.startswith(".")
    )
    where = f"{results}/" if results else f"the data store of the server at {host}"
    parts.append(Text(f"results in {where}" + (":" if produced else " (none produced)")))
    for key in produced[:LISTED_KEYS]:
        path = results / key if results else None
        line = Text(f"  {key}")
        if path and path.is_file():
            line.append(f"  {path.stat().st_size} bytes", style="dim")
        parts.append(line)
    return Group(*parts, *_more(len(produced)))


def render_summary(
    root: str, status: dict[str, Any], elapsed: float, results: Path | None, host: str
) -> str:
    return plain(summary_view(root, status, elapsed, results, host))


def namespaces_view(namespaces: Iterable[dict[str, Any]]) -> RenderableType:
    """The ``/overview`` reply's namespaces as a table."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("namespace", "state", "processes", "running", "queued", "failed", "data"):
        table.add_column(column, justify="left" if column in ("namespace", "state") else "right")
    for space in namespaces:
        c = space.get("counts") or {}
        table.add_row(
            str(space.get("root")),
            styled_state(space.get("state")),
            f"{c.get('complete', 0):,}/{c.get('processes', 0):,}",
            f"{c.get('running', 0):,}",
            f"{c.get('queued', 0):,}",
            Text(f"{c.get('failed', 0):,}", style="red" if c.get("failed") else ""),
            f"{c.get('data_complete', 0):,}/{c.get('data', 0):,}",
        )
    return table


def commands_view(commands: Iterable[dict[str, Any]]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("command")
    table.add_column("image")
    table.add_column("command line")
    for command in commands:
        if command.get("steps"):
            steps = ", ".join(str(s.get("key")) for s in command["steps"])
            table.add_row(str(command.get("key")), "", Text(f"composite: {steps}", style="dim"))
        else:
            line = " ".join(map(str, command.get("command") or []))
            table.add_row(str(command.get("key")), str(command.get("image") or ""), line)
    return table


def listing(keys: Any) -> str:
    """``a, b, c`` of at most LISTED_KEYS keys, then ``... and N more``."""
    keys = list(keys or [])
    more = f" ... and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return ", ".join(map(str, keys[:LISTED_KEYS])) + more


def _more(total: int) -> list[Text]:
    return [Text(f"  ... and {total - LISTED_KEYS} more")] if total > LISTED_KEYS else []


def _symbols(out: TextIO | None) -> tuple[str, str]:
    """✓ and ✗ where the output can encode them, else + and x."""
    try:
        "✓✗".encode(getattr(out, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return "+", "x"
    return "✓", "✗"
