"""The status written into a GaiaNamespace stays small however large the namespace."""

from __future__ import annotations

import json
from typing import Any

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


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_each_state_gives_ready_complete_failed_and_the_kstatus_conditions() -> None:
    namespace, starts = namespace_of(2)
    running = summary(namespace, handled={}, generation=1, problem=None)
    assert conditions_of(running) == {
        "Ready": ("False", "Running"),
        "Complete": ("False", "Running"),
        "Failed": ("False", "NoFailure"),
        "Reconciling": ("True", "Running"),
        "Stalled": ("False", "Running"),
        "Valid": ("True", "Accepted"),
    }
    assert all(c["observedGeneration"] == 1 for c in running["conditions"])
    namespace.task_succeeded(starts[0].process.key, starts[0].run)
    namespace.task_failed(starts[1].process.key, starts[1].run, "exit code 1", 1, [])
    failed = summary(namespace, handled={}, generation=2, problem=None)
    assert failed["state"] == "error"
    assert conditions_of(failed) == {
        "Ready": ("False", "Failed"),
        "Complete": ("False", "Failed"),
        "Failed": ("True", "ProcessFailed"),
        "Reconciling": ("False", "Failed"),
        "Stalled": ("True", "Failed"),
        "Valid": ("True", "Accepted"),
    }
    assert starts[1].process.key in failed["conditions"][0]["message"]
    namespace.halt()
    halted = summary(namespace, handled={}, generation=3, problem=None)
    assert conditions_of(halted)["Ready"] == ("False", "Halted")
    assert conditions_of(halted)["Stalled"] == ("False", "Halted")


def test_a_complete_namespace_is_ready() -> None:
    namespace, starts = namespace_of(2)
    for start in starts:
        namespace.task_succeeded(start.process.key, start.run)
    status = summary(namespace, handled={}, generation=1, problem=None)
    assert status["state"] == "complete"
    assert conditions_of(status)["Ready"] == ("True", "Complete")
    assert conditions_of(status)["Complete"] == ("True", "Complete")
    assert not any(conditions_of(status)[kind][0] == "True" for kind in ("Reconciling", "Stalled"))


def test_a_refused_spec_is_an_error_and_not_ready_even_when_the_old_one_is_complete() -> None:
    namespace, starts = namespace_of(1)
    namespace.task_succeeded(starts[0].process.key, starts[0].run)
    status = summary(namespace, handled={}, generation=2, problem="unknown command 'nope'")
    assert status["state"] == "error" and "unknown command 'nope'" in status["message"]
    assert conditions_of(status)["Ready"] == ("False", "Invalid")
    assert conditions_of(status)["Stalled"] == ("True", "Invalid")
    assert conditions_of(status)["Valid"] == ("False", "Invalid")
    assert "unknown command 'nope'" in status["conditions"][0]["message"]


def test_transition_times_move_only_when_a_status_flips() -> None:
    namespace, starts = namespace_of(2)
    first = summary(namespace, handled={}, generation=1, problem=None)
    old = "2020-01-01T00:00:00Z"
    for found in first["conditions"]:
        found["lastTransitionTime"] = old
    again = summary(namespace, handled={}, generation=1, problem=None, previous=first["conditions"])
    assert again == first  # the same status: the operator writes nothing
    namespace.task_succeeded(starts[0].process.key, starts[0].run)
    progressed = summary(
        namespace, handled={}, generation=1, problem=None, previous=again["conditions"]
    )
    times = {c["type"]: c["lastTransitionTime"] for c in progressed["conditions"]}
    assert set(times.values()) == {old}  # still running: message changed, no status flipped
    namespace.task_succeeded(starts[1].process.key, starts[1].run)
    done = summary(
        namespace, handled={}, generation=1, problem=None, previous=progressed["conditions"]
    )
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times["Ready"] != old and times["Reconciling"] != old
    assert times["Failed"] == times["Valid"] == times["Stalled"] == old
