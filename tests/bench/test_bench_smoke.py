"""The benchmark harnesses (benchmarks/) run end to end at tiny sizes, so that they cannot
rot. Their figures are printed, never asserted: only that every workload ran and finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TABLE = "| workload | what | figure | note |"


def run_quick(script: str, *args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{script} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


@pytest.mark.slow
def test_bench_compare_runs_every_workload() -> None:
    # Snakemake only if `make bench-compare` installed it already: no download here.
    only = "trivial,chain,merge,listeners"
    out = run_quick("compare.py", "--snakemake", "cached", "--only", only, timeout=600)
    assert TABLE in out
    assert "did not finish" not in out, out
    rows = ("in bubblewrap", "`gaia serve --workers 2`", "step-complete", "restart", "2 listeners")
    for row in rows:
        assert row in out, f"no {row!r} row:\n{out}"


@pytest.mark.slow
def test_bench_operator_runs_both_phases() -> None:
    out = run_quick("operator_bench.py", timeout=900)
    assert TABLE in out
    for row in ("Job creation requests", "pods run per task", "2 workers", "gaia serve"):
        assert row in out, f"no {row!r} row:\n{out}"
