"""The operator under load (issues 8 and 11): a real kube-apiserver, etcd and
kube-controller-manager (tests/kube/cluster.py), the stand-in kubelet that runs pods as
local processes (tests/kube/kubelet.py) and `gaia operator` as a subprocess.

    python benchmarks/operator_bench.py            # `make bench-operator`
    python benchmarks/operator_bench.py --quick    # tiny sizes: the smoke test
    python benchmarks/operator_bench.py --profile DIR   # also py-spy the operator and workers
    python benchmarks/operator_bench.py --only workers --workers-values 5000  # a shorter run

Workloads (the trivial DAG of compare.py: ``echo v > /out/o`` then ``cp /in/i /out/o``):

jobs
    a 1,000-task GaiaNamespace, one Job per task, ``GAIA_JOBS_PER_SECOND=50``: Job
    creations per second, Job creation requests against Jobs (the API server's audit log
    counts the 201s and 409s), pods run per task (the kubelet counts them), Jobs left over,
    status writes per second, the operator's CPU per task and RSS, the status's size.
workers
    100,000 processes run by two launched workers (no Job per task): throughput, CPU per
    task, the longest event-loop stall (measured from outside: the slowest answer to
    ``GET /health``, asked every 0.1 s, and the longest gap between status writes), status
    size, RSS; runs per task counted from the workers' own logs; then `gaia serve
    --workers 2` on the same processes for as long, and the ratio.

Every phase has a time limit; one that runs out prints what completed by then. Prints
figures; asserts nothing. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "kube"), str(HERE.parent / "tests")]

from cluster import Cluster  # noqa: E402
from kubelet import FakeKubelet  # noqa: E402

import gaia  # noqa: E402
import harness  # noqa: E402
from compare import COMMANDS, fanout  # noqa: E402
from gaia.kube.resources import HANDLED_LABEL  # noqa: E402
from harness import GaiaServe, Table, rate, ratio  # noqa: E402
from profiles import Profile, Profiler, summarise  # noqa: E402

GROUP, VERSION, PLURAL = "gaia.dev", "v1alpha1", "gaianamespaces"


@dataclass
class Sizes:
    jobs: int = 500  # values per rule: 2x tasks
    workers: int = 50_000
    jobs_timeout: float = 600.0
    workers_timeout: float = 1800.0  # 100,000 tasks at ~85/s here: about 20 minutes
    serve_timeout: float = 300.0  # `gaia serve` on the workers' processes, for the ratio


QUICK = Sizes(jobs=10, workers=50, jobs_timeout=180, workers_timeout=180, serve_timeout=60)


class CountingKubelet(FakeKubelet):
    """The stand-in kubelet, counting the pods whose command it really started: per
    (GaiaNamespace, process) for task pods, per worker for worker pods."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_runs: Counter[tuple[str, str]] = Counter()
        self.job_pods: Counter[str] = Counter()  # by GaiaNamespace
        self.worker_pods: dict[str, tuple[str, str]] = {}  # worker -> pod key
        self.job_pod: dict[str, tuple[str, str]] = {}  # Job name -> its latest pod's key

    async def _run_pod(self, run: Any, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        worker = labels.get("gaia.dev/worker")
        if worker:
            self.worker_pods[worker] = (meta["namespace"], meta["name"])
        elif "batch.kubernetes.io/job-name" in labels:
            self.job_pod[labels["batch.kubernetes.io/job-name"]] = (meta["namespace"], meta["name"])
        try:
            await super()._run_pod(run, pod)
        finally:
            if not worker and any(c.pid is not None for c in run.containers):
                root = labels.get("gaia.dev/namespace", "?")
                process = (meta.get("annotations") or {}).get("gaia.dev/process", meta["name"])
                self.task_runs[(root, process)] += 1
                self.job_pods[root] += 1


class LoopProbe:
    """Asks ``GET /health`` every ``every`` seconds from a thread: the slowest answers
    bound the operator's event-loop stalls from below (the handler runs on its loop)."""

    def __init__(self, url: str, every: float = 0.1) -> None:
        self.url, self.every = url, every
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=300) as reply:
                    reply.read()
                self.latencies.append(time.perf_counter() - began)
            except OSError:
                self.failures += 1
            self._stop.wait(self.every)

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(330)

    def describe(self) -> str:
        if not self.latencies:
            return "no answer"
        ordered = sorted(self.latencies)
        return (
            f"max {ordered[-1]:.2f} s, p99 {ordered[int(len(ordered) * 0.99)] * 1000:.0f} ms, "
            f"p50 {statistics.median(ordered) * 1000:.0f} ms over {len(ordered):,} probes"
            + (f", {self.failures} failed" if self.failures else "")
        )


