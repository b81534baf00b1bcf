"""Run one task: one execution of one process, as a process tree on this machine.

:func:`run_task` starts the command in its own session (so that its whole process group
can be signalled) and sealed by its sandbox (:mod:`gaia.worker.sandbox`), reads standard
output and standard error concurrently and line by line, and on success hands back where
each declared output was staged, checked (no links, see :mod:`gaia.worker.outputs`) and
fsynced. Everything the task writes stays under its private ``workdir``, except what it
writes into ``TaskSpec.binds`` (host directories bound read-write, like a pod's writable
volumes)::

    workdir/log     every line the command printed, stdout and stderr, in arrival order
                    (or the ``log`` path given)
    workdir/fs/...  the staging root: container path /out/out is workdir/fs/out/out
    workdir/tmp     the command's scratch directory (host cwd and HOME without a sandbox)

A ``workdir`` may be reused from task to task (one per worker): what a task left there
is cleared before the next one runs, and its folders are kept where the next one needs
them too, since making and removing folders is what costs most on some disks.

A failed, timed-out or cancelled task stages nothing, and leaves no process behind:
SIGTERM goes to the whole process group, then SIGKILL after :data:`KILL_GRACE` seconds.
Under bubblewrap the command's pid namespace dies with bubblewrap, which also takes
daemons that left the process group; without a sandbox such a daemon can escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from gaia.engine.resources import Resources
from gaia.errors import TaskFailed
from gaia.worker import limits, staging
from gaia.worker import sandbox as sandboxes
from gaia.worker.child import Child, group_running, signal_group
from gaia.worker.outputs import UnsafeOutput

__all__ = ["KILL_GRACE", "TaskResult", "TaskSpec", "run_task"]

logger = logging.getLogger(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DRAIN_TIMEOUT = 5.0  # how long output pipes may stay open after the command exited
LOG_TAIL_LINES = 50
_CHUNK = 64 * 1024
_MAX_LINE = 1024 * 1024  # a longer line is cut, so that memory stays bounded

LineCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class TaskSpec:
    """What to run: the command of one process, with its files bound to host paths."""

    root: str  # namespace
    process: str  # process key, e.g. "md5-rabbit" or "both:cat-ab"
    run: int  # run number of this process (1, 2, ...)
    image: str | None  # container image; there is no container on the local machine
    command: tuple[str, ...]  # {{VARS}} already substituted
    inputs: Mapping[str, Path]  # container path -> host path ("/" ending = directory)
    outputs: tuple[str, ...]  # container paths the task must produce ("/" ending = directory)
    stdout: str | None = None  # container path that receives standard output
    timeout: float | None = None  # seconds; None = no limit
    # container path -> existing host directory, bound read-write at that exact path (as a
    # pod's writable volume mount); what the command writes there goes straight to the host
    binds: Mapping[str, Path] = field(default_factory=dict)
    # The command's whole environment with PATH, HOME and LANG (nothing is inherited).
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False  # whether the sandbox leaves it the host's network
    resources: Resources | None = None  # limits, enforced as gaia.worker.limits says
    # The user it runs as in the sandbox. None: nobody (65534) when the runner is root,
    # else the runner's own. With a root runner, 0 is root in a user namespace of its own
    # without capabilities (a container's root), another uid that user on the host too.
    uid: int | None = None

    def describe(self) -> str:
        return f"process {self.process!r} (run {self.run}) in namespace {self.root!r}"


@dataclass(frozen=True)
class TaskResult:
    """How a task ended. ``staged`` is filled only when ``ok``."""

    ok: bool
    exit_code: int | None  # None when killed or timed out before an exit code
    staged: Mapping[str, Path]  # container output path -> staged host path
    error: str | None  # a sentence naming the process, when not ok
    log_tail: tuple[str, ...]  # the last lines of combined stdout/stderr


@dataclass
class _Sink:
    """Where the lines of both streams go: the log file, the tail and the callback."""

    on_line: LineCallback | None
    log: TextIO | None = None  # opened before the command starts
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    copy: BinaryIO | None = None  # the `stdout` output, when the command has one
    copy_error: str | None = None  # why writing the stdout file failed
    partial: dict[str, bytearray] = field(default_factory=dict)  # a line not ended yet

    def output(self, stream: str, chunk: bytes) -> None:
        """A chunk of a stream (no line-length limit: a longer line is cut), split into
        lines as they arrive; an empty chunk ends the stream."""
        pending = self.partial.setdefault(stream, bytearray())
        if not chunk:
            if pending:
                self.line(stream, pending)
            del self.partial[stream]
            return
        if stream == "stdout" and self.copy is not None and self.copy_error is None:
            try:
                self.copy.write(chunk)
            except OSError as exc:
                # Keep draining the pipe: a blocked writer would never exit.
                self.copy_error = f"could not write its standard output: {exc}"
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            self.line(stream, pending[start:end])
            start = end + 1
        del pending[:start]
        if len(pending) > _MAX_LINE:
            self.line(stream, pending)
            pending.clear()

    def line(self, stream: str, raw: bytes | bytearray) -> None:
        text = raw.decode("utf-8", errors="replace")
        assert self.log is not None, "no output before the command starts"
        self.log.write(text + "\n")
        self.tail.append(text)
        if self.on_line is not None:
            try:
                self.on_line(stream, text)
            except Exception:
                # A broken listener must not wedge the task by stopping the pipe reader.
                logger.exception("on_line callback failed; no more lines go to it")
                self.on_line = None


async def run_task(
    spec: TaskSpec,
    workdir: Path,
    *,
    on_line: LineCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    on_exit: Callable[[], None] | None = None,
    sandbox: str = "auto",
    hide: Sequence[Path] = (),
    log: Path | None = None,
) -> TaskResult:
    """Run ``spec`` in ``workdir`` and report how it ended.

    Failures of the task (it cannot start, exits non-zero, misses a declared output, times
    out) are returned as ``ok=False``. Cancelling the asyncio task that awaits this kills
    the command's whole process tree, then lets CancelledError propagate. ``hide`` names
    host directories (the data directory) that the sandbox covers should they lie inside
    a system directory it shows. ``on_exit`` is called once the command has exited and
    its output is read, before its outputs are checked and fsynced.
    """
    workdir = workdir.absolute()
    what = spec.describe()
    box = await sandboxes.resolve(sandbox)
    if box.problem is not None:
        return _failed(what, f"no sandbox to run it in: {box.problem} ({_NONE_HINT})", None, ())
    if spec.resources and box.limits_problem is not None:
        reason = f"its resources cannot be enforced here: {box.limits_problem}"
        return _failed(what, reason, None, ())
    if spec.image:
        logger.debug("%s: image %s ignored, tasks run on this machine", what, spec.image)
    with contextlib.ExitStack() as files:
        sink = _Sink(on_line)
        try:
            child = await _start(spec, box, workdir, files, hide, sink, log or workdir / "log")
        except TaskFailed as exc:
            return _failed(what, str(exc), None, ())
        logger.debug("%s: started pid %d (%s sandbox)", what, child.pid, box.mode)
        code = await _supervise(child, sink, spec.timeout, what, on_start)
    if on_exit is not None:
        on_exit()
    tail = tuple(sink.tail)
    if code is None:
        return _failed(what, f"timed out after {spec.timeout:g}s", None, tail, spec)
    if code < 0:
        return _failed(what, f"killed by signal {_signal_name(-code)}", code, tail, spec)
    if code != 0:
        return _failed(what, f"exit code {code}", code, tail, spec)
    if sink.copy_error is not None:
        return _failed(what, sink.copy_error, code, tail)
    try:  # fsync blocks: off the event loop
        staged, missing = await asyncio.to_thread(staging.collect, workdir / "fs", spec.outputs)
    except UnsafeOutput as exc:
        return _failed(what, str(exc), code, tail)
    except OSError as exc:
        return _failed(what, f"could not read its outputs: {exc}", code, tail)
    if missing:
        listed = ", ".join(missing)
        many = len(missing) > 1
        subject = f"declared outputs {listed} were" if many else f"declared output {listed} was"
        return _failed(what, f"{subject} not produced", code, tail)
    logger.debug("%s: succeeded, staged %s", what, sorted(staged))
    return TaskResult(ok=True, exit_code=0, staged=staged, error=None, log_tail=tail)


async def _start(
    spec: TaskSpec,
    box: sandboxes.Sandbox,
    workdir: Path,
    files: contextlib.ExitStack,
    hide: Sequence[Path],
    sink: _Sink,
    log: Path,
) -> Child:
    """Lay out the task's files and start its command; TaskFailed says why it cannot."""
    if not spec.command:
        raise TaskFailed("its command line is empty")
    user = sandboxes.task_user(box, spec.uid)
    fs, scratch = workdir / "fs", workdir / "tmp"

    def prepare() -> sandboxes.Launch:  # on the spawner's thread: it waits on the disk
        system = sandboxes.SYSTEM_DIRS if box.mode == "bwrap" else ()
        problem = staging.check(spec.inputs, spec.outputs, spec.stdout, spec.binds, system)
        if problem is None and user is not None:
            problem = staging.unreadable_input(spec.inputs, user)
        if problem is not None:
            raise TaskFailed(problem)
        tops = staging.written_tops(spec.inputs, spec.outputs, spec.stdout, spec.binds)
        written = [*spec.outputs, *([spec.stdout] if spec.stdout else [])]
        task = sandboxes.Task(
            command=spec.command,
            inputs=spec.inputs,
            binds=spec.binds,
            tops=tops if box.mode == "bwrap" else (),
            paths=[*spec.inputs, *written, *spec.binds],
            env=spec.env,
            network=spec.network,
            resources=spec.resources,
            timeout=spec.timeout,
            uid=spec.uid,
            hide=hide,
        )
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            staging.clear(scratch)
            mounted = [*spec.inputs, *spec.binds] if box.mode == "bwrap" else []
            staging.lay_out(fs, spec.outputs, spec.stdout, task.tops, mounted, user)
            launch = sandboxes.launch(box, task, fs, scratch)
            # Line-buffered: `gaia logs` and the dashboard read the log while the task runs.
            sink.log = files.enter_context(log.open("w", encoding="utf-8", buffering=1))
            if spec.stdout is not None:
                # A fresh file, never one found there: on a root server the folder is
                # the task user's, and a link left in it would be followed as root.
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(staging.host_path(fs, spec.stdout), flags, 0o644)
                sink.copy = files.enter_context(os.fdopen(fd, "wb"))
        except OSError as exc:
            raise TaskFailed(f"could not lay out its files in {workdir}: {exc}") from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: running %s", spec.describe(), shlex.join(launch.argv))
        return launch

    try:
        return await Child.start(prepare, sink.output)
    except OSError as exc:
        raise TaskFailed(f"could not start {spec.command[0]!r}: {exc}") from exc


