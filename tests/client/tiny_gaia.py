"""A tiny real HTTP server (aiohttp, 127.0.0.1, a free port) that speaks Gaia's wire protocol.

(Not a conftest.py: tests/engine imports names from its own conftest module, and a
second module named ``conftest`` would shadow it.)

It is not Gaia: it answers what the client tests script. ``POST /<call>`` replies by the
``root`` of the body: the roots in ERRORS get that error reply, ``slow`` answers after a
second, a root with scripted ``statuses`` gets them one per call (the last one repeats),
anything else gets an echo ``{"call", "body"}``. ``GET /events?root=NS`` streams the
scripted ``events`` of NS as server-sent events and closes, except ``root=forever``, which
sends one event and then keep-alive comments until the client goes away. With ``since``,
only scripted events with a higher ``id`` are sent; every stream's ``since`` is recorded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

ERRORS: dict[str, tuple[int, Any]] = {
    "bad": (400, {"error": "process 'cat': command 'dog' is not registered"}),
    "missing": (404, {"error": "namespace 'missing' does not exist"}),
    "huge": (413, {"error": "request of 9 MB is over the limit of 8 MB"}),
    "boom": (500, {"error": "store failed to publish 'md5/rabbit'"}),
    "proxy": (502, "<html><body>Bad Gateway</body></html>"),
}


class TinyServer:
    errors = ERRORS

    def __init__(self) -> None:
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.events: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, Any]] = []
        self.since: dict[str, list[str | None]] = {}  # root: each stream's since, in order
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        app = web.Application()
        app.router.add_post("/{call}", self._post)
        app.router.add_get("/events", self._events)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def _stop(self) -> None:
        await self.runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        call, body = request.match_info["call"], await request.json()
        self.requests.append((call, body))
        root = body.get("root")
        if root in ERRORS:
            status, reply = ERRORS[root]
            if isinstance(reply, str):
                return web.Response(status=status, text=reply, content_type="text/html")
            return web.json_response(reply, status=status)
        if root == "slow":
            await asyncio.sleep(1)
        script = self.statuses.get(root)
        if call == "status" and script:
            status = script.pop(0) if len(script) > 1 else script[0]
            return web.json_response({"root": root, "status": status})
        return web.json_response({"call": call, "body": body})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        root = request.query.get("root", "")
        if root in ERRORS:
            return web.json_response(ERRORS[root][1], status=ERRORS[root][0])
        since = request.query.get("since")
        self.since.setdefault(root, []).append(since)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        for event in list(self.events.get(root, [])):  # as scripted when it connected
            if since is not None and isinstance(event, dict) and event["id"] <= int(since):
                continue
            text = event if isinstance(event, str) else "data: " + json.dumps(event) + "\n\n"
            await response.write(text.encode())
        if root == "forever":
            await response.write(b'data: {"event": "first", "root": "forever"}\n\n')
            try:
                while True:
                    await asyncio.sleep(0.05)
                    await response.write(b": keep-alive\n\n")
            except (ConnectionError, RuntimeError):
                pass
        return response


def serve_tiny() -> Iterator[TinyServer]:
    """For a fixture: ``yield from serve_tiny()``."""
    server = TinyServer()
    server.start()
    yield server
    server.stop()
