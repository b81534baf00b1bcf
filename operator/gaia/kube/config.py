"""The operator's configuration, from the environment (the Helm chart sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gaia.engine.limits import DEFAULT_LIMITS, Limits
from gaia.errors import InvalidRequest
from gaia.wire import DEFAULT_PORT, DEFAULT_TOPICS

__all__ = ["DEFAULT_IMAGE", "DEFAULT_JOB_TTL", "OperatorConfig", "S3Config"]

STORES = ("pvc", "s3")
WORKER_TAKES = ("image", "all")
DEFAULT_IMAGE = "gaia:0.1.0"
# Finished Jobs are kept this long (docs/kubernetes.md, "Job lifetime"): at the peak of
# ~40 Job creations a second that is at most 24,000 finished Jobs (and their pods) in
# etcd, however many tasks a namespace has.
DEFAULT_JOB_TTL = 600


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name}={raw!r} is not a number") from None


def _seconds(name: str, default: int) -> int:
    """A whole number of seconds, 0 or more."""
    value = _number(name, default)
    if value < 0 or value != int(value):
        raise InvalidRequest(
            f"{name}={os.environ[name]!r}: use a whole number of seconds, 0 or more"
        )
    return int(value)


def _choice(name: str, choices: tuple[str, ...]) -> str:
    """The variable's value, one of ``choices`` (the first when unset)."""
    raw = os.environ.get(name) or choices[0]
    if raw not in choices:
        raise InvalidRequest(f"{name}={raw!r}: use one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class S3Config:
    """The object store of ``GAIA_STORE=s3``. The operator authenticates with the standard
    AWS variables (AWS_ACCESS_KEY_ID, ...); task pods with the Secret named ``secret``."""

    bucket: str  # GAIA_S3_BUCKET
    prefix: str = ""  # GAIA_S3_PREFIX: every key lives under it
    endpoint: str | None = None  # GAIA_S3_ENDPOINT: an S3-compatible server's URL
    region: str = "us-east-1"  # GAIA_S3_REGION
    # GAIA_S3_SECRET: a Secret in each GaiaNamespace's Kubernetes namespace, with the keys
    # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, for the task pods' fetch and upload
    secret: str = "gaia-s3"

    @classmethod
    def from_env(cls) -> S3Config:
        bucket = os.environ.get("GAIA_S3_BUCKET", "")
        if not bucket:
            raise InvalidRequest("GAIA_STORE=s3 needs GAIA_S3_BUCKET (the bucket's name)")
        return cls(
            bucket=bucket,
            prefix=os.environ.get("GAIA_S3_PREFIX", "").strip("/"),
            endpoint=os.environ.get("GAIA_S3_ENDPOINT") or None,
            region=os.environ.get("GAIA_S3_REGION") or "us-east-1",
            secret=os.environ.get("GAIA_S3_SECRET") or "gaia-s3",
        )

    def env(self) -> dict[str, str]:
        """The variables that ``gaia task fetch|upload`` read (credentials apart)."""
        env = {"GAIA_S3_BUCKET": self.bucket, "GAIA_S3_PREFIX": self.prefix}
        env["GAIA_S3_REGION"] = self.region
        if self.endpoint:
            env["GAIA_S3_ENDPOINT"] = self.endpoint
        return env


@dataclass(frozen=True)
class OperatorConfig:
    store_path: Path  # GAIA_STORE_PATH: where the data volume is mounted in the operator
    claim: str  # GAIA_STORE_CLAIM: the PersistentVolumeClaim that task pods mount
    api_host: str  # GAIA_API_HOST
    api_port: int  # GAIA_API_PORT: the HTTP API (0 turns it off)
    default_namespace: str  # GAIA_K8S_NAMESPACE: where the HTTP API creates GaiaNamespaces
    recheck_seconds: float  # GAIA_RECHECK_SECONDS: how often Jobs are compared with the engine
    # GAIA_STATUS_SECONDS: at most one status write per namespace per interval
    status_seconds: float
    jobs_per_second: float  # GAIA_JOBS_PER_SECOND: Job creations per second, cluster-wide
    # GAIA_JOB_TTL_SECONDS: how long a finished Job is kept once its outcome is recorded
    # (its ttlSecondsAfterFinished); 0 deletes a succeeded one at once
    job_ttl: int = DEFAULT_JOB_TTL
    store: str = "pvc"  # GAIA_STORE: "pvc" (the shared volume) or "s3" (an object store)
    s3: S3Config | None = None  # the object store, when store is "s3"
    image: str = DEFAULT_IMAGE  # GAIA_IMAGE: the Gaia image of the S3 pods' helpers
    # GAIA_API_URL: how worker pods reach the HTTP API (default: the chart's Service,
    # http://gaia.<GAIA_K8S_NAMESPACE>.svc:<GAIA_API_PORT>)
    api_url: str = ""
    worker_idle: float = 300.0  # GAIA_WORKER_IDLE_SECONDS: a worker stops after this idle
    # GAIA_WORKER_IMAGE: the image of worker pods (default: GAIA_IMAGE); it needs `gaia`
    worker_image: str = DEFAULT_IMAGE
    # GAIA_WORKER_TAKES: "image" (tasks whose command's image is worker_image; the rest
    # run as Jobs) or "all" (every task, run with the worker image's programs)
    worker_takes: str = "image"
    # GAIA_WORKER_SERVICE_ACCOUNT: the ServiceAccount of worker pods, in default_namespace;
    # only its pods' projected tokens (audience gaia-worker) may use /work/* (kube/access.py)
    worker_account: str = "gaia-worker"
    # GAIA_WATCH_NAMESPACE: watch GaiaNamespaces (and run their Jobs) in this Kubernetes
    # namespace only, the chart's namespaced install; "" (the default) watches them all
    watch_namespace: str = ""
    kafka_host: str | None = None  # GAIA_KAFKA_HOST: also publish events to this broker
    limits: Limits = DEFAULT_LIMITS  # GAIA_MAX_... (gaia/engine/limits.py)
    # GAIA_KAFKA_LOG_TOPIC, GAIA_KAFKA_STATUS_TOPIC
    kafka_topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))

    @classmethod
    def from_env(cls) -> OperatorConfig:
        store = os.environ.get("GAIA_STORE", "pvc") or "pvc"
        if store not in STORES:
            raise InvalidRequest(f"GAIA_STORE={store!r}: use one of {', '.join(STORES)}")
        namespace = os.environ.get("GAIA_K8S_NAMESPACE", "default")
        port = int(_number("GAIA_API_PORT", DEFAULT_PORT))
        return cls(
            store_path=Path(os.environ.get("GAIA_STORE_PATH", "/data")),
            claim=os.environ.get("GAIA_STORE_CLAIM", "gaia-data"),
            api_host=os.environ.get("GAIA_API_HOST", "0.0.0.0"),
            api_port=port,
            default_namespace=namespace,
            recheck_seconds=_number("GAIA_RECHECK_SECONDS", 10.0),
            status_seconds=_number("GAIA_STATUS_SECONDS", 1.0),
            jobs_per_second=_number("GAIA_JOBS_PER_SECOND", 20.0),
            job_ttl=_seconds("GAIA_JOB_TTL_SECONDS", DEFAULT_JOB_TTL),
            store=store,
            s3=S3Config.from_env() if store == "s3" else None,
            image=os.environ.get("GAIA_IMAGE") or DEFAULT_IMAGE,
            api_url=os.environ.get("GAIA_API_URL") or f"http://gaia.{namespace}.svc:{port}",
            worker_idle=_number("GAIA_WORKER_IDLE_SECONDS", 300.0),
            worker_image=(
                os.environ.get("GAIA_WORKER_IMAGE") or os.environ.get("GAIA_IMAGE") or DEFAULT_IMAGE
            ),
            worker_takes=_choice("GAIA_WORKER_TAKES", WORKER_TAKES),
            worker_account=os.environ.get("GAIA_WORKER_SERVICE_ACCOUNT") or "gaia-worker",
            watch_namespace=os.environ.get("GAIA_WATCH_NAMESPACE", ""),
            kafka_host=os.environ.get("GAIA_KAFKA_HOST") or None,
            limits=Limits.from_env(os.environ),
            kafka_topics={
                "log": os.environ.get("GAIA_KAFKA_LOG_TOPIC") or DEFAULT_TOPICS["log"],
                "status": os.environ.get("GAIA_KAFKA_STATUS_TOPIC") or DEFAULT_TOPICS["status"],
            },
        )
