"""Fixtures shared by several test folders."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kafka_broker import Broker, missing
from ports import free_port


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's) on a free local port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
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


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file and folder fsynced during the test, in order (they are still synced)."""
    synced: list[Path] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return synced


# The fixtures that start a real component: a test that uses one is in the slow tier.
COMPONENTS = ("cluster", "kafka_broker", "s3_endpoint", "server")


def _slow(item: pytest.Item) -> bool:
    """In the slow tiers: marked ``slow``, or the real-node tier (``e2e``)."""
    return any(item.get_closest_marker(name) is not None for name in ("slow", "e2e"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The fast tier (`make quick`, every test not marked ``slow``) starts nothing: a test
    there that would start a component fails at once, before it is started."""
    fixtures = getattr(item, "fixturenames", ())
    used = [name for name in COMPONENTS if name in fixtures]
    if used and not _slow(item):
        pytest.fail(f"uses {', '.join(used)}, a real component: mark it slow", pytrace=False)


@pytest.fixture(autouse=True)
def _the_fast_tier_starts_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test not marked ``slow`` that starts a process (a server, a task, a CLI run)
    fails, naming it: the marker stays honest."""
    if _slow(request.node):
        yield
        return
    started: list[str] = []
    popen_init = subprocess.Popen.__init__

    def recording(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        started.append(args if isinstance(args, str) else " ".join(map(str, args)))
        popen_init(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording)
    yield
    if started:
        pytest.fail(f"started processes, so mark it slow: {started[:3]}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failing test that used the broker, add the broker's log tail to the report."""
    outcome = yield
    report = outcome.get_result()
    broker = getattr(item, "funcargs", {}).get("kafka_broker")
    if report.failed and isinstance(broker, Broker):
        report.sections.append(("kafka broker log", broker.tail()))
