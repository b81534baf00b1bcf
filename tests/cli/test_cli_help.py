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
    "run": ["DIR", "--namespace", "--host", "--data", "--workers", "--quiet"],
    "status": ["NS", "--host", "--json"],
    "expire": ["NS", "KEY", "--host"],
    "halt": ["NS", "--host"],
    "trigger": ["NS", "--host"],
    "logs": ["NS", "PROCESS", "--host"],
    "launch": ["KEY", "--host"],
    "commands": ["--host", "--json"],
    "listen": ["NS", "--host", "--kafka"],
    "worker": ["--key", "--api", "--idle"],
}


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


def test_top_level_help_lists_every_subcommand() -> None:
    result = _gaia("--help")
    assert result.returncode == 0
    for command in ARGUMENTS:
        assert f"\n    {command} " in result.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "gaia"
    if not script.exists():
        pytest.skip("the gaia console script is not installed in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "gaia run" in result.stdout
