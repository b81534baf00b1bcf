"""Events on Kafka, end to end: `gaia serve --kafka` publishes, the client listens, against
a real broker (the session's `kafka_broker`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

import gaia
from kafka_broker import Broker
from ports import free_port
from processes import start_service, stop_service
from waiting import eventually

TRIANGLE = Path(__file__).resolve().parents[2] / "examples" / "triangle"
DEFAULT_TOPICS = ("sisyphus-log", "sisyphus-status")
WANTED = {"step-start", "log", "step-complete", "data-complete", "flow-complete"}

pytestmark = pytest.mark.slow


def serve(data: Path, *options: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`gaia serve` with these options, answering on a free port; (process, address, log)."""
    port = free_port()
    log = data.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "gaia.cli", "serve", "--port", str(port)]
    command += ["--data", str(data), "--workers", "2", *options]
    process = start_service(command, log, f"http://127.0.0.1:{port}/health")
    return process, f"127.0.0.1:{port}", log


class Servers:
    """`gaia serve` processes started with ``start(*options)``; stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, *options: str) -> tuple[str, Path]:
        data = self.tmp_path / "data"
        shutil.copytree(TRIANGLE / "data", data / "triangle")
        process, address, log = serve(data, *options)
        self.started.append((process, log))
        return address, log

    def stop(self) -> None:
        """SIGTERM each; each must exit cleanly, without a traceback, within 30 s."""
        started, self.started = self.started, []
        for process, log in started:
            stop_service(process, log)
            print(f"--- {log.name} ---\n{log.read_text()}")
            assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Servers]:
    servers = Servers(tmp_path)
    yield servers
    servers.stop()


class Listener:
    """``flow.listen(handler=...)`` in a thread, collecting events until flow-complete."""

    def __init__(self, flow: gaia.Gaia, root: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.pinged = threading.Event()
        self.source = flow.events(root)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for event in self.source:
            if event.get("event") == "ping":
                self.pinged.set()
                continue
            self.events.append(event)
            if event.get("event", "").startswith("flow-"):
                self.done.set()

    def close(self) -> None:
        self.source.close()
        self.thread.join(10)


def wait_until_listening(listener: Listener, broker: Broker, topic: str, root: str) -> None:
    """A consumer reads from "now" once its partitions are assigned; ping until it hears."""
    producer = KafkaProducer(bootstrap_servers=broker.address)

    def heard() -> bool:
        producer.send(topic, json.dumps({"event": "ping", "root": root}).encode())
        producer.flush(5)
        return listener.pinged.wait(0.2)

    try:
        eventually(heard, "the client's Kafka listener to hear a ping", interval=0)
    finally:
        producer.close(5)


def run_triangle(flow: gaia.Gaia, broker: Broker, status_topic: str) -> list[dict[str, Any]]:
    flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
    listener = Listener(flow, "triangle")
    try:
        wait_until_listening(listener, broker, status_topic, "triangle")
        flow.merge("triangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))  # it starts
        assert listener.done.wait(30), f"no flow-* event on Kafka: {listener.events}"
    finally:
        listener.close()
    return listener.events


def records(broker: Broker, *topics: str) -> list[Any]:
    """Every record on these topics, from the beginning."""
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=broker.address,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def check_topics(found: list[Any], log_topic: str, status_topic: str) -> None:
    events = [(r.topic, r.key, json.loads(r.value)) for r in found]
    kinds = {e["event"] for _, _, e in events}
    assert kinds >= WANTED, kinds
    for topic, key, event in events:
        if event["event"] == "ping":
            continue
        assert topic == (log_topic if event["event"] == "log" else status_topic), event
        assert key == b"triangle", event  # one namespace's events: one key, in order


def test_serve_publishes_the_triangle_on_the_default_topics(
    kafka_broker: Broker, server_with: Servers
) -> None:
    address, _ = server_with("--kafka", kafka_broker.address)
    flow = gaia.Gaia({"gaia_host": address, "kafka_host": kafka_broker.address})
    events = run_triangle(flow, kafka_broker, "sisyphus-status")

    kinds = [e["event"] for e in events]
    assert set(kinds) >= WANTED, kinds
    # Order holds per topic: log lines (their own topic) may arrive after the flow's end.
    assert [k for k in kinds if k != "log"][-1] == "flow-complete"
    assert all(e["root"] == "triangle" for e in events)
    tasks = flow.status("triangle")["status"]["tasks"]
    assert tasks
    assert {e["process"] for e in events if e["event"] == "step-complete"} == set(tasks)
    produced = {e["key"] for e in events if e["event"] == "data-complete"}
    assert {"md5/rabbit", "wc/snake"} <= produced, produced
    lines = [e for e in events if e["event"] == "log"]
    assert all(e["stream"] in ("stdout", "stderr") and "line" in e for e in lines)
    for on_log_topic in (True, False):  # in order on each topic (the two interleave)
        ids = [e["id"] for e in events if (e["event"] == "log") == on_log_topic]
        assert ids == sorted(ids), ids
    check_topics(records(kafka_broker, *DEFAULT_TOPICS), *DEFAULT_TOPICS)


def test_custom_topic_names(kafka_broker: Broker, server_with: Servers) -> None:
    log_topic, status_topic = "gaia-test-log", "gaia-test-status"
    address, _ = server_with(
        "--kafka",
        kafka_broker.address,
        "--kafka-log-topic",
        log_topic,
        "--kafka-status-topic",
        status_topic,
    )
    flow = gaia.Gaia(
        {
            "gaia_host": address,
            "kafka_host": kafka_broker.address,
            "kafka_topics": {"log": log_topic, "status": status_topic},
        }
    )
    events = run_triangle(flow, kafka_broker, status_topic)
    assert {e["event"] for e in events} >= WANTED
    check_topics(records(kafka_broker, log_topic, status_topic), log_topic, status_topic)


def test_unreachable_broker_fails_serve_naming_it(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    command = [sys.executable, "-m", "gaia.cli", "serve", "--port", str(free_port())]
    finished = subprocess.run(
        [*command, "--data", str(tmp_path / "data"), "--kafka", closed],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert f"cannot reach the Kafka broker at {closed}" in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr
    assert time.monotonic() - started < 30


def test_a_broker_gone_later_drops_events_but_not_the_server(
    tmp_path: Path, server_with: Servers
) -> None:
    broker = Broker(tmp_path / "kafka").start()
    try:
        address, log = server_with("--kafka", broker.address)
    finally:
        broker.stop()
    flow = gaia.Gaia({"gaia_host": address, "timeout": 30})  # events over HTTP
    flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
    stream = flow.events("triangle")
    seen: list[str] = []
    try:
        flow.merge("triangle", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        for event in stream:
            seen.append(event["event"])
            if event["event"].startswith("flow-"):
                break
    finally:
        stream.close()
    assert set(seen) >= WANTED, seen
    assert seen[-1] == "flow-complete"
    assert flow.status("triangle")["status"]["state"] == "complete"
    began = time.monotonic()
    server_with.stop()
    # The producer would wait 30 s (its delivery timeout) for a gone broker; the server's
    # close gives it 5 s. The margin is for a loaded machine, not a promise of speed.
    assert time.monotonic() - began < 25, "shutdown must not wait out the delivery timeout"
    assert "did not take the last events" in log.read_text()
