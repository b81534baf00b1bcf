"""Executors: where tasks run. Local processes here; Kubernetes Jobs on a cluster."""

from gaia.executors.local import LocalExecutor, TaskReport

__all__ = ["LocalExecutor", "TaskReport"]
