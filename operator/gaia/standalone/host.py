"""The standalone host: the shell (:mod:`gaia.shell`) on one machine.

Tasks run as local processes (:mod:`gaia.standalone.executor`), data lives in a
directory (:class:`~gaia.store.LocalStore`), state in SQLite
(:mod:`gaia.standalone.statedb`), and events go to the HTTP stream (and Kafka, if asked).
Everything runs on one asyncio loop; store calls leave it for a thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia.bus import EventBus
from gaia.engine.instructions import CancelTask, StartTask
from gaia.engine.limits import Limits
from gaia.engine.model import Command
from gaia.engine.namespace import Namespace
from gaia.engine.states import Mode
from gaia.errors import GaiaError, NotFound, Unavailable
from gaia.shell import Kept, Outcome, Shell, check_worker_keys
from gaia.standalone.executor import LocalExecutor
from gaia.standalone.statedb import StateDB
from gaia.store import LocalStore
from gaia.wire import Event, TaskState
from gaia.worker import sandbox as sandboxes
from gaia.worker.runner import TaskResult, TaskSpec

if TYPE_CHECKING:
    from gaia.bus.kafka import KafkaPublisher

__all__ = ["StandaloneHost"]

logger = logging.getLogger(__name__)
LOG_TAIL = 50


class StandaloneHost(Shell):
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        idle_timeout: float = 300.0,
        sandbox: str = "auto",
        kafka: str | None = None,
        kafka_topics: Mapping[str, str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``kafka`` (HOST:PORT) also publishes every event to Kafka, on ``kafka_topics``
        (``{"log": ..., "status": ...}``); an unreachable broker raises ConnectionFailed.
        ``sandbox`` (auto, bwrap, none) is probed now: :attr:`sandbox` says how tasks run."""
        self.sandbox = sandboxes.sandbox(sandbox)
        self.kafka: KafkaPublisher | None = None
        if kafka:
            from gaia.bus.kafka import KafkaPublisher  # kafka-python: only when asked for

            self.kafka = KafkaPublisher(kafka, kafka_topics)
        self.data_dir = data_dir.resolve()
        state_dir = self.data_dir / ".gaia"
        # The server's alone: its state, task logs and the tasks' working folders, which
        # on a root server belong to the tasks' user (nobody) and must not be reachable
        # by other programs of that user, nor anyone's.
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)
        self._lock = _lock_data_dir(state_dir / "lock", self.data_dir)
        self.db = StateDB(state_dir / "state.db")
        bus = EventBus(sink=self.db.save_event, first_id=self.db.last_event_id() + 1)
        if self.kafka is not None:
            bus.add_sink(self.kafka.publish)
        # GAIA_MAX_... in the environment, unless given
        super().__init__(LocalStore(self.data_dir), bus, limits or Limits.from_env(os.environ))
        self.local_store = LocalStore(self.data_dir)
        self.executor = LocalExecutor(
            state_dir / "work",
            self,
            workers=workers,
            idle_timeout=idle_timeout,
            sandbox=sandbox,
            hide=(self.data_dir,),
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Reload the saved state and resume every namespace. Never refuses to start: a
        namespace whose saved state cannot be applied comes up in ``error``, saying why."""
        self.db.defer = asyncio.get_running_loop().call_soon
        self.executor.start()
        self._restore_commands()
        for root, mode in sorted(self.db.load_namespaces().items()):
            try:
                namespace = await self.restore(root, self.db.load_specs(root))
                namespace.restore_tasks(self.db.load_tasks(root), {})
                self.carry_out(namespace, namespace.resume(Mode(mode)))
            except Exception as exc:  # a bug must not keep the other namespaces down
                logger.exception("namespace %s could not be restored", root)
                namespace = self.namespaces.get(root) or self.new_namespace(root)
                namespace.reject("*", f"the namespace could not be restored: {exc}")
                self.namespaces[root] = namespace
            logger.info("namespace %s: %s", root, namespace.state().value)

    def _restore_commands(self) -> None:
        """Every saved command that the rules still accept; composites once what they
        use is back. A command refused now is logged, and its users are refused too."""
        pending = self.db.load_commands()
        while pending:
            refused: list[Any] = []
            problems: list[str] = []
            for raw in pending:
                try:
                    merged, _ = self.registry.prepare([raw])
                except GaiaError as exc:
                    refused.append(raw)
                    problems.append(str(exc))
                else:
                    self.registry.commit(merged)
            if len(refused) == len(pending):
                for problem in problems:
                    logger.error("a saved command could not be restored: %s", problem)
                return
            pending = refused

    async def close(self) -> None:
        await self.executor.close()
        self.db.close()
        if self.kafka is not None:
            await asyncio.to_thread(self.kafka.close)
        os.close(self._lock)  # the data directory is free for the next server

    # -- what the shell asks of a host -------------------------------------------------

    def run_task(self, namespace: Namespace, start: StartTask) -> None:
        self.executor.submit(self._task_spec(start))

    def cancel_task(self, namespace: Namespace, cancel: CancelTask) -> None:
        self.executor.cancel(cancel.root, cancel.process, cancel.run)

    def keep(self, namespace: Namespace, kept: Kept) -> None:
        # A task merely queued is not kept: a restart queues whatever is runnable again,
        # and a merge of 100,000 processes would otherwise write 100,000 rows at once.
        tasks = [task for task in kept.tasks if task.state is not TaskState.QUEUED]
        self.db.save(
            namespace.root, namespace.mode, specs=kept.specs, dropped=kept.dropped, tasks=tasks
        )

    def keep_commands(self, commands: Iterable[Command]) -> None:
        self.db.save_commands(commands)

    def _task_spec(self, start: StartTask) -> TaskSpec:
        command = start.command
        space = self.local_store.namespace_dir(start.root)
        return TaskSpec(
            root=start.root,
            process=start.process.key,
            run=start.run,
            image=command.image,
            command=tuple(start.argv),
            # Lexical paths: every key was found inside the namespace when the change or
            # trigger looked it up, and only this user can plant a link in the data since.
            inputs={path: space / key for path, key in start.inputs.items()},
            outputs=tuple(start.outputs.values()),
            stdout=command.stdout,
            timeout=command.timeout,
            env=command.env,
            network=command.network,
            resources=command.resources,
        )

    # -- the calls of the API that only this host has ----------------------------------

    async def command(self, raw_commands: object) -> list[dict[str, Any]]:
        """Add or replace commands (see Shell.change_commands); every command, as dicts."""
        await self.change_commands(raw_commands)
        return [c.to_dict() for c in self.registry.commands.values()]

    async def launch(self, keys: object) -> dict[str, Any]:
        keys = check_worker_keys(keys, self.limits, self.executor.launched())
        launched, running = self.executor.launch(keys)
        return {"launch": launched, "running": running}

    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]:
        return self.db.events_since(after, root)

    def logs(self, root: object, process: object) -> dict[str, Any]:
        namespace = self.namespace(root)
        if not isinstance(process, str) or process not in namespace.graph.processes:
            raise NotFound(f"namespace {namespace.root!r} has no process {process!r}")
        task = namespace.tasks.get(process)
        if task is None:
            return {"root": namespace.root, "process": process, "run": None, "log": ""}
        path = self.executor.log_path(namespace.root, process, task.run)
        text = path.read_text(errors="replace") if path.exists() else ""
        return {"root": namespace.root, "process": process, "run": task.run, "log": text}

    # -- reports from the executor (TaskReport) ----------------------------------------

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None:
        self.task_started(root, process, run, handle)

    async def finished(self, root: str, process: str, run: int, result: TaskResult) -> None:
        outcome = Outcome(
            ok=result.ok,
            staged=result.staged,
            error=result.error,
            exit_code=result.exit_code,
            log_tail=list(result.log_tail)[-LOG_TAIL:],
        )
        await self.task_finished(root, process, run, outcome)

    def line(self, root: str, process: str, run: int, stream: str, text: str) -> None:
        self.bus.publish(
            {
                "event": Event.LOG.value,
                "root": root,
                "process": process,
                "task": f"{process}#{run}",
                "stream": stream,
                "line": text,
            }
        )

    def worker(self, event: Event, worker: str) -> None:
        self.bus.publish({"event": event.value, "worker": worker, "root": None})


def _lock_data_dir(path: Path, data_dir: Path) -> int:
    """Hold the data directory for this process (an fd with an exclusive flock, released
    when the process ends, however it ends). A second server on the same data would run
    the same tasks into the same working folders and overwrite the state database's rows;
    it stops at its start instead, saying which process holds the data."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Unavailable(
            f"the data directory {data_dir} is in use by another Gaia server (pid {holder}); "
            "stop it, or give this one another --data"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
