"""Gaia side by side with Snakemake and with the machine's own spawn rate (issue 8).

    python benchmarks/compare.py                # `make bench-compare`: every workload
    python benchmarks/compare.py --quick        # tiny sizes, seconds: the smoke test
    python benchmarks/compare.py --million      # also merge 1,000,000 processes (or
                                                # GAIA_BENCH_MILLION=1)
    python benchmarks/compare.py --profile DIR  # also py-spy the 1,000-task server

Workloads, the same commands and DAGs for every contender, in one run:

trivial
    1,000 tasks: 500 ``sh -c 'echo v > /out/o'`` and 500 ``cp /in/i /out/o``, each copy
    reading one echo's output. Gaia is `gaia serve --workers N` end to end (merge until the
    namespace is complete; the end is the server's own ``flow-complete`` event); Snakemake
    ``--cores 2 --scheduler greedy`` (the whole command, its start included); the same
    1,000 commands spawned by 2 plain threads, and inside bubblewrap with the flags Gaia's
    task runner uses (worker/sandbox.py). Gaia also with 1, 2 and 4 workers, and
    unsandboxed against the raw unsandboxed spawn.
chain
    100 tasks, each copying the previous one's output: the overhead per link, from the
    server's events (``step-complete`` of one link to ``step-start`` of the next) and as
    the total minus the same 100 commands run one after the other.
merge
    2 rules x 50,000 values (100,000 processes) merged through the HTTP API into a halted
    namespace: merge time, server RSS, ``status`` time, restart time; ``snakemake -n`` on
    the same DAG. With ``--million``, 2 x 500,000 too.

Prints figures and ratios; asserts nothing about time. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml

import gaia
import harness
from gaia import tokens
from harness import GaiaServe, Table, rate, ratio
from profiles import Profile, Profiler, summarise

ROOT = "bench"
DONE_STATES = ("complete", "error", "incomplete", "halted")
ECHO = ["sh", "-c", "echo v > /out/o"]
COPY = ["cp", "/in/i", "/out/o"]
COMMANDS = [
    {
        "key": "make",
        "image": "bench",
        "command": ECHO,
        "vars": {"V": "x"},
        "outputs": {"OUT": "/out/o"},
    },
    {
        "key": "copy",
        "image": "bench",
        "command": COPY,
        "vars": {"V": "x"},
        "inputs": {"IN": "/in/i"},
        "outputs": {"OUT": "/out/o"},
    },
]


@dataclass
class Sizes:
    trivial: int = 500  # values per rule: 2x tasks
    chain: int = 100
    merge: int = 50_000  # values per rule
    million: int = 500_000
    workers: tuple[int, ...] = (1, 2, 4)
    lines: int = 300_000  # printed by one task, followed by each count of listeners
    listeners: tuple[int, ...] = (0, 1, 200)
    timeout: float = 900.0  # seconds for one Gaia run before it is reported unfinished


QUICK = Sizes(
    trivial=10,
    chain=5,
    merge=100,
    million=1_000,
    workers=(1, 2),
    timeout=120.0,
    lines=100,
    listeners=(0, 2),
)


def fanout(values: int) -> list[dict[str, Any]]:
    vs = [f"v{i}" for i in range(values)]
    return [
        {"key": "gen", "command": "make", "vars": {"V": vs}, "outputs": {"OUT": "gen/{{V}}"}},
        {
            "key": "use",
            "command": "copy",
            "vars": {"V": vs},
            "inputs": {"IN": "gen/{{V}}"},
            "outputs": {"OUT": "use/{{V}}"},
        },
    ]


def chain(links: int) -> list[dict[str, Any]]:
    processes: list[dict[str, Any]] = [
        {"key": "link-0", "command": "make", "outputs": {"OUT": "chain/0"}}
    ]
    processes += [
        {
            "key": f"link-{i}",
            "command": "copy",
            "inputs": {"IN": f"chain/{i - 1}"},
            "outputs": {"OUT": f"chain/{i}"},
        }
        for i in range(1, links)
    ]
    return processes


# --- Gaia ---------------------------------------------------------------------------------------


@dataclass
class GaiaRun:
    seconds: float | None  # merge sent -> flow-complete; None when it did not finish
    state: str
    complete: int  # step-complete events
    tasks: int  # processes in the namespace
    cpu: float  # server CPU seconds during the run
    rss: float  # server VmHWM, MiB
    events: list[dict[str, Any]] = field(default_factory=list)
    profiled: float = 0.0  # seconds py-spy recorded
    tasks_cpu: float = 0.0  # CPU seconds of the tasks the server ran (and waited for)


def run_gaia(
    data: Path,
    processes: list[dict[str, Any]],
    tasks: int,
    workers: int,
    timeout: float,
    sandbox: str = "auto",
    profile: Path | None = None,
    follow: bool = False,
) -> GaiaRun:
    """Start a server, merge, wait for the namespace's end; stop the server. With
    ``follow``, `gaia run` merges the processes and follows them with its live progress,
    as a user would; otherwise the harness merges and polls ``/workflows``."""
    with GaiaServe(data, workers, sandbox=sandbox) as server:
        client = server.client()
        client.command(COMMANDS)
        if follow:
            folder = data.parent / f"{data.name}-workflow"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "commands.yaml").write_text(yaml.safe_dump(COMMANDS))
            (folder / "processes.yaml").write_text(yaml.safe_dump(processes))
            argv = [sys.executable, "-m", "gaia.cli", "run", str(folder)]
            argv += ["--host", server.address, "--namespace", ROOT]
        profiler = Profiler(server.pid, profile) if profile else None
        profiled = 0.0
        if profiler:
            profiler.__enter__()
        try:
            cpu = harness.cpu_seconds(server.pid)
            tasks_cpu = harness.children_cpu_seconds(server.pid)
            began = time.time()
            if follow:
                with (data.parent / f"{data.name}-gaia-run.log").open("wb") as log:
                    subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
                state = str(client.workflows()["workflows"].get(ROOT, "?"))
            else:
                client.merge(ROOT, processes)
                state = wait_done(client, timeout)
            cpu = harness.cpu_seconds(server.pid) - cpu
            tasks_cpu = harness.children_cpu_seconds(server.pid) - tasks_cpu
        finally:
            if profiler:
                profiler.__exit__(None, None, None)
                profiled = profiler.seconds
        rss = harness.rss_mib(server.pid, "VmHWM")
        events = replay(client) if state in DONE_STATES else []
    ends = [e["time"] for e in events if e["event"].startswith("flow-")]
    complete = sum(e["event"] == "step-complete" for e in events)
    if state not in DONE_STATES:
        complete = _completed_so_far(data)
    seconds = ends[-1] - began if ends and state == "complete" else None
    return GaiaRun(seconds, state, complete, tasks, cpu, rss, events, profiled, tasks_cpu)


def _completed_so_far(data: Path) -> int:
    space = data / ROOT
    return sum(1 for _ in space.rglob("*") if _.is_file()) if space.exists() else 0


def wait_done(client: gaia.Gaia, timeout: float, every: float = 0.1) -> str:
    """Poll the cheap ``/workflows`` until the namespace has ended (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        state = str(client.workflows()["workflows"].get(ROOT, "?"))
        if state in DONE_STATES:
            return state
        time.sleep(every)
    return f"unfinished after {timeout:g} s ({state})"


def replay(client: gaia.Gaia) -> list[dict[str, Any]]:
    """The namespace's events as the server kept them, up to its first flow-* end."""
    events = []
    stream = client.events(ROOT, since=0)
    try:
        for event in stream:
            events.append(event)
            if event.get("event") in ("flow-complete", "flow-error", "flow-incomplete"):
                break
    finally:
        stream.close()
    return events


# --- raw spawns -----------------------------------------------------------------------------------


def bwrap_base(tops: Sequence[str], sealed: bool = False) -> tuple[list[str], list[str]]:
    """bubblewrap's arguments as Gaia's runner builds them (worker/sandbox.py): the host's
    top-level entries read-only (symlinks as symlinks) except /proc /dev /sys /tmp and the
    container paths' own top-level names, a new /proc, /dev and /tmp, a pid namespace.
    ``sealed`` adds what the runner adds for a task since the sandbox work (issue 7): IPC
    and network namespaces, no capabilities, and as root the switch to user nobody. Also
    the command's prefix (setpriv, when it switches user)."""
    exe = shutil.which("bwrap")
    if exe is None:
        raise RuntimeError("bwrap is not installed (make sandbox)")
    argv = [exe, "--unshare-pid", "--die-with-parent"]
    prefix: list[str] = []
    if sealed:
        argv += ["--unshare-ipc", "--unshare-net"]
        setpriv = shutil.which("setpriv")
        if os.geteuid() == 0 and setpriv is not None:
            argv += ["--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
                argv += ["--cap-add", cap]
            prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--nnp"]
            prefix += ["--bounding-set=-all", "--inh-caps=-all"]
        else:
            argv += ["--unshare-user", "--cap-drop", "ALL"]
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in ("proc", "dev", "sys", "tmp", *tops):
                continue
            if entry.is_symlink():
                argv += ["--symlink", os.readlink(entry.path), entry.path]
            else:
                argv += ["--ro-bind", entry.path, entry.path]
    return [*argv, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"], prefix


class RawSpawn:
    """The same commands as Gaia's tasks, started from plain threads (``subprocess``, a
    new session, both output pipes read, as the runner does), unsandboxed or under bwrap
    (``sealed``: as Gaia seals a task today). ``durable`` (unsandboxed): each output is
    written aside, fsynced, renamed into place and its folder fsynced, as Gaia must before
    a key counts as complete (so that a crash never leaves one that looks complete)."""

    def __init__(
        self, folder: Path, sandbox: bool, sealed: bool = False, durable: bool = False
    ) -> None:
        self.folder, self.sandbox, self.durable = folder, sandbox, durable
        self.base, self.prefix = bwrap_base(["in", "out"], sealed) if sandbox else ([], [])
        self.count = 0
        self.lock = threading.Lock()

    def _number(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def run(self, command: list[str], output: Path, source: Path | None = None) -> None:
        """Run one task: ``command`` reads ``source`` at /in/i, writes /out/o -> ``output``."""
        if not self.sandbox:
            written = output
            if self.durable:
                written = self.folder / "staging" / f"{self._number()}.o"
            argv = [a.replace("/out/o", str(written)) for a in command]
            if source is not None:
                argv = [a.replace("/in/i", str(source)) for a in argv]
            _spawn(argv, self.folder)
            if self.durable:
                _fsync(written)
                os.replace(written, output)
                _fsync(output.parent)
            return
        number = self._number()
        staging = self.folder / "staging" / str(number)
        (staging / "out").mkdir(parents=True)
        if self.prefix:  # the task's user writes it
            (staging / "out").chmod(0o777)
        argv = [*self.base, "--bind", str(staging / "out"), "/out"]
        if source is not None:
            if self.prefix:  # a folder the task's user may search (bwrap's own is root's)
                argv += ["--perms", "0755", "--dir", "/in"]
            argv += ["--ro-bind", str(source), "/in/i"]
        _spawn([*argv, "--chdir", "/tmp", "--", *self.prefix, *command], self.folder)
        os.replace(staging / "out" / "o", output)


def _spawn(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[-3:]} exited {done.returncode}: {done.stderr[-300:]!r}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RawRun:
    seconds: float
    cpu: float  # CPU seconds of the spawning threads and of the commands

    def note(self, tasks: int) -> str:
        per_task = self.cpu * 1000 / tasks
        return f"{self.seconds:.2f} s; CPU {per_task:.1f} ms/task ({self.cpu / self.seconds:.2f} cores)"


def _cpu_so_far() -> float:
    """CPU seconds of this process and of the children it waited for (the raw spawns)."""
    return harness.cpu_seconds(os.getpid()) + harness.children_cpu_seconds(os.getpid())


def raw_trivial_cpu(folder: Path, values: int, sandbox: bool, **options: bool) -> RawRun:
    """:func:`raw_trivial` from 2 threads, with the CPU it took, all processes counted."""
    cpu = _cpu_so_far()
    seconds = raw_trivial(folder, values, 2, sandbox, **options)
    return RawRun(seconds, _cpu_so_far() - cpu)


def raw_trivial(
    folder: Path,
    values: int,
    threads: int,
    sandbox: bool,
    sealed: bool = False,
    durable: bool = False,
) -> float:
    """The fan-out DAG's commands from ``threads`` threads: seconds for all of them."""
    spawn = RawSpawn(folder, sandbox, sealed, durable)
    (folder / "staging").mkdir(parents=True)
    (folder / "gen").mkdir(parents=True)
    (folder / "use").mkdir()
    made = [threading.Event() for _ in range(values)]
    jobs: list[Callable[[], None]] = []
    for i in range(values):

        def gen(i: int = i) -> None:
            spawn.run(ECHO, folder / "gen" / f"v{i}")
            made[i].set()

        jobs.append(gen)
    for i in range(values):

        def use(i: int = i) -> None:
            made[i].wait()
            spawn.run(COPY, folder / "use" / f"v{i}", folder / "gen" / f"v{i}")

        jobs.append(use)
    return _in_threads(jobs, threads)


def raw_chain(folder: Path, links: int, sandbox: bool) -> float:
    spawn = RawSpawn(folder, sandbox)
    (folder / "chain").mkdir(parents=True)
    began = time.perf_counter()
    spawn.run(ECHO, folder / "chain" / "0")
    for i in range(1, links):
        spawn.run(COPY, folder / "chain" / str(i), folder / "chain" / str(i - 1))
    return time.perf_counter() - began


def _in_threads(jobs: list[Callable[[], None]], threads: int) -> float:
    lock = threading.Lock()
    queue = iter(jobs)
    errors: list[BaseException] = []

    def serve() -> None:
        while True:
            with lock:
                job = next(queue, None)
            if job is None or errors:
                return
            try:
                job()
            except BaseException as exc:
                errors.append(exc)
                return

    began = time.perf_counter()
    workers = [threading.Thread(target=serve) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began


# --- Snakemake ----------------------------------------------------------------------------------


SNAKEFILE = """\
V = [f"v{{i}}" for i in range({values})]

rule all:
    input: expand("use/{{v}}", v=V)

rule gen:
    output: "gen/{{v}}"
    shell: "echo v > {{output}}"

rule use:
    input: "gen/{{v}}"
    output: "use/{{v}}"
    shell: "cp {{input}} {{output}}"
"""


def snakemake(exe: Path, folder: Path, values: int, *args: str) -> harness.Run:
    folder.mkdir(parents=True)
    (folder / "Snakefile").write_text(SNAKEFILE.format(values=values))
    argv = [str(exe), "--snakefile", "Snakefile", "--cores", "2", *args, "--quiet"]
    return harness.timed(argv, folder)


# --- the workloads ------------------------------------------------------------------------------


def trivial(
    table: Table, work: Path, sizes: Sizes, snake: Path | None, profile: Path | None
) -> None:
    values = sizes.trivial
    tasks = 2 * values
    name = f"{tasks:,} trivial tasks"
    raw_plain = raw_trivial_cpu(work / "raw-plain", values, sandbox=False)
    plain = raw_plain.seconds
    table.add(name, "2 plain threads, unsandboxed", rate(tasks, plain), raw_plain.note(tasks))
    raw_durable = raw_trivial_cpu(work / "raw-durable", values, sandbox=False, durable=True)
    durable = raw_durable.seconds
    table.add(
        name,
        "2 plain threads, unsandboxed, each output made durable as Gaia's are",
        rate(tasks, durable),
        f"{raw_durable.note(tasks)}; written aside, fsynced, renamed into place, its "
        "folder fsynced",
    )
    boxed = raw_trivial(work / "raw-bwrap", values, 2, sandbox=True)
    table.add(name, "2 plain threads, in bubblewrap", rate(tasks, boxed), f"{boxed:.2f} s")
    sealed = raw_trivial(work / "raw-sealed", values, 2, sandbox=True, sealed=True)
    table.add(
        name,
        "2 plain threads, in bubblewrap sealed as Gaia's tasks",
        rate(tasks, sealed),
        f"{sealed:.2f} s; also net and IPC namespaces, no capabilities, user nobody as root",
    )
    snake_seconds = None
    if snake is not None:
        run = snakemake(snake, work / "snakemake", values, "--scheduler", "greedy")
        if run.returncode == 0:
            snake_seconds = run.seconds
            table.add(
                name,
                f"Snakemake {harness.SNAKEMAKE_VERSION} --cores 2 --scheduler greedy",
                rate(tasks, run.seconds),
                f"{run.seconds:.2f} s, the whole command",
            )
        else:
            table.add(name, "Snakemake", "failed", f"exit {run.returncode}")
    gaia2: float | None = None
    run2: GaiaRun | None = None
    for workers in sizes.workers:
        served = run_gaia(work / f"gaia-w{workers}", fanout(values), tasks, workers, sizes.timeout)
        if workers == 2:
            gaia2, run2 = served.seconds, served
        _gaia_row(table, name, f"Gaia `gaia serve --workers {workers}`", served)
    table.add(name, "Gaia (2 workers) / bwrap raw spawn", ratio(boxed, gaia2), "target ≥ 0.70")
    table.add(
        name,
        "Gaia (2 workers) / bwrap raw spawn, sealed alike",
        ratio(sealed, gaia2),
        "the same sandbox on both sides",
    )
    table.add(name, "Gaia (2 workers) / Snakemake", ratio(snake_seconds, gaia2), "target ≥ 3")
    unboxed = run_gaia(
        work / "gaia-unsandboxed", fanout(values), tasks, 2, sizes.timeout, sandbox="none"
    )
    _gaia_row(table, name, "Gaia, 2 workers, `--sandbox none`", unboxed)
    followed = run_gaia(
        work / "gaia-followed", fanout(values), tasks, 2, sizes.timeout, follow=True
    )
    _gaia_row(
        table,
        name,
        "Gaia, 2 workers, merged and followed by `gaia run` (its own start included)",
        followed,
    )
    if run2 is not None and followed.seconds is not None and gaia2 is not None:
        extra = (followed.cpu - run2.cpu) * 1000 / tasks
        table.add(
            name,
            "server CPU per task: `gaia run`'s live progress / the harness's poll",
            f"{extra:+.2f} ms",
            f"{followed.cpu * 1000 / tasks:.2f} against {run2.cpu * 1000 / tasks:.2f} ms "
            "(events and a status summary every 0.5 s, against /workflows every 0.1 s); "
            "target: nothing measurable",
        )
    table.add(
        name,
        "Gaia unsandboxed / raw unsandboxed spawn",
        ratio(plain, unboxed.seconds),
        "target ≥ 0.50",
    )
    table.add(
        name,
        "Gaia unsandboxed / raw unsandboxed spawn, outputs made durable alike",
        ratio(durable, unboxed.seconds),
        "the same durability on both sides",
    )
    if unboxed.seconds is not None:
        gaia_cpu = (unboxed.cpu + unboxed.tasks_cpu) * 1000 / tasks
        table.add(
            name,
            "CPU per task, every process: Gaia unsandboxed / raw spawn / raw spawn, durable",
            f"{gaia_cpu:.1f} / {raw_plain.cpu * 1000 / tasks:.1f} / "
            f"{raw_durable.cpu * 1000 / tasks:.1f} ms",
            f"at half the raw rate, 2 cores give {2 * 2 * plain * 1000 / tasks:.1f} ms a task "
            "for everything",
        )
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        raw = profile / "serve-trivial.raw"
        traced = run_gaia(
            work / "gaia-profiled", fanout(values), tasks, 2, sizes.timeout, profile=raw
        )
        text = summarise(
            f"`gaia serve --workers 2`, {tasks:,} trivial tasks "
            f"({traced.seconds or 0:.1f} s under py-spy; raw stacks: {raw.name})",
            Profile.load(raw),
            tasks,
            traced.profiled,
        )
        (profile / "serve-trivial.md").write_text(text + "\n")
        print(text, flush=True)


def _gaia_row(table: Table, workload: str, what: str, run: GaiaRun) -> None:
    if run.seconds is None:
        table.add(
            workload, what, "did not finish", f"{run.state}: {run.complete}/{run.tasks} complete"
        )
        return
    table.add(
        workload,
        what,
        rate(run.tasks, run.seconds),
        f"{run.seconds:.2f} s; server CPU {run.cpu * 1000 / run.tasks:.1f} ms/task, its "
        f"tasks' {run.tasks_cpu * 1000 / run.tasks:.1f}, peak RSS {run.rss:.0f} MiB",
    )


def chained(table: Table, work: Path, sizes: Sizes) -> None:
    links = sizes.chain
    name = f"chain of {links}"
    plain = raw_chain(work / "chain-plain", links, sandbox=False)
    boxed = raw_chain(work / "chain-bwrap", links, sandbox=True)
    table.add(name, "one after the other, unsandboxed", f"{plain:.2f} s")
    table.add(name, "one after the other, in bubblewrap", f"{boxed:.2f} s")
    run = run_gaia(work / "gaia-chain", chain(links), links, 2, sizes.timeout)
    if run.seconds is None:
        table.add(name, "Gaia", "did not finish", f"{run.state}: {run.complete}/{links}")
        return
    completed: dict[str, float] = {}
    started: dict[str, float] = {}
    for event in run.events:
        if event["event"] == "step-complete":
            completed[event["process"]] = event["time"]
        elif event["event"] == "step-start":
            started.setdefault(event["process"], event["time"])
    gaps = sorted(
        started[f"link-{i}"] - completed[f"link-{i - 1}"]
        for i in range(1, links)
        if f"link-{i}" in started and f"link-{i - 1}" in completed
    )
    table.add(name, "Gaia `gaia serve --workers 2`, total", f"{run.seconds:.2f} s")
    if gaps:
        table.add(
            name,
            "Gaia: step-complete → next step-start",
            f"p50 {statistics.median(gaps) * 1000:.1f} ms",
            f"p90 {gaps[int(len(gaps) * 0.9)] * 1000:.1f} ms, max {gaps[-1] * 1000:.1f} ms; "
            "target p50 ≤ 3 ms",
        )
    table.add(
        name,
        "Gaia overhead per link (total - sequential)",
        f"{(run.seconds - plain) / links * 1000:.1f} ms",
        f"vs unsandboxed; {(run.seconds - boxed) / links * 1000:.1f} ms vs bubblewrap",
    )


class Listeners:
    """``count`` raw `/events` streams of namespace ROOT, read and thrown away by one
    thread (as fast as the server sends), like dashboards left open on a namespace."""

    def __init__(self, server: GaiaServe, count: int) -> None:
        self.sockets = []
        token = tokens.read_token_file(server.port)
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(
                f"GET /events?root={ROOT} HTTP/1.1\r\nHost: {server.address}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            self.sockets.append(sock)
        self.received = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in self.sockets:
                selector.register(sock, selectors.EVENT_READ)
            while not self.stop.is_set():
                for key, _ in selector.select(0.1):
                    data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                    self.received += len(data)
                    if not data:
                        selector.unregister(key.fileobj)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def listened(table: Table, work: Path, sizes: Sizes) -> None:
    """A task printing many lines while many listeners follow its namespace: how long it
    takes to finish, and how long a status summary waits meanwhile."""
    lines = sizes.lines
    script = f"i=0; while [ $i -lt {lines} ]; do echo line-$i; i=$((i+1)); done; echo x > /out/o"
    talk: dict[str, Any] = {"key": "talk", "image": "bench", "command": ["sh", "-c", script]}
    talk["outputs"] = {"OUT": "/out/o"}
    for count in sizes.listeners:
        with GaiaServe(work / f"gaia-listeners-{count}", 2) as server:
            client = server.client()
            client.command([talk])
            listeners = Listeners(server, count)
            try:
                waits = []
                began = time.perf_counter()
                client.merge(ROOT, [{"key": "t", "command": "talk", "outputs": {"OUT": "o"}}])
                state = "running"
                while state == "running" and time.perf_counter() - began < sizes.timeout:
                    asked = time.perf_counter()
                    state = client.status(ROOT, detail=False)["status"]["state"]
                    waits.append(time.perf_counter() - asked)
                    time.sleep(0.05)
                took = time.perf_counter() - began
            finally:
                listeners.close()
        table.add(
            f"a task printing {lines:,} lines",
            f"{count} listener{'' if count == 1 else 's'} of its namespace",
            f"{took:.2f} s" if state == "complete" else state,
            f"status summary p50 {statistics.median(waits) * 1000:.0f} ms, worst "
            f"{max(waits) * 1000:.0f} ms; {listeners.received / 2**20:,.0f} MiB sent",
        )


def profile_merge(work: Path, values: int, profile: Path) -> None:
    """py-spy over a merge of ``2 * values`` processes, then over its ``status``."""
    processes = 2 * values
    profile.mkdir(parents=True, exist_ok=True)
    with GaiaServe(work / f"gaia-merge-profiled-{processes}", 2) as server:
        client = server.client(timeout=3600)
        client.command(COMMANDS)
        client.merge(ROOT, [{"key": "seed", "command": "make", "outputs": {"OUT": "seed/o"}}])
        client.halt(ROOT)
        texts = []
        for what, call in (
            ("merge", lambda: client.merge(ROOT, fanout(values))),
            ("status", lambda: client.status(ROOT)),
        ):
            raw = profile / f"serve-{what}-{processes}.raw"
            with Profiler(server.pid, raw) as profiler:
                call()
            texts.append(
                summarise(
                    f"`gaia serve`: {what} of a namespace of {processes:,} processes "
                    f"({profiler.seconds:.1f} s under py-spy; raw stacks: {raw.name})",
                    Profile.load(raw),
                    processes,
                    profiler.seconds,
                    per="process",
                )
            )
    text = "\n\n".join(texts)
    (profile / f"serve-merge-{processes}.md").write_text(text + "\n")
    print(text, flush=True)


def merged(table: Table, work: Path, values: int, snake: Path | None, restart: bool = True) -> None:
    processes = 2 * values
    name = f"merge of {processes:,} processes"
    with GaiaServe(work / f"gaia-merge-{processes}", 2) as server:
        client = server.client(timeout=3600)
        client.command(COMMANDS)
        client.merge(ROOT, [{"key": "seed", "command": "make", "outputs": {"OUT": "seed/o"}}])
        client.halt(ROOT)  # nothing runs: the figures are the merge's alone
        base = harness.rss_mib(server.pid)
        with harness.stopwatch() as took:
            reply = client.merge(ROOT, fanout(values))
        merge_seconds = took[0]
        changed = len(reply["processes"][ROOT])
        table.add(
            name,
            "Gaia merge through the HTTP API (halted namespace)",
            f"{took[0]:.2f} s",
            f"{changed:,} processes in the reply; target "
            + ("≤ 20 s at 1,000,000" if processes >= 1_000_000 else "≤ 2 s at 100,000"),
        )
        with harness.stopwatch() as took:
            status = client.status(ROOT)
        table.add(
            name,
            "Gaia `status`",
            f"{took[0]:.2f} s",
            f"{len(status['status'].get('flow', {}).get('process', {})):,} processes in it; "
            "target ≤ 0.5 s at 100,000",
        )
        table.add(
            name,
            "Gaia server RSS after merge and status",
            f"{harness.rss_mib(server.pid):.0f} MiB",
            f"peak {harness.rss_mib(server.pid, 'VmHWM'):.0f} MiB, {base:.0f} MiB before; target "
            + ("≤ 2.5 GiB" if processes >= 1_000_000 else "≤ 300 MiB"),
        )
        if restart:
            with harness.stopwatch() as stopped:
                server.stop()
            # What a client that follows the namespace asks first is its summary (as
            # `gaia run` and the operator do); the full status, a document of tens of MB,
            # is timed after it.
            with harness.stopwatch() as took:
                health = server.start()
                started = time.perf_counter()
                state = client.status(ROOT, detail=False)["status"]["state"]
                summary_seconds = time.perf_counter() - started
            with harness.stopwatch() as full:
                client.status(ROOT)
            table.add(
                name,
                "Gaia restart: start → /health → first `status` summary",
                f"{took[0]:.2f} s",
                f"/health after {health:.2f} s, the summary {summary_seconds:.2f} s ({state}); "
                f"then the full `status` {full[0]:.2f} s; the stop took {stopped[0]:.2f} s; "
                f"RSS after {harness.rss_mib(server.pid):.0f} MiB; target ≤ 3 s at 100,000",
            )
    if snake is not None:
        run = snakemake(snake, work / f"snakemake-n-{processes}", values, "-n")
        table.add(
            name,
            f"`snakemake -n` ({harness.SNAKEMAKE_VERSION}) on the same DAG",
            f"{run.seconds:.2f} s" if run.returncode == 0 else "failed",
            f"peak RSS {run.max_rss_mib:.0f} MiB",
        )
        table.add(
            name,
            "`snakemake -n` / Gaia merge",
            ratio(run.seconds if run.returncode == 0 else None, merge_seconds),
            "target ≥ 25",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument(
        "--million",
        action="store_true",
        default=os.environ.get("GAIA_BENCH_MILLION") == "1",
        help="also merge 1,000,000 processes (several minutes; GAIA_BENCH_MILLION=1)",
    )
    parser.add_argument(
        "--snakemake",
        choices=("install", "cached", "no"),
        default="install",
        help="install Snakemake into .cache/bench (default), use it only if it is there "
        "already, or leave it out",
    )
    parser.add_argument("--profile", type=Path, help="also profile the server with py-spy")
    parser.add_argument(
        "--only",
        default="trivial,chain,merge",
        help="comma-separated workloads to run: trivial, chain, merge, listeners (not by default)",
    )
    parser.add_argument("--output", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    only = set(args.only.split(","))
    snake = None
    if args.snakemake == "install":
        snake = harness.tool_venv("snakemake", harness.SNAKEMAKE_VERSION, "snakemake")
    elif args.snakemake == "cached":
        snake = harness.cached_tool("snakemake", harness.SNAKEMAKE_VERSION, "snakemake")
    header = harness.describe_machine(
        {
            "snakemake": f"{harness.SNAKEMAKE_VERSION}" if snake else "left out",
            "sizes": "quick (smoke test)" if args.quick else "full",
        }
    )
    print("\n".join(header), flush=True)
    table = Table("Gaia against Snakemake and the raw spawn rate")
    work = Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    try:
        if "trivial" in only:
            trivial(table, work, sizes, snake, args.profile)
        if "chain" in only:
            chained(table, work, sizes)
        if "listeners" in only:
            listened(table, work, sizes)
        if "merge" in only:
            merged(table, work, sizes.merge, snake)
            if args.profile is not None:
                profile_merge(work, sizes.merge, args.profile)
            if args.million:
                merged(table, work, sizes.million, None, restart=False)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    footer = f"load average at the end (1, 5, 15 min): {harness.loadavg()}"
    text = "\n".join([table.render(), "", *header, footer])
    print("\n" + text, flush=True)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
