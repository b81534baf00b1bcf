"""The client without a Gaia server: YAML loading, unreachable servers, error replies and
the event stream, against the tiny real HTTP server of tiny_gaia.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_gaia import TinyServer, serve_tiny

import gaia
from gaia.client import EventStream, format_event
from waiting import eventually

# ---------------------------------------------------------------- load_yaml


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[TinyServer]:
    yield from serve_tiny()


def test_load_yaml_returns_the_list_or_mapping(tmp_path: Path) -> None:
    listing = tmp_path / "processes.yaml"
    listing.write_text("- key: md5\n  command: md5\n")
    mapping = tmp_path / "config.yaml"
    mapping.write_text("gaia_host: localhost:24442\n")
    assert gaia.load_yaml(listing) == [{"key": "md5", "command": "md5"}]
    assert gaia.load_yaml(str(mapping)) == {"gaia_host": "localhost:24442"}


def test_load_yaml_reads_the_triangle_example() -> None:
    example = Path(__file__).parents[2] / "examples" / "triangle" / "commands.yaml"
    commands = gaia.load_yaml(example)
    assert "md5" in [command["key"] for command in commands]


def test_load_yaml_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(gaia.InvalidRequest, match=r"nope\.yaml: no such file"):
        gaia.load_yaml(tmp_path / "nope.yaml")


def test_load_yaml_of_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    broken = tmp_path / "commands.yaml"
    broken.write_text("- key: md5\n  image: ubuntu\n  command: [md5sum, /in/in\n")
    with pytest.raises(gaia.InvalidRequest) as caught:
        gaia.load_yaml(broken)
    message = str(caught.value)
    assert message.startswith(str(broken))
    assert "line 4, column 1" in message


def test_load_yaml_rejects_a_tab_indent_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "processes.yaml"
    broken.write_text("- key: a\n\t- key: b\n")
    with pytest.raises(gaia.InvalidRequest, match=r"processes.yaml, line 2, column 1"):
        gaia.load_yaml(broken)


def test_load_yaml_rejects_an_empty_file_and_a_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(gaia.InvalidRequest, match=r"empty\.yaml: expected a YAML list or mapping"):
        gaia.load_yaml(empty)
    with pytest.raises(gaia.InvalidRequest, match="is a directory"):
        gaia.load_yaml(tmp_path)


# ---------------------------------------------------------------- addresses and reachability


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_defaults_and_http_urls() -> None:
    assert gaia.Gaia().address == "localhost:24442"
    assert gaia.Gaia({}).timeout == 60
    client = gaia.Gaia({"gaia_host": "http://example.org:8080", "timeout": 5})
    assert (client.url, client.timeout) == ("http://example.org:8080", 5)
    assert gaia.Gaia({"gaia_host": "example.org"}).address == "example.org:24442"


@pytest.mark.parametrize("name", ["timeout", "reconnect"])
@pytest.mark.parametrize("value", ["sixty", None, [60]])
def test_a_bad_number_of_seconds_is_rejected_naming_the_key(name: str, value: object) -> None:
    with pytest.raises(gaia.InvalidRequest, match=f"config '{name}' must be a number of seconds"):
        gaia.Gaia({name: value})
    assert getattr(gaia.Gaia({name: "30"}), name) == 30.0  # a number in a string will do


@pytest.mark.parametrize("host", ["http://", "ftp://example.org:21", "example.org:port"])
def test_a_malformed_host_is_rejected_with_an_example(host: str) -> None:
    with pytest.raises(gaia.InvalidRequest, match="localhost:24442"):
        gaia.Gaia({"gaia_host": host})


def test_a_closed_port_raises_connection_failed_naming_address_and_remedy() -> None:
    port = _closed_port()
    client = gaia.Gaia({"gaia_host": f"127.0.0.1:{port}"})
    with pytest.raises(gaia.ConnectionFailed) as caught:
        client.status("triangle")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "gaia serve" in message
    assert "Errno" not in message and "urlopen" not in message
    with pytest.raises(gaia.ConnectionFailed, match=f"127.0.0.1:{port}"):
        EventStream(client, "triangle")


def test_a_slow_server_raises_connection_failed_naming_the_timeout(tiny_server: TinyServer) -> None:
    client = gaia.Gaia({"gaia_host": tiny_server.address, "timeout": 0.2})
    with pytest.raises(gaia.ConnectionFailed, match=r"within 0.2s"):
        client.trigger("slow")


# ---------------------------------------------------------------- the calls and their errors


def test_each_call_posts_its_documented_body(tiny_server: TinyServer) -> None:
    client = gaia.Gaia({"gaia_host": f"http://{tiny_server.address}"})
    calls = [
        (client.command([]), "command", {"commands": []}),
        (client.merge("t", [{"key": "p"}]), "merge", {"root": "t", "processes": [{"key": "p"}]}),
        (client.trigger("t"), "trigger", {"root": "t"}),
        (client.halt("t"), "halt", {"root": "t"}),
        (client.status("t"), "status", {"root": "t"}),
        (client.expire("t", ["md5-rabbit"]), "expire", {"root": "t", "expire": ["md5-rabbit"]}),
        (client.launch(["worker-a"]), "launch", {"keys": ["worker-a"]}),
        (client.logs("t", "md5-rabbit"), "logs", {"root": "t", "process": "md5-rabbit"}),
        (client.workflows(), "workflows", {}),
    ]
    for reply, call, body in calls:
        assert reply == {"call": call, "body": body}


@pytest.mark.parametrize(
    ("root", "error"),
    [
        ("bad", gaia.InvalidRequest),
        ("missing", gaia.NotFound),
        ("huge", gaia.TooLarge),
        ("boom", gaia.GaiaError),
    ],
)
def test_an_error_reply_raises_its_class_with_the_servers_message(
    tiny_server: TinyServer, root: str, error: type[gaia.GaiaError]
) -> None:
    client = gaia.Gaia({"gaia_host": tiny_server.address})
    with pytest.raises(error) as caught:
        client.status(root)
    assert type(caught.value) is error
    assert str(caught.value) == tiny_server.errors[root][1]["error"]


def test_an_error_reply_that_is_not_json_still_explains_itself(tiny_server: TinyServer) -> None:
    client = gaia.Gaia({"gaia_host": tiny_server.address})
    with pytest.raises(gaia.GaiaError) as caught:
        client.halt("proxy")
    message = str(caught.value)
    assert tiny_server.address in message and "POST /halt" in message
    assert "HTTP 502" in message and "Bad Gateway" in message


# ---------------------------------------------------------------- events


def test_the_event_stream_parses_server_sent_events(tiny_server: TinyServer) -> None:
    tiny_server.events["sse"] = [
        {"event": "step-start", "root": "sse", "process": "md5-rabbit", "task": "md5-rabbit#1"},
        ': a comment\n\ndata: {"event": "data-complete",\ndata:  "root": "sse", "key": "md5/x"}\n\n',
        "data: not json at all\n\n",
        'event: message\r\nid: 7\r\ndata:{"event": "flow-complete", "root": "sse"}\r\n\r\n',
    ]
    client = gaia.Gaia({"gaia_host": tiny_server.address})
    seen = list(client.events("sse"))  # ends when the server ends the stream
    assert [event["event"] for event in seen] == ["step-start", "data-complete", "flow-complete"]
    assert seen[1]["key"] == "md5/x"


class Enough(Exception):
    """Raised by a test's handler to end listen(), which otherwise goes on for ever."""


