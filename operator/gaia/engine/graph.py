"""The bipartite graph of processes and data keys, with the checks a change must pass.

Checks look only at the region a change touches (the added processes and what lies
downstream of them), so a small merge into a large namespace stays cheap.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from gaia.engine.keys import folders_of, parents
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

    def add(self, processes: Iterable[Process]) -> list[str]:
        """Add processes; return the data keys that are new to the graph."""
        self.version += 1
        by_key, producer, consumers, refs = (
            self.processes,
            self.producer,
            self.consumers,
            self._refs,
        )
        fresh = []
        for process in processes:  # _ref, inlined: once per leaf of a merge, a key or two each
            name = process.key
            by_key[name] = process
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
        # Counted per folder, not per key: a fan-out's keys share a few folders.
        inside = self._inside
        for folder, count in Counter(key.rpartition("/")[0] for key in fresh).items():
            for parent in (*parents(folder), folder) if folder else ():
                inside[parent] = inside.get(parent, 0) + count
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

    def check_change(self, added: Sequence[Process], removed: set[str]) -> set[str]:
        """Raise InvalidRequest if adding ``added`` after removing ``removed`` would give
        a process key twice, a data key two producers, or a cycle. Returns every data key
        the ``added`` processes bind.

        Each check is made on whole sets first (a merge of 1,000,000 processes passes
        them at the speed of set operations); a clash found is named by going through
        the processes in order (:meth:`_name_clash`)."""
        processes, producer = self.processes, self.producer
        new = {process.key: process for process in added}
        new_producer = {key: p.key for p in added for key in p.outputs.values()}
        if (
            len(new) != len(added)
            or len(new_producer) != sum(len(p.outputs) for p in added)
            or any(key not in removed for key in new.keys() & processes.keys())
            or any(producer[key] not in removed for key in new_producer.keys() & producer.keys())
        ):
            self._name_clash(added, removed)
        read = {key for p in added for key in p.inputs.values()}  # by the added processes
        bound = read | new_producer.keys()
        self._check_nesting(added, removed, bound)

        # Only a process with both an input someone produces and an output someone reads
        # can lie on a cycle: the DFS starts at those alone (none, in a plain fan-out).
        consumers = self.consumers
        start = []
        for process in added:
            for key in process.inputs.values():
                if key in new_producer or self._live_producer(key, removed):
                    break
            else:
                continue
            for key in process.outputs.values():
                users = consumers.get(key)  # no generator made for the usual unread output
                if key in read or (users and any(c not in removed for c in users)):
                    start.append(process.key)
                    break
        if not start:
            return bound
        new_consumers: dict[str, list[str]] = defaultdict(list)
        for process in added:
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

        self._check_acyclic(start, outputs_of, consumers_of)
        return bound

    def _name_clash(self, added: Sequence[Process], removed: set[str]) -> None:
        """Raise InvalidRequest naming the first process key twice or data key with two
        producers, in the order of ``added``."""
        new: set[str] = set()
        new_producer: dict[str, str] = {}
        for process in added:
            if process.key in new:
                raise InvalidRequest(f"process key {process.key!r} would exist twice")
            old = self.processes.get(process.key)
            if old is not None and process.key not in removed:
                raise InvalidRequest(
                    f"process {process.key!r} (from {process.spec!r}) collides with the "
                    f"existing process of that key (from {old.spec!r})"
                )
            new.add(process.key)
            outputs = process.outputs.values()
            if len(set(outputs)) != len(outputs):
                raise InvalidRequest(f"process {process.key!r} binds one data key to two outputs")
            for key in outputs:
                other = new_producer.get(key)
                if other is None and (other := self.producer.get(key)) in removed:
                    other = None  # its producer leaves in this change
                if other is not None:
                    raise InvalidRequest(
                        f"data key {key!r} would have two producers: {other!r} and {process.key!r}"
                    )
                new_producer[key] = process.key
        raise AssertionError("a clash found, then not named")

    def _check_nesting(self, added: Sequence[Process], removed: set[str], bound: set[str]) -> None:
        """No data key may lie inside another (``a`` and ``a/x``): publishing the outer
        one would replace the inner one's data, and the store could not hold both.
        ``bound`` holds every data key the ``added`` processes bind."""
        lost: Counter[str] = Counter()
        for key in removed:
            process = self.processes[key]
            lost.update([*process.outputs.values(), *process.inputs.values()])
        refs, inside = self._refs, self._inside
        leaving = {key for key, count in lost.items() if refs[key] == count}
        # The keys new to the graph, by set operations on the keys themselves: a merge of
        # 1,000,000 processes checks its keys' few folders, not each key's own.
        arriving = bound.difference(refs) | (bound & leaving)
        if not arriving:
            return
        leaving -= arriving
        inside_leaving = Counter(parent for key in leaving for parent in parents(key))

        def present(key: str) -> bool:
            return (key in refs and key not in leaving) or key in arriving

        # Clear when no folder holding an arriving key is itself a key (present or
        # arriving), and no arriving key holds a key that stays.
        if not any(present(folder) for folder in folders_of(arriving)) and all(
            inside[key] <= inside_leaving.get(key, 0) for key in inside.keys() & arriving
        ):
            return
        # A problem: found again in key order, so that the message names the first.
        users: dict[str, str] = {}  # arriving data key -> a process using it
        for process in added:
            for bound_keys in (process.outputs, process.inputs):
                for key in bound_keys.values():
                    if key in arriving:
                        users.setdefault(key, process.key)
        arriving_inside: dict[str, str] = {}  # directory -> an arriving key inside it
        for key in users:
            for parent in parents(key):
                arriving_inside.setdefault(parent, key)
        for key in sorted(arriving):
            outer = next((parent for parent in parents(key) if present(parent)), None)
            if outer is not None:
                raise self._nested(outer, key, users)
            if key in arriving_inside:
                raise self._nested(key, arriving_inside[key], users)
            if inside.get(key, 0) > inside_leaving.get(key, 0):
                inner = next(k for k in refs if k.startswith(key + "/") and k not in leaving)
                raise self._nested(key, inner, users)
        raise AssertionError("a nesting problem found, then not named")

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
