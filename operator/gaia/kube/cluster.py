"""The operator's calls to the Kubernetes API, as plain dicts, with Job creation and
status writes rate-limited (the Python clients have no limiter of their own).

The kubernetes client is synchronous; every call here runs in a worker thread so the
operator's event loop (kopf's) never blocks on the network. This is the adapter's edge:
the client's errors leave it as Gaia's (:func:`translated`), so callers catch named
errors, never ``ApiException``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from gaia.errors import GaiaError, InvalidRequest, NotFound, Unavailable
from gaia.kube.jobs import controller_uid
from gaia.kube.resources import COMMANDS, GROUP, HANDLED_LABEL, NAMESPACES, ROOT_LABEL, VERSION

__all__ = ["Cluster", "RateLimit", "translated"]

logger = logging.getLogger(__name__)
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """The API server's refusal (schema, admission) as InvalidRequest (NotFound for a
    404); its absence or overload as Unavailable, which says the same request can be
    sent again."""
    try:
        yield
    except ApiException as exc:
        if exc.status is None or exc.status >= 500 or exc.status == 429:
            raise Unavailable(
                f"the Kubernetes API server failed ({exc.status} {exc.reason}); "
                "nothing was changed, try again"
            ) from None
        message = exc.reason or "refused"
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(exc.body or "{}").get("message") or message
        error = NotFound if exc.status == 404 else InvalidRequest
        raised = error(f"the Kubernetes API refused the request: {message}")
        raised.kube_status = exc.status  # type: ignore[attr-defined]
        raise raised from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = str(getattr(exc, "reason", None) or exc).rpartition(": ")[2]
        raise Unavailable(
            f"the Kubernetes API server cannot be reached ({reason}); "
            "nothing was changed, try again"
        ) from None


def kube_status(error: GaiaError) -> int | None:
    """The HTTP status the API server answered, for a translated refusal."""
    return getattr(error, "kube_status", None)


class RateLimit:
    """At most ``per_second`` calls per second, spread evenly (a leaky bucket)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.interval