def test_listen_without_a_handler_calls_handle(tiny_server: TinyServer) -> None:
    tiny_server.events["handled"] = [{"event": "flow-halted", "root": "handled", "time": 0}]

    class Collecting(gaia.Gaia):
        events_seen: list[dict[str, Any]] = []

        def handle(self, event: dict[str, Any]) -> None:
            self.events_seen.append(event)
            raise Enough

    client = Collecting({"gaia_host": tiny_server.address})
    with pytest.raises(Enough):
        client.listen("handled")
    assert client.events_seen == [{"event": "flow-halted", "root": "handled", "time": 0}]


def test_the_default_handler_prints_one_line_per_event(
    tiny_server: TinyServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_server.events["printed"] = [
        {"event": "step-error", "root": "printed", "process": "cat", "error": "exit code 1"},
        {"event": "log", "root": "printed", "process": "cat", "stream": "stderr", "line": "oops"},
    ]

    class Printing(gaia.Gaia):
        def handle(self, event: dict[str, Any]) -> None:
            super().handle(event)
            if event["event"] == "log":
                raise Enough

    with pytest.raises(Enough):
        Printing({"gaia_host": tiny_server.address}).listen("printed")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("printed step-error cat: exit code 1")
    assert lines[1].endswith("printed log cat [stderr] oops")


def test_listen_resumes_after_the_last_event_when_the_stream_breaks(
    tiny_server: TinyServer,
) -> None:
    tiny_server.events["resumed"] = [
        {"event": "step-start", "root": "resumed", "id": 1},
        {"event": "step-complete", "root": "resumed", "id": 2},
    ]
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["id"] == 2:  # the server "restarts" and kept one more event meanwhile
            tiny_server.events["resumed"].append(
                {"event": "flow-complete", "root": "resumed", "id": 3}
            )
        if event["id"] == 3:
            raise Enough

    with pytest.raises(Enough):
        gaia.Gaia({"gaia_host": tiny_server.address}).listen("resumed", handler)
    assert [event["id"] for event in seen] == [1, 2, 3]  # nothing twice, nothing lost
    assert tiny_server.since["resumed"] == [None, "2"]


def test_listen_gives_up_on_a_server_gone_for_longer_than_reconnect() -> None:
    server = TinyServer()  # its own: this test stops it
    server.start()
    server.events["gone"] = [{"event": "step-start", "root": "gone", "id": 1}]
    client = gaia.Gaia({"gaia_host": server.address, "reconnect": 0.5})
    with pytest.raises(gaia.ConnectionFailed, match=server.address):
        client.listen("gone", lambda event: server.stop())


def test_closing_the_stream_from_another_thread_ends_iteration(tiny_server: TinyServer) -> None:
    stream = EventStream(gaia.Gaia({"gaia_host": tiny_server.address}), "forever")
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: seen.extend(stream), daemon=True)
    reader.start()
    eventually(lambda: seen, "the stream's first event", interval=0.01)
    stream.close()
    reader.join(timeout=20)
    assert not reader.is_alive()
    assert seen == [{"event": "first", "root": "forever"}]


def test_an_event_stream_error_reply_raises_like_a_call(tiny_server: TinyServer) -> None:
    with pytest.raises(gaia.NotFound, match="namespace 'missing' does not exist"):
        EventStream(gaia.Gaia({"gaia_host": tiny_server.address}), "missing")


def test_format_event_names_what_happened() -> None:
    line = format_event(
        {"event": "step-complete", "root": "t", "process": "md5", "duration": 0.05, "time": 0}
    )
    assert line.endswith("t step-complete md5 0.05s")
    flow = {"event": "flow-error", "root": "t", "state": "error", "counts": {"processes": 2}}
    assert format_event(flow).endswith("t flow-error error 0/2 processes")
