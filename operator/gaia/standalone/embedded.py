"""A standalone server on a background thread, for ``gaia run`` and tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import TracebackType

from aiohttp import web

from gaia.standalone.host import StandaloneHost
from gaia.standalone.serve import Door, standalone_app

__all__ = ["EmbeddedServer"]


class EmbeddedServer:
    """``with EmbeddedServer(data_dir) as server: gaia.Gaia({"gaia_host": server.address})``"""

    def __init__(
        self,
        data_dir: Path,
        workers: int = 2,
        port: int = 0,
        idle_timeout: float = 300.0,
        sandbox: str = "auto",
    ) -> None:
        self.data_dir, self.workers, self.idle_timeout = data_dir, workers, idle_timeout
        self.sandbox = sandbox
        self.port = port
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gaia-server", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self.host: StandaloneHost | None = None  # once entered
        self.door = Door("127.0.0.1", port)

    @property
    def token(self) -> str:
        """The API's bearer token (also left for this user's clients: serve.py)."""
        return self.door.token

    def __enter__(self) -> EmbeddedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        return self

    async def _start(self) -> None:
        host = StandaloneHost(
            self.data_dir,
            workers=self.workers,
            idle_timeout=self.idle_timeout,
            sandbox=self.sandbox,
        )
        self.host = host
        self._runner = web.AppRunner(standalone_app(host, self.door))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = self.door.port = server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.door.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.door.close()
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
