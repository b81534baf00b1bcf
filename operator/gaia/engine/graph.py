"""The bipartite graph of processes and data keys, with the checks a change must pass.

Checks look only at the region a change touches (the added processes and what lies
downstream of them), so a small merge into a large namespace stays cheap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from gaia.engine.keys import parents
from gaia.engine.model import Process
from gaia.errors import InvalidRequest

__all__ = ["Graph"]


class Graph:
    def __init__(self) -> None:
        self.processes: dict[str, Process] = {}
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, set[str]] = {}
        self._refs: dict[str, int] = {}  # data key -> number of edges touching it
        # directory -> how many data keys lie inside it: no key may lie inside another
        self._inside: dict[str, int] = {}
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
        name = process.key
        self.processes[name] = process
        producer, consumers, refs = self.producer, self.consumers, self._refs
        fresh = []
        # _ref, inlined: a merge adds a process per leaf, each with a key or two.
        for key in process.outputs.values():
            producer[key] = name
            count = refs.get(key, 0)
            refs[key] = count + 1
            if not count:
                fresh.append(key)
        for key in process.inputs.values():
            users = consumers.get(key)
            if users is None:
                consumers[key] = {name}
            else:
                users.add(name)
            count = refs.get(key, 0)
            refs[key] = count + 1
            if not count:
                fresh.append(key)
        inside = self._inside
        for key in fresh:
            for parent in parents(key):
                inside[parent] = inside.get(parent, 0) + 1
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

    def _unref(self, key: str) -> list[str]:
        count = self._refs[key] - 1
        if count:
            self._refs[key] = count
            return []
        del self._refs[key]
        for parent in parents(key):
            left = self._inside[parent] - 1
            if left:
                self._inside[parent] = left
            else:
                del self._inside[parent]
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
        processes, producer = self.processes, self.producer  # looked up 100,000s of times
        for process in added:
            if process.key in new:
                raise InvalidRequest(f"process key {process.key!r} would exist twice")
            old = processes.get(process.key)
            if old is not None and process.key not in removed:
                raise InvalidRequest(
                    f"process {process.key!r} (from {process.spec!r}) collides with the "
                    f"existing process of that key (from {old.spec!r})"
                )
            new[process.key] = process
            outputs = process.outputs.values()
            if len(outputs) > 1 and len(set(outputs)) != len(outputs):
                raise InvalidRequest(f"process {process.key!r} binds one data key to two outputs")
            for key in outputs:
                other = new_producer.get(key)
                if other is None and (other := producer.get(key)) in removed:
                    other = None  # its producer leaves in this change
                if other is not None:
                    raise InvalidRequest(
                        f"data key {key!r} would have two producers: {other!r} and {process.key!r}"
                    )
                new_producer[key] = process.key
            inputs = process.inputs.values()
            for key in set(inputs) if len(inputs) > 1 else inputs:
                new_consumers[key].append(process.key)

        self._check_nesting(added, removed)

        def outputs_of(key: str) -> Iterable[str]:
            process = new.get(key) or self.processes[key]
            return process.outputs.values()

        def consumers_of(data_key: str) -> Iterable[str]:
            for consumer in self.consumers.get(data_key, ()):
                if consumer not in removed:
                    yield consumer
            yield from new_consumers.get(data_key, ())

        # Only a process with both an input someone produces and an output someone reads
        # can lie on a cycle: the DFS starts at those alone (none, in a plain fan-out).
        consumers = self.consumers

        def linked(process: Process) -> bool:
            for key in process.inputs.values():
                if key in new_producer or self._live_producer(key, removed):
                    break
            else:
                return False
            for key in process.outputs.values():
                if key in new_consumers or any(c not in removed for c in consumers.get(key, ())):
                    return True
            return False

        self._check_acyclic([p.key for p in new.values() if linked(p)], outputs_of, consumers_of)

    def _check_nesting(self, added: Sequence[Process], removed: set[str]) -> None:
        """No data key may lie inside another (``a`` and ``a/x``): publishing the outer
        one would replace the inner one's data, and the store could not hold both."""
        lost: Counter[str] = Counter()
        for key in removed:
            process = self.processes[key]
            lost.update([*process.outputs.values(), *process.inputs.values()])
        leaving = {key for key, count in lost.items() if self._refs[key] == count}
        arriving: dict[str, str] = {}  # data key new to the graph -> a process using it
        refs = self._refs
        for process in added:
            for bound in (process.outputs, process.inputs):
                for key in bound.values():
                    if key not in refs or key in leaving:
                        arriving.setdefault(key, process.key)
        if not arriving:
            return
        leaving -= arriving.keys()
        inside_leaving = Counter(parent for key in leaving for parent in parents(key))
        arriving_inside: dict[str, str] = {}  # directory -> an arriving key inside it
        parents_of = {}
        for key in arriving:
            parents_of[key] = found = parents(key)
            for parent in found:
                arriving_inside.setdefault(parent, key)

        def present(key: str) -> bool:
            return (key in self._refs and key not in leaving) or key in arriving

        # Most keys share their few directories: each is asked about once. A problem found
        # is then looked for again in key order, so that the message names the first.
        presence: dict[str, bool] = {}
        inside = self._inside

        def clear(key: str, found: list[str]) -> bool:
            """Neither inside a key present nor holding one."""
            for parent in found:
                if (known := presence.get(parent)) is None:
                    known = presence[parent] = present(parent)
                if known:
                    return False
            return key not in arriving_inside and inside.get(key, 0) <= inside_leaving.get(key, 0)

        if all(clear(key, found) for key, found in parents_of.items()):
            return
        for key in sorted(arriving):
            outer = next((parent for parent in parents(key) if present(parent)), None)
            if outer is not None:
                raise self._nested(outer, key, arriving)
            if key in arriving_inside:
                raise self._nested(key, arriving_inside[key], arriving)
            if self._inside.get(key, 0) > inside_leaving.get(key, 0):
                inner = next(k for k in self._refs if k.startswith(key + "/") and k not in leaving)
                raise self._nested(key, inner, arriving)

    def _nested(self, outer: str, inner: str, arriving: dict[str, str]) -> InvalidRequest:
        def user(key: str) -> str:
            found = arriving.get(key) or self.producer.get(key)
            found = found or min(self.consumers.get(key, ()), default=None)
            return f" (process {found!r})" if found else ""

        return InvalidRequest(
            f"data key {inner!r}{user(inner)} would lie inside data key {outer!r}"
            f"{user(outer)}; one key cannot be a file or directory inside another"
        )

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
