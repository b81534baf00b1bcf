"""Real processes in tests: services started and stopped as a user would, and processes
found by a marker on their command line.

Processes are found by a unique `sleep` duration, which also works inside bwrap's own pid
namespace, where the pids the command sees are not the host's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from waiting import eventually


def start_service(
    command: Sequence[str],
    log: Path,
    health_url: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output appended to ``log``; return once ``health_url``
    answers. Raises with the log's tail if it exits or stays silent."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env else None
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{command[-1]!r} exited:\n{_tail(log)}")
        try:
            urllib.request.urlopen(health_url, timeout=1).read()
        except OSError:
            return False
        return True

    try:
        eventually(answers, health_url, timeout)
    except AssertionError:
        process.kill()
        process.wait()
        raise RuntimeError(f"{health_url} did not answer in {timeout:g} s:\n{_tail(log)}") from None
    return process


def stop_service(
    process: subprocess.Popen[bytes], log: Path, sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Send ``sig`` and wait for the exit; a service that ignores it is killed (none is
    left behind) and the test fails with its log."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(
            f"the service ignored {signal.Signals(sig).name} for {timeout:g} s; "
            f"its log:\n{_tail(log)}"
        ) from None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def sleep_marker() -> str:
    """A `sleep` duration no other process uses (about five minutes)."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def sleepers(marker: str) -> list[int]:
    """Running `sleep <marker>` processes."""
    return [pid for pid, argv in _command_lines() if argv[:2] == [b"sleep", marker.encode()]]


def processes_naming(marker: str) -> list[str]:
    """Running processes with ``marker`` anywhere on their command line (bwrap, sh, sleep)."""
    return [
        b" ".join(argv).decode(errors="replace")
        for _, argv in _command_lines()
        if any(marker.encode() in arg for arg in argv)
    ]


def _command_lines() -> list[tuple[int, list[bytes]]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if alive(int(entry)):
            found.append((int(entry), argv))
    return found


def alive(pid: int) -> bool:
    """True for a running process; a zombie has exited and counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
