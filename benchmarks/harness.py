"""What the benchmarks share: the machine's description, a `gaia serve` process, figures
read from /proc, tool virtualenvs cached under .cache/bench, a sampling profiler, and the
table that gets printed.

Gaia is driven only through its public interfaces here (the `gaia` command, the HTTP API
and the Python client), so the benchmarks keep working while its insides change.
Nothing here asserts a timing: the benchmarks print figures.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gaia

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GAIA_CACHE") or REPO / ".cache") / "bench"
SNAKEMAKE_VERSION = "9.27.1"  # the release issue 8 compares against
PY_SPY_VERSION = "0.4.3"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the machine -----------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return revision + (
        " (modified)" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def describe_machine(extra: Mapping[str, str] | None = None) -> list[str]:
    """Lines saying when, where and with what the figures were taken."""
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f"{kib / 2**20:.0f} GiB"
    lines = [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {os.cpu_count()} cores ({cpu_model()}), {memory}, Linux {platform.release()}",
        f"load average at start (1, 5, 15 min): {loadavg()}",
        f"gaia: {git_revision()}; Python {platform.python_version()}; "
        f"bwrap: {tool_version(['bwrap', '--version'])}",
    ]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return lines


# --- figures of a running process ---------------------------------------------------------


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MiB; ``VmHWM`` is its peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that ``pid`` (all its threads) used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def children_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the children ``pid`` waited for so far (a server's
    tasks, whose own children their sandbox waited for)."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # cutime, cstime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> float:
    """Wait until ``url`` answers; the seconds it took. Raises when it does not."""
    began = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
            return time.monotonic() - began
        except OSError:
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.01)


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL; never leaves it behind."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- `gaia serve` ---------------------------------------------------------------------------


class GaiaServe:
    """`gaia serve` in a subprocess on a free port of 127.0.0.1, with its own data folder.

    ``env`` is added to the environment; ``sandbox`` is `gaia serve --sandbox`.
    """

    def __init__(
        self,
        data: Path,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        sandbox: str = "auto",
    ) -> None:
        self.data, self.workers, self.sandbox = data, workers, sandbox
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"{data.name}-server.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, timeout: float = 600) -> gaia.Gaia:
        return gaia.Gaia({"gaia_host": self.address, "timeout": timeout})

    def start(self) -> float:
        """Start the server; the seconds until /health answered."""
        self.data.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "gaia.cli", "serve", "--port", str(self.port)]
        argv += ["--data", str(self.data), "--workers", str(self.workers)]
        argv += ["--sandbox", self.sandbox]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.data.parent
            )
        try:
            return wait_http(f"http://{self.address}/health", 600, self.process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def __enter__(self) -> GaiaServe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- tools in throwaway virtualenvs ---------------------------------------------------------


def tool_venv(package: str, version: str, executable: str) -> Path:
    """``executable`` of ``package==version``, installed once into .cache/bench (a
    virtualenv of its own, marked complete only after pip succeeded)."""
    venv = CACHE / f"{package}-{version}"
    exe = venv / "bin" / executable
    if (venv / ".installed").exists() and exe.exists():
        return exe
    print(f"installing {package}=={version} into {venv} (once)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", f"{package}=={version}"]
    subprocess.run(pip, check=True)
    (venv / ".installed").touch()
    return exe


def cached_tool(package: str, version: str, executable: str) -> Path | None:
    """The tool if tool_venv installed it already, else None."""
    venv = CACHE / f"{package}-{version}"
    exe = venv / "bin" / executable
    return exe if (venv / ".installed").exists() and exe.exists() else None


# --- running a command and measuring it -------------------------------------------------------


@dataclass
class Run:
    seconds: float
    returncode: int
    max_rss_mib: float


def timed(argv: Sequence[str], cwd: Path, timeout: float = 3600, **kwargs: Any) -> Run:
    """Run ``argv`` to its end: wall seconds, exit code and peak RSS (the largest of the
    process and its waited-for descendants, from wait4)."""
    # stderr to a file, not a pipe: nothing reads a pipe while wait4 polls, and a command
    # that writes more than a pipe holds (Snakemake 9's run header does) would block.
    with tempfile.TemporaryFile() as errors:
        began = time.perf_counter()
        process = subprocess.Popen(
            list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors, **kwargs
        )
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        error = errors.read().decode(errors="replace")
    if process.returncode != 0:
        print(f"note: {argv[0]} exited {process.returncode}: {error[-800:]}", flush=True)
    return Run(seconds, process.returncode, usage.ru_maxrss / 1024)


# --- the table ------------------------------------------------------------------------------


class Table:
    """Rows of (workload, what, figure, note), printed as a Markdown table."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, workload: str, what: str, figure: str, note: str = "") -> None:
        self.rows.append((workload, what, figure, note))
        print(f"  {workload} | {what}: {figure}" + (f"  ({note})" if note else ""), flush=True)

    def render(self) -> str:
        lines = [f"## {self.title}", "", "| workload | what | figure | note |"]
        lines.append("|---|---|---:|---|")
        last = None
        for workload, what, figure, note in self.rows:
            lines.append(f"| {workload if workload != last else ''} | {what} | {figure} | {note} |")
            last = workload
        return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}/s" if seconds else "n/a"


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as took:`` ... ``took[0]`` is the seconds."""
    took: list[float] = []
    began = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - began)
