"""The status written into a GaiaNamespace stays small however large the namespace."""

from __future__ import annotations

import json

import pytest

from gaia.engine.instructions import StartTask
from gaia.engine.lookup import Lookup
from gaia.engine.namespace import Namespace
from gaia.engine.registry import Registry
from gaia.kube.status import DETAIL_LIMIT, summary

FAIL = {
    "key": "fail",
    "image": "alpine",
    "command": ["false"],
    "vars": {"V": "x"},
    "outputs": {"OUT": "/out/o"},
}


def namespace_of(values: int) -> tuple[Namespace, list[StartTask]]:
    registry = Registry()
    registry.commit(registry.prepare([FAIL])[0])
    namespace = Namespace("big", registry)
    spec = {
        "key": "p",
        "command": "fail",
        "vars": {"V": [f"v{i}" for i in range(values)]},
        "outputs": {"OUT": "out/{{V}}"},
    }
    plan = namespace.prepare_merge([spec], registry.commands)
    starts = [i for i in namespace.apply(plan, Lookup()) if isinstance(i, StartTask)]
    return namespace, starts


@pytest.mark.slow  # builds a namespace of 100,000 processes: seconds
def test_a_hundred_thousand_processes_with_failures_summarise_far_below_etcds_limit() -> None:
    namespace, starts = namespace_of(100_000)
    for start in starts[:5000]:  # many failures, each with a long log tail
        namespace.task_failed(start.process.key, start.run, "exit code 1", 1, ["x" * 500] * 50)
    status = summary(namespace, handled={}, generation=1, problem=None)
    size = len(json.dumps(status))
    assert size < 200_000, size
    assert status["counts"]["processes"] == 100_000 and status["counts"]["failed"] == 5000
    assert len(status["failures"]) == 20 and len(status["waiting"]) == 50
    assert status["data"] is None and status["tasks"] is None


def test_small_namespaces_carry_every_key_and_task() -> None:
    namespace, _ = namespace_of(DETAIL_LIMIT)
    status = summary(namespace, handled={"trigger": "t1"}, generation=3, problem=None)
    assert len(status["data"]) == DETAIL_LIMIT and len(status["tasks"]) == DETAIL_LIMIT
    assert status["handled"] == {"trigger": "t1"} and status["observedGeneration"] == 3