_NONE_HINT = "start the server with --sandbox none to run tasks without isolation, unsafely"


def _failed(
    what: str,
    reason: str,
    code: int | None,
    tail: tuple[str, ...],
    spec: TaskSpec | None = None,
) -> TaskResult:
    """A failed result; with ``spec``, the limit the task most likely hit is named too.
    ``code`` is negative for a death by signal (reported as no exit code)."""
    if spec is not None and (hint := limits.explain(spec.resources, spec.timeout, code, tail)):
        reason = f"{reason}; {hint}"
    error = f"{what} failed: {reason}"
    logger.info("%s", error)
    exit_code = code if code is not None and code >= 0 else None
    return TaskResult(ok=False, exit_code=exit_code, staged={}, error=error, log_tail=tail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


async def _supervise(
    child: Child,
    sink: _Sink,
    timeout: float | None,
    what: str,
    on_start: Callable[[int], None] | None,
) -> int | None:
    """Wait for ``child`` while its output is read; its exit code, None on timeout."""
    try:
        if on_start is not None:
            on_start(child.pid)
        async with asyncio.timeout(timeout):
            return await asyncio.shield(child.exited)
    except TimeoutError:
        logger.info("%s: timed out after %ss, killing pid %d", what, timeout, child.pid)
        await _terminate(child)
        return None
    except asyncio.CancelledError:
        logger.info("%s: cancelled, killing pid %d", what, child.pid)
        await _terminate(child)
        raise
    finally:
        # Children left in the background would hold the pipes open: the task is over.
        signal_group(child.pid, signal.SIGKILL)
        await _drain(child, what)


async def _drain(child: Child, what: str) -> None:
    """Read what is left in the pipes; a process that left the group and holds them open
    is not waited for beyond DRAIN_TIMEOUT."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await asyncio.shield(child.drained)
    except TimeoutError:
        logger.warning("%s: a process that left its group holds its output open", what)
    finally:
        child.close()


async def _terminate(child: Child) -> None:
    """SIGTERM the process group, wait a grace period for it to empty, then SIGKILL it."""
    try:
        signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_GRACE):
                await asyncio.shield(child.exited)
        # Grandchildren may take a moment longer than the leader to act on SIGTERM.
        while group_running(child.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        # Also runs when cleanup itself is cancelled: nothing may outlive the task.
        signal_group(child.pid, signal.SIGKILL)
