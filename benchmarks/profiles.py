"""Where a server's time goes: py-spy attached from outside (nothing inside Gaia changes),
its raw stacks summarised per task.

``with Profiler(pid, path):`` records every thread, idle samples included, so that the
event loop's idle share can be read off: a sample of the loop's thread whose innermost
frame is the selector's ``select`` is the loop waiting for something to do. Other
threads are busy unless they sit in a known blocking call (a wait, a read, waitpid).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness import PY_SPY_VERSION, tool_venv

__all__ = ["RATE", "Profile", "Profiler", "summarise"]

RATE = 200  # samples per second per thread
# Innermost frames (function names) of a thread that waits rather than works.
WAITING = {
    "select",
    "poll",
    "_do_waitpid",  # asyncio's ThreadedChildWatcher: one thread per child, in waitpid
    "_worker",  # an idle thread of a ThreadPoolExecutor (blocked in its queue's get)
    "wait",
    "_wait_for_tstate_lock",
    "join",
    "sleep",
    "readinto",
    "recv_into",
    "recv",
    "accept",
    "getaddrinfo",
    "SSLSocket.read",  # a blocking read of a TLS socket (the kubernetes client's threads)
    "poll_wait_for_socket.<locals>.do_poll",
}
# Frames every stack of a thread goes through: left out of the inclusive table.
PLUMBING = {
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main",
    "_serve",
    "serve",
    "run_app",
    "run_until_complete",
    "run_forever",
    "_run_once",
    "_run",
    "run",
    "_bootstrap",
    "_bootstrap_inner",
    "operator",
    "spawn_tasks",
    "_operator",
    "_handle_request",  # aiohttp's request handling and Gaia's middleware around a call
    "_handle",
    "impl",
    "errors_as_json",
    "handler",
    "<lambda>",
}


class Profiler:
    """py-spy recording ``pid`` into ``out`` (raw stacks) while the ``with`` block runs."""

    def __init__(self, pid: int, out: Path, rate: int = RATE) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.process: subprocess.Popen[bytes] | None = None
        self.log = out.with_suffix(".log")
        self.seconds = 0.0

    def __enter__(self) -> Profiler:
        exe = tool_venv("py-spy", PY_SPY_VERSION, "py-spy")
        argv = [str(exe), "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--format", "raw", "--idle", "--threads", "--output", str(self.out)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # attached
        self.began = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.began
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output, then exits
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _function(frame: str) -> str:
    """``Class.method (path/module.py:12)`` -> ``method``."""
    return frame.partition(" (")[0].rpartition(".")[2]


def _short(frame: str) -> str:
    """``Class.method (path/to/module.py:12)`` -> ``Class.method (to/module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def _thread_group(root: str) -> str:
    """``thread (4819): asyncio-waitpid-2`` -> ``asyncio-waitpid-N``."""
    name = root.partition(": ")[2] or root
    return re.sub(r"\d+", "N", name) if name != "MainThread" else name


@dataclass
class Profile:
    rate: int
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)

    @classmethod
    def load(cls, path: Path, rate: int = RATE) -> Profile:
        profile = cls(rate)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    frames = stack.split(";")
                    profile.stacks[(_thread_group(frames[0]), *frames[1:])] += int(count)
        return profile

    def waiting(self, stack: tuple[str, ...]) -> bool:
        if len(stack) < 2:
            return True
        qualified = stack[-1].partition(" (")[0]
        return qualified in WAITING or _function(stack[-1]) in WAITING

    def loop_thread(self) -> str | None:
        """The thread group that runs the asyncio event loop."""
        loops: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if any(_function(frame) == "run_forever" for frame in stack[1:]):
                loops[stack[0]] += count
        return loops.most_common(1)[0][0] if loops else None

    def busy(self, group: str | None = None) -> tuple[int, int]:
        """(busy samples, all samples) of one thread group (None: every thread)."""
        busy = every = 0
        for stack, count in self.stacks.items():
            if group is None or stack[0] == group:
                every += count
                busy += 0 if self.waiting(stack) else count
        return busy, every

    def costs(
        self, group: str | None, exclude: str | None = None
    ) -> tuple[Counter[str], Counter[str]]:
        """Busy samples per function: (inclusive, self), for one group or all but one."""
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if (group is not None and stack[0] != group) or stack[0] == exclude:
                continue
            if self.waiting(stack):
                continue
            for frame in {_short(f) for f in stack[1:] if _function(f) not in PLUMBING}:
                inclusive[frame] += count
            own[_short(stack[-1])] += count
        return inclusive, own


def summarise(
    title: str, profile: Profile, tasks: int, seconds: float, top: int = 15, per: str = "task"
) -> str:
    """A Markdown summary: the loop's busy share, and the top costs in ms per ``per``
    (``tasks`` of them)."""
    per_task = 1000 / profile.rate / max(tasks, 1)
    lines = [f"### {title}", ""]
    if not profile.stacks:
        return "\n".join([*lines, "(no samples: py-spy could not attach?)"])
    loop = profile.loop_thread()
    busy, every = profile.busy(loop)
    lines.append(
        f"{seconds:.1f} s recorded at {profile.rate} Hz. The event loop's thread ({loop}): "
        f"{every:,} samples, busy {busy / max(every, 1):.0%} of them (idle in select "
        f"{1 - busy / max(every, 1):.0%}): **{busy * per_task:.3f} ms of loop time per {per}**."
    )
    groups = Counter({g: profile.busy(g)[0] for g in {s[0] for s in profile.stacks}})
    others = [(g, c) for g, c in groups.most_common() if g != loop and c]
    if others:
        lines.append(
            f"Other threads, busy ms per {per}: "
            + ", ".join(f"{g} {c * per_task:.3f}" for g, c in others[:6])
            + "."
        )
    inclusive, own = profile.costs(loop)
    share = 100 / max(busy, 1)
    lines += [
        "",
        f"| event loop: function (inclusive) | ms/{per} | % of busy loop | self ms/{per} |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{name}` | {count * per_task:.3f} | {count * share:.0f}% "
        f"| {own.get(name, 0) * per_task:.3f} |"
        for name, count in inclusive.most_common(top)
    ]
    lines += ["", f"| event loop: innermost frame (self) | ms/{per} | % of busy loop |"]
    lines += ["|---|---:|---:|"]
    lines += [
        f"| `{name}` | {count * per_task:.3f} | {count * share:.0f}% |"
        for name, count in own.most_common(top)
    ]
    if others:
        inclusive, _ = profile.costs(None, exclude=loop)
        lines += ["", f"| other threads: function (inclusive) | ms/{per} |", "|---|---:|"]
        lines += [
            f"| `{name}` | {count * per_task:.3f} |" for name, count in inclusive.most_common(8)
        ]
    return "\n".join(lines)
