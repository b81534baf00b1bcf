"""Fixtures shared by several test folders."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_broker import Broker, missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's) on a free local port."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A running broker; ``.address`` is its HOST:PORT. Its logs are shown on failure."""
    if reason := missing():
        pytest.fail(f"cannot start a Kafka broker: {reason}")
    broker = Broker(Path(tmp_path_factory.mktemp("kafka")))
    try:
        broker.start()
    except Exception:
        broker.stop()
        raise
    yield broker
    broker.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failing test that used the broker, add the broker's log tail to the report."""
    outcome = yield
    report = outcome.get_result()
    broker = getattr(item, "funcargs", {}).get("kafka_broker")
    if report.failed and isinstance(broker, Broker):
        report.sections.append(("kafka broker log", broker.tail()))
