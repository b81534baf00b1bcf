"""Every ``gaia`` subcommand explains itself: ``--help`` exits 0, names its arguments and
shows an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs the `gaia` command


ARGUMENTS = {
    "serve": ["--host", "--port", "--data", "--workers"],
    "run": ["DIR", "--namespace", "--host", "--data", "--workers", "--quiet", "--stay"],
    "status": ["NS", "--host", "--json"],
    "expire": ["NS", "KEY", "--host"],
    "halt": ["NS", "--host"],
    "trigger": ["NS", "--host"],
    "logs": ["NS", "PROCESS", "--host", "--follow"],
    "graph": ["NS", "--format", "--expand", "--all", "--output", "--host"],
    "completion": ["bash", "zsh", "fish"],
    "launch": ["KEY", "--host"],
    "commands": ["--host", "--json"],
    "listen": ["NS", "--host", "--kafka"],
    "worker": ["--key", "--api", "--idle"],
    "task": ["fetch", "upload"],
}
POD_SIDE = ("operator", "worker", "task")


def _gaia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gaia.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_subcommand_help_names_its_arguments_and_shows_an_example(command: str) -> None:
    result = _gaia(command, "--help")
    assert result.returncode == 0, result.stderr
    for argument in ARGUMENTS[command]:
        assert argument in result.stdout, f"`gaia {command} --help` does not mention {argument}"
    assert f"example:\n  gaia {command}" in result.stdout


def test_top_level_help_leads_with_run_serve_status_and_keeps_pod_commands_aside() -> None:
    result = _gaia("--help")
    assert result.returncode == 0
    listed = [
        line.split()[0]
        for line in result.stdout.split("COMMAND\n", 1)[1].splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed[:3] == ["run", "serve", "status"]
    assert sorted(listed) == sorted(set(ARGUMENTS) - set(POD_SIDE))
    first_screen = "\n".join(result.stdout.splitlines()[:24])
    assert "run a workflow folder" in first_screen
    for command in POD_SIDE:
        assert f"\n    {command} " not in result.stdout
        assert f"gaia {command}" in result.stdout  # named in the epilog, with --help


def test_completion_prints_shell_code_for_gaia() -> None:
    result = _gaia("completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "complete " in result.stdout and "gaia" in result.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "gaia"
    if not script.exists():
        pytest.skip("the gaia console script is not installed in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "gaia run" in result.stdout
