"""Who may call a real `gaia serve`: its user's clients, verbatim; nobody else, and no
web page (cross-origin, DNS rebinding, a "simple" request without a preflight)."""

from __future__ import annotations

import http.client
import json
import os
import stat
from pathlib import Path

import pytest
from gaia_server import Server

import gaia
from gaia.tokens import token_file

pytestmark = pytest.mark.slow  # a real gaia serve per test

ECHO = {
    "key": "evil",
    "image": "ubuntu",
    "command": ["sh", "-c", "touch /tmp/pwned"],
    "outputs": {"O": "/out/o"},
}
COMMAND = json.dumps({"commands": [ECHO]}).encode()


def commands(server: Server) -> list[str]:
    return [c["key"] for c in server.client().command([])["commands"]]


def test_the_seed_client_works_verbatim_for_the_user_who_started_the_server(
    server: Server,
) -> None:
    flow = gaia.Gaia({"gaia_host": server.address})  # SPEC's config, nothing more
    assert flow.command([]) == {"commands": []}
    path = token_file(server.port)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "needs a bearer token"), ("not-the-token", "the token is not this server's")],
)
def test_a_call_without_the_token_is_refused_and_says_how_to_get_one(
    server: Server, token: str | None, message: str
) -> None:
    code, reply = server.post("/command", COMMAND, token=token)
    assert code == 401
    assert message in reply["error"] and "~/.gaia/tokens/" in reply["error"]
    assert commands(server) == []


def test_a_client_with_a_wrong_token_raises_unauthorized(server: Server) -> None:
    with pytest.raises(gaia.Unauthorized, match="the token is not this server's"):
        gaia.Gaia({"gaia_host": server.address, "token": "x" * 40}).command([])


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},  # a browser's "simple" request: no preflight
        {"Content-Type": "application/x-www-form-urlencoded"},
    ],
)
def test_a_body_that_is_not_json_is_refused(server: Server, headers: dict[str, str]) -> None:
    code, reply = server.post("/command", COMMAND, headers)
    assert code == 415 and "application/json" in reply["error"]
    assert commands(server) == []


def test_another_origin_is_refused_even_with_the_token(server: Server) -> None:
    code, reply = server.post("/command", COMMAND, {"Origin": "http://evil.example"})
    assert code == 403 and "http://evil.example" in reply["error"]
    assert commands(server) == []
    # the server's own page, served from it, is its own origin
    code, _ = server.post("/command", b'{"commands": []}', {"Origin": f"http://{server.address}"})
    assert code == 200


def test_a_dns_rebinding_page_is_refused(server: Server) -> None:
    """A page at evil.example whose name now resolves to 127.0.0.1 sends its own name."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(
        "POST",
        "/command",
        body=COMMAND,
        headers={
            "Host": f"evil.example:{server.port}",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {server.token}",
        },
    )
    reply = connection.getresponse()
    assert reply.status == 403
    assert "does not answer to the name 'evil.example:" in json.load(reply)["error"]
    connection.close()
    assert commands(server) == []


def test_the_event_stream_needs_the_token_too(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/events")
    assert connection.getresponse().status == 401
    connection.close()
    source = server.client().events()  # the client sends it
    source.close()


def test_health_answers_without_a_token_and_tells_nothing(server: Server) -> None:
    server.client().merge("secret-project", [])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/health")
    reply = connection.getresponse()
    assert reply.status == 200 and json.load(reply) == {"ok": True}


def test_a_token_given_to_the_server_is_the_one_it_takes(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-" * 4 + "\n")
    os.chmod(secret, 0o600)
    server = Server(tmp_path / "data", args=["--token-file", str(secret)]).start()
    try:
        flow = gaia.Gaia({"gaia_host": server.address, "token": "s3cr3t-" * 4})
        assert flow.command([]) == {"commands": []}
        code, _ = server.post("/command", b'{"commands": []}', token="s3cr3t-" * 4)
        assert code == 200
    finally:
        server.stop()
    assert not token_file(server.port).exists()  # a stopped server takes its file back