class Operator:
    """`gaia operator` in a subprocess against the cluster, its HTTP API on a free port of
    127.0.0.1; the settings of tests/kube/gaia_operator.py, but logging as in production
    (no --verbose: debug logging would cost the operator time of its own)."""

    def __init__(self, cluster: Cluster, store: Path, namespace: str, log: Path) -> None:
        self.cluster, self.store, self.namespace, self.log = cluster, store, namespace, log
        self.port = harness.free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> Operator:
        full = {
            **os.environ,
            **self.cluster.env,
            "GAIA_STORE_PATH": str(self.store),
            "GAIA_STORE_CLAIM": "gaia-data",
            "GAIA_API_HOST": "127.0.0.1",
            "GAIA_API_PORT": str(self.port),
            "GAIA_K8S_NAMESPACE": self.namespace,
            "GAIA_API_URL": f"http://{self.address}",  # for the worker pods (the kubelet)
            **env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gaia.cli", "operator"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full,
            )
        try:
            harness.wait_http(f"http://{self.address}/health", 120, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            harness.stop_process(self.process)
        self.process = None


class World:
    """Control plane, a Kubernetes namespace, store, counting kubelet and operator."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.cluster = Cluster()
        self.kubelet: CountingKubelet | None = None
        self.operator: Operator | None = None
        self.api: Any = None

    def __enter__(self) -> World:
        self.cluster.start()
        try:
            self.cluster.apply_crds()
            self.namespace = self.cluster.new_namespace("bench")
            # the workers' ServiceAccount (the chart's): worker pods run as it
            self.cluster.kubectl("create", "serviceaccount", "gaia-worker", "-n", self.namespace)
            self.store = self.work / "store"
            self.store.mkdir(parents=True)
            self.api = self.cluster.api_client()
            self.kubelet = CountingKubelet(
                self.api, {"gaia-data": self.store}, namespace=self.namespace
            )
            self.kubelet.start()
            self.operator = Operator(
                self.cluster, self.store, self.namespace, self.work / "operator.log"
            ).start(self.env)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.operator is not None:
            with contextlib.suppress(Exception):
                self.cluster.kubectl(
                    "delete",
                    "gaianamespaces,deployments",
                    "--all",
                    "-n",
                    self.namespace,
                    "--wait=false",
                    check=False,
                )
            with contextlib.suppress(Exception):
                self.operator.stop()
        if self.kubelet is not None:
            self.kubelet.stop()
        if self.api is not None:
            self.api.close()
        self.cluster.stop()

    @property
    def pid(self) -> int:
        assert self.operator is not None and self.operator.process is not None
        return self.operator.process.pid

    def client(self) -> gaia.Gaia:
        """A client with a cluster-admin token: the operator's API wants one."""
        assert self.operator is not None
        token = self.cluster.admin_token()
        return gaia.Gaia({"gaia_host": self.operator.address, "timeout": 600, "token": token})

    def worker_token(self, key: str) -> str | None:
        """The token the kubelet projected into worker ``key``'s pod: /work/* wants it."""
        assert self.kubelet is not None
        found = sorted(
            (self.kubelet.workdir / self.namespace).glob(
                f"gaia-worker-{key}-*/volumes/gaia-token/token"
            ),
            key=lambda path: path.stat().st_mtime,
        )
        return found[-1].read_text() if found else None

    def resource(self, root: str) -> dict[str, Any]:
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api)
        found: Any = custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, root
        )
        return dict(found)

    def jobs(self, handled: bool) -> int:
        """Gaia's Jobs whose outcome the operator recorded (kept for their TTL), or not."""
        from kubernetes import client

        batch = client.BatchV1Api(self.api)
        mark = HANDLED_LABEL if handled else f"!{HANDLED_LABEL}"
        found = batch.list_namespaced_job(
            self.namespace, label_selector=f"app.kubernetes.io/managed-by=gaia,{mark}"
        )
        return len(found.items)

    def post(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        assert self.operator is not None
        request = urllib.request.Request(
            f"http://{self.operator.address}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer: dict[str, Any] = json.loads(reply.read())
        return answer


@dataclass
class Phase:
    root: str
    tasks: int
    seconds: float  # merge sent -> the end (or the time limit)
    finished: bool
    status: dict[str, Any]
    cpu: float
    began: float  # epoch seconds
    merge: float  # seconds the merge call took


def run_phase(
    world: World, root: str, values: int, timeout: float, probe: LoopProbe | None = None
) -> Phase:
    """Merge the fan-out DAG into ``root`` and follow its GaiaNamespace's status."""
    client = world.client()
    tasks = 2 * values
    cpu = harness.cpu_seconds(world.pid)
    began = time.time()
    deadline = time.monotonic() + timeout  # the merge's own time counts too
    with harness.stopwatch() as merging:
        client.merge(root, fanout(values))
    print(f"    {root}: merged {tasks:,} processes in {merging[0]:.1f} s", flush=True)
    status: dict[str, Any] = {}
    last_report = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            status = world.resource(root).get("status") or {}
        state = status.get("state")
        if state in ("complete", "error", "incomplete"):
            finished = True
            break
        if time.monotonic() > deadline:
            finished = False
            break
        if time.monotonic() - last_report > 30:
            counts = status.get("counts") or {}
            print(
                f"    {root}: {state}, {counts.get('complete', 0):,}/{tasks:,} complete, "
                f"{counts.get('failed', 0):,} failed, {time.time() - began:.0f} s",
                flush=True,
            )
            last_report = time.monotonic()
        time.sleep(0.5)
    seconds = time.time() - began
    cpu = harness.cpu_seconds(world.pid) - cpu
    return Phase(root, tasks, seconds, finished, status, cpu, began, merging[0])


def _status_writes(cluster: Cluster, root: str, since: float) -> list[float]:
    return sorted(
        e["t"]
        for e in cluster.audit(since)
        if (e.get("objectRef") or {}).get("resource") == "gaianamespaces"
        and (e.get("objectRef") or {}).get("subresource") == "status"
        and (e.get("objectRef") or {}).get("name") == root
        and e.get("verb") in ("patch", "update")
    )


def _gaps(times: Sequence[float]) -> str:
    if len(times) < 2:
        return "n/a"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return f"longest gap {max(gaps):.1f} s"


def _complete(phase: Phase) -> int:
    counts = phase.status.get("counts") or {}
    return int(counts.get("complete") or 0)


def _progress(phase: Phase) -> str:
    counts = phase.status.get("counts") or {}
    return (
        f"{counts.get('complete', 0):,}/{phase.tasks:,} complete, {counts.get('failed', 0):,} "
        f"failed, state {phase.status.get('state')}; the merge call took {phase.merge:.1f} s"
        + ("" if phase.finished else f" at the time limit ({phase.seconds:.0f} s)")
    )


def _failures(table: Table, name: str, world: World, phase: Phase) -> None:
    """The first failures the status lists, with what the kubelet saw the pod print (the
    stand-in kubelet serves no logs through the API, so the operator has no tail)."""
    failures = phase.status.get("failures") or []
    if not failures:
        return
    assert world.kubelet is not None
    for failure in failures[:3]:
        printed = ""
        pod = world.kubelet.job_pod.get(str(failure.get("job")))
        if pod is not None:
            with contextlib.suppress(KeyError, OSError):
                printed = world.kubelet.logs(*pod).strip().replace("\n", " / ")[-300:]
        table.add(
            name,
            f"failed: {failure.get('process')}",
            f"exit {failure.get('exitCode')}",
            f"{str(failure.get('error'))[:160]}; the pod printed: {printed!r}",
        )


def jobs_phase(table: Table, world: World, sizes: Sizes, profile: Path | None) -> None:
    values = sizes.jobs
    tasks = 2 * values
    name = f"{tasks:,}-task GaiaNamespace, Jobs"
    root = "bench-jobs"
    with LoopProbe(f"http://{world.operator.address}/health") as probe:  # type: ignore[union-attr]
        phase = run_phase(world, root, values, sizes.jobs_timeout, probe)
    settle = time.monotonic() + 30
    # Finished Jobs are marked handled in the background, then kept for their TTL
    # (GAIA_JOB_TTL_SECONDS): a Job left over is one whose end was never recorded.
    left = world.jobs(handled=False)
    while left and time.monotonic() < settle:
        time.sleep(1)
        left = world.jobs(handled=False)
    kept = world.jobs(handled=True)
    audit = [
        e
        for e in world.cluster.audit(phase.began)
        if (e.get("objectRef") or {}).get("resource") == "jobs"
    ]
    creates = [e for e in audit if e.get("verb") == "create"]
    made = sorted(e["t"] for e in creates if (e.get("responseStatus") or {}).get("code") == 201)
    refused = sum((e.get("responseStatus") or {}).get("code") == 409 for e in creates)
    requested = Counter((e.get("objectRef") or {}).get("name") for e in creates)
    again = sum(count > 1 for count in requested.values())
    lists = sum(e.get("verb") == "list" for e in audit)
    assert world.kubelet is not None
    runs = Counter(count for (r, _), count in world.kubelet.task_runs.items() if r == root)
    writes = _status_writes(world.cluster, root, phase.began)
    size = len(json.dumps(phase.status))
    done = _complete(phase)
    table.add(name, "outcome", f"{done:,}/{tasks:,} complete", _progress(phase))
    table.add(
        name,
        "end to end",
        rate(done, phase.seconds),
        f"{phase.seconds:.1f} s, merge → the status says {phase.status.get('state')}",
    )
    # The first half of the Jobs are runnable at once (the echoes): their creation is
    # limited by the operator alone; the copies follow the echoes' completions.
    burst = made[:values]
    span = burst[-1] - burst[0] if len(burst) > 1 else None
    table.add(
        name,
        "Job creations per second",
        f"{(len(burst) - 1) / span:.1f}/s" if span else "n/a",
        f"the first {len(burst):,} Jobs, all runnable at the merge; "
        f"{rate(len(made), made[-1] - made[0] if len(made) > 1 else None)} first to last; "
        "GAIA_JOBS_PER_SECOND=50; target ≥ 20",
    )
    table.add(
        name,
        "Job creation requests",
        f"{len(creates):,}",
        f"{len(made):,} created (201), {refused:,} refused as existing (409), "
        f"{again:,} Jobs asked for more than once; {lists:,} Job lists; "
        "target: one request per task",
    )
    table.add(
        name,
        "pods run per task (the kubelet's count)",
        ", ".join(f"{n}x: {c:,}" for n, c in sorted(runs.items())) or "none",
        f"{sum(runs.values()):,} runs for {tasks:,} tasks; target: each once",
    )
    table.add(
        name,
        "Jobs left over",
        f"{left:,}",
        f"not marked handled 30 s after the end; target 0 ({kept:,} handled, kept for their TTL)",
    )
    _failures(table, name, world, phase)
    table.add(
        name,
        "status writes",
        f"{len(writes) / phase.seconds:.2f}/s",
        f"{len(writes):,} in {phase.seconds:.0f} s, {_gaps(writes)}; target ≤ 1/s",
    )
    table.add(
        name,
        "operator CPU per task",
        f"{phase.cpu * 1000 / tasks:.1f} ms",
        f"{phase.cpu:.1f} s in all",
    )
    table.add(
        name,
        "operator RSS",
        f"{harness.rss_mib(world.pid):.0f} MiB",
        f"peak {harness.rss_mib(world.pid, 'VmHWM'):.0f} MiB",
    )
    table.add(name, "GaiaNamespace status size", f"{size / 1024:.1f} KiB", "")
    table.add(
        name, "event loop: slowest /health answer", probe.describe().split(",")[0], probe.describe()
    )
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        raw = profile / "operator-jobs.raw"
        with Profiler(world.pid, raw) as profiler:
            profiled = run_phase(world, "bench-profiled", values, sizes.jobs_timeout)
        _failures(table, f"{tasks:,}-task GaiaNamespace, Jobs, under py-spy", world, profiled)
        _summarise_profile(
            f"`gaia operator`, {tasks:,}-task GaiaNamespace run as Jobs "
            f"({profiled.seconds:.0f} s under py-spy, {_progress(profiled)})",
            raw,
            profiler,
            tasks,
        )


def workers_phase(
    table: Table, world: World, sizes: Sizes, work: Path, profile: Path | None
) -> None:
    values = sizes.workers
    tasks = 2 * values
    name = f"{tasks:,} processes, 2 workers"
    root = "bench-workers"
    client = world.client()
    client.launch(["w1", "w2"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        token = world.worker_token("w1")
        heard = world.post("/work/workers", {"worker": "w1"}, token)["workers"] if token else {}
        if {"w1", "w2"} <= set(heard):
            break
        time.sleep(0.5)
    else:
        table.add(name, "workers", "did not start", "no /work/take from w1 and w2 in 120 s")
        return
    assert world.kubelet is not None
    jobs_before = world.kubelet.job_pods[root]
    with contextlib.ExitStack() as profiling:
        profilers = _profile_workers(world, profile, profiling)
        with LoopProbe(f"http://{world.operator.address}/health") as probe:  # type: ignore[union-attr]
            phase = run_phase(world, root, values, sizes.workers_timeout, probe)
    done = _complete(phase)
    rss = harness.rss_mib(world.pid)
    peak = harness.rss_mib(world.pid, "VmHWM")
    writes = _status_writes(world.cluster, root, phase.began)
    # The kubelet writes a pod's log through a buffer: complete once the pod has ended.
    world.cluster.kubectl("delete", "deployments", "--all", "-n", world.namespace, timeout=120)
    world.kubelet.wait_idle(60)
    runs: Counter[str] = Counter()
    for worker, (namespace, pod) in world.kubelet.worker_pods.items():
        with contextlib.suppress(KeyError, OSError):
            for line in world.kubelet.logs(namespace, pod).splitlines():
                if f"worker {worker}: running " in line and line.endswith(f" of {root}"):
                    runs[line.split(": running ", 1)[1]] += 1
    per_process: Counter[str] = Counter()
    for task, count in runs.items():
        per_process[task.rpartition("#")[0]] += count
    histogram = Counter(per_process.values())
    table.add(name, "outcome", f"{done:,}/{tasks:,} complete", _progress(phase))
    operator_rate = done / phase.seconds if phase.seconds else 0.0
    table.add(name, "throughput", rate(done, phase.seconds), f"over {phase.seconds:.0f} s")
    table.add(
        name,
        "operator CPU per task",
        f"{phase.cpu * 1000 / max(done, 1):.1f} ms",
        f"{phase.cpu:.1f} s in all, {phase.cpu / phase.seconds:.0%} of a core",
    )
    table.add(
        name, "event loop: slowest /health answer", probe.describe().split(",")[0], probe.describe()
    )
    table.add(
        name,
        "status writes",
        f"{len(writes) / phase.seconds:.2f}/s",
        f"{len(writes):,}, {_gaps(writes)}",
    )
    table.add(
        name,
        "runs per process (the workers' logs)",
        ", ".join(f"{n}x: {c:,}" for n, c in sorted(histogram.items())) or "none",
        f"{sum(runs.values()):,} runs; tasks handed to Jobs instead: "
        f"{world.kubelet.job_pods[root] - jobs_before:,}",
    )
    _failures(table, name, world, phase)
    table.add(
        name,
        "GaiaNamespace status size",
        f"{len(json.dumps(phase.status)) / 1024:.1f} KiB",
        "target < 256 KiB",
    )
    table.add(name, "operator RSS", f"{rss:.0f} MiB", f"peak {peak:.0f} MiB; target < 1 GiB")
    for who, (raw, profiler) in profilers.items():
        _summarise_profile(
            f"{who}, {tasks:,} processes run by 2 workers ({profiler.seconds:.0f} s under "
            f"py-spy, {_progress(phase)})",
            raw,
            profiler,
            done,
        )
    # The same processes through `gaia serve --workers 2`, for the ratio.
    serve = GaiaServe(work / "serve", 2)
    with serve:
        serve_client = serve.client()
        serve_client.command(COMMANDS)
        began = time.time()
        serve_client.merge("bench", fanout(values))
        limit = min(sizes.serve_timeout, max(phase.seconds, 10.0))
        ended = time.monotonic() + limit
        state = "?"
        while time.monotonic() < ended:
            state = serve_client.workflows()["workflows"].get("bench", "?")
            if state in ("complete", "error", "incomplete"):
                break
            time.sleep(0.2)
        seconds = time.time() - began
        finished = sum(
            1 for folder in ("gen", "use") for _ in (serve.data / "bench" / folder).glob("*")
        )
    serve_rate = finished / seconds
    table.add(
        name,
        "`gaia serve --workers 2`, same processes",
        rate(finished, seconds),
        f"{finished:,} complete in {seconds:.0f} s ({state})",
    )
    table.add(
        name,
        "operator workers / gaia serve",
        ratio(operator_rate, serve_rate),
        "target ≥ 0.50",
    )


def _profile_workers(
    world: World, profile: Path | None, stack: contextlib.ExitStack
) -> dict[str, tuple[Path, Profiler]]:
    """py-spy on the operator and on each worker's `gaia worker` process, while the
    ``stack`` lasts; nothing without ``profile``."""
    if profile is None:
        return {}
    profile.mkdir(parents=True, exist_ok=True)
    pids = {"`gaia operator`": ("operator-workers.raw", world.pid)}
    for key in ("w1", "w2"):
        found = subprocess.run(
            ["pgrep", "-f", f"gaia worker --key {key} "], capture_output=True, text=True
        ).stdout.split()
        # the Python process itself, not the sandbox the kubelet started it in, and one
        # of this run's (the kubelet runs pods as our descendants), not another bench's
        pythons = [
            int(pid)
            for pid in found
            if _comm(int(pid)).startswith(("python", "gaia")) and _descends_from_us(int(pid))
        ]
        if pythons:
            pids[f"`gaia worker` {key}"] = (f"worker-{key}.raw", pythons[0])
        else:
            print(
                f"--profile: no `gaia worker --key {key}` process found; not profiled", flush=True
            )
    profilers = {}
    for who, (name, pid) in pids.items():
        raw = profile / name
        profilers[who] = (raw, stack.enter_context(Profiler(pid, raw)))
    return profilers


def _summarise_profile(title: str, raw: Path, profiler: Profiler, tasks: int) -> None:
    """Summarise the stacks in ``raw`` into the ``.md`` beside it, and print it."""
    text = summarise(
        f"{title} — raw stacks: {raw.name}",
        Profile.load(raw),
        max(tasks, 1),
        profiler.seconds,
    )
    raw.with_suffix(".md").write_text(text + "\n")
    print(text, flush=True)


def _descends_from_us(pid: int) -> bool:
    us = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rpartition(")")[2].split()[1])  # the parent's pid
        if pid == us:
            return True
    return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def work_folder(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="gaia-opbench-"))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--only", default="jobs,workers", help="comma-separated phases")
    parser.add_argument(
        "--workers-timeout", type=float, help="seconds for the workers phase (default 1,800)"
    )
    parser.add_argument(
        "--workers-values",
        type=int,
        help="values per rule in the workers phase (2x processes; default 50,000)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the operator over a second 1,000-Job run, and the operator and the "
        "workers over the workers phase; raw stacks and summaries go into this folder",
    )
    parser.add_argument("--output", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.workers_timeout:
        sizes.workers_timeout = args.workers_timeout
    if args.workers_values:
        sizes.workers = args.workers_values
    only = set(args.only.split(","))
    env = {
        "GAIA_JOBS_PER_SECOND": "50",
        "GAIA_RECHECK_SECONDS": "10",  # the defaults, not the tests' quick ones
        "GAIA_STATUS_SECONDS": "1",
        "GAIA_WORKER_IMAGE": "bench",  # the commands' image: workers take their tasks
        "GAIA_WORKER_IDLE_SECONDS": "900",
    }
    header = harness.describe_machine(
        {
            "operator settings": ", ".join(f"{k}={v}" for k, v in env.items()),
            "sizes": "quick (smoke test)" if args.quick else "full",
        }
    )
    print("\n".join(header), flush=True)
    table = Table("The operator against the test API server")
    with work_folder(args.keep) as work, World(work, env) as world:
        world.client().command(COMMANDS)
        if "jobs" in only:
            jobs_phase(table, world, sizes, args.profile)
        if "workers" in only:
            workers_phase(table, world, sizes, work, args.profile)
        assert world.kubelet is not None
        if world.kubelet.errors:
            print(f"kubelet errors: {world.kubelet.errors[:5]}")
    footer = f"load average at the end (1, 5, 15 min): {harness.loadavg()}"
    text = "\n".join([table.render(), "", *header, footer])
    print("\n" + text, flush=True)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
