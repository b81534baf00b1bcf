"""The CLI without a server: how it fails, how it names namespaces, how it seeds data."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gaia.cli import main
from gaia.errors import InvalidRequest
from gaia.folder import namespace_for, seed

EXAMPLE = Path(__file__).parents[2] / "examples" / "triangle"


def _closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.slow  # runs the `gaia` command
def test_an_unreachable_server_is_one_line_on_stderr_and_exit_2() -> None:
    address = _closed_address()
    result = subprocess.run(
        [sys.executable, "-m", "gaia.cli", "status", "triangle", "--host", address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"gaia: error: cannot reach a Gaia server at {address}")
    assert "gaia serve" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_run_of_a_folder_without_yaml_says_which_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path), "--host", _closed_address()]) == 2
    assert f"gaia: error: {tmp_path / 'commands.yaml'}: no such file" in capsys.readouterr().err


def test_run_against_a_remote_server_does_not_seed_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = _closed_address()
    assert main(["run", str(EXAMPLE), "--host", address]) == 2
    captured = capsys.readouterr()
    assert "is not copied to the remote server" in captured.out
    assert f"cannot reach a Gaia server at {address}" in captured.err


def test_the_namespace_defaults_to_the_folder_name_lowercased(tmp_path: Path) -> None:
    assert namespace_for(EXAMPLE) == "triangle"
    assert namespace_for(tmp_path / "My Flow_2") == "my-flow-2"
    with pytest.raises(InvalidRequest, match="--namespace"):
        namespace_for(tmp_path / "__")


def test_seeding_copies_missing_files_and_keeps_differing_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "gaia-data" / "triangle"
    said: list[str] = []
    assert seed(EXAMPLE / "data", target, said.append) == 2
    rabbit = target / "animals" / "rabbit"
    assert rabbit.read_bytes() == (EXAMPLE / "data" / "animals" / "rabbit").read_bytes()
    assert said == [f"seeded 2 keys from {EXAMPLE / 'data'} into {target}/"]

    rabbit.write_text("a different rabbit\n")
    (target / "animals" / "snake").unlink()
    said.clear()
    assert seed(EXAMPLE / "data", target, said.append) == 1
    assert rabbit.read_text() == "a different rabbit\n"
    assert "kept existing animals/rabbit" in capsys.readouterr().err
    assert said == [f"seeded 1 key from {EXAMPLE / 'data'} into {target}/"]

    said.clear()
    assert seed(EXAMPLE / "data", target, said.append) == 0
    assert said == [f"seeded 0 keys from {EXAMPLE / 'data'} into {target}/ (1 already there)"]
    assert not list((tmp_path / "gaia-data").glob(".seed-*"))
