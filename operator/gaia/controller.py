"""The standalone controller: the engine's host on one machine.

It owns the command registry and the namespaces, answers the API's calls, and carries
out the engine's instructions with the local store, the local executor, the event bus
and the state database. Everything runs on one asyncio loop, so engine calls never
interleave.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia.bus import EventBus
from gaia.engine.instructions import CancelTask, DeleteData, Emit, Instruction, StartTask
from gaia.engine.keys import render, root_problem
from gaia.engine.namespace import Namespace
from gaia.engine.registry import Registry
from gaia.engine.states import Mode
from gaia.errors import GaiaError, InvalidRequest, NotFound
from gaia.executors import LocalExecutor
from gaia.statedb import StateDB
from gaia.store import LocalStore
from gaia.worker import sandbox as sandboxes
from gaia.worker.runner import TaskResult, TaskSpec

if TYPE_CHECKING:
    from gaia.bus.kafka import KafkaPublisher

__all__ = ["Controller"]

logger = logging.getLogger(__name__)
LOG_TAIL = 50


class Controller:
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        idle_timeout: float = 300.0,
        sandbox: str = "auto",
        kafka: str | None = None,
        kafka_topics: Mapping[str, str] | None = None,
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
        self.db = StateDB(state_dir / "state.db")
        self.store = LocalStore(self.data_dir)
        self.bus = EventBus(sink=self.db.save_event, first_id=self.db.last_event_id() + 1)
        if self.kafka is not None:
            self.bus.add_sink(self.kafka.publish)
        self.executor = LocalExecutor(
            state_dir / "work",
            self,
            workers=workers,
            idle_timeout=idle_timeout,
            sandbox=sandbox,
            hide=(self.data_dir,),
        )
        self.registry = Registry()
        self.namespaces: dict[str, Namespace] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Reload the saved state and resume every active namespace. Call on the loop."""
        self.registry = Registry(self.db.load_commands())
        self.executor.start()
        for root, mode in self.db.load_namespaces().items():
            namespace = self._new_namespace(root)
            plan = namespace.prepare_merge(self.db.load_specs(root), self.registry.commands)
            namespace.mode = Mode.HALTED  # add without starting; the saved mode comes next
            namespace.apply(plan, self._exists(root))
            namespace.restore_tasks(self.db.load_tasks(root), {})
            namespace.mode = mode
            self._carry_out(namespace, namespace.resume())
            logger.info("namespace %s: %s", root, namespace.state().value)

    async def close(self) -> None:
        await self.executor.close()
        self.db.close()
        if self.kafka is not None:
            await asyncio.to_thread(self.kafka.close)

    def _new_namespace(self, root: str) -> Namespace:
        namespace = Namespace(root)
        namespace.command_lookup = lambda key: self.registry.commands[key]
        self.namespaces[root] = namespace
        return namespace

    def _namespace(self, root: object, create: bool = False) -> Namespace:
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        assert isinstance(root, str)
        namespace = self.namespaces.get(root)
        if namespace is None:
            if not create:
                known = ", ".join(sorted(self.namespaces)) or "none yet"
                raise NotFound(
                    f"no namespace {root!r} (namespaces: {known}); merge processes into it first"
                )
            namespace = self._new_namespace(root)
        return namespace

    def _exists(self, root: str) -> Any:
        return lambda key: self.store.exists(root, key)

    # -- the API -----------------------------------------------------------------------

    def command(self, raw_commands: object) -> dict[str, Any]:
        merged, changed = self.registry.prepare(raw_commands)
        plans = {
            root: namespace.prepare_command_change(changed, merged)
            for root, namespace in self.namespaces.items()
        }
        self.registry.commit(merged)
        self.db.save_commands(merged[key] for key in changed if key in merged)
        for root, plan in plans.items():
            if plan.specs:
                namespace = self.namespaces[root]
                self._carry_out(namespace, namespace.apply(plan, self._exists(root)))
        return {"commands": [c.to_dict() for c in self.registry.commands.values()]}

    def merge(self, root: object, raw_processes: object) -> dict[str, Any]:
        namespace = self._namespace(root, create=True)
        try:
            plan = namespace.prepare_merge(raw_processes, self.registry.commands)
        except GaiaError:
            if not namespace.specs and namespace.root in self.namespaces:
                del self.namespaces[namespace.root]  # a failed first merge leaves no trace
            raise
        self.db.save_specs(namespace.root, plan.specs)
        instructions = namespace.apply(plan, self._exists(namespace.root))
        self.db.save_mode(namespace.root, namespace.mode)
        self._carry_out(namespace, instructions)
        return {"processes": {namespace.root: plan.changed}}

    def trigger(self, root: object) -> dict[str, Any]:
        namespace = self._namespace(root)
        instructions = namespace.trigger(self._exists(namespace.root))
        self.db.save_mode(namespace.root, namespace.mode)
        self._carry_out(namespace, instructions)
        return {"trigger": namespace.root}

    def halt(self, root: object) -> dict[str, Any]:
        namespace = self._namespace(root)
        instructions = namespace.halt()
        self.db.save_mode(namespace.root, namespace.mode)
        self._carry_out(namespace, instructions)
        return {"halt": namespace.root}

    def status(self, root: object) -> dict[str, Any]:
        namespace = self._namespace(root)
        return {"root": namespace.root, "status": namespace.status()}

    def expire(self, root: object, keys: object) -> dict[str, Any]:
        namespace = self._namespace(root)
        processes, data, instructions = namespace.expire(keys)
        self._carry_out(namespace, instructions)
        return {"expire": {"process": processes, "data": data}}

    def launch(self, keys: object) -> dict[str, Any]:
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise InvalidRequest("'keys' must be a list of worker names")
        if duplicates := sorted({k for k in keys if keys.count(k) > 1}):
            raise InvalidRequest(f"worker keys must be unique; repeated: {duplicates}")
        launched, running = self.executor.launch(keys)
        return {"launch": launched, "running": running}

    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]:
        return self.db.events_since(after, root)

    def workflows(self) -> dict[str, Any]:
        return {
            "workflows": {root: ns.state().value for root, ns in sorted(self.namespaces.items())}
        }

    def logs(self, root: object, process: object) -> dict[str, Any]:
        namespace = self._namespace(root)
        if not isinstance(process, str) or process not in namespace.graph.processes:
            raise NotFound(f"namespace {namespace.root!r} has no process {process!r}")
        task = namespace.tasks.get(process)
        if task is None:
            return {"root": namespace.root, "process": process, "run": None, "log": ""}
        path = self.executor.workdir(namespace.root, process, task.run) / "log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return {"root": namespace.root, "process": process, "run": task.run, "log": text}

    # -- carrying out instructions -----------------------------------------------------

    def _carry_out(self, namespace: Namespace, instructions: Iterable[Instruction]) -> None:
        touched: dict[str, None] = {}
        for instruction in instructions:
            if isinstance(instruction, Emit):
                self.bus.publish(instruction.event)
            elif isinstance(instruction, StartTask):
                self.executor.submit(self._task_spec(instruction))
                touched[instruction.process.key] = None
            elif isinstance(instruction, CancelTask):
                self.executor.cancel(instruction.root, instruction.process, instruction.run)
                touched[instruction.process] = None
            elif isinstance(instruction, DeleteData):
                self.store.delete(instruction.root, instruction.keys)
        tasks = [namespace.tasks[key] for key in touched if key in namespace.tasks]
        if tasks:
            self.db.save_tasks(namespace.root, tasks)

    def _task_spec(self, start: StartTask) -> TaskSpec:
        command, process = start.command, start.process
        return TaskSpec(
            root=start.root,
            process=process.key,
            run=start.run,
            image=command.image,
            command=tuple(render(arg, process.vars) for arg in command.command),
            inputs={
                command.inputs[name]: self.store.path(start.root, key)
                for name, key in process.inputs.items()
            },
            outputs=tuple(command.outputs[name] for name in process.outputs),
            stdout=command.stdout,
            timeout=command.timeout,
            env=command.env,
            network=command.network,
            resources=command.resources,
        )

    # -- reports from the executor (TaskReport) ----------------------------------------

    def started(self, root: str, process: str, run: int, handle: dict[str, object]) -> None:
        namespace = self.namespaces[root]
        self._carry_out(namespace, namespace.task_started(process, run, handle))
        if task := namespace.current(process, run):
            self.db.save_tasks(root, [task])

    def finished(
        self, root: str, process: str, run: int, result: TaskResult, workdir: Path
    ) -> None:
        namespace = self.namespaces.get(root)
        if namespace is None or namespace.current(process, run) is None:
            return  # cancelled or superseded while it ran: publish nothing
        tail = list(result.log_tail)[-LOG_TAIL:]
        if result.ok:
            leaf = namespace.graph.processes[process]
            command = self.registry.commands[leaf.command]
            staged = {
                key: result.staged[command.outputs[name]] for name, key in leaf.outputs.items()
            }
            try:
                self.store.publish(root, staged)
            except GaiaError as exc:
                instructions = namespace.task_failed(process, run, str(exc), result.exit_code, tail)
            else:
                instructions = namespace.task_succeeded(process, run, result.exit_code or 0)
        else:
            error = result.error or "failed"
            instructions = namespace.task_failed(process, run, error, result.exit_code, tail)
        task = namespace.tasks[process]
        self._carry_out(namespace, instructions)
        self.db.save_tasks(root, [task])
        shutil.rmtree(workdir / "fs", ignore_errors=True)  # keep only the log

    def line(self, root: str, process: str, run: int, stream: str, text: str) -> None:
        self.bus.publish(
            {
                "event": "log",
                "root": root,
                "process": process,
                "task": f"{process}#{run}",
                "stream": stream,
                "line": text,
            }
        )

    def worker(self, event: str, worker: str) -> None:
        self.bus.publish({"event": event, "worker": worker, "root": None})
