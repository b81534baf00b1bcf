"""The complete data keys of a namespace, with the processes they make done.

A process is done when every one of its outputs is complete. Status is written often (the
operator flushes it every second), so the count of done processes is kept in step with
each key that comes or goes instead of being recounted over the whole graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gaia.engine.graph import Graph
from gaia.engine.model import Process

__all__ = ["CompleteKeys"]


class CompleteKeys:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.keys: set[str] = set()
        self.done: set[str] = set()  # processes whose outputs are all complete

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str) -> None:
        if key not in self.keys:
            self.keys.add(key)
            producer = self.graph.producer.get(key)
            if producer is not None:
                self.recheck((self.graph.processes[producer],))

    def discard(self, key: str) -> None:
        if key in self.keys:
            self.keys.discard(key)
            producer = self.graph.producer.get(key)
            if producer is not None:
                self.done.discard(producer)

    def difference_update(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.discard(key)

    def recheck(self, processes: Iterable[Process]) -> None:
        """Call for processes just added to the graph (their outputs may exist already)."""
        keys, done = self.keys, self.done  # loops, not all(): once per process of a merge
        for process in processes:
            for key in process.outputs.values():
                if key not in keys:
                    done.discard(process.key)
                    break
            else:
                done.add(process.key)

    def forget(self, process: str) -> None:
        """Call for a process that left the graph."""
        self.done.discard(process)
