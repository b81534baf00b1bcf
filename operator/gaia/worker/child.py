"""A command's process, followed from the event loop without a thread per child.

asyncio's own subprocesses fork on the event loop and watch each child with a thread of
its own, then poll for its exit; for thousands of short tasks that costs more than the
tasks and delays each end by milliseconds. Here the start runs in a small pool of
threads (``subprocess.Popen``: vfork and exec, off the loop), the end is a pidfd the
loop watches (woken the instant the process exits), and the output pipes are read by
loop readers: no transport, no thread, no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["Child", "group_running", "signal_group"]

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
# A killed start's sandbox may outlive its leader for a while: a process blocked in the
# kernel (creating its network namespace, say, while others are torn down) dies only when
# that call returns. The start is over once its group is, waited for at most this long.
GROUP_GONE_SECONDS = 10.0
# Starting a process blocks for as long as the kernel copies its page tables (vfork
# avoids most of it): a few threads keep starts from queueing behind one another.
_SPAWNER = ThreadPoolExecutor(4, thread_name_prefix="gaia-spawn")

Output = Callable[[str, bytes], None]  # (stream, chunk); an empty chunk: that stream ended
Prepare = Callable[[], tuple[Sequence[str], Path, Mapping[str, str] | None]]  # argv, cwd, env


class Child:
    """A started process (the leader of a new process group). ``exited`` resolves to its
    exit code (negative: killed by that signal); ``drained`` once both pipes ended."""

    def __init__(self, popen: subprocess.Popen[bytes], on_output: Output) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self.drained: asyncio.Future[None] = self.loop.create_future()
        self._on_output = on_output
        self._open: dict[int, str] = {}
        for pipe, stream in ((popen.stdout, "stdout"), (popen.stderr, "stderr")):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._open[fd] = stream
            self.loop.add_reader(fd, self._read, fd)
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # an old kernel: a thread waits instead
            self.loop.run_in_executor(None, self._wait_in_thread)
        else:
            self.loop.add_reader(self._pidfd, self._reap)
            self._reap()  # it may have exited already

    @classmethod
    async def start(cls, prepare: Prepare, on_output: Output) -> Child:
        """Call ``prepare`` and start the ``(argv, cwd, env)`` it returns in a new session
        (its own process group, so the whole tree can be signalled), both on a thread of
        the spawner: laying out a task's files waits on the disk, and on a disk busy with
        other tasks' fsyncs making a file can take a millisecond. What ``prepare`` raises
        is raised here. A start cancelled half-way is finished and its group killed: a
        sandbox that was still setting up would otherwise hold on."""

        def popen() -> subprocess.Popen[bytes]:
            argv, cwd, env = prepare()
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )

        started = asyncio.get_running_loop().run_in_executor(_SPAWNER, popen)
        try:
            return cls(await asyncio.shield(started), on_output)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # what failed to start left nothing to kill
                process = await started
                signal_group(process.pid, signal.SIGKILL)
                await asyncio.get_running_loop().run_in_executor(None, process.wait)
                for pipe in (process.stdout, process.stderr):
                    if pipe is not None:
                        pipe.close()
                await _group_gone(process.pid)
            raise

    def _read(self, fd: int) -> None:
        stream = self._open[fd]
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.loop.remove_reader(fd)
            del self._open[fd]
            if not self._open and not self.drained.done():
                self.drained.set_result(None)
        self._on_output(stream, chunk)

    def _reap(self) -> None:
        code = self.popen.poll()
        if code is None or self.exited.done():
            return
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.exited.set_result(code)

    def _wait_in_thread(self) -> None:
        code = self.popen.wait()
        self.loop.call_soon_threadsafe(self._exited_from_thread, code)

    def _exited_from_thread(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    def close(self) -> None:
        """Stop reading (whatever still holds the pipes gets EPIPE) and free the fds."""
        for fd in list(self._open):
            self.loop.remove_reader(fd)
        self._open.clear()
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if not self.drained.done():
            self.drained.set_result(None)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` (0: none) to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _group_gone(pgid: int) -> None:
    """Wait until no process of the group runs, killing again whatever still does (a
    process forked while the first SIGKILL went out is in the group too)."""
    deadline = time.monotonic() + GROUP_GONE_SECONDS
    while group_running(pgid):
        if time.monotonic() > deadline:
            logger.warning(
                "processes of group %d outlived SIGKILL for %gs", pgid, GROUP_GONE_SECONDS
            )
            return
        signal_group(pgid, signal.SIGKILL)
        await asyncio.sleep(0.02)


def group_running(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies, whose parent died with the
    group and which wait for init to reap them, do not count."""
    if not signal_group(pgid, 0):
        return False
    try:
        stats = [entry.path + "/stat" for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:  # no /proc: trust the signal
        return True
    for stat in stats:
        try:
            # Fields after the command name (which may hold spaces): state ppid pgrp ...
            state, _, group = Path(stat).read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # exited meanwhile
        if int(group) == pgid and state != "Z":
            return True
    return False
