"""The Argo CD health check of examples/gitops, run in a real Lua 5.1 as Argo CD runs it,
on statuses the operator's own code writes (tests/kube/test_gitops.py does the same with
the statuses a running operator wrote)."""

from __future__ import annotations

from typing import Any

from argocd import SCRIPT, health, installed_script
from test_status_summary import namespace_of

from gaia.kube.status import summary


def resource(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "gaia.dev/v1alpha1",
        "kind": "GaiaNamespace",
        "metadata": {"name": "big", "namespace": "gaia", "generation": generation},
        "spec": {"processes": []},
    }
    if status is not None:
        found["status"] = status
    return found


def test_the_configmap_snippet_holds_the_script_verbatim() -> None:
    assert installed_script() == SCRIPT.read_text()


def test_a_running_namespace_is_progressing_and_a_complete_one_healthy() -> None:
    namespace, starts = namespace_of(2)
    running = health(resource(summary(namespace, handled={}, generation=1, problem=None)))
    assert running["status"] == "Progressing"
    assert running["message"].startswith("Running: 0/2 processes complete")
    for start in starts:
        namespace.task_succeeded(start.process.key, start.run)
    done = health(resource(summary(namespace, handled={}, generation=1, problem=None)))
    assert done == {"status": "Healthy", "message": "Complete: all 2 processes complete"}


def test_failed_and_refused_namespaces_are_degraded_and_halted_ones_suspended() -> None:
    namespace, starts = namespace_of(2)
    refused = summary(namespace, handled={}, generation=1, problem="unknown command 'nope'")
    verdict = health(resource(refused))
    assert verdict["status"] == "Degraded" and "unknown command 'nope'" in verdict["message"]
    namespace.task_succeeded(starts[0].process.key, starts[0].run)
    namespace.task_failed(starts[1].process.key, starts[1].run, "exit code 1", 1, [])
    verdict = health(resource(summary(namespace, handled={}, generation=1, problem=None)))
    assert verdict["status"] == "Degraded"
    assert verdict["message"].startswith("Failed: 1 processes failed: " + starts[1].process.key)
    namespace.halt()
    verdict = health(resource(summary(namespace, handled={}, generation=1, problem=None)))
    assert verdict["status"] == "Suspended" and verdict["message"].startswith("Halted:")


def test_a_spec_the_operator_has_not_seen_yet_is_progressing() -> None:
    namespace, starts = namespace_of(1)
    namespace.task_succeeded(starts[0].process.key, starts[0].run)
    stale = summary(namespace, handled={}, generation=1, problem=None)
    verdict = health(resource(stale, generation=2))
    assert verdict["status"] == "Progressing" and "generation 2" in verdict["message"]
    assert health(resource(None))["status"] == "Progressing"
    assert health(resource({"state": "complete"}))["status"] == "Progressing"
