"""The HTTP API of SPEC.md served by the operator: writes become resource changes (so
kubectl, GitOps and the client see one truth), reads come from the engine that mirrors
the resources. The change is applied to the engine straight away too (the watch event
that follows finds nothing left to do), so replies are exact.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from aiohttp import web

from gaia.api.auth import Access
from gaia.api.server import Accesses, build_app
from gaia.engine.keys import root_problem
from gaia.errors import InvalidRequest, NotFound
from gaia.kube.access import KubeGuard, WorkAccess
from gaia.kube.cluster import Resources
from gaia.kube.config import OperatorConfig
from gaia.kube.host import KubeHost, Tracked
from gaia.kube.resources import GROUP, VERSION
from gaia.kube.workers import build_worker, deployment_name, key_problem
from gaia.shell import check_worker_keys
from gaia.wire import Event

__all__ = ["KubeApi", "serve_api"]

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _token() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


class KubeApi:
    def __init__(self, host: KubeHost, config: OperatorConfig) -> None:
        self.host = host
        self.bus = host.bus
        self.resources = Resources(host.cluster)
        self.default_namespace = config.default_namespace
        self.config = config

    def _tracked(self, root: object) -> Tracked:
        namespace = self.host.namespace(root)  # InvalidRequest / NotFound, named
        return self.host.tracked[namespace.root]

    def check_upload(self, root: object, raw_commands: object, raw_processes: object) -> None:
        self.host.check_upload(root, raw_commands, raw_processes)

    async def command(self, raw_commands: object) -> list[dict[str, Any]]:
        merged, changed = self.host.registry.prepare(raw_commands)
        for namespace in self.host.namespaces.values():
            namespace.prepare_command_change(changed, merged)
        assert isinstance(raw_commands, list)
        for raw in raw_commands:
            key = raw["key"]
            if key not in changed:
                continue
            if len(key) > 253 or not DNS_SUBDOMAIN.fullmatch(key):
                raise InvalidRequest(
                    f"command {key!r} cannot be a GaiaCommand name: use lowercase letters, "
                    "digits, '-' and '.'"
                )
            spec = {k: v for k, v in raw.items() if k != "key"}
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GaiaCommand",
                "metadata": {"name": key},
                "spec": spec,
            }
            resource = await self.resources.put_command(body)
            await self.host.apply_command(resource)
        return [c.to_dict() for c in self.host.registry.commands.values()]

    async def merge(self, root: object, raw_processes: object) -> list[str]:
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        assert isinstance(root, str)
        tracked = self.host.tracked.get(root)
        engine = self.host.namespaces.get(root) or self.host.new_namespace(root)
        plan = engine.prepare_merge(raw_processes, self.host.registry.commands)
        lookup = await self.host.look_up(root, plan.keys)
        if lookup.unusable:
            raise InvalidRequest(
                f"namespace {root!r}: " + "; ".join(sorted(lookup.unusable.values()))
            )
        assert isinstance(raw_processes, list)
        incoming = {p["key"]: p for p in raw_processes}
        if tracked is None:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GaiaNamespace",
                "metadata": {"name": root, "namespace": self.default_namespace},
                "spec": {"processes": list(incoming.values())},
            }
            resource = await self.resources.create_namespace(self.default_namespace, body)
        else:
            current = list((tracked.resource.get("spec") or {}).get("processes") or [])
            merged = [incoming.pop(p["key"], p) for p in current] + list(incoming.values())
            resource = await self.resources.patch_namespace_spec(
                tracked.k8s_namespace, root, {"processes": merged}
            )
        await self.host.apply_namespace(resource)
        return plan.changed

    async def _patch(self, tracked: Tracked, spec: dict[str, Any]) -> dict[str, Any]:
        resource = await self.resources.patch_namespace_spec(
            tracked.k8s_namespace, tracked.root, spec
        )
        return await self.host.apply_namespace(resource)

    async def trigger(self, root: object) -> None:
        await self._patch(self._tracked(root), {"halted": False, "trigger": _token()})

    async def halt(self, root: object) -> None:
        await self._patch(self._tracked(root), {"halted": True})

    def status(self, root: object, detail: object = True) -> dict[str, Any]:
        return self.host.status(root, detail)

    async def expire(self, root: object, keys: object) -> dict[str, Any]:
        tracked = self._tracked(root)
        engine = self.host.namespaces[tracked.root]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InvalidRequest("'expire' must be a list of process or data keys")
        engine.check_expire(keys)  # unknown keys: NotFound, nothing patched
        token = _token()
        # The watch may carry the change into the engine before this call returns.
        await self._patch(tracked, {"expire": {"token": token, "keys": keys}})
        return tracked.expired.get(token) or {"process": [], "data": []}

    async def launch(self, keys: object) -> dict[str, Any]:
        """A Deployment ``gaia-worker-<key>`` per new key (see workers.py)."""
        keys = check_worker_keys(
            keys, self.host.limits, len(self.host.desk.queue.heard), key_problem
        )
        if self.host.s3 is not None:
            raise InvalidRequest(
                "launch: workers need the shared volume store (GAIA_STORE=pvc); "
                "on the S3 store every task runs as its own Job"
            )
        launched, running = [], []
        for key in keys:
            manifest = build_worker(
                key,
                namespace=self.default_namespace,
                image=self.config.worker_image,
                claim=self.host.claim,
                api_url=self.config.api_url,
                idle=self.config.worker_idle,
                account=self.config.worker_account,
            )
            if await self.host.cluster.create_deployment(manifest):
                launched.append(key)
                self.bus.publish(
                    {"event": Event.WORKER_LAUNCHED.value, "worker": key, "root": None}
                )
            else:
                running.append(key)
        return {"launch": launched, "running": running}

    # -- the workers' protocol (POST /work/...) ------------------------------------------

    def work_routes(self) -> dict[str, tuple[Any, Accesses]]:
        """Each for the worker pods this operator launched alone, on their own behalf."""
        return {
            "/work/take": (self.work_take, _as_worker),
            "/work/heartbeat": (self.work_heartbeat, _as_worker),
            "/work/done": (self.work_done, _as_worker),
            "/work/stopped": (self.work_stopped, _as_worker),
            "/work/workers": (self.work_workers, _as_worker_or_reader),
        }

    async def work_take(self, body: dict[str, Any]) -> dict[str, Any]:
        wait = body.get("wait", 0)
        if not isinstance(wait, int | float) or isinstance(wait, bool):
            raise InvalidRequest("'wait' must be a number of seconds")
        return await self.host.desk.take(_worker(body), float(wait))

    def work_heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        root, process, run = _task_of(body)
        return {"cancel": self.host.desk.heartbeat(_worker(body), root, process, run)}

    async def work_done(self, body: dict[str, Any]) -> dict[str, Any]:
        root, process, run = _task_of(body)
        exit_code = body.get("exit_code")
        tail = body.get("log_tail") or []
        accepted = await self.host.desk.done(
            _worker(body),
            root,
            process,
            run,
            ok=body.get("ok") is True,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            error=str(body["error"]) if body.get("error") else None,
            log_tail=[str(line) for line in tail] if isinstance(tail, list) else [],
        )
        return {"accepted": accepted}

    async def work_stopped(self, body: dict[str, Any]) -> dict[str, Any]:
        worker = _worker(body)
        self.host.desk.stopped(worker)
        deleted = await self.host.cluster.delete_deployment(
            self.default_namespace, deployment_name(worker)
        )
        self.bus.publish({"event": Event.WORKER_STOPPED.value, "worker": worker, "root": None})
        return {"stopped": worker, "deleted": deleted}

    def work_workers(self, body: dict[str, Any]) -> dict[str, Any]:
        """Each worker heard from, with the seconds since; and the tasks waiting."""
        now = time.monotonic()
        queue = self.host.desk.queue
        return {
            "workers": {k: round(now - t, 3) for k, t in sorted(queue.heard.items())},
            "queued": len(queue.waiting),
            "loop": self.host.loop_watch.figures(),
        }

    async def logs(self, root: object, process: object) -> dict[str, Any]:
        tracked = self._tracked(root)
        engine = self.host.namespaces[tracked.root]
        task = engine.tasks.get(str(process))
        if str(process) not in engine.graph.processes:
            raise NotFound(f"namespace {tracked.root!r} has no process {process!r}")
        if task is None:
            return {"root": tracked.root, "process": process, "run": None, "log": ""}
        job = task.handle.get("job")
        pod = await self.host.task_pod(tracked, str(job)) if job else None
        lines = []
        if pod is not None:
            lines = await self.host.cluster.pod_log_tail(
                tracked.k8s_namespace, pod["metadata"]["name"], lines=10_000
            )
        text = "\n".join(lines) or "\n".join(task.log_tail)
        return {"root": tracked.root, "process": process, "run": task.run, "log": text}

    def workflows(self) -> dict[str, Any]:
        return self.host.workflows()

    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]:
        return self.host.history.since(after, root)

    # -- the dashboard's views (the shell's) ------------------------------------------

    def overview(self) -> dict[str, Any]:
        return self.host.overview()

    def graph(self, root: object, expand: object) -> dict[str, Any]:
        return self.host.graph(root, expand)

    def members(self, root: object, query: dict[str, Any]) -> dict[str, Any]:
        return self.host.members(root, query)

    def process(self, root: object, process: object) -> dict[str, Any]:
        return self.host.process(root, process)


def guard_of(host: KubeHost, config: OperatorConfig) -> KubeGuard:
    """Kubernetes decides who may call (kube/access.py)."""

    def where(root: str) -> str | None:
        tracked = host.tracked.get(root)
        return tracked.k8s_namespace if tracked is not None else None

    return KubeGuard(
        host.cluster,
        where,
        namespace=config.default_namespace,
        worker_account=config.worker_account,
        watched=config.watch_namespace,
    )


async def serve_api(host: KubeHost, config: OperatorConfig) -> web.AppRunner:
    """The API on every interface (its names are not known here): each call but /health
    carries a Kubernetes token, checked by Kubernetes (no other site's page, nor a body
    other than JSON, gets through either: api/auth.py)."""
    api = KubeApi(host, config)
    app = build_app(api, guard_of(host, config), api.work_routes(), hosts=None)

    async def end_long_polls(app: web.Application) -> None:
        host.desk.close()

    app.on_shutdown.append(end_long_polls)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, config.api_host, config.api_port).start()
    return runner


def _as_worker(body: dict[str, Any]) -> list[Access]:
    worker = body.get("worker")
    return [
        WorkAccess(("work",), "gaiaworkers", worker=worker if isinstance(worker, str) else None)
    ]


def _as_worker_or_reader(body: dict[str, Any]) -> list[Access]:
    worker = body.get("worker")
    return [
        WorkAccess(
            ("list",),
            "gaiaworkers",
            worker=worker if isinstance(worker, str) else None,
            readers=True,
        )
    ]


def _worker(body: dict[str, Any]) -> str:
    worker = body.get("worker")
    if problem := key_problem(worker):
        raise InvalidRequest(f"the body must name the worker as 'worker': {problem}")
    assert isinstance(worker, str)
    return worker


def _task_of(body: dict[str, Any]) -> tuple[str, str, int]:
    root, process, run = body.get("root"), body.get("process"), body.get("run")
    if not isinstance(root, str) or not isinstance(process, str):
        raise InvalidRequest("the body must name the task's 'root' and 'process'")
    if not isinstance(run, int) or isinstance(run, bool):
        raise InvalidRequest("the body must give the task's 'run' number")
    return root, process, run
