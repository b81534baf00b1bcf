"""The test servers' ports: outside the range outgoing connections take theirs from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import ports
from ports import free_port


def test_ports_lie_outside_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    listeners = [socket.socket() for _ in range(3)]
    try:
        for sock in listeners:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        busy = [sock.getsockname()[1] for sock in listeners]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            idle = probe.getsockname()[1]
        monkeypatch.setattr(ports, "_candidates", lambda: [*busy, idle])
        assert free_port() == idle
        with pytest.raises(RuntimeError, match="no free TCP port"):
            free_port()  # the others are listened on, the idle one handed out already
    finally:
        for sock in listeners:
            sock.close()
