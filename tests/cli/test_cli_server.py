"""The CLI's views against a real `gaia serve`: the namespaces table, the graph as
Mermaid, DOT and SVG, `logs -f` following a running task, and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import gaia
from server.gaia_server import TRIANGLE, Server, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(tmp_path_factory.mktemp("cli") / "data").start()
    flow = started.client()
    for source in (TRIANGLE / "data").rglob("*"):
        if source.is_file():
            target = started.data / "triangle" / source.relative_to(TRIANGLE / "data")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
    flow.merge("triangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))
    status = wait_for(flow, "triangle", ("complete", "error"))
    failed = {
        k: (t.get("error"), t.get("log_tail"))
        for k, t in status["tasks"].items()
        if t["state"] == "error"
    }
    assert status["state"] == "complete", f"the triangle failed: {failed}"
    yield started
    started.stop()


def _gaia(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gaia.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GAIA_HOST": server.address, **env},
    )


def test_serve_prints_the_dashboard_address(server: Server) -> None:
    assert f"dashboard at http://{server.address}/ui/" in server.log.read_text()


def test_status_without_a_namespace_is_a_table_of_namespaces(server: Server) -> None:
    result = _gaia(server, "status")
    assert result.returncode == 0, result.stderr
    header, _, row = result.stdout.splitlines()[:3]
    assert header.split() == [
        "namespace",
        "state",
        "processes",
        "running",
        "queued",
        "failed",
        "data",
    ]
    assert row.split() == ["triangle", "complete", "10/10", "0", "0", "0", "12/12"]
    assert "\x1b[" not in result.stdout  # not a terminal: no colours
    assert all(line == line.rstrip() for line in result.stdout.splitlines())


def test_graph_prints_mermaid_dot_and_svg(server: Server, tmp_path: Path) -> None:
    mermaid = _gaia(server, "graph", "triangle")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert '[["cat-* (2)"]]:::complete' in mermaid.stdout
    dot = _gaia(server, "graph", "triangle", "--format", "dot").stdout
    assert dot.startswith('digraph "triangle" {') and '"pg:cat" -> "dg:cat>OUTPUT";' in dot
    out = tmp_path / "triangle.svg"
    drawn = _gaia(server, "graph", "triangle", "-f", "svg", "--all", "-o", str(out))
    assert drawn.returncode == 0, drawn.stderr
    svg = ET.parse(out).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"cat-rabbit", "cat-snake", "wc/both", "animals/rabbit"} <= texts
    missing = _gaia(server, "graph", "nope")
    assert missing.returncode == 2 and "no namespace 'nope'" in missing.stderr


def test_logs_follow_prints_each_line_once_as_it_comes_and_ends_with_the_task(
    server: Server,
) -> None:
    flow = server.client()
    flow.command(
        [
            {
                "key": "tick",
                "image": "busybox",
                "command": ["sh", "-c", "for i in $(seq 1 12); do echo tick $i; sleep 0.2; done"],
                "stdout": "/out/out",
                "outputs": {"OUT": "/out/out"},
            }
        ]
    )
    flow.merge("ticks", [{"key": "ticker", "command": "tick", "outputs": {"OUT": "ticks"}}])
    result = _gaia(server, "logs", "-f", "ticks", "ticker")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"tick {i}" for i in range(1, 13)]
    assert "(ticker: complete)" in result.stderr
    again = _gaia(server, "logs", "--follow", "ticks", "ticker")  # finished: print and return
    assert again.stdout.splitlines()[-1] == "tick 12" and "(ticker: complete)" in again.stderr


def _completions(server: Server, line: str, tmp_path: Path) -> list[str]:
    out = tmp_path / "completions"
    result = _gaia(
        server,
        _ARGCOMPLETE="1",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        _ARGCOMPLETE_STDOUT_FILENAME=str(out),
        _ARGCOMPLETE_IFS="\n",
    )
    assert result.returncode == 0, result.stderr
    return [word.strip() for word in out.read_text().split("\n")]  # bash's trailing blank


def test_completion_knows_commands_namespaces_and_processes(server: Server, tmp_path: Path) -> None:
    assert "status" in _completions(server, "gaia sta", tmp_path)
    assert "triangle" in _completions(server, "gaia status tri", tmp_path)
    processes = _completions(server, "gaia logs triangle md5-", tmp_path)
    assert sorted(processes) == ["md5-rabbit", "md5-snake"]
