"""The operator's configuration, from the environment (the Helm chart sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gaia.errors import InvalidRequest

__all__ = ["OperatorConfig"]


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class OperatorConfig:
    store_path: Path  # GAIA_STORE_PATH: where the data volume is mounted in the operator
    claim: str  # GAIA_STORE_CLAIM: the PersistentVolumeClaim that task pods mount
    api_host: str  # GAIA_API_HOST
    api_port: int  # GAIA_API_PORT: the HTTP API (0 turns it off)
    default_namespace: str  # GAIA_K8S_NAMESPACE: where the HTTP API creates GaiaNamespaces
    recheck_seconds: float  # GAIA_RECHECK_SECONDS: how often Jobs are compared with the engine
    status_seconds: (
        float  # GAIA_STATUS_SECONDS: at most one status write per namespace per interval
    )
    jobs_per_second: float  # GAIA_JOBS_PER_SECOND: Job creations per second, cluster-wide

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(
            store_path=Path(os.environ.get("GAIA_STORE_PATH", "/data")),
            claim=os.environ.get("GAIA_STORE_CLAIM", "gaia-data"),
            api_host=os.environ.get("GAIA_API_HOST", "0.0.0.0"),
            api_port=int(_number("GAIA_API_PORT", 24442)),
            default_namespace=os.environ.get("GAIA_K8S_NAMESPACE", "default"),
            recheck_seconds=_number("GAIA_RECHECK_SECONDS", 10.0),
            status_seconds=_number("GAIA_STATUS_SECONDS", 1.0),
            jobs_per_second=_number("GAIA_JOBS_PER_SECOND", 20.0),
        )
