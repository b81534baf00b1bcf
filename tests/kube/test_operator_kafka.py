"""The operator's events on a real Kafka broker (GAIA_KAFKA_HOST), read back from the topic."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from gaia_operator import operator_world
from test_operator import TRIANGLE, wait_state

import gaia
from kafka_broker import Broker
from waiting import eventually

pytestmark = pytest.mark.slow  # the control plane, an operator process, a Kafka broker


TOPIC = "gaia-operator-status"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    cluster.apply_crds()


@pytest.fixture
def world(
    cluster: Cluster, crds: None, kafka_broker: Broker, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    namespace = cluster.new_namespace("gaia-kafka")
    store = tmp_path / "store"
    store.mkdir()
    settings = {"GAIA_KAFKA_HOST": kafka_broker.address, "GAIA_KAFKA_STATUS_TOPIC": TOPIC}
    with operator_world(
        cluster, namespace, store, tmp_path / "operator.log", {"gaia-data": store}, settings
    ) as world:
        yield world


def test_the_operator_publishes_its_events_on_kafka(
    cluster: Cluster, world: dict[str, Any], kafka_broker: Broker
) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka_broker.address,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    events: list[dict[str, Any]] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            for record in consumer:
                events.append(json.loads(record.value))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        shutil.copytree(TRIANGLE / "data", world["store"] / "kafkatri")
        flow: gaia.Gaia = world["client"]
        flow.command(gaia.load_yaml(TRIANGLE / "commands.yaml"))
        flow.merge("kafkatri", gaia.load_yaml(TRIANGLE / "processes.yaml"))
        wait_state(cluster, world["namespace"], "kafkatri", ("complete",))
        eventually(
            lambda: [(e.get("event"), e.get("root")) for e in events],
            "flow-complete of kafkatri on the topic",
            30,
            until=lambda seen: ("flow-complete", "kafkatri") in seen,
        )
    finally:
        done.set()
        reader.join(timeout=5)
        consumer.close()
    ours = [e for e in events if e.get("root") == "kafkatri"]
    names = {e["event"] for e in ours}
    assert {"step-start", "step-complete", "data-complete", "flow-complete"} <= names
    completed = {e["process"] for e in ours if e["event"] == "step-complete"}
    assert completed == {
        "md5-rabbit",
        "md5-snake",
        "hello-rabbit",
        "hello-snake",
        "cat-rabbit",
        "cat-snake",
        "wc-rabbit",
        "wc-snake",
        "both:cat-ab",
        "both:wc-ab",
    }
