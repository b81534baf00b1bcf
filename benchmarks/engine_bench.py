"""Engine benchmark: expand and plan a large namespace, and the cost of one completion.

Prints figures; asserts nothing. Run with ``make bench`` (or ``python benchmarks/engine_bench.py
--values 50000``; ``--million`` also times a completion at 1,000,000 processes). The namespace has two rules fanned out over N values: ``gen-<v>``
writes ``gen/<v>``, ``use-<v>`` reads it and writes ``use/<v>``: 2N processes.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from gaia.engine.instructions import StartTask
from gaia.engine.lookup import Lookup
from gaia.engine.namespace import Namespace
from gaia.engine.registry import Registry
from gaia.kube.status import summary

COMMANDS = [
    {
        "key": "make",
        "image": "alpine",
        "command": ["touch", "/out/o"],
        "vars": {"V": "x"},
        "outputs": {"OUT": "/out/o"},
    },
    {
        "key": "copy",
        "image": "alpine",
        "command": ["cp", "/in", "/out/o"],
        "vars": {"V": "x"},
        "inputs": {"IN": "/in"},
        "outputs": {"OUT": "/out/o"},
    },
]


def processes(values: int) -> list[dict[str, Any]]:
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


def build(values: int) -> tuple[Namespace, list[StartTask], float]:
    registry = Registry()
    registry.commit(registry.prepare(COMMANDS)[0])
    namespace = Namespace("bench", registry)
    specs = processes(values)
    began = time.perf_counter()
    plan = namespace.prepare_merge(specs, registry.commands)
    started = [i for i in namespace.apply(plan, Lookup()) if isinstance(i, StartTask)]
    return namespace, started, time.perf_counter() - began


def completion_cost(values: int, sample: int = 2000) -> tuple[float, float, float]:
    """Median, mean and 99th percentile seconds per completion (start report + success).

    The mean includes the garbage collector's full passes, which grow with the heap; the
    median is the engine's own work."""
    namespace, started, _ = build(values)
    gc.collect()
    times = []
    for start in started[:sample]:
        began = time.perf_counter()
        namespace.task_started(start.process.key, start.run, {})
        namespace.task_succeeded(start.process.key, start.run)
        times.append(time.perf_counter() - began)
    times.sort()
    return times[len(times) // 2], sum(times) / len(times), times[len(times) * 99 // 100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=50_000, help="fan-out values per rule")
    parser.add_argument(
        "--million",
        action="store_true",
        help="also the cost of one completion at 1,000,000 processes (a minute more, 2 GiB)",
    )
    args = parser.parse_args()
    n = args.values

    namespace, started, seconds = build(n)
    print(
        f"expand+validate+plan {2 * n:,} processes: {seconds:.2f} s "
        f"({len(started):,} runnable, {namespace.graph.data_count():,} data keys)"
    )
    began = time.perf_counter()
    status = namespace.status()
    first = time.perf_counter() - began
    began = time.perf_counter()
    namespace.status()
    print(
        f"status() of {len(status['flow']['process']):,} processes: {first:.2f} s, "
        f"then {time.perf_counter() - began:.2f} s while the graph is unchanged"
    )
    began = time.perf_counter()
    namespace.prepare_merge(
        [
            {
                "key": "one-more",
                "command": "copy",
                "inputs": {"IN": "gen/v0"},
                "outputs": {"OUT": "x/one"},
            }
        ],
        namespace.registry.commands,
    )
    print(f"validate a 1-process merge into it: {(time.perf_counter() - began) * 1e3:.2f} ms")
    for start in started[: n // 2]:  # a quarter of the namespace done, the rest runnable
        namespace.task_started(start.process.key, start.run, {})
        namespace.task_succeeded(start.process.key, start.run)
    began = time.perf_counter()
    counts = namespace.counts()
    counted = time.perf_counter() - began
    began = time.perf_counter()
    summary(namespace, handled={}, generation=1, problem=None)
    print(
        f"the operator's status summary ({counts['complete']:,} done, {counts['queued']:,} "
        f"queued): {(time.perf_counter() - began) * 1e3:.1f} ms, of which counts "
        f"{counted * 1e3:.3f} ms"
    )
    del namespace, started, status
    gc.collect()

    tracemalloc.start()
    kept = build(n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    print(f"peak memory while building {2 * n:,} processes: {peak / 2**20:.0f} MiB")

    sizes = [("1,000", 500), (f"{2 * n:,}", n)]
    if args.million:
        sizes.append(("1,000,000", 500_000))
    for label, values in sizes:
        median, mean, p99 = completion_cost(values)
        print(
            f"per completion at {label} processes: median {median * 1e6:.1f} µs, "
            f"mean {mean * 1e6:.1f} µs, p99 {p99 * 1e6:.1f} µs"
        )


if __name__ == "__main__":
    main()
