"""A real `gaia serve` process per test, on a free port, with its own data directory.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gaia
from gaia.tokens import read_token_file
from ports import free_port
from processes import start_service, stop_service
from waiting import eventually

TRIANGLE = Path(__file__).resolve().parents[2] / "examples" / "triangle"


class Server:
    """`gaia serve` in a subprocess; stop() and start() again to test restarts. ``args``
    are more options of `gaia serve`; ``env``, its whole environment (default: ours)."""

    def __init__(
        self,
        data: Path,
        workers: int = 2,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data, self.workers = data, workers
        self.args, self.env = list(args), env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"server-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """The API's token, as the server left it for its user's clients."""
        token = read_token_file(self.port)
        assert token, f"no token file for port {self.port}"
        return token

    def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        token: str | None = "",
    ) -> tuple[int, Any]:
        """A raw POST (JSON unless ``headers`` say otherwise), with the server's token
        unless ``token`` is None (none sent) or another string; (status, reply)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(f"http://{self.address}{path}", data=body, headers=sent)
        try:
            with urllib.request.urlopen(request) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def client(self) -> gaia.Gaia:
        return gaia.Gaia({"gaia_host": self.address, "timeout": 30})

    def start(self) -> Server:
        command = [sys.executable, "-m", "gaia.cli", "serve", "--port", str(self.port)]
        command += ["--data", str(self.data), "--workers", str(self.workers), *self.args]
        health = f"http://{self.address}/health"
        self.process = start_service(command, self.log, health, env=self.env)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_service(self.process, self.log, sig)
        self.process = None


def wait_for(
    flow: gaia.Gaia, root: str, states: tuple[str, ...] = ("complete",), timeout: float = 60
) -> dict[str, Any]:
    """The namespace's status once its state is one of ``states``."""
    status: dict[str, Any] = eventually(
        lambda: flow.status(root)["status"],
        f"{root} to be {' or '.join(states)}",
        timeout,
        until=lambda status: status["state"] in states,
    )
    return status
