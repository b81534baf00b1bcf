"""The standard conditions of a GaiaNamespace, so that tools which know nothing of Gaia
can tell a healthy one from a stuck one.

``kubectl wait --for=condition=Ready`` reads ``Ready``; Flux's health checks (kstatus)
read ``status.observedGeneration``, then ``Reconciling`` and ``Stalled`` (True means
in progress / failed), then ``Ready``; Argo CD reads whatever its health script reads
(``examples/gitops/argocd-health.lua`` reads these). One table maps the namespace's state
to every condition, so the tools cannot disagree:

=============  =====  ========  ======  ===========  =======
state          Ready  Complete  Failed  Reconciling  Stalled
=============  =====  ========  ======  ===========  =======
complete       True   True      False   False        False
running        False  False     (1)     True         False
initialized    False  False     False   True         False
halted         False  False     (1)     False        False
incomplete     False  False     False   False        True
error          False  False     True    False        True
spec refused   False  False     (1)     False        True
=============  =====  ========  ======  ===========  =======

(1) True while some process's latest task has failed. The reason of ``Ready`` (and of
``Complete``, ``Reconciling``, ``Stalled``) names the state: ``Complete``, ``Running``,
``Pending``, ``Halted``, ``Incomplete``, ``Failed``, ``Invalid`` (or ``Conflict`` for a
name taken in another Kubernetes namespace). ``lastTransitionTime`` moves only when a
condition's status flips, so rewriting the same status changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gaia.wire import FlowState

__all__ = [
    "CONDITION_TYPES",
    "carry_transition_times",
    "command_conditions",
    "condition",
    "namespace_conditions",
]

CONDITION_TYPES = ("Ready", "Complete", "Failed", "Reconciling", "Stalled", "Valid")
NAMED = 5  # keys named in a message

# state -> the reason every state-driven condition gives
_REASONS = {
    FlowState.COMPLETE: "Complete",
    FlowState.RUNNING: "Running",
    FlowState.INITIALIZED: "Pending",
    FlowState.HALTED: "Halted",
    FlowState.INCOMPLETE: "Incomplete",
    FlowState.ERROR: "Failed",
}


def condition(
    kind: str, true: bool, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """One condition, as in metav1.Condition; its time is set by carry_transition_times."""
    found: dict[str, Any] = {
        "type": kind,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "",
    }
    if generation is not None:
        found["observedGeneration"] = generation
    return found


def namespace_conditions(
    state: FlowState,
    counts: Mapping[str, int],
    *,
    failed: Sequence[str],
    waiting: Sequence[str],
    problem: str | None,
    generation: int | None,
    summary: str,
    previous: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every condition of a GaiaNamespace whose engine is in ``state``. ``problem`` is why
    its spec was refused (``None``: accepted), ``summary`` its one-line progress."""
    ready_reason, ready_message = _ready(state, counts, failed, waiting, problem, summary)
    if generation is None:  # the latest spec is not applied yet (the store failed)
        ready_reason, ready_message = "Pending", "the latest spec is not applied yet; retrying"
    ready = ready_reason == "Complete"
    reconciling = ready_reason in ("Running", "Pending")
    stalled = ready_reason in ("Incomplete", "Failed", "Invalid")
    if failed:
        failed_reason, failed_message = "ProcessFailed", f"{len(failed)} processes failed: "
        failed_message += _named(failed)
    elif state is FlowState.ERROR and not problem:  # a saved process could not be restored
        failed_reason, failed_message = "Rejected", ready_message
    else:
        failed_reason, failed_message = "NoFailure", "no process has failed"
    found = [
        condition("Ready", ready, ready_reason, ready_message, generation),
        condition("Complete", ready, ready_reason, ready_message, generation),
        condition(
            "Failed", failed_reason != "NoFailure", failed_reason, failed_message, generation
        ),
        condition("Reconciling", reconciling, ready_reason, ready_message, generation),
        condition("Stalled", stalled, ready_reason, ready_message, generation),
        condition(
            "Valid",
            problem is None,
            "Invalid" if problem else "Accepted",
            problem or "the processes are valid",
            generation,
        ),
    ]
    return carry_transition_times(found, previous)


def command_conditions(
    problem: str | None, generation: int | None, previous: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """A GaiaCommand's conditions: ``Valid``, and ``Ready``/``Stalled`` for kstatus (a
    refused command fails a Flux health check at once instead of passing it)."""
    reason, message = ("Invalid", problem) if problem else ("Accepted", "the command is valid")
    found = [
        condition("Ready", not problem, reason, message, generation),
        condition("Stalled", bool(problem), reason, message, generation),
        condition("Valid", not problem, reason, message, generation),
    ]
    return carry_transition_times(found, previous)


def _ready(
    state: FlowState,
    counts: Mapping[str, int],
    failed: Sequence[str],
    waiting: Sequence[str],
    problem: str | None,
    summary: str,
) -> tuple[str, str]:
    """Ready's reason and message."""
    if problem:
        return "Invalid", f"the spec was refused, nothing of it applied: {problem}"
    reason = _REASONS[state]
    if state is FlowState.COMPLETE:
        return reason, f"all {counts['processes']} processes complete"
    if state is FlowState.HALTED:
        return reason, f"halted (spec.halted): {summary}"
    if state is FlowState.INITIALIZED:
        return reason, "nothing triggered yet"
    if state is FlowState.INCOMPLETE:
        return reason, f"nothing can run; {len(waiting)} keys missing: {_named(waiting)}"
    if state is FlowState.ERROR and failed:
        return reason, f"{len(failed)} processes failed: {_named(failed)}; {summary}"
    return reason, summary


def carry_transition_times(
    conditions: list[dict[str, Any]], previous: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Give each condition the ``lastTransitionTime`` of its previous self when its status
    is the same, else now."""
    before = {c.get("type"): c for c in previous}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for found in conditions:
        old = before.get(found["type"])
        same = old is not None and old.get("status") == found["status"]
        found["lastTransitionTime"] = (old or {}).get("lastTransitionTime") if same else now
        found["lastTransitionTime"] = found["lastTransitionTime"] or now
    return conditions


def _named(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:NAMED])
    return shown + (f" and {len(keys) - NAMED} more" if len(keys) > NAMED else "")
