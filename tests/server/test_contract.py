"""The contract off the happy path, through a real `gaia serve`: a refused call changes
nothing, one bad key fails only what it touches, and the server always starts again."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from gaia_server import Server, wait_for
from test_bad_input import raw_post

import gaia

pytestmark = pytest.mark.slow  # a `gaia serve` process per test


COPY = {
    "key": "copy",
    "image": "ubuntu",
    "command": ["cp", "/in/x", "/out/x"],
    "inputs": {"IN": "/in/x"},
    "outputs": {"OUT": "/out/x"},
}
MAKE = {
    "key": "make",
    "image": "ubuntu",
    "command": ["sh", "-c", "echo made > /out/a; echo too > /out/b"],
    "outputs": {"A": "/out/a", "B": "/out/b"},
}
MAKE_DIR = {
    "key": "makedir",
    "image": "ubuntu",
    "command": ["sh", "-c", "mkdir /out/d && echo in > /out/d/f"],
    "outputs": {"D": "/out/d/"},
}


def copy(key: str, src: str, dst: str) -> dict[str, Any]:
    return {"key": key, "command": "copy", "inputs": {"IN": src}, "outputs": {"OUT": dst}}


def seed(server: Server, root: str, key: str, text: str = "x\n") -> Path:
    path = server.data / root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def flow(server: Server) -> gaia.Gaia:
    client = server.client()
    client.command([COPY, MAKE, MAKE_DIR])
    seed(server, "ns", "src")
    client.merge("ns", [copy("first", "src", "one")])
    wait_for(client, "ns")
    return client


def test_a_merge_with_a_key_that_leads_outside_changes_nothing(
    server: Server, flow: gaia.Gaia
) -> None:
    (server.data / "ns" / "escape").symlink_to("/etc")
    before = flow.status("ns")
    with pytest.raises(gaia.InvalidRequest, match=r"'escape/passwd' resolves outside"):
        flow.merge("ns", [copy("fine", "one", "two"), copy("evil", "escape/passwd", "three")])
    assert flow.status("ns") == before  # not even the valid process
    flow.merge("ns", [copy("fine", "one", "two")])  # alone, it is accepted and runs
    assert wait_for(flow, "ns")["data"]["two"] == "complete"


def test_a_trigger_with_one_bad_key_fails_only_what_touches_it(
    server: Server, flow: gaia.Gaia
) -> None:
    seed(server, "ns", "there/x")
    flow.merge("ns", [copy("inside", "there/x", "copied"), copy("after", "one", "later")])
    wait_for(flow, "ns")
    other = server.data.parent / "elsewhere"
    other.mkdir()
    (other / "x").write_text("not yours\n")
    os.remove(server.data / "ns" / "there" / "x")
    os.rmdir(server.data / "ns" / "there")
    (server.data / "ns" / "there").symlink_to(other)  # planted after the merge
    os.remove(server.data / "ns" / "later")
    flow.trigger("ns")
    status = wait_for(flow, "ns", ("error",))
    assert status["tasks"]["after"]["state"] == "complete"  # the rest of the namespace ran
    error = status["tasks"]["inside"]["error"]
    assert "'there/x'" in error and "resolves outside" in error
    assert status["unusable"] == {"there/x": error.split(": ", 1)[1]}


def test_nested_keys_are_refused_whole(server: Server, flow: gaia.Gaia) -> None:
    before = flow.status("ns")
    file_then_inside = [
        {"key": "a", "command": "make", "outputs": {"A": "nest", "B": "b1"}},
        {"key": "b", "command": "make", "outputs": {"A": "o1", "B": "nest/x"}},
    ]
    with pytest.raises(
        gaia.InvalidRequest,
        match=r"'nest/x' \(process 'b'\) would lie inside data key 'nest' \(process 'a'\)",
    ):
        flow.merge("ns", file_then_inside)
    flow.merge("ns", [{"key": "dir", "command": "makedir", "outputs": {"D": "d/"}}])
    with pytest.raises(
        gaia.InvalidRequest,
        match=r"'d/x' \(process 'inner'\) would lie inside data key 'd' \(process 'dir'\)",
    ):
        flow.merge("ns", [copy("inner", "one", "d/x")])
    with pytest.raises(
        gaia.InvalidRequest,
        match=r"'one/deeper' \(process 'deeper'\) would lie inside data key 'one'",
    ):
        flow.merge("ns", [copy("deeper", "src", "one/deeper")])
    status = flow.status("ns")["status"]
    assert sorted(status["flow"]["process"]) == ["dir", "first"]
    assert before["status"]["flow"]["process"].keys() <= status["flow"]["process"].keys()


BAD_BODIES = [
    # a lone surrogate is valid JSON but names no file
    (
        b'{"root": "ns", "processes": [{"key": "p", "command": "copy", '
        b'"inputs": {"IN": "src"}, "outputs": {"OUT": "x\\ud800"}}]}',
        "lone surrogate",
    ),
    (
        json.dumps({"root": "ns", "processes": [copy("p", "src", "a" * 256)]}).encode(),
        "a file name holds at most 255",
    ),
    (
        json.dumps({"root": "ns", "processes": [copy("p", "src", "c\u0085d")]}).encode(),
        "control character",
    ),
    (
        json.dumps(
            {"root": "ns", "processes": [{**copy("p", "src", "o"), "vars": {"V": "a\x00b"}}]}
        ).encode(),
        "NUL",
    ),
    (
        b'{"root": "ns", "processes": [{"key": "p", "command": "copy", "vars": {"V": NaN}}]}',
        "NaN is not a number JSON allows",
    ),
    (
        b'{"root": "ns", "processes": [{"key": "p", "command": "copy", "vars": {"V": -Infinity}}]}',
        "-Infinity is not a number JSON allows",
    ),
    (
        b'{"root": "ns", "processes": [{"key": "p", "command": "copy", "vars": {"V": 1e400}}]}',
        "1e400 is too large",
    ),
    (b'{"root": "ns", "processes": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nests deeper"),
    # a fan-out's values are checked one by one: the bad one is named by its place
    (
        b'{"root": "ns", "processes": [{"key": "p", "command": "copy", "inputs": {"IN": "src"},'
        b' "outputs": {"OUT": "o/{{V}}"}, "vars": {"V": ["a", "b\\ud800"]}}]}',
        "body.processes[0].vars.V[1] is not valid Unicode",
    ),
    # a string one level too deep, in a list (MAX_DEPTH is 64: the body is level 0)
    (b'{"root": "ns", "processes": ' + b"[" * 64 + b'"x"' + b"]" * 64 + b"}", "nests deeper"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_bodies_are_refused_and_the_server_starts_again(
    server: Server, flow: gaia.Gaia, body: bytes, message: str
) -> None:
    before = flow.status("ns")
    code, reply = raw_post(server, "/merge", body)
    assert code == 400, reply
    assert message in reply["error"]
    assert flow.status("ns") == before
    server.stop()
    server.start()
    assert server.client().status("ns")["status"]["state"] == "complete"


def test_a_saved_spec_the_rules_now_refuse_fails_alone_at_restart(
    server: Server, flow: gaia.Gaia
) -> None:
    flow.merge("other", [copy("fine", "one", "two")])
    server.stop()
    # As if merged by an older version, before C1 control characters were refused.
    db = sqlite3.connect(server.data / ".gaia" / "state.db")
    spec = copy("old", "one", "bad\u0085key")
    with db:
        db.execute("INSERT INTO specs VALUES (?, ?, ?)", ("ns", "old", json.dumps(spec)))
    db.close()
    server.start()
    flow = server.client()
    status = flow.status("ns")["status"]
    assert status["state"] == "error"
    assert "control character" in status["rejected"]["old"]
    assert status["data"]["one"] == "complete"  # the rest came back
    assert flow.status("other")["status"]["state"] in ("incomplete", "complete")
    flow.merge("ns", [copy("old", "one", "good")])  # merging the key again replaces it
    assert wait_for(flow, "ns")["rejected"] == {}


def test_a_key_that_leads_outside_after_a_restart_fails_only_its_processes(
    server: Server, flow: gaia.Gaia
) -> None:
    flow.merge("ns", [copy("second", "one", "out/two")])
    wait_for(flow, "ns")
    server.stop()
    os.remove(server.data / "ns" / "out" / "two")
    os.rmdir(server.data / "ns" / "out")
    (server.data / "ns" / "out").symlink_to("/tmp")
    os.remove(server.data / "ns" / "one")  # so that first runs again
    server.start()
    flow = server.client()
    status = wait_for(flow, "ns", ("error",))
    assert status["data"]["one"] == "complete"
    assert "'out/two' resolves outside" in status["tasks"]["second"]["error"]
