"""Free TCP ports of 127.0.0.1 for the servers the tests start.

A port from ``bind(("127.0.0.1", 0))`` lies in the kernel's ephemeral range, which is
also where every outgoing connection takes its source port: between our probe and the
server's own bind, a client (etcd's, kube-apiserver's, our own) may take it, and the
server dies with "address already in use" (seen once in CI). Ports below that range are
never handed out as source ports, so a port probed free there stays free until someone
binds it on purpose.
"""

from __future__ import annotations

import itertools
import random
import socket
from pathlib import Path

_LOWEST = 10_000  # clear of well-known and commonly configured service ports
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def _candidates() -> list[int]:
    low, high = _ephemeral_range()
    below = list(range(_LOWEST, low))
    return below if len(below) >= 1_000 else list(range(high + 1, 65_536))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nobody listens on, outside the ephemeral range, not handed out before by
    this process. A random start keeps two test sessions on one machine apart."""
    candidates = _candidates()
    start = random.randrange(len(candidates))
    for port in itertools.chain(candidates[start:], candidates[:start]):
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 outside the ephemeral range")
