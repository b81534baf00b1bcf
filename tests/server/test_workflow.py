"""The standalone server end to end, through the real client over HTTP."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gaia_server import Server, wait_for

import gaia
from ports import free_port
from processes import alive
from waiting import eventually

pytestmark = pytest.mark.slow  # a `gaia serve` process per test


SLEEPER = {
    "key": "sleeper",
    "image": "ubuntu",
    "command": ["sh", "-c", "sleep 60; echo done > /out/o"],
    "outputs": {"O": "/out/o"},
}
FAILER = {
    "key": "failer",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo about to fail; echo oops >&2; exit 3"],
    "outputs": {"O": "/out/o"},
}


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_triangle_computes_the_right_contents(server: Server, triangle: gaia.Gaia) -> None:
    status = wait_for(triangle, "triangle")
    assert status["counts"]["complete"] == 10
    assert set(status["data"].values()) == {"complete"}
    space = server.data / "triangle"
    assert (space / "md5/rabbit").read_text().split()[0] == md5_of(space / "animals/rabbit")
    assert (space / "hello/snake").read_text() == "hello snake world\n"
    cat_rabbit = (space / "md5/rabbit").read_text() + (space / "hello/rabbit").read_text()
    assert (space / "cat/rabbit").read_text() == cat_rabbit
    both = (space / "cat/rabbit").read_text() + (space / "cat/snake").read_text()
    lines, words, chars = both.count("\n"), len(both.split()), len(both.encode())
    assert (space / "wc/both").read_text().split()[:3] == [str(lines), str(words), str(chars)]
    assert status["tasks"]["both:wc-ab"]["state"] == "complete"
    assert status["tasks"]["md5-rabbit"]["handle"]["pid"] > 0


def test_a_changed_source_recomputes_exactly_its_downstream(
    server: Server, triangle: gaia.Gaia
) -> None:
    wait_for(triangle, "triangle")
    space = server.data / "triangle"
    before = {
        p.relative_to(space).as_posix(): p.stat().st_mtime_ns
        for p in space.rglob("*")
        if p.is_file()
    }
    (space / "animals/snake").write_text("The snake is gone.\n")
    reply = triangle.expire("triangle", ["animals/snake"])
    assert reply["expire"]["process"] == [
        "both:cat-ab",
        "both:wc-ab",
        "cat-snake",
        "md5-snake",
        "wc-snake",
    ]
    assert reply["expire"]["data"] == [
        ".private/both/AB",
        "cat/snake",
        "md5/snake",
        "wc/both",
        "wc/snake",
    ]
    status = wait_for(triangle, "triangle")
    after = {
        p.relative_to(space).as_posix(): p.stat().st_mtime_ns
        for p in space.rglob("*")
        if p.is_file()
    }
    changed = sorted(key for key in after if after[key] != before.get(key))
    assert changed == [
        ".private/both/AB",
        "animals/snake",
        "cat/snake",
        "md5/snake",
        "wc/both",
        "wc/snake",
    ]
    assert (space / "md5/snake").read_text().split()[0] == md5_of(space / "animals/snake")
    assert status["tasks"]["md5-snake"]["run"] == 2
    assert status["tasks"]["md5-rabbit"]["run"] == 1


def start_sleeping(flow: gaia.Gaia) -> int:
    """Merge a long task into namespace 'sleepy'; return its pid once it runs."""
    flow.command([SLEEPER])
    flow.merge("sleepy", [{"key": "nap", "command": "sleeper", "outputs": {"O": "rested"}}])
    status = eventually(
        lambda: flow.status("sleepy")["status"],
        "the nap to run",
        until=lambda status: status["tasks"].get("nap", {}).get("state") == "running",
    )
    return int(status["tasks"]["nap"]["handle"]["pid"])


def test_halt_kills_a_running_task_and_publishes_nothing(server: Server) -> None:
    flow = server.client()
    pid = start_sleeping(flow)
    assert alive(pid)
    assert flow.halt("sleepy") == {"halt": "sleepy"}
    eventually(lambda: not alive(pid), f"the nap (pid {pid}) to be killed", 30)
    status = flow.status("sleepy")["status"]
    assert status["state"] == "halted"
    assert status["tasks"]["nap"]["state"] == "cancelled"
    assert status["data"]["rested"] == "missing"
    # A deliberate pause: a report of the killed run, were there one, would arrive now and
    # must publish nothing. (The executor drops a cancelled run: there is nothing to await.)
    time.sleep(0.3)
    assert not (server.data / "sleepy" / "rested").exists()
    assert flow.trigger("sleepy") == {"trigger": "sleepy"}
    status = wait_for(flow, "sleepy", ("running",))
    assert status["tasks"]["nap"]["run"] == 2
    flow.halt("sleepy")


def test_trigger_resumes_a_halted_namespace(server: Server, triangle: gaia.Gaia) -> None:
    triangle.halt("triangle")
    assert triangle.status("triangle")["status"]["state"] == "halted"
    triangle.trigger("triangle")
    wait_for(triangle, "triangle")


def test_a_failed_task_publishes_nothing_and_reports_its_log(server: Server) -> None:
    flow = server.client()
    flow.command([FAILER])
    flow.merge("failing", [{"key": "bad", "command": "failer", "outputs": {"O": "never"}}])
    status = wait_for(flow, "failing", ("error",))
    task = status["tasks"]["bad"]
    assert task["state"] == "error" and task["exit_code"] == 3
    assert "oops" in task["log_tail"] and "about to fail" in task["log_tail"]
    assert status["waiting"] == ["never"]
    assert not (server.data / "failing" / "never").exists()
    assert "oops" in flow.logs("failing", "bad")["log"]


def test_events_stream_to_listeners(server: Server, triangle: gaia.Gaia) -> None:
    seen = []
    stream = triangle.events("triangle")
    triangle.expire("triangle", ["animals/rabbit"])
    for event in stream:
        seen.append(event)
        if event["event"] == "flow-complete":
            stream.close()
    names = {event["event"] for event in seen}
    assert {"step-start", "step-complete", "data-complete", "log", "flow-complete"} <= names
    log = next(e for e in seen if e["event"] == "log" and e["process"] == "md5-rabbit")
    assert log["stream"] == "stdout" and log["root"] == "triangle"


def test_a_stream_opened_since_an_event_replays_the_later_ones(
    server: Server, triangle: gaia.Gaia
) -> None:
    wait_for(triangle, "triangle")
    replayed = []
    stream = triangle.events("triangle", since=0)
    for event in stream:
        replayed.append(event)
        if event["event"] == "flow-complete":
            stream.close()
    ids = [event["id"] for event in replayed]
    assert ids == sorted(set(ids))
    assert {"step-start", "step-complete", "data-complete"} <= {e["event"] for e in replayed}
    later = triangle.events("triangle", since=ids[-2])  # replay the last one only
    assert next(iter(later))["id"] == ids[-1]
    later.close()


class Enough(Exception):
    """Raised by a handler to end listen(), which otherwise goes on for ever."""


def test_listen_carries_on_across_a_server_restart(server: Server, triangle: gaia.Gaia) -> None:
    wait_for(triangle, "triangle")
    seen: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def handler(event: dict[str, Any]) -> None:
        seen.append(event)
        if sum(e["event"] == "flow-complete" for e in seen) == 2:
            raise Enough

    def listen() -> None:
        try:
            server.client().listen("triangle", handler)
        except Enough:
            pass
        except BaseException as exc:
            failures.append(exc)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()

    def heard_a_run() -> bool:
        triangle.expire("triangle", ["md5-rabbit"])
        wait_for(triangle, "triangle")
        return any(e["event"] == "flow-complete" for e in seen)

    eventually(heard_a_run, "the listener to hear a run to its end", interval=0.2)
    server.stop()
    server.start()
    triangle.expire("triangle", ["md5-rabbit"])  # possibly before the listener is back
    listener.join(timeout=60)  # a guard, not a timing claim
    assert not listener.is_alive() and failures == []
    ids = [event["id"] for event in seen if "id" in event]
    assert ids == sorted(set(ids))  # nothing twice, in order
    first_end = next(i for i, e in enumerate(seen) if e["event"] == "flow-complete")
    after_restart = [e["event"] for e in seen[first_end + 1 :]]
    assert "step-start" in after_restart and after_restart[-1] == "flow-complete"


def test_a_restart_keeps_commands_processes_and_results(
    server: Server, triangle: gaia.Gaia
) -> None:
    before = wait_for(triangle, "triangle")
    server.stop()
    server.start()
    flow = server.client()
    assert "cat-wc" in {c["key"] for c in flow.command([])["commands"]}
    after = flow.status("triangle")["status"]
    assert after["state"] == "complete"
    assert after["data"] == before["data"]
    assert after["tasks"]["md5-rabbit"] == before["tasks"]["md5-rabbit"]


def test_tasks_that_died_with_the_server_run_again(server: Server) -> None:
    flow = server.client()
    pid = start_sleeping(flow)
    server.stop(signal.SIGTERM)
    assert not alive(pid)
    server.start()
    status = server.client().status("sleepy")["status"]
    assert status["state"] == "running"
    assert status["tasks"]["nap"]["run"] == 2
    server.client().halt("sleepy")


def test_launch_starts_named_workers_once(server: Server) -> None:
    flow = server.client()
    assert flow.launch(["worker-a", "worker-b"])["launch"] == ["worker-a", "worker-b"]
    reply = flow.launch(["worker-a"])
    assert reply["launch"] == [] and reply["running"] == ["worker-a"]


def test_expiring_a_running_task_kills_it_and_starts_it_again(server: Server) -> None:
    flow = server.client()
    pid = start_sleeping(flow)
    reply = flow.expire("sleepy", ["nap"])
    assert reply["expire"] == {"process": ["nap"], "data": ["rested"]}
    eventually(lambda: not alive(pid), f"the expired nap (pid {pid}) to be killed", 30)
    status = flow.status("sleepy")["status"]
    assert status["tasks"]["nap"]["run"] == 2 and status["state"] == "running"
    flow.halt("sleepy")


def test_a_second_server_on_the_same_data_stops_at_its_start(server: Server) -> None:
    """Two servers on one data directory would run the same tasks into the same working
    folders and overwrite each other's state rows."""
    command = [sys.executable, "-m", "gaia.cli", "serve", "--data", str(server.data)]
    second = subprocess.run(
        [*command, "--port", str(free_port())], capture_output=True, text=True, timeout=60
    )

    assert second.returncode == 2
    assert second.stderr.strip().endswith(
        f"is in use by another Gaia server (pid {server.process.pid}); "  # type: ignore[union-attr]
        "stop it, or give this one another --data"
    )
    assert urllib.request.urlopen(f"http://{server.address}/health").status == 200


