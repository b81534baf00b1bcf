"""A real `gaia serve` process per test, on a free port, with its own data directory.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import gaia

TRIANGLE = Path(__file__).resolve().parents[2] / "examples" / "triangle"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`gaia serve` in a subprocess; stop() and start() again to test restarts."""

    def __init__(self, data: Path, workers: int = 2) -> None:
        self.data, self.workers = data, workers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"server-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> gaia.Gaia:
        return gaia.Gaia({"gaia_host": self.address, "timeout": 30})

    def start(self) -> Server:
        command = [
            sys.executable,
            "-m",
            "gaia.cli",
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
            "--workers",
            str(self.workers),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gaia serve exited: {self.log.read_text()}")
            try:
                urllib.request.urlopen(f"http://{self.address}/health", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gaia serve did not answer in 30 s: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()  # leave no server behind, and show why it hung
                self.process.wait()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(
                    f"gaia serve ignored {sig!r} for 30 s; its log:\n{tail}"
                ) from None
        self.process = None


def wait_for(
    flow: gaia.Gaia, root: str, states: tuple[str, ...] = ("complete",), timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = flow.status(root)["status"]
        if status["state"] in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{root} is {status['state']}, not {states}: {status['counts']}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped running all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
