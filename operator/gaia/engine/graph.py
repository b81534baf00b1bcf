"""The bipartite graph of processes and data keys, with the checks a change must pass.

Checks look only at the region a change touches (the added processes and what lies
downstream of them), so a small merge into a large namespace stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from gaia.engine.model import Process
from gaia.errors import InvalidRequest

__all__ = ["Graph"]


class Graph:
    def __init__(self) -> None:
        self.processes: dict[str, Process] = {}
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, set[str]] = {}
        self._refs: dict[str, int] = {}  # data key -> number of edges touching it
        self.version = 0  # counts changes, for what is derived from the graph alone

    @property
    def data_keys(self) -> Iterable[str]:
        return self._refs.keys()

    def __contains__(self, data_key: str) -> bool:
        return data_key in self._refs

    def data_count(self) -> int:
        return len(self._refs)

    def add(self, process: Process) -> list[str]:
        """Add a process; return the data keys that are new to the graph."""
        self.version += 1
        self.processes[process.key] = process
        fresh = []
        for key in process.outputs.values():
            self.producer[key] = process.key
            fresh += self._ref(key)
        for key in process.inputs.values():
            self.consumers.setdefault(key, set()).add(process.key)
            fresh += self._ref(key)
        return fresh

    def remove(self, process_key: str) -> list[str]:
        """Remove a process; return the data keys that left the graph with it."""
        self.version += 1
        process = self.processes.pop(process_key)
        gone = []
        for key in process.outputs.values():
            del self.producer[key]
            gone += self._unref(key)
        for key in process.inputs.values():
            users = self.consumers[key]
            users.discard(process_key)
            if not users:
                del self.consumers[key]
            gone += self._unref(key)
        return gone

    def _ref(self, key: str) -> list[str]:
        count = self._refs.get(key, 0)
        self._refs[key] = count + 1
        return [key] if count == 0 else []

    def _unref(self, key: str) -> list[str]:
        count = self._refs[key] - 1
        if count:
            self._refs[key] = count
            return []
        del self._refs[key]
        return [key]

    def downstream(self, seeds: Iterable[str]) -> tuple[set[str], set[str]]:
        """The processes and data keys that depend on the ``seeds`` data keys (seeds included)."""
        data: set[str] = set()
        processes: set[str] = set()
        frontier = [key for key in seeds if key in self._refs]
        while frontier:
            key = frontier.pop()
            if key in data:
                continue
            data.add(key)
            for consumer in self.consumers.get(key, ()):
                if consumer not in processes:
                    processes.add(consumer)
                    frontier.extend(self.processes[consumer].outputs.values())
        return processes, data

    def check_change(self, added: Sequence[Process], removed: set[str]) -> None:
        """Raise InvalidRequest if adding ``added`` after removing ``removed`` would give
        a process key twice, a data key two producers, or a cycle."""
        new: dict[str, Process] = {}
        new_producer: dict[str, str] = {}
        new_consumers: dict[str, list[str]] = defaultdict(list)
        for process in added:
            if process.key in new:
                raise InvalidRequest(f"process key {process.key!r} would exist twice")
            old = self.processes.get(process.key)
            if old is not None and process.key not in removed:
                raise InvalidRequest(
                    f"process {process.key!r} (from {process.spec!r}) collides with the "
                    f"existing process of that key (from {old.spec!r})"
                )
            new[process.key] = process
            outputs = list(process.outputs.values())
            if len(set(outputs)) != len(outputs):
                raise InvalidRequest(f"process {process.key!r} binds one data key to two outputs")
            for key in outputs:
                other = new_producer.get(key) or self._live_producer(key, removed)
                if other is not None:
                    raise InvalidRequest(
                        f"data key {key!r} would have two producers: {other!r} and {process.key!r}"
                    )
                new_producer[key] = process.key
            for key in set(process.inputs.values()):
                new_consumers[key].append(process.key)

        def outputs_of(key: str) -> Iterable[str]:
            process = new.get(key) or self.processes[key]
            return process.outputs.values()

        def consumers_of(data_key: str) -> Iterable[str]:
            for consumer in self.consumers.get(data_key, ()):
                if consumer not in removed:
                    yield consumer
            yield from new_consumers.get(data_key, ())

        self._check_acyclic(new, outputs_of, consumers_of)

    def _live_producer(self, key: str, removed: set[str]) -> str | None:
        producer = self.producer.get(key)
        return None if producer is None or producer in removed else producer

    @staticmethod
    def _check_acyclic(start: Iterable[str], outputs_of: object, consumers_of: object) -> None:
        """Depth-first search from ``start``; any cycle through new edges is reachable."""
        assert callable(outputs_of) and callable(consumers_of)
        done: set[str] = set()
        for root in start:
            if root in done:
                continue
            path: list[tuple[str, str | None]] = []  # (process, data key it was reached by)
            on_path: set[str] = set()
            stack: list[tuple[str, str | None, bool]] = [(root, None, False)]
            while stack:
                process, via, leaving = stack.pop()
                if leaving:
                    path.pop()
                    on_path.discard(process)
                    done.add(process)
                    continue
                if process in on_path:
                    start_at = next(i for i, (p, _) in enumerate(path) if p == process)
                    loop = [*path[start_at:], (process, via)]
                    described = " -> ".join(
                        p if d is None or i == 0 else f"[{d}] -> {p}"
                        for i, (p, d) in enumerate(loop)
                    )
                    raise InvalidRequest(f"the processes would form a cycle: {described}")
                if process in done:
                    continue
                path.append((process, via))
                on_path.add(process)
                stack.append((process, via, True))
                for key in outputs_of(process):
                    for consumer in consumers_of(key):
                        if consumer in on_path or consumer not in done:
                            stack.append((consumer, key, False))