def test_a_second_server_on_a_port_in_use_stops_before_it_starts_anything(
    server: Server, tmp_path: Path
) -> None:
    """aiohttp binds only once the app has started: the second server would restore its
    namespaces and replace the first one's token file before finding the port taken."""
    token = server.token
    other = tmp_path / "other-data"
    command = [sys.executable, "-m", "gaia.cli", "serve", "--data", str(other)]
    second = subprocess.run(
        [*command, "--port", str(server.port)], capture_output=True, text=True, timeout=60
    )

    assert second.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in second.stderr
    assert not (other / ".gaia").exists()  # nothing of it was started
    assert server.token == token
    assert urllib.request.urlopen(f"http://{server.address}/health").status == 200


def test_a_listener_gets_the_events_queued_for_it_in_few_writes(server: Server) -> None:
    """A write per event per listener: 100 listeners of a task printing 100,000 lines
    took 192 s to let it finish (0.5 s alone); in batches, 11 s. Counted here as the
    HTTP chunks (one per write) that carry 2,000 log lines to one listener."""
    flow = server.client()
    script = "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo x > /out/o"
    flow.command(
        [{"key": "talk", "image": "u", "command": ["sh", "-c", script], "outputs": {"O": "/out/o"}}]
    )
    with socket.create_connection(("127.0.0.1", server.port)) as listener:
        listener.sendall(
            f"GET /events?root=talky HTTP/1.1\r\nHost: {server.address}\r\n"
            f"Authorization: Bearer {server.token}\r\n\r\n".encode()
        )
        reader = listener.makefile("rb")
        while reader.readline() not in (b"\r\n", b""):
            pass  # the response's head
        flow.merge("talky", [{"key": "t", "command": "talk", "outputs": {"O": "o"}}])
        chunks, text = 0, b""
        while b'"flow-complete"' not in text:
            size = int(reader.readline().strip(), 16)
            text += reader.read(size + 2)
            chunks += 1

    lines = text.count(b'"event":"log"')
    assert lines == 2000
    assert chunks < lines / 4, f"{chunks} writes for {lines} log lines"
