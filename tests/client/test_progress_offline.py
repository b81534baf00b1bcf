"""The live progress display and the status summaries, against scripted replies of the
tiny real HTTP server of tiny_gaia.py."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_gaia import TinyServer, serve_tiny

import gaia
from gaia.progress import Progress, counts_of, format_duration, render_status, render_summary
from waiting import eventually


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[TinyServer]:
    yield from serve_tiny()


def _task(state: str, run: int = 1, **extra: Any) -> dict[str, Any]:
    return {"state": state, "run": run, "started": 100.0, "ended": 100.05, **extra}


FAILED = _task("error", error="exit code 1", log_tail=["reading /in/B", "cat: /in/B: missing"])


def test_progress_prints_each_finished_step_once_then_the_counts(tiny_server: TinyServer) -> None:
    old = {"old": _task("complete")}  # finished before this run: not shown again
    tiny_server.statuses["tri"] = [
        {"state": "initialized", "tasks": old},
        {"state": "running", "tasks": {**old, "md5": _task("complete"), "cat": _task("running")}},
        {"state": "error", "tasks": {**old, "md5": _task("complete"), "cat": FAILED}},
    ]
    tiny_server.events["tri"] = [
        {"event": "step-complete", "root": "tri", "process": "md5", "task": "md5#1", "duration": 2},
        {"event": "log", "root": "tri", "process": "cat", "task": "cat#1", "line": "x"},
    ]
    out = io.StringIO()
    progress = Progress(gaia.Gaia({"gaia_host": tiny_server.address}), "tri", out, tty=False,
                        poll_interval=0.01)  # fmt: skip
    progress.start()
    status = progress.wait()
    assert status["state"] == "error"
    lines = out.getvalue().splitlines()
    assert lines.count("✓ md5  2.0s") == 1
    assert "✗ cat  exit code 1" in lines
    assert "    | cat: /in/B: missing" in lines
    assert not any("old" in line for line in lines)
    assert lines[-1] == "tri  error  2/3 processes  0 running  1 failed"
    assert "\r" not in out.getvalue()


def test_progress_on_a_terminal_keeps_one_live_line_and_clears_it(
    tiny_server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    tiny_server.statuses["tty"] = [
        {"state": "initialized"},
        {"state": "running", "counts": {"processes": 4, "complete": 1, "running": 1, "failed": 0}},
        {"state": "complete", "counts": {"processes": 4, "complete": 4, "running": 0, "failed": 0}},
    ]
    out = io.StringIO()
    progress = Progress(gaia.Gaia({"gaia_host": tiny_server.address}), "tty", out, tty=True,
                        poll_interval=0.01)  # fmt: skip
    progress.start()
    assert progress.wait()["state"] == "complete"
    text = out.getvalue()
    assert "tty  running  1/4 processes  1 running  0 failed" in text
    assert "━" in text and "\x1b[" in text  # rich's bar, in colour
    assert text.endswith("\x1b[2K")  # the live line is erased: the summary comes next


def test_quiet_progress_prints_nothing(tiny_server: TinyServer) -> None:
    tiny_server.statuses["quiet"] = [{"state": "complete"}]
    progress = Progress(gaia.Gaia({"gaia_host": tiny_server.address}), "quiet", out=None)
    progress.start()
    assert progress.wait() == {"state": "complete"}


def test_counts_are_derived_when_the_server_omits_them() -> None:
    status = {
        "tasks": {"a": _task("complete"), "b": _task("error"), "c": _task("running")},
        "data": {"x": "complete", "y": "missing"},
        "flow": {"process": {"a": {}, "b": {}, "c": {}, "d": {}}},
    }
    counts = counts_of(status)
    assert counts == {"processes": 4, "complete": 1, "running": 1, "queued": 0, "failed": 1,
                      "data": 2, "data_complete": 1}  # fmt: skip


def test_render_status_lists_failures_and_at_most_twenty_waiting_keys() -> None:
    waiting = [f"animals/{n}" for n in range(25)]
    reply = {
        "root": "tri",
        "status": {"state": "error", "tasks": {"cat": FAILED}, "waiting": waiting},
    }
    text = render_status(reply)
    assert text.splitlines()[0] == "tri: error"
    assert "✗ cat  exit code 1" in text and "| cat: /in/B: missing" in text
    assert "animals/19" in text and "animals/20" not in text
    assert "... and 5 more" in text


def test_render_summary_lists_the_produced_keys_with_their_sizes(tmp_path: Path) -> None:
    (tmp_path / "md5").mkdir()
    (tmp_path / "md5" / "rabbit").write_text("0123456789")
    status = {
        "state": "complete",
        "data": {"animals/rabbit": "complete", "md5/rabbit": "complete"},
        "flow": {"data": {"animals/rabbit": {"from": []}, "md5/rabbit": {"from": ["md5"]}}},
    }
    text = render_summary("tri", status, 3.2, tmp_path, "127.0.0.1:1")
    assert text.splitlines()[0].startswith("tri complete in 3.2s")
    assert f"results in {tmp_path}/:" in text
    assert "  md5/rabbit  10 bytes" in text
    assert "animals/rabbit" not in text


def test_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (0.05, 3.21, 125, 3720)] == ["0.05s", "3.2s", "2m05s",
                                                                      "1h02m"]  # fmt: skip


def test_while_events_flow_progress_asks_only_for_the_status_summary(
    tiny_server: TinyServer,
) -> None:
    """`gaia run` must cost the server nothing measurable: the whole status of a big
    namespace is megabytes, its summary a few numbers."""
    tiny_server.statuses["forever"] = [
        {"state": "running", "counts": {"processes": 2, "complete": 0}},
        {"state": "running", "counts": {"processes": 2, "complete": 1}},
        {"state": "complete", "counts": {"processes": 2, "complete": 2}},
    ]
    progress = Progress(gaia.Gaia({"gaia_host": tiny_server.address}), "forever", io.StringIO(),
                        tty=False, poll_interval=0.01)  # fmt: skip
    progress.start()
    eventually(lambda: progress._streaming, "the event stream to flow", 10)
    assert progress.wait()["state"] == "complete"
    asked = [
        body
        for call, body in tiny_server.requests
        if call == "status" and body.get("root") == "forever"
    ]
    assert asked[0] == {"root": "forever"}  # at the start: which steps had finished
    assert asked[-1] == {"root": "forever"}  # at the end: the whole status, once
    assert all(body == {"root": "forever", "detail": False} for body in asked[1:-1])
    assert len(asked) >= 4
