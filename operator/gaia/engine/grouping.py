"""Fan-outs folded into groups: what lets a 100,000-process namespace be drawn as a handful
of nodes.

A *process group* holds the leaves of one user process spec that share a composite step
path: the fan-out ``cat`` gives one group ``cat-*`` of ``cat-rabbit`` and ``cat-snake``;
the composite ``both`` gives one group per step (``both:cat-ab``, ``both:wc-ab``), fanned
out or not. A *data group* holds the keys one process group writes through one output
name, or (for sources, which nothing writes) the keys read through the same set of
(process group, input name) bindings. Edges between groups are the union of their
members' edges, so the grouped graph is acyclic whenever the graph is.

A :class:`Grouping` depends on the graph alone: :func:`grouping` builds it once per graph
version (O(edges)) and keeps it until the graph changes.
"""

from __future__ import annotations

import re
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

from gaia.engine.graph import Graph
from gaia.engine.model import Process

__all__ = ["Group", "Grouping", "grouping", "natural_key", "pattern"]

_DIGITS = re.compile(r"(\d+)")


@dataclass(slots=True)
class Group:
    id: str  # "pg:<spec>[:<steps>]" or "dg:..."; stable while the specs stay
    kind: str  # "process" or "data"
    label: str  # "cat-*", "cat/*", or the single member's key
    members: list[str] = field(default_factory=list)  # in the order they were merged
    command: str | None = None  # a process group's leaf command
    owner: str | None = None  # the process group whose expansion also expands this one
    writes: list[str] = field(default_factory=list)  # a process group's output data groups


@dataclass(slots=True)
class Grouping:
    version: int
    groups: dict[str, Group]
    process_group: dict[str, str]  # process key -> group id
    data_group: dict[str, str]  # data key -> group id
    edges: list[tuple[str, str]]  # group id -> group id, each once
    owned: dict[str, list[str]]  # process group -> the data groups that expand with it


_CACHE: weakref.WeakKeyDictionary[Graph, Grouping] = weakref.WeakKeyDictionary()


def grouping(graph: Graph) -> Grouping:
    """The grouping of ``graph``, rebuilt only when the graph has changed."""
    cached = _CACHE.get(graph)
    if cached is None or cached.version != graph.version:
        cached = _build(graph)
        _CACHE[graph] = cached
    return cached


def process_group_id(process: Process) -> str:
    steps = process.key.partition(":")[2]  # ':' is reserved for composite steps
    return f"pg:{process.spec}" + (f":{steps}" if steps else "")


def _build(graph: Graph) -> Grouping:
    groups: dict[str, Group] = {}
    process_group: dict[str, str] = {}
    data_group: dict[str, str] = {}
    source_bindings: dict[str, set[tuple[str, str]]] = defaultdict(set)
    reads: dict[str, set[str]] = defaultdict(set)  # process group -> the data keys it reads
    produced = graph.producer
    ids: dict[tuple[str, str], str] = {}  # (spec, steps) -> group id
    writes: dict[str, dict[str, Group]] = {}  # process group -> output name -> data group
    edges: set[tuple[str, str]] = set()
    for process in graph.processes.values():  # the hot loop: a few µs a process
        key = process.key
        place = (process.spec, key.partition(":")[2] if ":" in key else "")
        gid = ids.get(place)
        if gid is None:
            gid = ids[place] = process_group_id(process)
            groups[gid] = Group(gid, "process", "", command=process.command)
            writes[gid] = {}
        process_group[key] = gid
        groups[gid].members.append(key)
        named = writes[gid]
        for name, data_key in process.outputs.items():
            written = named.get(name)
            if written is None:
                dgid = f"dg:{gid[3:]}>{name}"
                written = named[name] = groups[dgid] = Group(dgid, "data", "", owner=gid)
                groups[gid].writes.append(dgid)
                edges.add((gid, dgid))
            data_group[data_key] = written.id
            written.members.append(data_key)
        inputs = process.inputs
        reads[gid].update(inputs.values())
        for name, data_key in inputs.items():
            if data_key not in produced:
                source_bindings[data_key].add((gid, name))
    readers: dict[str, set[str]] = defaultdict(set)  # source group -> process groups
    for key, bindings in source_bindings.items():
        dgid = "dg:<" + ",".join(f"{g[3:]}>{n}" for g, n in sorted(bindings))
        data_group[key] = dgid
        if dgid not in groups:
            groups[dgid] = Group(dgid, "data", "")
        groups[dgid].members.append(key)
        readers[dgid].update(g for g, _ in bindings)
    owned: dict[str, list[str]] = defaultdict(list)
    for group in groups.values():
        if group.kind == "data" and group.owner is None and len(readers[group.id]) == 1:
            group.owner = next(iter(readers[group.id]))  # read by several: expands with none
        if group.owner is not None:
            owned[group.owner].append(group.id)
    for gid, keys in reads.items():
        edges.update((dgid, gid) for dgid in set(map(data_group.__getitem__, keys)))
    for group in groups.values():
        group.label = _label(group)
    return Grouping(graph.version, groups, process_group, data_group, sorted(edges), dict(owned))


def _label(group: Group) -> str:
    if len(group.members) == 1:
        return group.members[0]
    if group.kind == "process":
        spec, _, steps = group.id[3:].partition(":")
        return f"{spec}-*" + (f":{steps}" if steps else "")
    return pattern(group.members)


def pattern(keys: list[str]) -> str:
    """A glob that the keys share: ``cat/rabbit``, ``cat/snake`` -> ``cat/*``."""
    prefix = _common_prefix(keys)
    suffix = _common_prefix([key[len(prefix) :][::-1] for key in keys])[::-1]
    return f"{prefix}*{suffix}"


def _common_prefix(texts: list[str]) -> str:
    """The characters every text starts with (those of the smallest and largest do)."""
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def natural_key(key: str) -> tuple[tuple[int, int | str], ...]:
    """Sort ``gen-2`` before ``gen-10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(key) if part
    )
