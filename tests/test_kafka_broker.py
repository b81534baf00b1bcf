"""The test broker helper itself: what made a broker start fail now and then."""

from __future__ import annotations

from kafka_broker import _cluster_id


def test_cluster_ids_never_start_with_a_dash() -> None:
    # About one random id in 64 starts with '-', which Kafka's storage tool reads as a
    # flag; 2,000 draws would meet one with near certainty.
    ids = [_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(cluster_id) == 22 for cluster_id in ids)
