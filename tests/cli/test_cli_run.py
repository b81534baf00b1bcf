"""``gaia run`` end to end, with its embedded server: exit codes, progress, results."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "triangle"

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gaia.cli", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_running_the_triangle_completes_and_lists_its_results(tmp_path: Path) -> None:
    result = _run(str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "seeded 2 keys" in lines[0]
    assert sum(line.startswith("✓ ") for line in lines) == 10
    assert any(line.startswith("triangle complete in ") for line in lines)
    assert "results in gaia-data/triangle/:" in lines
    assert (tmp_path / "gaia-data" / "triangle" / "wc" / "both").is_file()

    again = _run(str(EXAMPLE), cwd=tmp_path)  # nothing to recompute, nothing re-shown
    assert again.returncode == 0, again.stderr
    assert "(2 already there)" in again.stdout
    assert "✓ " not in again.stdout


def test_a_failing_step_shows_its_log_and_exits_1(tmp_path: Path) -> None:
    flow = tmp_path / "Broken Flow"
    flow.mkdir()
    (flow / "commands.yaml").write_text(
        '- key: fail\n  image: ubuntu\n  command: ["sh", "-c", "echo oops >&2; exit 3"]\n'
        "  outputs: {OUT: /out/out}\n"
    )
    (flow / "processes.yaml").write_text("- key: broken\n  command: fail\n  outputs: {OUT: x}\n")
    result = _run(str(flow), "--quiet", "--data", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("broken-flow error in ")
    assert "failed: broken; see `gaia logs broken-flow broken`" in result.stdout


def test_a_differing_seed_file_is_kept_and_said(tmp_path: Path) -> None:
    flow = tmp_path / "triangle"
    shutil.copytree(EXAMPLE, flow)
    kept = tmp_path / "gaia-data" / "triangle" / "animals" / "rabbit"
    kept.parent.mkdir(parents=True)
    kept.write_text("my own rabbit\n")
    result = _run(str(flow), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept existing animals/rabbit" in result.stderr
    assert kept.read_text() == "my own rabbit\n"
