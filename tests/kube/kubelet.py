"""A stand-in for the kubelet: it runs the containers of Pods as local processes.

There is no kubelet (nor container engine) on a test machine, so :class:`FakeKubelet`
plays the node. It watches Pods, runs each new one's containers through Gaia's own task
runner (:func:`gaia.worker.runner.run_task`), and reports to the API server what a kubelet
would: phase ``Running`` with running container statuses once the processes started, then
``Succeeded`` or ``Failed`` with terminated container statuses. The real Job controller
reads those to count active, ready, succeeded and failed pods.

Volume mounts are mapped to host paths: a ``persistentVolumeClaim`` volume through the
``volumes`` argument (claim name -> host directory), ``hostPath`` as is, ``emptyDir`` as a
fresh directory per pod (mode 0777, as a kubelet makes it). A read-only mount becomes a
runner input; a writable one a read-write bind (its missing subPath directories are
created first, as a kubelet does: with the mode of the volume's root). The container runs
as the pod's or container's ``runAsUser`` (else root, in a user namespace of its own). A
``projected`` volume holds its ``serviceAccountToken`` sources, each a token that the
kubelet asks of the API server (TokenRequest) for the pod's ServiceAccount, with the
source's audience and lifetime, bound to the pod; as a kubelet does, it renews them when
80% of their lifetime has passed (``token_renewal`` seconds instead, if given), writing
each file anew in one step. (Its other sources, such as the CA bundle and namespace of the
default API-access volume, are left out.) Other volume types are not mounted. Environment
variables with a value, a simple ``fieldRef`` or a ``secretKeyRef`` (the Secret is read
through the API) are set, and ``$(NAME)`` references in the command, args and values are
expanded as Kubernetes does (``$$`` is a single ``$``). The image is ignored, as are
``workingDir`` and probes, except that a container whose command starts with ``gaia``
runs this machine's ``gaia`` console script (Gaia's helper containers, and workers, whose
image must have Gaia installed).
A container without a ``command`` fails with reason ``StartError``, as does one whose claim
or Secret is unknown.

Init containers run first, one after the other, each to its end; the first that does not
exit 0 fails the pod (the regular containers then stay ``PodInitializing``, never started).
The regular containers then run concurrently. Their subPath mounts are resolved when they
start, so an init container can create what they mount.

A pod that another kubelet started (its status already shows a container ID) is not run
again: restartPolicy Never. It is reported ``Failed`` with ``ContainerStatusUnknown``, as a
kubelet reports a container it lost.

Deleting a running Pod (or the Job that owns it) kills its whole process tree; the pod is
then reported ``Failed`` and, if it still exists, deleted with grace period 0, as a kubelet
finalizes a pod. Pods are never bound to a node (there is no scheduler either), so the API
server deletes them without a grace period; the Job controller's tracking finalizer keeps a
deleted Pod visible (with a ``deletionTimestamp``) until the controller has counted it.

    with FakeKubelet(api, {"gaia-data": data_dir}, namespace=ns) as kubelet:
        ...  # create Jobs; kubelet.running(), .ended(), .logs(ns, pod), .wait_idle()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client
from pod_status import (
    LOST_MESSAGE,
    ContainerRun,
    Pod,
    PodKey,
    PodRun,
    exit_code,
    finished_status,
    now,
    read_log,
    running_status,
)

from gaia.worker.runner import TaskSpec, run_task

__all__ = ["FakeKubelet", "PodKey"]

logger = logging.getLogger(__name__)


DEFAULT_SELECTOR = "app.kubernetes.io/managed-by=gaia"
WATCH_SECONDS = (20, 40)  # the server ends each watch after a random time in this range
READ_TIMEOUT = 60.0  # seconds without a byte before a watch connection counts as dead
BACKOFF = (0.2, 5.0)  # first and longest wait after an API error
# A real kubelet retries a status update for as long as it runs; this one, for so long.
API_PATIENCE = 120.0  # seconds
API_TIMEOUT = (5.0, 30.0)  # connect and read timeouts of one request
STOP_TIMEOUT = 10.0


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class _PodError(Exception):
    """The pod cannot be run here; the message says why (it becomes the pod's message)."""


class FakeKubelet:
    """Run the Pods that match ``label_selector`` as local processes (see module docs).

    ``volumes`` maps a PersistentVolumeClaim name to the host directory that holds its
    data. ``namespace`` None watches every namespace. ``workdir`` (default: a temporary
    directory removed by :meth:`stop`) receives the runner's per-container directories.
    """

    def __init__(
        self,
        api_client: Any,
        volumes: Mapping[str, Path],
        namespace: str | None = None,
        label_selector: str | None = DEFAULT_SELECTOR,
        *,
        workdir: Path | None = None,
        sandbox: str = "auto",
        token_renewal: float | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.token_renewal = token_renewal
        self.volumes = {claim: Path(path).absolute() for claim, path in volumes.items()}
        self.namespace = namespace
        self.label_selector = label_selector
        self.sandbox = sandbox
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gaia-kubelet-")).absolute()
        self.errors: list[str] = []  # every unexpected exception, for tests to check
        self._lock = threading.Condition()
        self._runs: dict[str, PodRun] = {}  # by pod uid
        self._handled: set[str] = set()  # uids of pods started (or refused) once
        self._logs: dict[tuple[str, str, str], str] = {}  # (ns, pod, container) -> text
        self._last: dict[PodKey, list[ContainerRun]] = {}  # the latest run's containers
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._response: Any = None  # the open watch response, shut down by stop()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, sync_timeout: float = 10.0) -> FakeKubelet:
        """Start watching; returns once the first list of pods was handled (or timed out)."""
        if self._threads:
            raise RuntimeError("this FakeKubelet was already started")
        self._loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(
            target=self._loop.run_forever, name="fake-kubelet-loop", daemon=True
        )
        watch_thread = threading.Thread(
            target=self._watch_forever, name="fake-kubelet-watch", daemon=True
        )
        self._threads = [loop_thread, watch_thread]
        for thread in self._threads:
            thread.start()
        if not self._synced.wait(sync_timeout):
            logger.warning("fake kubelet: no pod list within %ss; still trying", sync_timeout)
        return self

    def stop(self) -> None:
        """Stop watching and kill every process this kubelet runs (no status is reported)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._loop is None:  # never started
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return
        self._shutdown_watch()
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(self._kill_all(), loop).result(STOP_TIMEOUT)
        except Exception:
            self._error("stopping the running pods failed")
        with contextlib.suppress(Exception):
            future = asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop)
            future.result(STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                self._error(f"thread {thread.name} did not stop within {STOP_TIMEOUT}s")
        if not self._threads[0].is_alive():
            loop.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests use -------------------------------------------------------------------

    def running(self) -> dict[PodKey, int]:
        """The pods whose processes run now: (namespace, name) -> pid of the first container."""
        with self._lock:
            found = {}
            for run in self._runs.values():
                pids = [
                    c.pid
                    for c in [*run.containers, *run.init]
                    if c.pid is not None and c.finished_at is None
                ]
                if pids and (run.key not in found or run.stop_reason is None):
                    found[run.key] = pids[0]
            return found

    def ended(self) -> dict[PodKey, int | None]:
        """The pods whose latest run is over and reported to the API server (a report it
        gave up on is in ``errors``): (namespace, name) -> the first container's exit code
        (None: killed, or never started)."""
        with self._lock:
            busy = {run.key for run in self._runs.values()}
            return {
                key: containers[0].exit_code
                for key, containers in self._last.items()
                if containers and key not in busy
            }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no pod is being run or reported; False if that took too long."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._runs, timeout)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """What the container printed (stdout and stderr, in arrival order) so far.

        The latest run of the pod of that name; ``container`` defaults to the first one.
        Raises KeyError for a pod this kubelet has not run.
        """
        with self._lock:
            containers = self._last.get((namespace, pod))
            if not containers:
                raise KeyError(f"the fake kubelet has not run pod {namespace}/{pod}")
            chosen = containers[0] if container is None else None
            for candidate in containers:
                if candidate.name == container:
                    chosen = candidate
            if chosen is None:
                raise KeyError(f"pod {namespace}/{pod} has no container {container!r}")
            kept = self._logs.get((namespace, pod, chosen.name))
            if kept is not None:
                return kept
            return "".join(f"{line}\n" for line in list(chosen.lines))

    # --- the watch ------------------------------------------------------------------------

    def _watch_forever(self) -> None:
        """List, then watch from the list's resourceVersion; never raise."""
        delay = BACKOFF[0]
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                    self._synced.set()
                version = self._watch(version)
                delay = BACKOFF[0]
            except _Expired as exc:
                logger.info("fake kubelet: watch expired (%s); listing again", exc)
                version = None
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if isinstance(exc, client.ApiException) or _is_connection_error(exc):
                    logger.warning("fake kubelet: watch failed (%s); retrying in %.1fs", exc, delay)
                else:
                    self._error("fake kubelet: the watch failed; retrying")
                self._stopping.wait(delay)
                delay = min(delay * 2, BACKOFF[1])
        logger.debug("fake kubelet: watch stopped")

    def _list_call(self, **kwargs: Any) -> Any:
        kwargs.update(label_selector=self.label_selector, _preload_content=False)
        if self.namespace is None:
            return self.core.list_pod_for_all_namespaces(**kwargs)
        return self.core.list_namespaced_pod(self.namespace, **kwargs)

    def _relist(self) -> str:
        response = self._list_call(_request_timeout=(10, READ_TIMEOUT))
        listed = json.loads(response.data)
        pods: list[Pod] = listed.get("items") or []
        present = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:  # deleted while the watch was down
            pod = present.get(run.key)
            if pod is None or pod["metadata"]["uid"] != run.uid:
                self._on_event("DELETED", {"metadata": {"uid": run.uid}}, run.key)
        for key, pod in present.items():
            self._on_event("ADDED", pod, key)
        version: str = listed["metadata"]["resourceVersion"]
        logger.debug("fake kubelet: listed %d pods at resourceVersion %s", len(pods), version)
        return version

    def _watch(self, version: str) -> str:
        """Follow one watch request; return the resourceVersion to resume from."""
        response = self._list_call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=random.randint(*WATCH_SECONDS),
            _request_timeout=(10, READ_TIMEOUT),
        )
        self._response = response
        try:
            if self._stopping.is_set():
                return version
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired(obj.get("message", "410 Gone"))
                    raise client.ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    meta = obj["metadata"]
                    self._on_event(kind, obj, (meta["namespace"], meta["name"]))
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()
        return version

    def _shutdown_watch(self) -> None:
        """Wake the watch thread from its blocking read."""
        response = self._response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- reacting to pods -----------------------------------------------------------------

    def _on_event(self, kind: str, pod: Pod, key: PodKey) -> None:
        try:
            self._react(kind, pod, key)
        except Exception:
            self._error(f"fake kubelet: handling {kind} of pod {key[0]}/{key[1]} failed")

    def _react(self, kind: str, pod: Pod, key: PodKey) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        logger.debug(
            "fake kubelet: %s pod %s/%s phase=%s deleting=%s finalizers=%s",
            kind,
            *key,
            pod.get("status", {}).get("phase"),
            bool(meta.get("deletionTimestamp")),
            meta.get("finalizers"),
        )
        with self._lock:
            for other in self._runs.values():
                # Deleted, or replaced by a new pod of the same name: the old one is over.
                replaced = other.key == key and other.uid != uid
                if replaced or (kind == "DELETED" and other.uid == uid):
                    other.gone = True
                    self._cancel(other, "deleted")
            if kind == "DELETED" or self._stopping.is_set():
                return
            run = self._runs.get(uid)
            if meta.get("deletionTimestamp"):
                if run is not None:
                    self._cancel(run, "deleted")
                return
            if run is not None or uid in self._handled:
                return
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            self._handled.add(uid)
            run = PodRun(key, uid, self.workdir / key[0] / f"{key[1]}-{uid[:8]}")
            self._runs[uid] = run
            logger.info("fake kubelet: starting pod %s/%s", *key)
            assert self._loop is not None
            run.future = asyncio.run_coroutine_threadsafe(self._run_pod(run, pod), self._loop)

    def _cancel(self, run: PodRun, reason: str) -> None:
        """Kill a pod's processes (thread-safe; holds the lock)."""
        if run.stop_reason is not None:
            return
        run.stop_reason = reason
        logger.info("fake kubelet: pod %s/%s %s, killing its processes", *run.key, reason)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(run.cancel)

    async def _kill_all(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
            for run in runs:
                if run.stop_reason is None:
                    run.stop_reason = "stopping"
                run.cancel()
        futures = [asyncio.wrap_future(run.future) for run in runs if run.future is not None]
        await asyncio.gather(*futures, return_exceptions=True)

    # --- running one pod (on the event loop) ----------------------------------------------

    async def _run_pod(self, run: PodRun, pod: Pod) -> None:
        try:
            run.init = self._containers(pod, run, "initContainers")
            run.containers = self._containers(pod, run, "containers")
            with self._lock:
                self._last[run.key] = [*run.containers, *run.init]
            names = _secret_names(pod)
            if not any(c.lost_id is not None for c in run.containers):
                if names:
                    run.secrets = await asyncio.to_thread(self._read_secrets, run.key[0], names)
                await self._project(pod, run)
            initialized = await self._run_init(pod, run)
            if not initialized:
                for container in run.containers:
                    container.skipped = container.lost_id is None
            else:
                for container in run.containers:
                    self._prepare(pod, run, container)
            with self._lock:
                if run.stop_reason is not None:
                    return  # deleted before it started
                # No await from the check above to here: a later run.cancel() sees the tasks.
                waiting = [
                    self._launch(c) for c in run.containers if c.spec is not None and initialized
                ]
            await asyncio.gather(*waiting)
            if any(c.pid is not None for c in run.containers):
                await self._patch_status(run, running_status(pod, run))
            running = [c for c in run.containers if c.task is not None]

            async def finish(container: ContainerRun) -> None:
                await self._finish_container(container)
                if any(c.finished_at is None for c in running) and not run.gone:
                    # As a kubelet does: one container ended while others run on.
                    await self._patch_status(run, running_status(pod, run))

            await asyncio.gather(*(finish(c) for c in running))
            if run.stop_reason == "stopping":
                return
            if not run.gone:
                await self._patch_status(run, finished_status(pod, run))
            if run.stop_reason == "deleted" and not run.gone:
                await asyncio.to_thread(self._delete_now, run)
        except Exception:
            self._error(f"fake kubelet: running pod {run.key[0]}/{run.key[1]} failed")
        finally:
            if run.renewing is not None:
                run.renewing.cancel()
                await asyncio.gather(run.renewing, return_exceptions=True)
            with self._lock:
                for container in [*run.containers, *run.init]:
                    if container.workdir is not None:
                        key = (*run.key, container.name)
                        self._logs[key] = read_log(container.workdir)
                self._runs.pop(run.uid, None)
                self._lock.notify_all()
            logger.info("fake kubelet: pod %s/%s is done", *run.key)

    async def _run_init(self, pod: Pod, run: PodRun) -> bool:
        """Run the init containers in order; False as soon as one does not exit 0.

        A pod that another kubelet started (a lost container) is past its init phase.
        """
        if any(c.lost_id is not None for c in [*run.init, *run.containers]):
            return all(c.lost_id is not None for c in run.init)
        for container in run.init:
            self._prepare(pod, run, container)
            if container.spec is None:
                return False
            with self._lock:
                if run.stop_reason is not None:
                    return False
                started = self._launch(container)
            await started
            await self._finish_container(container)
            if container.exit_code != 0:
                logger.info(
                    "fake kubelet: pod %s/%s init container %s exited %s",
                    *run.key,
                    container.name,
                    container.exit_code,
                )
                return False
        return True

    def _prepare(self, pod: Pod, run: PodRun, container: ContainerRun) -> None:
        """Resolve a container's spec just before it starts (sets .spec, or .error)."""
        if container.lost_id is not None:
            return
        try:
            container.workdir = run.workdir / container.name
            container.spec = self._task_spec(pod, container.raw, run)
        except _PodError as exc:
            container.error = str(exc)
            logger.warning(
                "fake kubelet: pod %s/%s container %s cannot run: %s",
                *run.key,
                container.name,
                exc,
            )

    def _read_secrets(self, namespace: str, names: set[str]) -> dict[str, dict[str, str]]:
        """The Secrets the pod's env refers to (decoded); a missing one is left out."""
        found: dict[str, dict[str, str]] = {}
        for name in sorted(names):
            try:
                secret = self.core.read_namespaced_secret(
                    name, namespace, _request_timeout=API_TIMEOUT
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            found[name] = {
                k: base64.b64decode(v).decode("utf-8", errors="replace")
                for k, v in (secret.data or {}).items()
            }
        return found

    def _launch(self, container: ContainerRun) -> Coroutine[Any, Any, None]:
        """Start the container's process now; await the result until it runs (or ended)."""
        assert container.spec is not None and container.workdir is not None
        began = asyncio.Event()

        def on_start(pid: int) -> None:
            container.pid = pid
            container.started_at = now()
            began.set()

        # Gaia's helper containers run this checkout's own `gaia` (standing in for the
        # image); bubblewrap gives tasks a private /tmp, which would hide a checkout
        # that lives under /tmp, so they run with rewritten paths instead.
        sandbox = (
            "rewrite" if container.spec.command[0] == _gaia_executable_or_none() else self.sandbox
        )
        task = asyncio.create_task(
            run_task(
                container.spec,
                container.workdir,
                on_start=on_start,
                on_line=lambda stream, line: container.lines.append(line),
                sandbox=sandbox,
            )
        )
        container.task = task

        async def started() -> None:
            waiter = asyncio.create_task(began.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

        return started()

    async def _finish_container(self, container: ContainerRun) -> None:
        assert container.task is not None
        try:
            result = await container.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this coroutine itself is cancelled, not just the container
            container.error = "killed: its pod was deleted"
        else:
            if not result.ok:
                container.error = result.error
            container.exit_code = exit_code(result, container.pid is not None)
        container.finished_at = now()

    def _containers(self, pod: Pod, run: PodRun, kind: str) -> list[ContainerRun]:
        """The pod's ``containers`` or ``initContainers``, not yet resolved (see _prepare)."""
        spec = pod.get("spec", {})
        status_field = "initContainerStatuses" if kind == "initContainers" else "containerStatuses"
        containers = []
        before = {s["name"]: s for s in pod.get("status", {}).get(status_field) or []}
        for raw in spec.get(kind) or []:
            container = ContainerRun(
                name=raw["name"],
                image=raw.get("image", ""),
                spec=None,
                fallback_to_logs=raw.get("terminationMessagePolicy") == "FallbackToLogsOnError",
                raw=raw,
            )
            previous = before.get(container.name, {})
            if previous.get("containerID") or "running" in (previous.get("state") or {}):
                # A kubelet that lost a container (restarted, say) reports it so, never
                # runs it again: restartPolicy Never.
                container.lost_id = previous.get("containerID") or ""
                running = (previous.get("state") or {}).get("running") or {}
                container.started_at = running.get("startedAt")
                container.error = LOST_MESSAGE
                logger.warning(
                    "fake kubelet: pod %s/%s container %s was started by another kubelet",
                    *run.key,
                    container.name,
                )
            containers.append(container)
        return containers

    def _task_spec(self, pod: Pod, raw: dict[str, Any], run: PodRun) -> TaskSpec:
        if not raw.get("command"):
            raise _PodError("it has no command, and the image's entrypoint is unknown here")
        env = self._env(pod, raw, run)
        command = [_expand(arg, env) for arg in [*raw["command"], *(raw.get("args") or [])]]
        if command[0] == "gaia":
            command[0] = _gaia_executable()  # Gaia's helper containers, or a worker
        env.setdefault("HOSTNAME", pod["metadata"]["name"])
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        inputs: dict[str, Path] = {}
        binds: dict[str, Path] = {}
        for mount in raw.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                raise _PodError(f"volume mount {mount['name']!r} names no volume of the pod")
            source = self._volume_source(volume, run)
            if source is None:
                logger.debug("fake kubelet: %s is not mounted (unsupported type)", mount["name"])
                continue
            if mount.get("subPathExpr"):
                raise _PodError(f"volume mount {mount['name']!r}: subPathExpr is not supported")
            host = _under(source, mount.get("subPath") or "", mount["name"])
            target = mount["mountPath"].rstrip("/") or "/"
            if not host.exists():
                _make_sub_path(source, host)
            if mount.get("readOnly"):
                inputs[target + "/" if host.is_dir() else target] = host
            else:
                binds[target] = host
        # The container's user, as the pod says, else the image's: root here (as in most
        # images), in a user namespace of its own and without capabilities.
        context = {
            **(pod["spec"].get("securityContext") or {}),
            **(raw.get("securityContext") or {}),
        }
        return TaskSpec(
            root=run.key[0],
            process=run.key[1],
            run=1,
            image=raw.get("image"),
            command=tuple(command),
            inputs=inputs,
            outputs=(),
            binds=binds,
            env=env,
            uid=int(context.get("runAsUser") or 0),
        )

    def _volume_source(self, volume: dict[str, Any], run: PodRun) -> Path | None:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.volumes:
                known = ", ".join(sorted(self.volumes)) or "none"
                raise _PodError(f"claim {claim!r} is not one of the fake kubelet's ({known})")
            return self.volumes[claim]
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        if "emptyDir" in volume:
            path = run.workdir / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # a kubelet's emptyDir: every user of the pod may write
            return path
        if "projected" in volume:
            made = run.projected.get(volume["name"])
            if isinstance(made, str):
                raise _PodError(f"volume {volume['name']!r}: {made}")
            return made
        return None

    # --- projected service-account tokens ------------------------------------------------

    async def _project(self, pod: Pod, run: PodRun) -> None:
        """Write each projected volume's tokens, and keep renewing them while the pod runs."""
        lifetimes: list[float] = []
        for volume in pod["spec"].get("volumes") or []:
            if "projected" not in volume:
                continue
            sources = [
                s["serviceAccountToken"]
                for s in volume["projected"].get("sources") or []
                if "serviceAccountToken" in s
            ]
            directory = run.workdir / "volumes" / volume["name"]
            directory.mkdir(parents=True, exist_ok=True)
            try:
                for source in sources:
                    seconds = await asyncio.to_thread(self._write_token, pod, source, directory)
                    lifetimes.append(seconds)
            except _PodError as exc:
                run.projected[volume["name"]] = str(exc)
                continue
            run.projected[volume["name"]] = directory
        if lifetimes:
            every = self.token_renewal or 0.8 * min(lifetimes)
            run.renewing = asyncio.create_task(self._renew(pod, run, every))

    async def _renew(self, pod: Pod, run: PodRun, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            for volume in pod["spec"].get("volumes") or []:
                directory = run.projected.get(volume["name"])
                if not isinstance(directory, Path):
                    continue
                for source in (volume.get("projected") or {}).get("sources") or []:
                    if "serviceAccountToken" not in source:
                        continue
                    try:
                        await asyncio.to_thread(
                            self._write_token, pod, source["serviceAccountToken"], directory
                        )
                    except _PodError as exc:  # a kubelet keeps the old one and tries again
                        logger.warning("fake kubelet: pod %s/%s: %s", *run.key, exc)

    def _write_token(self, pod: Pod, source: dict[str, Any], directory: Path) -> float:
        """Ask for one token (TokenRequest) and write it to its path; its lifetime (s)."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        seconds = int(source.get("expirationSeconds") or 3600)
        audience = source.get("audience")
        body = {
            "spec": {
                "audiences": [audience] if audience else [],  # none: the API server's own
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        try:
            reply = self.core.create_namespaced_service_account_token(
                account, meta["namespace"], body, _request_timeout=API_TIMEOUT
            )
        except client.ApiException as exc:
            raise _PodError(
                f"no token for ServiceAccount {account!r} ({exc.status} {exc.reason})"
            ) from None
        target = _under(directory, source.get("path") or "token", "projected token")
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = target.with_name(f".{target.name}.new")
        aside.write_text(reply.status.token)
        aside.chmod(0o644)  # a projected volume's default mode
        aside.replace(target)  # a reader sees the old token or the new one, whole
        return float(seconds)

    def _env(self, pod: Pod, raw: dict[str, Any], run: PodRun) -> dict[str, str]:
        """The container's variables; a value's $(NAME) refers to the ones before it."""
        meta = pod["metadata"]
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        }
        env: dict[str, str] = {}
        for var in raw.get("env") or []:
            if "value" in var or "valueFrom" not in var:
                env[var["name"]] = _expand(var.get("value", ""), env)
                continue
            ref = var["valueFrom"].get("secretKeyRef")
            if ref is not None:
                data = run.secrets.get(ref.get("name", ""))
                if data is not None and ref.get("key") in data:
                    env[var["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    what = "has no key " + repr(ref.get("key")) if data is not None else "not found"
                    raise _PodError(f"env {var['name']}: secret {ref.get('name')!r} {what}")
                continue
            path = var["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if path in fields:
                env[var["name"]] = fields[path]
            else:
                logger.warning("fake kubelet: env %s: only simple fieldRefs work", var["name"])
        return env

    # --- talking to the API server --------------------------------------------------------

    async def _patch_status(self, run: PodRun, status: dict[str, Any]) -> None:
        await asyncio.to_thread(self._patch_status_now, run, status)

    def _patch_status_now(self, run: PodRun, status: dict[str, Any]) -> None:
        namespace, name = run.key
        body = {"metadata": {"uid": run.uid}, "status": status}  # uid: only this very pod
        if self._call(
            lambda: self.core.patch_namespaced_pod_status(
                name, namespace, body, _request_timeout=API_TIMEOUT
            )
        ):
            logger.info("fake kubelet: pod %s/%s is %s", namespace, name, status["phase"])
        else:
            logger.info("fake kubelet: pod %s/%s is gone, not reported", namespace, name)
            run.gone = True

    def _delete_now(self, run: PodRun) -> None:
        """Delete the pod with grace period 0, as a kubelet does once its containers are dead."""
        namespace, name = run.key
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=run.uid)
        )
        if self._call(
            lambda: self.core.delete_namespaced_pod(
                name, namespace, body=options, _request_timeout=API_TIMEOUT
            )
        ):
            logger.info("fake kubelet: deleted pod %s/%s", namespace, name)

    def _call(self, request: Callable[[], object]) -> bool:
        """Make an API request, retrying transient errors; False when the pod is gone.

        404 (deleted) and 409 (the uid precondition failed: a new pod of the same name)
        both mean that the pod this kubelet ran no longer exists.
        """
        delay = BACKOFF[0]
        deadline = time.monotonic() + API_PATIENCE
        while True:
            try:
                request()
                return True
            except client.ApiException as exc:
                if exc.status in (404, 409):
                    return False
                transient = exc.status is None or exc.status >= 500 or exc.status == 429
                if not transient or time.monotonic() > deadline:
                    raise
                error: Exception = exc
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                if time.monotonic() > deadline or self._stopping.is_set():
                    raise
                error = exc
            logger.warning("fake kubelet: API request failed (%s); retrying in %.1fs", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    def _error(self, message: str) -> None:
        """Log the exception being handled and keep its text for tests to assert on."""
        logger.exception("%s", message)
        self.errors.append(message)


# --- helpers ------------------------------------------------------------------------------


_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(NAME) expansion: an unknown name stays as is, and $$ is a single $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return env.get(match.group(2), match.group(0))

    return _REFERENCE.sub(replace, text)


def _make_sub_path(volume: Path, path: Path) -> None:
    """Make a missing subPath as a kubelet does: each missing folder with the mode of the
    volume's root (so an emptyDir's are writable by every user, a claim's as its root)."""
    mode = stat.S_IMODE(volume.stat().st_mode)
    missing = [path, *(parent for parent in path.parents if parent.is_relative_to(volume))]
    for folder in reversed([f for f in missing if not f.exists()]):
        folder.mkdir()
        folder.chmod(mode)


def _under(root: Path, sub_path: str, mount: str) -> Path:
    """``root/sub_path``, refusing a subPath that leaves the volume."""
    if sub_path.startswith("/") or ".." in Path(sub_path).parts:
        raise _PodError(f"volume mount {mount!r}: subPath {sub_path!r} leaves the volume")
    return root / sub_path if sub_path else root


def _secret_names(pod: Pod) -> set[str]:
    spec = pod.get("spec", {})
    return {
        ref["name"]
        for raw in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        for var in raw.get("env") or []
        if (ref := (var.get("valueFrom") or {}).get("secretKeyRef")) and ref.get("name")
    }


def _gaia_executable_or_none() -> str | None:
    try:
        return _gaia_executable()
    except _PodError:
        return None


def _gaia_executable() -> str:
    """The ``gaia`` console script of the running Python (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "gaia"
    if beside.exists():
        return str(beside)
    found = shutil.which("gaia")
    if found is None:
        raise _PodError("a gaia helper container needs the gaia console script; none found")
    return found


def _lines(response: Any) -> Iterator[str]:
    """The lines of a streamed response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if pending.strip():
        yield pending.decode("utf-8", errors="replace")


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | urllib3.exceptions.HTTPError)
