"""Bad input through the HTTP API: a 4xx naming the problem, and nothing changed."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from gaia_server import Server, wait_for

import gaia

pytestmark = pytest.mark.slow  # a `gaia serve` process per test


ECHO = {
    "key": "echo",
    "image": "ubuntu",
    "command": ["cp", "/in/x", "/out/x"],
    "inputs": {"IN": "/in/x"},
    "outputs": {"OUT": "/out/x"},
}


def raw_post(
    server: Server, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, Any]:
    return server.post(path, body, {"Content-Type": content_type})


@pytest.fixture
def settled(server: Server, triangle: gaia.Gaia) -> gaia.Gaia:
    triangle.command([ECHO])
    wait_for(triangle, "triangle")
    return triangle


def step(key: str, src: str, dst: str) -> dict[str, Any]:
    return {"key": key, "command": "echo", "inputs": {"IN": src}, "outputs": {"OUT": dst}}


BAD_MERGES = [
    (
        [{"key": "x", "command": "nope", "outputs": {}}],
        gaia.InvalidRequest,
        "unknown command 'nope'",
    ),
    (
        [{"key": "x", "command": "echo", "outputs": {"OUT": "o"}}],
        gaia.InvalidRequest,
        r"inputs \['IN'\] are not bound",
    ),
    (
        [step("x", "md5/rabbit", "hello/rabbit")],
        gaia.InvalidRequest,
        "'hello/rabbit' would have two producers",
    ),
    (
        [step("x", "wc/both", "animals/rabbit")],
        gaia.InvalidRequest,
        r"cycle: x -> \[animals/rabbit\] -> md5-rabbit .* -> \[wc/both\] -> x",
    ),
    (
        [step("loop1", "l2", "l1"), step("loop2", "l1", "l2")],
        gaia.InvalidRequest,
        r"cycle: loop1 -> \[l1\] -> loop2",
    ),
    ([step("x", "../../etc/passwd", "o")], gaia.InvalidRequest, "'..'"),
    ([step("x", "src", "/tmp/escape")], gaia.InvalidRequest, "absolute"),
    ([step("x", "src", "o/{{NOPE}}")], gaia.InvalidRequest, r"\['NOPE'\], which name no var"),
    ("not a list", gaia.InvalidRequest, "'processes' must be a list"),
]


@pytest.mark.parametrize(("processes", "error", "message"), BAD_MERGES)
def test_bad_merges_name_the_problem_and_change_nothing(
    settled: gaia.Gaia, processes: Any, error: type[Exception], message: str
) -> None:
    before = settled.status("triangle")
    with pytest.raises(error, match=message):
        settled.merge("triangle", processes)
    assert settled.status("triangle") == before


def test_a_bad_namespace_name_is_rejected(settled: gaia.Gaia) -> None:
    with pytest.raises(gaia.InvalidRequest, match=r"namespace '\.\./x' must be a DNS label"):
        settled.merge("../x", [step("a", "b", "c")])
    with pytest.raises(gaia.NotFound, match="no namespace 'ghost'"):
        settled.status("ghost")
    assert "ghost" not in settled.workflows()["workflows"]


def test_a_failed_first_merge_leaves_no_namespace(settled: gaia.Gaia) -> None:
    with pytest.raises(gaia.InvalidRequest):
        settled.merge("fresh", [{"key": "x", "command": "nope"}])
    assert "fresh" not in settled.workflows()["workflows"]


def test_expiring_unknown_keys_expires_nothing(server: Server, settled: gaia.Gaia) -> None:
    with pytest.raises(gaia.NotFound, match=r"no process or data key \['nope'\]"):
        settled.expire("triangle", ["md5-rabbit", "nope"])
    assert settled.status("triangle")["status"]["state"] == "complete"
    assert (server.data / "triangle" / "md5/rabbit").exists()


def test_bad_commands_are_rejected_whole(settled: gaia.Gaia) -> None:
    before = settled.command([])
    with pytest.raises(gaia.InvalidRequest, match=r"\{\{WHO\}\} but declares no var 'WHO'"):
        settled.command(
            [{**ECHO, "key": "fine"}, {**ECHO, "key": "bad", "command": ["echo", "{{WHO}}"]}]
        )
    with pytest.raises(gaia.InvalidRequest, match=r"process 'md5-rabbit'.*not bound"):
        settled.command([{**ECHO, "key": "md5"}])  # would unbind processes that use md5
    assert settled.command([]) == before


def test_launch_rejects_repeated_keys(settled: gaia.Gaia) -> None:
    with pytest.raises(gaia.InvalidRequest, match=r"repeated: \['w'\]"):
        settled.launch(["w", "w"])


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/merge", b"{not json", 400, "not valid JSON"),
        ("/merge", b"[1, 2]", 400, "must be a JSON object"),
        ("/merge", b'{"processes": []}', 400, "'root'"),
        ("/expire", b'{"root": "triangle"}', 400, "'expire'"),
        ("/nowhere", b"{}", 404, "no such endpoint '/nowhere'"),
    ],
)
def test_malformed_requests(
    server: Server, settled: gaia.Gaia, path: str, body: bytes, status: int, message: str
) -> None:
    code, reply = raw_post(server, path, body)
    assert code == status
    assert message in reply["error"]


def test_an_oversized_request_is_refused(server: Server, settled: gaia.Gaia) -> None:
    from gaia.api.server import MAX_BODY

    code, reply = raw_post(server, "/merge", b" " * (MAX_BODY + 1))
    assert code == 413 and "limit" in reply["error"]
    assert settled.status("triangle")["status"]["state"] == "complete"


def test_later_clients_names_are_accepted(server: Server, settled: gaia.Gaia) -> None:
    code, reply = raw_post(server, "/run", b'{"workflow": "triangle"}')
    assert (code, reply) == (200, {"trigger": "triangle"})
    code, reply = raw_post(server, "/workflows", b"{}")
    assert reply["workflows"]["triangle"] in ("running", "complete")


def test_launching_twenty_thousand_workers_is_refused_and_starts_none(
    server: Server, settled: gaia.Gaia
) -> None:
    with pytest.raises(
        gaia.InvalidRequest,
        match=r"20,000 workers asked for at once, over the limit of 64 \(GAIA_MAX_WORKERS_PER_LAUNCH\)",
    ):
        settled.launch([f"w{n}" for n in range(20_000)])
    assert settled.launch(["w0"]) == {"launch": ["w0"], "running": []}  # none had started


def test_a_fan_out_of_ten_million_is_refused_before_it_is_made(
    server: Server, settled: gaia.Gaia
) -> None:
    before = settled.status("triangle")
    values = [str(n) for n in range(1000)]
    process = {
        "key": "huge",
        "command": "echo",
        "inputs": {"IN": "in/{{A}}/{{B}}/{{C}}"},
        "outputs": {"OUT": "out/{{A}}/{{B}}/{{C}}"},
        "vars": {"A": values, "B": values[:100], "C": values[:100]},
    }
    with pytest.raises(gaia.InvalidRequest, match=r"10,000,000 processes, over the limit"):
        settled.merge("triangle", [process])
    assert settled.status("triangle") == before


@pytest.mark.parametrize(
    ("query", "headers", "named"),
    [
        ("since=999999999999999999999999999999", {}, "since '999999999999999999999999999999'"),
        ("since=%C2%B2", {}, "since '²'"),  # a digit to str.isdigit, not to int()
        ("since=-1", {}, "since '-1'"),
        ("", {"Last-Event-ID": "²"}, "is not an event id"),
        ("root=../x", {}, "'../x'"),
    ],
)
def test_a_bad_event_stream_request_is_refused_before_the_stream_starts(
    server: Server, query: str, headers: dict[str, str], named: str
) -> None:
    """Once the stream's headers are out, an error can only break it: the server wrote
    a 500 into the middle of a 200 event stream."""
    request = urllib.request.Request(
        f"http://{server.address}/events?{query}",
        headers={"Authorization": f"Bearer {server.token}", **headers},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    assert refused.value.code == 400
    assert named in json.load(refused.value)["error"]


def test_an_event_is_encoded_once_for_all_its_listeners() -> None:
    """Each listener got its own JSON encoding of every event: 200 dashboards following
    a task printing 300,000 lines held the loop for minutes (status calls took 20 s)."""
    from gaia.api.server import _sse

    event = {"id": 7, "event": "log", "root": "ns", "line": "x" * 100}
    first = _sse(event)
    assert all(_sse(event) is first for _ in range(200))
    assert (
        first == b'id: 7\ndata: {"id":7,"event":"log","root":"ns","line":"' + b"x" * 100 + b'"}\n\n'
    )
    other = dict(event)  # an equal event that is another object is encoded on its own
    assert _sse(other) == first and _sse(other) is not first


def test_every_event_a_listener_may_still_read_stays_encoded() -> None:
    """A listener up to the bus's backlog behind finds its events encoded: the cache held
    4,096, and 200 listeners spread over the backlog encoded most events again each."""
    from gaia.api.server import _sse
    from gaia.bus.memory import BACKLOG

    events = [{"id": n, "event": "log", "root": "ns", "line": "x"} for n in range(BACKLOG)]
    first = [_sse(event) for event in events]
    for _ in range(BACKLOG // 2):  # newer events, as many as the bus keeps beyond them
        _sse({"id": 0, "event": "log"})
    assert all(_sse(event) is encoded for event, encoded in zip(events, first, strict=True))


def test_a_refused_upload_registers_none_of_its_commands(server: Server) -> None:
    """/upload registered its commands, then refused its processes: bad input changed
    something."""
    new = {"key": "newcmd", "image": "u", "command": ["true"], "outputs": {"OUT": "/out/x"}}
    bad = {"key": "p", "command": "nope", "outputs": {"OUT": "x"}}
    body = json.dumps({"root": "up", "commands": [new], "processes": [bad]}).encode()
    status, reply = server.post("/upload", body)

    assert status == 400 and "unknown command 'nope'" in reply["error"]
    status, reply = server.post("/command", json.dumps({"commands": []}).encode())
    assert status == 200 and "newcmd" not in {c["key"] for c in reply["commands"]}
    # A good one goes through whole.
    good = {"key": "p", "command": "newcmd", "outputs": {"OUT": "x"}}
    body = json.dumps({"root": "up", "commands": [new], "processes": [good]}).encode()
    status, reply = server.post("/upload", body)
    assert status == 200 and reply["processes"] == {"up": ["p"]}


def test_other_calls_are_answered_while_a_big_body_is_parsed(server: Server) -> None:
    """A body of tens of megabytes takes seconds of Python to parse and check: on the
    event loop it held every other call (60 MB: /health waited 13.6 s)."""
    body = b'{"root": "big", "processes": [' + b",".join([b"{}"] * 4_000_000) + b"]}"
    head = (
        f"POST /merge HTTP/1.1\r\nHost: {server.address}\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sent = threading.Event()
    replies: list[str] = []

    def big() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as connection:
            connection.sendall(head + body)
            sent.set()
            status = connection.makefile("rb").readline().split()[1].decode()
        replies.append(f"merge {status}")

    sending = threading.Thread(target=big)
    sending.start()
    assert sent.wait(60)
    time.sleep(0.2)  # the rest of the body is read; its parse takes seconds
    urllib.request.urlopen(f"http://{server.address}/health", timeout=120).read()
    replies.append("health")
    sending.join(120)

    assert replies == ["health", "merge 400"]
