"""The kopf handlers: thin, each hands a resource to the host.

Run it with ``gaia operator`` (or ``kopf run -m gaia.kube.operator --all-namespaces``); with
GAIA_WATCH_NAMESPACE set it watches that one Kubernetes namespace (``--namespace``), for
the chart's namespaced install (GaiaCommands, cluster-scoped, are watched all the same).
Handlers are raw event handlers: kopf stores no per-resource annotation for them (its
last-handled-configuration annotation breaks on specs over 256 KiB) and adds no
finalizer, so deleting a GaiaNamespace never waits for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
import orjson
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from gaia.errors import NotFound
from gaia.kube.cluster import Cluster
from gaia.kube.config import OperatorConfig
from gaia.kube.host import KubeHost
from gaia.kube.jobs import outcome_of
from gaia.kube.resources import COMMANDS, GROUP, MANAGED_BY, NAMESPACES, VERSION

logger = logging.getLogger(__name__)


def _plain(body: Any) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(orjson.dumps(body, default=dict))
    return result


def _api_client() -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    except k8s_config.ConfigException:
        return k8s_config.new_client_from_config()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # One replica: kopf's peering would freeze replicas of equal priority.
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    config = OperatorConfig.from_env()
    store = None
    if config.s3 is not None:
        from gaia.store.s3 import S3Store, make_client

        s3 = config.s3
        store = S3Store(s3.bucket, s3.prefix, make_client(s3.endpoint, s3.region))
    host = KubeHost(
        Cluster(_api_client(), jobs_per_second=config.jobs_per_second),
        config.store_path,
        config.claim,
        store=store,
        s3=config.s3,
        image=config.image,
        worker_image=config.worker_image,
        worker_takes=config.worker_takes,
        limits=config.limits,
        job_ttl=config.job_ttl,
    )
    try:
        await host.load_commands()
    except NotFound:
        raise kopf.PermanentError(  # stops the operator, with this message in its log
            "the GaiaCommand and GaiaNamespace CRDs are not installed; "
            "run: kubectl apply --server-side -f crds/"
        ) from None
    if config.kafka_host:
        from gaia.bus.kafka import KafkaPublisher  # connects (or fails clearly) right away

        publisher = await asyncio.to_thread(KafkaPublisher, config.kafka_host, config.kafka_topics)
        host.bus.add_sink(publisher.publish)
        memo["kafka"] = publisher
    memo["host"] = host
    memo["loops"] = [
        asyncio.create_task(host.loop_watch.run()),
        asyncio.create_task(_every(config.status_seconds, host.flush_status)),
        asyncio.create_task(_every(config.recheck_seconds, lambda: _recheck_all(host))),
    ]
    if config.api_port:
        from gaia.kube.api import serve_api

        memo["api"] = await serve_api(host, config)
    if config.s3 is not None:
        where = f"s3://{config.s3.bucket}/{config.s3.prefix} (Secret {config.s3.secret})"
        logger.info("gaia operator ready: store %s", where)
    else:
        logger.info("gaia operator ready: store %s (claim %s)", config.store_path, config.claim)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for loop in memo.get("loops", []):
        loop.cancel()
    if "api" in memo:
        await memo["api"].cleanup()
    host: KubeHost | None = memo.get("host")
    if host is not None:
        await host.flush_status()
        await asyncio.to_thread(host.lanes.close)  # lets queued deletes and clean-ups finish
    if "kafka" in memo:
        await asyncio.to_thread(memo["kafka"].close)


async def _every(seconds: float, action: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()
        except Exception:
            logger.exception("periodic %s failed", getattr(action, "__name__", "task"))


async def _recheck_all(host: KubeHost) -> None:
    await host.retry_store_failures()
    for root in list(host.tracked):
        await host.recheck(root)


@kopf.on.event(GROUP, VERSION, COMMANDS)
async def command_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    host: KubeHost = memo["host"]
    if type == "DELETED":
        host.forget_command(_plain(body))
    else:
        await host.apply_command(_plain(body))


@kopf.on.event(GROUP, VERSION, NAMESPACES)
async def namespace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    host: KubeHost = memo["host"]
    if type == "DELETED":
        host.forget_namespace(_plain(body))
    else:
        await host.apply_namespace(_plain(body))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    job = _plain(body)
    outcome = outcome_of(job)
    if outcome is not None:
        await memo["host"].job_event(outcome, job)


def main() -> None:
    """``gaia operator``: run the handlers against the cluster of the current kubeconfig."""
    watched = OperatorConfig.from_env().watch_namespace
    scope: dict[str, Any] = {"namespaces": [watched]} if watched else {"clusterwide": True}
    settings = kopf.OperatorSettings()
    # One namespace, named: kopf need not list namespaces nor watch CRDs (a Role cannot
    # grant either; kopf would retry for a minute before doing without).
    settings.scanning.disabled = bool(watched)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(kopf.operator(standalone=True, settings=settings, **scope))
