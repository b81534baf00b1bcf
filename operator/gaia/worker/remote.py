"""``gaia worker``: a long-lived worker of the Kubernetes operator (see gaia/kube/workers.py).

It asks the operator's HTTP API for a task (``POST /work/take``, a long poll), runs it
through the task runner in a private directory under the temporary folder, heartbeats
every :data:`HEARTBEAT` seconds while it runs (the operator answers ``cancel`` once the
run is no longer current: the task's process tree is then killed and nothing reported),
and on success moves each declared output into the staging folder the operator named on
the shared volume before reporting ``/work/done``. After ``idle`` seconds without work it
says ``/work/stopped`` (the operator deletes its Deployment) and exits 0.

The operator names paths on the data volume under ``/data``; ``$GAIA_WORKER_DATA`` says
where that volume really is (the pod sets it to ``/data``).

Each call carries the pod's projected ServiceAccount token (``--token-file``) as a bearer
token: the operator takes work only from the pods it launched. The kubelet rotates the
file, so it is read again before every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gaia.engine.resources import parse_resources
from gaia.errors import TaskFailed
from gaia.store.local import sync_parents
from gaia.worker import outputs as output_files
from gaia.worker import sandbox as sandboxes
from gaia.worker.runner import TaskResult, TaskSpec, run_task

__all__ = ["HEARTBEAT", "RemoteWorker", "main"]

logger = logging.getLogger(__name__)

HEARTBEAT = 2.0  # seconds between heartbeats while a task runs
MAX_WAIT = 30.0  # the longest long poll the operator grants
RETRY = 2.0  # seconds before asking again after the API could not be reached
STOP_GRACE = 30.0  # after /work/stopped deleted our Deployment: wait this long to be killed
DATA = "/data"  # the operator's name for the data volume


class ApiError(RuntimeError):
    pass


class RemoteWorker:
    def __init__(
        self,
        key: str,
        api: str,
        idle: float,
        data: Path | None = None,
        work: Path | None = None,
        sandbox: str = "auto",
        token_file: Path | None = None,
    ) -> None:
        self.key = key
        self.token_file = token_file
        self.sandbox = sandbox
        self.api = api.rstrip("/")
        if "://" not in self.api:
            self.api = "http://" + self.api
        self.idle = idle
        self.data = (data or Path(os.environ.get("GAIA_WORKER_DATA") or DATA)).resolve()
        self.work = work or Path(tempfile.gettempdir())

    # -- HTTP ------------------------------------------------------------------------------

    def _token(self) -> str | None:
        """The pod's token, as the kubelet last wrote it (it rotates the file)."""
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError as exc:
            raise ApiError(f"cannot read the token file {self.token_file}: {exc}") from exc

    def _post_now(self, path: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token := self._token():
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.api + path,
            data=json.dumps({"worker": self.key, **body}).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(f"POST {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise ApiError(f"POST {path} to {self.api}: {exc}") from exc
        if not isinstance(reply, dict):
            raise ApiError(f"POST {path}: the answer is not a JSON object: {reply!r}")
        return reply

    async def _post(self, path: str, body: Mapping[str, Any], timeout: float = 30.0) -> Any:
        return await asyncio.to_thread(self._post_now, path, body, timeout)

    def _local(self, path: str) -> Path:
        """The operator's ``/data/...`` as a path on this machine."""
        if path != DATA and not path.startswith(DATA + "/"):
            raise ApiError(f"path {path!r} is not on the data volume ({DATA})")
        return self.data / path[len(DATA) :].lstrip("/")

    # -- the loop ----------------------------------------------------------------------------

    async def serve(self) -> int:
        last_work = time.monotonic()
        while True:
            remaining = self.idle - (time.monotonic() - last_work)
            if remaining <= 0:
                break
            wait = max(1.0, min(MAX_WAIT, remaining))
            try:
                reply = await self._post("/work/take", {"wait": wait}, timeout=wait + 30)
            except ApiError as exc:
                logger.warning("worker %s: %s; asking again in %ss", self.key, exc, RETRY)
                await asyncio.sleep(RETRY)
                continue
            task = reply.get("task")
            if task:
                await self.run(task)
                last_work = time.monotonic()
        logger.info("worker %s: idle for %ss, stopping", self.key, self.idle)
        deleted = False
        try:
            deleted = bool((await self._post("/work/stopped", {})).get("deleted"))
        except ApiError as exc:
            logger.warning("worker %s: %s", self.key, exc)
        if deleted:  # our pod is going: exit when told (SIGTERM) rather than be replaced
            await asyncio.sleep(STOP_GRACE)
        return 0

    async def run(self, task: dict[str, Any]) -> None:
        ident = {"root": task["root"], "process": task["process"], "run": task["run"]}
        what = f"{task['process']}#{task['run']} of {task['root']}"
        workdir = Path(tempfile.mkdtemp(prefix=f"gaia-worker-{self.key}-", dir=self.work))
        try:
            spec = TaskSpec(
                root=task["root"],
                process=task["process"],
                run=int(task["run"]),
                image=None,
                command=tuple(task["command"]),
                inputs={path: self._local(host) for path, host in task["inputs"].items()},
                outputs=tuple(task["outputs"]),
                stdout=task.get("stdout"),
                timeout=task.get("timeout"),
                env=task.get("env") or {},
                network=bool(task.get("network")),
                resources=parse_resources(task.get("resources"), f"command of {what}"),
            )
            logger.info("worker %s: running %s", self.key, what)
            job = asyncio.create_task(
                run_task(spec, workdir / "task", sandbox=self.sandbox, hide=(self.data, self.work))
            )
            try:
                result = await self._supervise(job, ident)
            except Exception as exc:  # the runner broke: the task's failure
                logger.exception("worker %s: %s could not run", self.key, what)
                result = TaskResult(False, None, {}, f"could not run: {exc}", ())
            if result is None:
                logger.info("worker %s: %s cancelled by the operator", self.key, what)
                return  # halted, expired or superseded: nothing to report
            if result.ok:
                try:
                    self._stage(result, self._local(task["staging"]))
                except (OSError, ApiError, TaskFailed) as exc:  # TaskFailed: a link planted
                    result = TaskResult(
                        False, 0, {}, f"could not stage the outputs: {exc}", result.log_tail
                    )
            report = {
                **ident,
                "ok": result.ok,
                "exit_code": result.exit_code,
                "error": result.error,
                "log_tail": list(result.log_tail),
            }
            for attempt in range(5):
                try:
                    await self._post("/work/done", report)
                    break
                except ApiError as exc:
                    logger.warning("worker %s: %s (attempt %d)", self.key, exc, attempt + 1)
                    await asyncio.sleep(RETRY)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _supervise(
        self, job: asyncio.Task[TaskResult], ident: dict[str, Any]
    ) -> TaskResult | None:
        """Heartbeat until the task ends; when the operator says cancel, kill the task's
        process tree (cancelling the runner does) and return None."""
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=HEARTBEAT)
                if done:
                    return job.result()
                try:
                    reply = await self._post("/work/heartbeat", ident, timeout=10)
                except ApiError as exc:
                    logger.warning("worker %s: %s", self.key, exc)
                    continue
                if reply.get("cancel"):
                    job.cancel()
                    await asyncio.gather(job, return_exceptions=True)
                    return None
        except asyncio.CancelledError:
            if not job.done():  # the worker itself is stopping: the task's processes too
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
            raise

    def _stage(self, result: TaskResult, staging: Path) -> None:
        """Move each staged output (container path -> local path) into ``staging`` and make
        it durable there: the operator renames it into the data once told, and the work
        folder is usually another file system (the pod's own), where the move is a copy
        that nothing has synced."""
        moved = []
        for path, source in result.staged.items():
            target = staging / path.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            shutil.move(str(source), str(target))
            output_files.sync(target, path)
            moved.append(target)
        sync_parents(moved)


async def _main(worker: RemoteWorker) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)
    try:
        return await worker.serve()
    except asyncio.CancelledError:
        logger.info("worker %s: stopped by a signal", worker.key)
        return 0


def main(
    key: str, api: str, idle: float, sandbox: str = "auto", token_file: Path | None = None
) -> int:
    """``gaia worker``: serve until idle for ``idle`` seconds (or SIGTERM); exit 0."""
    box = sandboxes.sandbox(sandbox)
    log = logger.warning if box.problem is not None or box.mode == "none" else logger.info
    log("worker %s: %s", key, box.summary())
    if token_file is None:
        logger.warning("worker %s: no --token-file: the operator will refuse it", key)
    worker = RemoteWorker(key, api, idle, sandbox=sandbox, token_file=token_file)
    return asyncio.run(_main(worker))
