"""A command's ``resources``, enforced on this machine with resource limits (rlimits).

cgroups would be the exact tool, but a server rarely may use them (cgroup v2 needs a
delegated subtree; this project's test machines have a hybrid layout whose v2 half has no
controllers), so every limit here is an rlimit that ``prlimit`` sets just before the
command starts, inside the sandbox:

``processes``
    ``RLIMIT_NPROC``: processes and threads at once. The kernel counts it per user *in
    each user namespace* (Linux 5.14+), and each task has a user namespace of its own, so
    tasks do not share their counts. It never binds a process whose user is root on the
    host, which is one reason why a root server runs its tasks as another user.
``memory``
    ``RLIMIT_DATA`` of each process: the memory it can write to (heap and private mappings;
    reserved but unused address space does not count, so runtimes that reserve much, like
    the JVM and Go, still start). A task's private ``/tmp`` is capped at the same size.
``cpu``
    Kubernetes reads it as a share of a core. Without cgroups it cannot be a rate here;
    with a ``timeout``, it becomes the CPU time a process may use in all: ``cpu *
    timeout`` seconds (``RLIMIT_CPU``), what the task could have used on the cluster
    before its deadline. Without a timeout it is not enforced locally.

A command that runs into a limit usually just fails (a fork or an allocation fails, and
the program says so in its own words): :func:`explain` reads the end of its log and the
way it ended, and names the limit it most likely hit.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Sequence

from gaia.engine.resources import Resources

__all__ = ["explain", "prlimit_args"]

_FORK_FAILED = re.compile(
    r"cannot fork|can't fork|fork: retry|fork failed|resource temporarily unavailable"
    r"|pthread_create|newosproc|unable to create (?:new )?native thread",
    re.IGNORECASE,
)
_OUT_OF_MEMORY = re.compile(
    r"cannot allocate memory|memoryerror|out of memory|bad_alloc|memory exhausted"
    r"|outofmemoryerror|memory allocation of \d+ bytes failed|failed to allocate|enomem",
    re.IGNORECASE,
)


def cpu_seconds(resources: Resources, timeout: float | None) -> int | None:
    """The CPU time a process may use: ``cpu * timeout``, at least a second."""
    if resources.cpu is None or timeout is None:
        return None
    return max(1, math.ceil(resources.cpu * timeout / 1000))


def prlimit_args(
    prlimit: str, resources: Resources, timeout: float | None, extra_processes: int
) -> list[str]:
    """The ``prlimit ... --`` prefix that sets the limits. ``extra_processes`` counts the
    sandbox's own processes in the task's user namespace (bubblewrap's init)."""
    args = [prlimit]
    if resources.processes is not None:
        args.append(f"--nproc={resources.processes + extra_processes}")
    if resources.memory is not None:
        args.append(f"--data={resources.memory}")
    if (seconds := cpu_seconds(resources, timeout)) is not None:
        # SIGXCPU at the soft limit, SIGKILL a second later for a process that ignores it
        args.append(f"--cpu={seconds}:{seconds + 1}")
    args.append("--core=0")  # a crash must not write a core file the size of its memory
    return [*args, "--"]


def explain(
    resources: Resources | None,
    timeout: float | None,
    exit_code: int | None,
    tail: Sequence[str],
) -> str | None:
    """Which limit a failed task most likely hit, in words; None when nothing points to one.

    ``exit_code`` is negative for a death by signal; a shell reports a child's as 128+N.
    """
    if not resources:
        return None
    died_by = _signal(exit_code)
    text = "\n".join(tail)
    seconds = cpu_seconds(resources, timeout)
    if seconds is not None and (
        died_by == signal.SIGXCPU
        or (died_by == signal.SIGKILL and "cpu time limit" in text.lower())
    ):
        return (
            f"it used up its CPU time: {seconds}s per process "
            f"(resources.cpu {_cpu(resources)} times the timeout, {timeout:g}s)"
        )
    if resources.processes is not None and (found := _FORK_FAILED.search(text)):
        return (
            f"it most likely hit its limit of {resources.processes} processes "
            f"(resources.processes): its log says {_line_of(text, found)!r}"
        )
    if resources.memory is not None:
        found = _OUT_OF_MEMORY.search(text)
        if found is not None:
            evidence = f"its log says {_line_of(text, found)!r}"
        elif died_by in (signal.SIGSEGV, signal.SIGABRT):
            evidence = f"it died of {died_by.name}"
        else:
            return None
        return (
            f"it most likely ran out of memory: {_memory(resources.memory)} per process "
            f"(resources.memory): {evidence}"
        )
    return None


def _signal(exit_code: int | None) -> signal.Signals | None:
    """The signal that ended the command: a negative code, or a shell's 128 + N."""
    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128 if 128 < exit_code < 193 else 0
    try:
        return signal.Signals(number) if number else None
    except ValueError:
        return None


def _line_of(text: str, found: re.Match[str]) -> str:
    start = text.rfind("\n", 0, found.start()) + 1
    end = text.find("\n", found.end())
    line = text[start : end if end >= 0 else len(text)].strip()
    return line if len(line) <= 200 else line[:197] + "..."


def _cpu(resources: Resources) -> str:
    return str(resources.to_dict()["cpu"])


def _memory(size: int) -> str:
    return str(Resources(memory=size).to_dict()["memory"])
