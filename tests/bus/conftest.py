"""The session's Kafka broker: one real KRaft node (broker and controller) from the jars
`make kafka` fetched; see kafka_broker.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_broker import Broker, missing


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
