"""The custom resources: names, and their translation to the engine's plain dicts."""

from __future__ import annotations

from typing import Any

__all__ = [
    "COMMANDS",
    "GROUP",
    "NAMESPACES",
    "VERSION",
    "command_of",
    "processes_of",
]

GROUP = "gaia.dev"
VERSION = "v1alpha1"
COMMANDS = "gaiacommands"  # cluster-scoped: commands are global
NAMESPACES = "gaianamespaces"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gaia"}
ROOT_LABEL = "gaia.dev/namespace"
RUN_LABEL = "gaia.dev/run"
PROCESS_LABEL = "gaia.dev/process-hash"
PROCESS_ANNOTATION = "gaia.dev/process"
# On a finished Job whose outcome the operator has recorded: nothing acts on it again (the
# re-check, Job events, a restart); it stays for `kubectl logs` until its TTL.
HANDLED_LABEL = "gaia.dev/handled"
# Beside it, the task's record (state, times, exit code, error, log tail) as JSON: what a
# restarted operator restores for the run.
OUTCOME_ANNOTATION = "gaia.dev/outcome"


def command_of(resource: dict[str, Any]) -> dict[str, Any]:
    """A GaiaCommand as the engine's command dict (its key: spec.key, else the name)."""
    spec = dict(resource.get("spec") or {})
    spec.setdefault("key", resource["metadata"]["name"])
    return spec


def processes_of(resource: dict[str, Any]) -> list[Any]:
    return list((resource.get("spec") or {}).get("processes") or [])