class Cluster:
    def __init__(
        self, api: k8s.ApiClient, *, jobs_per_second: float = 20, writes_per_second: float = 20
    ) -> None:
        self.api = api
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)
        self.authentication = k8s.AuthenticationV1Api(api)
        self.authorization = k8s.AuthorizationV1Api(api)
        self.job_limit = RateLimit(jobs_per_second)
        self.write_limit = RateLimit(writes_per_second)

    async def call(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread, its errors translated."""
        with translated():
            return await asyncio.to_thread(call, *args, **kwargs)

    async def items(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """A list call's items as plain dicts, parsed in the thread from the raw reply:
        the client's models, built and then flattened again, cost more than the call
        and, on the event loop, stalled it for seconds with thousands of Jobs."""

        def fetch() -> list[Any]:
            reply = call(*args, _preload_content=False, **kwargs)
            try:
                return list(orjson.loads(reply.data).get("items") or [])
            finally:
                reply.release_conn()

        with translated():
            return await asyncio.to_thread(fetch)

    async def _tolerant(
        self, tolerated: int, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> bool:
        """:meth:`call`, but False if the server answered ``tolerated`` (409: it exists
        already, 404: it is gone), which idempotent callers expect."""
        try:
            await self.call(call, *args, **kwargs)
        except InvalidRequest as exc:
            if kube_status(exc) == tolerated:
                return False
            raise
        return True

    async def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create a Job; False if one of that name exists already (idempotent retries)."""
        await self.job_limit.wait()
        namespace = manifest["metadata"]["namespace"]
        job = cast(k8s.V1Job, manifest)
        return await self._tolerant(409, self.batch.create_namespaced_job, namespace, job)

    async def delete_job(self, namespace: str, name: str) -> None:
        await self.write_limit.wait()
        await self._tolerant(
            404, self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
        )

    async def create_deployment(self, manifest: dict[str, Any]) -> bool:
        """Create a Deployment (a worker's); False if one of that name exists already."""
        await self.write_limit.wait()
        namespace = manifest["metadata"]["namespace"]
        deployment = cast(k8s.V1Deployment, manifest)
        return await self._tolerant(
            409, self.apps.create_namespaced_deployment, namespace, deployment
        )

    async def delete_deployment(self, namespace: str, name: str) -> bool:
        """Delete a Deployment and, in the background, its pods; False if it was gone."""
        await self.write_limit.wait()
        return await self._tolerant(
            404,
            self.apps.delete_namespaced_deployment,
            name,
            namespace,
            propagation_policy="Background",
        )

    async def mark_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of a Job (a label, its TTL); a Job already gone is no error."""
        await self.write_limit.wait()
        await self._tolerant(
            404,
            self.batch.patch_namespaced_job,
            name,
            namespace,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job, or None if there is none of that name."""
        try:
            job = await self.call(self.batch.read_namespaced_job, name, namespace)
        except NotFound:
            return None
        return cast(dict[str, Any], self.api.sanitize_for_serialization(job))

    async def jobs(self, namespace: str, root: str, handled: bool = True) -> list[dict[str, Any]]:
        """The Jobs labelled for Gaia namespace ``root``; without ``handled``, only those
        whose outcome the operator has not recorded yet."""
        selector = f"{ROOT_LABEL}={root}" if handled else f"{ROOT_LABEL}={root},!{HANDLED_LABEL}"
        return await self.items(self.batch.list_namespaced_job, namespace, label_selector=selector)

    async def pod_of(self, namespace: str, job: str, uid: str) -> dict[str, Any] | None:
        """The latest pod that the Job ``job`` (of UID ``uid``) made: a pod that only
        carries its name in a label is not one."""
        items = await self.items(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/job-name={job}",
        )
        owned = [pod for pod in items if uid and controller_uid(pod) == uid]
        return owned[-1] if owned else None

    async def pods(self, namespace: str, root: str) -> list[dict[str, Any]]:
        return await self.items(
            self.core.list_namespaced_pod, namespace, label_selector=f"{ROOT_LABEL}={root}"
        )

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 20) -> list[str]:
        """The pod's last log lines, or nothing when no kubelet can serve them."""
        try:
            text = await self.call(
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                tail_lines=lines,
                _request_timeout=5,
            )
        except GaiaError as exc:  # no kubelet, pod gone: the log is a nicety
            logger.debug("no log for pod %s/%s: %s", namespace, pod, exc)
            return []
        return str(text).splitlines()[-lines:]

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod, or None if there is none of that name."""
        try:
            pod = await self.call(self.core.read_namespaced_pod, name, namespace)
        except NotFound:
            return None
        return cast(dict[str, Any], self.api.sanitize_for_serialization(pod))

    async def review_token(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        """The API server's TokenReview of ``token`` (its ``status``: ``authenticated``,
        ``user``, ``audiences``, ``error``); ``audiences`` None asks for the API server's own."""
        spec: dict[str, Any] = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        reply = await self.call(
            self.authentication.create_token_review, cast(k8s.V1TokenReview, body)
        )
        return dict(self.api.sanitize_for_serialization(reply).get("status") or {})

    async def review_access(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The API server's SubjectAccessReview of ``spec`` (user, groups, uid, extra,
        resourceAttributes): its ``status`` (``allowed``, ``denied``, ``reason``)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        reply = await self.call(
            self.authorization.create_subject_access_review,
            cast(k8s.V1SubjectAccessReview, body),
        )
        return dict(self.api.sanitize_for_serialization(reply).get("status") or {})

    async def gaia_commands(self) -> list[dict[str, Any]]:
        return await self.items(self.custom.list_cluster_custom_object, GROUP, VERSION, COMMANDS)

    async def write_namespace_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Replace the status whole (a JSON patch ``add``); a deleted resource is no error."""
        await self.write_limit.wait()
        await self._tolerant(
            404,
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            NAMESPACES,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type=JSON_PATCH,
        )

    async def write_command_status(self, name: str, status: dict[str, Any]) -> None:
        await self.write_limit.wait()
        await self._tolerant(
            404,
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            COMMANDS,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type=JSON_PATCH,
        )

    async def event(
        self, involved: dict[str, Any], reason: str, message: str, warning: bool
    ) -> None:
        """A Kubernetes Event on a resource, so `kubectl describe` shows what happened."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "gaia-operator"},
            "firstTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "count": 1,
        }
        try:
            await self.call(
                self.core.create_namespaced_event, namespace, cast(k8s.CoreV1Event, body)
            )
        except GaiaError as exc:
            logger.warning("could not post event %s on %s: %s", reason, meta["name"], exc)


class Resources:
    """Reading and writing the custom resources themselves (for the HTTP API)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.custom = cluster.custom
        self.limit = cluster.write_limit

    async def put_command(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a GaiaCommand, or replace the one of that name."""
        await self.limit.wait()
        name = body["metadata"]["name"]
        try:
            current = await self.cluster.call(
                self.custom.get_cluster_custom_object, GROUP, VERSION, COMMANDS, name
            )
        except NotFound:
            created = await self.cluster.call(
                self.custom.create_cluster_custom_object, GROUP, VERSION, COMMANDS, body
            )
            return cast(dict[str, Any], created)
        body["metadata"]["resourceVersion"] = cast(dict[str, Any], current)["metadata"][
            "resourceVersion"
        ]
        replaced = await self.cluster.call(
            self.custom.replace_cluster_custom_object, GROUP, VERSION, COMMANDS, name, body
        )
        return cast(dict[str, Any], replaced)

    async def create_namespace(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.limit.wait()
        created = await self.cluster.call(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, NAMESPACES, body
        )
        return cast(dict[str, Any], created)

    async def patch_namespace_spec(
        self, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """A merge patch of spec fields (lists are replaced whole)."""
        await self.limit.wait()
        patched = await self.cluster.call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            NAMESPACES,
            name,
            {"spec": spec},
            _content_type=MERGE_PATCH,
        )
        return cast(dict[str, Any], patched)
