"""The dashboard's side of the HTTP API on a real `gaia serve`: its four view calls, and
the page's files with their headers."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from gaia_server import Server, wait_for

import gaia

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_views_answer_for_the_triangle(triangle: gaia.Gaia) -> None:
    wait_for(triangle, "triangle")
    overview = triangle.overview()["namespaces"]
    assert [(n["root"], n["state"], n["counts"]["complete"]) for n in overview] == [
        ("triangle", "complete", 10)
    ]
    graph = triangle.graph("triangle")
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert nodes["pg:cat"]["counts"] == {"complete": 2} and graph["state"] == "complete"
    assert {"p:cat-rabbit", "d:cat/snake"} <= {
        n["id"] for n in triangle.graph("triangle", ["pg:cat"])["nodes"]
    }
    members = triangle.members("triangle", group="pg:wc")
    assert [m["key"] for m in members["members"]] == ["wc-rabbit", "wc-snake"]
    detail = triangle.process("triangle", "wc-snake")
    assert detail["command_line"] == ["wc", "/in/in"] and detail["task"]["state"] == "complete"
    with pytest.raises(gaia.NotFound, match="no process 'nope'"):
        triangle.process("triangle", "nope")
    with pytest.raises(gaia.NotFound, match="no group"):
        triangle.graph("triangle", ["pg:nope"])


def test_the_page_is_served_with_a_strict_policy(server: Server) -> None:
    base = f"http://{server.address}"
    status, headers, body = _get(base + "/ui/")
    assert status == 200 and b'<div id="app">' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = _get(base + "/ui/assets/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"] and len(body) > 1000
    assert _get(base + "/")[0] == 302 and _get(base + "/")[1]["Location"] == "/ui/"
    assert _get(base + "/ui/assets/..%2f..%2fcli.py")[0] == 404
    assert _get(base + "/ui/assets/nothing.js")[0] == 404
