"""What the dashboard and ``gaia graph`` show of a namespace: pure functions over an
engine :class:`~gaia.engine.namespace.Namespace`, so the standalone server and the
operator answer them alike (each host's method is one line over these).

- :func:`namespaces`: every namespace's state and counts (O(1) each).
- :func:`graph`: the grouped graph (see :mod:`gaia.engine.grouping`) with counts by state;
  named groups are expanded into their members, at most :data:`GROUP_LIMIT` each, so a
  reply stays small whatever the namespace's size.
- :func:`members`: one group's members (or every key matching a prefix), by page.
- :func:`process`: one process: its command line rendered, inputs, outputs, task record.

Costs: a graph reply walks the complete, active and failed sets once (O(processes) at
worst, about 30 ms at 100,000), never the whole status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from gaia.engine.grouping import Group, Grouping, grouping, natural_key
from gaia.engine.keys import render
from gaia.engine.model import Command
from gaia.engine.namespace import Namespace
from gaia.errors import InvalidRequest, NotFound

__all__ = ["GROUP_LIMIT", "MAX_NODES", "graph", "members", "namespaces", "process"]

GROUP_LIMIT = 100  # members drawn when a group is expanded; the rest is one "more" node
MAX_NODES = 1500  # expansions stop adding nodes past this
PAGE_LIMIT = 1000
PROCESS_STATES = ("complete", "running", "queued", "error", "waiting")
DATA_STATES = ("complete", "computing", "missing")
STORY_LINES = 50


def namespaces(spaces: Mapping[str, Namespace]) -> dict[str, Any]:
    return {
        "namespaces": [
            {"root": root, "state": ns.state().value, "counts": ns.counts()}
            for root, ns in sorted(spaces.items())
        ]
    }


def process_state(ns: Namespace, key: str) -> str:
    if key in ns.running:
        return "running"
    if key in ns.active:
        return "queued"
    if key in ns.failed:
        return "error"
    if key in ns.complete.done:
        return "complete"
    return "waiting"


def data_state(ns: Namespace, key: str) -> str:
    return ns.data_state(key).value


def graph(ns: Namespace, expand: object = ()) -> dict[str, Any]:
    """The grouped graph of ``ns``; ``expand`` lists group ids (``["*"]``: all of them)."""
    if not isinstance(expand, list | tuple) or not all(isinstance(g, str) for g in expand):
        raise InvalidRequest("'expand' must be a list of group ids")
    grouped = grouping(ns.graph)
    opened = _expanded(grouped, list(expand))
    shown = _shown_members(ns, grouped, opened)
    counts = _group_counts(ns, grouped)
    nodes: list[dict[str, Any]] = []
    node_of: dict[str, str] = {}  # member key (process or data) -> node id, where drawn alone
    truncated = False
    for group in grouped.groups.values():
        prefix = "p:" if group.kind == "process" else "d:"
        if len(group.members) == 1 or group.id in shown:
            keys = group.members if len(group.members) == 1 else shown[group.id]
            for key in keys:
                node_of[prefix + key] = prefix + key
                state = process_state(ns, key) if group.kind == "process" else data_state(ns, key)
                nodes.append(_node(prefix + key, group, key, 1, state, {state: 1}))
            rest = len(group.members) - len(keys)
            if rest:
                truncated = True
                nodes.append(_rest_node(group, rest, counts[group.id], keys, ns))
            continue
        nodes.append(
            _node(group.id, group, group.label, len(group.members), None, counts[group.id])
        )
    edges = _edges(ns, grouped, shown, node_of)
    return {
        "root": ns.root,
        "state": ns.state().value,
        "counts": ns.counts(),
        "version": ns.graph.version,
        "groups": sum(1 for g in grouped.groups.values() if len(g.members) > 1),
        "expanded": sorted(g for g in opened if len(grouped.groups[g].members) > 1),
        "labels": {g: grouped.groups[g].label for g in opened},  # of groups drawn as members
        "truncated": truncated,
        "nodes": nodes,
        "edges": edges,
    }


def _expanded(grouped: Grouping, expand: list[str]) -> list[str]:
    """The process groups asked for, then the data groups that expand with them."""
    if "*" in expand:
        wanted = [g.id for g in grouped.groups.values() if g.kind == "process"]
    else:
        unknown = sorted(g for g in expand if g not in grouped.groups)
        if unknown:
            raise NotFound(f"no group {unknown} in the graph (it changed? ask again)")
        wanted = [g for g in expand if grouped.groups[g].kind == "process"]
    opened: list[str] = []
    drawn = 0
    for gid in sorted(wanted, key=lambda g: len(grouped.groups[g].members)):
        size = min(len(grouped.groups[gid].members), GROUP_LIMIT) + 1
        if drawn + size * (1 + len(grouped.owned.get(gid, ()))) > MAX_NODES:
            break
        drawn += size * (1 + len(grouped.owned.get(gid, ())))
        opened += [gid, *grouped.owned.get(gid, ())]
    return opened


def _shown_members(ns: Namespace, grouped: Grouping, opened: list[str]) -> dict[str, list[str]]:
    """Members drawn one by one: the first GROUP_LIMIT of an opened process group, and the
    keys those members read or write in the data groups opened with it."""
    shown: dict[str, list[str]] = {}
    opened_set = set(opened)
    for gid in opened:
        group = grouped.groups[gid]
        if group.kind != "process":
            continue
        keys = group.members[:GROUP_LIMIT]
        shown[gid] = keys
        for key in keys:
            leaf = ns.graph.processes[key]
            for data_key in (*leaf.inputs.values(), *leaf.outputs.values()):
                dgid = grouped.data_group[data_key]
                if dgid in opened_set and grouped.groups[dgid].owner == gid:
                    shown.setdefault(dgid, []).append(data_key)
    for gid, keys in shown.items():
        if grouped.groups[gid].kind == "data":
            shown[gid] = sorted(set(keys), key=natural_key)
    return shown


def _group_counts(ns: Namespace, grouped: Grouping) -> dict[str, dict[str, int]]:
    """Counts by state of every group, counted from the namespace's sets at C speed (the
    waiting and missing are what is left). A data group counts as computing as many keys
    as its writers have tasks queued or running: exact unless a task of several outputs
    runs while some of them exist."""
    pgroup, dgroup = grouped.process_group.__getitem__, grouped.data_group.__getitem__
    active = Counter(map(pgroup, ns.active))
    tallies = {
        "complete": Counter(map(pgroup, ns.complete.done - ns.active - ns.failed)),
        "running": Counter(map(pgroup, ns.running)),
        "queued": active - Counter(map(pgroup, ns.running)),
        "error": Counter(map(pgroup, ns.failed - ns.active)),
    }
    complete = Counter(map(dgroup, ns.complete.keys))
    computing: Counter[str] = Counter()
    for gid, busy in active.items():  # a busy process's outputs are (mostly) missing
        for written in grouped.groups[gid].writes:
            left = len(grouped.groups[written].members) - complete[written]
            computing[written] = min(computing[written] + busy, left)
    data_tallies = {"complete": complete, "computing": computing}
    out: dict[str, dict[str, int]] = {}
    for gid, group in grouped.groups.items():
        source = tallies if group.kind == "process" else data_tallies
        counts = {state: tally[gid] for state, tally in source.items() if tally[gid]}
        rest = len(group.members) - sum(counts.values())
        if rest:
            counts["waiting" if group.kind == "process" else "missing"] = rest
        out[gid] = counts
    return out


def _state_of(kind: str, counts: Mapping[str, int], size: int) -> str:
    """A group's colour: error beats running beats (all) complete."""
    if kind == "process":
        for state in ("error", "running", "queued"):
            if counts.get(state):
                return state
        return "complete" if counts.get("complete") == size else "waiting"
    if counts.get("complete") == size:
        return "complete"
    return "computing" if counts.get("computing") else "missing"


def _node(
    node_id: str, group: Group, label: str, size: int, state: str | None, counts: dict[str, int]
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "kind": group.kind,
        "label": label,
        "group": group.id,
        "size": size,
        "state": state or _state_of(group.kind, counts, size),
        "counts": counts,
    }
    if group.kind == "process":
        node["command"] = group.command
    return node


def _rest_node(
    group: Group, rest: int, counts: dict[str, int], shown: list[str], ns: Namespace
) -> dict[str, Any]:
    """The members of an expanded group that are not drawn, as one node."""
    drawn = Counter(
        process_state(ns, k) if group.kind == "process" else data_state(ns, k) for k in shown
    )
    left = {s: n - drawn[s] for s, n in counts.items() if n - drawn[s] > 0}
    node = _node("more:" + group.id, group, f"{rest:,} more", rest, None, left)
    node["more"] = True
    return node


def _edges(
    ns: Namespace, grouped: Grouping, shown: dict[str, list[str]], node_of: dict[str, str]
) -> list[list[str]]:
    groups, graph = grouped.groups, ns.graph

    def end(gid: str, key: str, prefix: str) -> str:
        """The node that stands for member ``key`` of group ``gid``."""
        if len(groups[gid].members) == 1:
            return prefix + key
        if gid in shown:
            return node_of.get(prefix + key) or "more:" + gid
        return gid

    edges: set[tuple[str, str]] = set()
    # Between groups drawn whole, or between the undrawn rests of opened groups.
    for a, b in grouped.edges:
        ends = [_rest_or_group(groups[g], shown) for g in (a, b)]
        if ends[0] and ends[1]:
            edges.add((ends[0], ends[1]))
    # Every edge of a member drawn alone: opened members and single-member groups.
    processes: list[str] = []
    data: list[str] = []
    for group in groups.values():
        keys = group.members if len(group.members) == 1 else shown.get(group.id, [])
        (processes if group.kind == "process" else data).extend(keys)
    for key in processes:
        leaf = graph.processes[key]
        me = end(grouped.process_group[key], key, "p:")
        for data_key in leaf.inputs.values():
            edges.add((end(grouped.data_group[data_key], data_key, "d:"), me))
        for data_key in leaf.outputs.values():
            edges.add((me, end(grouped.data_group[data_key], data_key, "d:")))
    for key in data:
        me = end(grouped.data_group[key], key, "d:")
        producer = graph.producer.get(key)
        if producer is not None:
            edges.add((end(grouped.process_group[producer], producer, "p:"), me))
        for consumer in graph.consumers.get(key, ()):
            edges.add((me, end(grouped.process_group[consumer], consumer, "p:")))
    return [list(edge) for edge in sorted(edges)]


def _rest_or_group(group: Group, shown: dict[str, list[str]]) -> str | None:
    """A group drawn whole is its node; an opened one its "more" node, if it has one."""
    if len(group.members) == 1:
        return None
    if group.id not in shown:
        return group.id
    return "more:" + group.id if len(shown[group.id]) < len(group.members) else None


def members(ns: Namespace, query: Mapping[str, Any]) -> dict[str, Any]:
    """One page of a group's members (``group``), or of every process (or data, with
    ``kind: "data"``) key starting with ``prefix``; ``state`` filters. Each member comes
    with its state."""
    group_id, prefix, state = query.get("group"), query.get("prefix") or "", query.get("state")
    offset, limit = query.get("offset", 0), query.get("limit", 100)
    for name, value in (("offset", offset), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidRequest(f"'{name}' must be a whole number, not {value!r}")
    if not isinstance(prefix, str) or not (state is None or isinstance(state, str)):
        raise InvalidRequest("'prefix' and 'state' must be strings")
    grouped = grouping(ns.graph)
    if group_id is not None:
        group = grouped.groups.get(str(group_id))
        if group is None:
            raise NotFound(f"namespace {ns.root!r} has no group {group_id!r}")
        kind, keys = group.kind, group.members
    else:
        kind = query.get("kind") or "process"
        if kind not in ("process", "data"):
            raise InvalidRequest("'kind' must be 'process' or 'data'")
        source = ns.graph.processes if kind == "process" else ns.graph.data_keys
        keys = sorted((k for k in source if k.startswith(prefix)), key=natural_key)
    state_of = process_state if kind == "process" else data_state
    rows = [(k, state_of(ns, k)) for k in keys if k.startswith(prefix)]
    if state is not None:
        rows = [row for row in rows if row[1] == state]
    page = rows[offset : offset + min(limit, PAGE_LIMIT)]
    return {
        "root": ns.root,
        "kind": kind,
        "total": len(rows),
        "offset": offset,
        "members": [{"key": k, "state": s} for k, s in page],
    }


def process(ns: Namespace, key: object, commands: Mapping[str, Command]) -> dict[str, Any]:
    """One process as the dashboard shows it: what runs, on what, and how it went."""
    if not isinstance(key, str) or key not in ns.graph.processes:
        raise NotFound(f"namespace {ns.root!r} has no process {key!r}")
    leaf = ns.graph.processes[key]
    command = commands.get(leaf.command)
    task = ns.tasks.get(key)

    def bindings(bound: Mapping[str, str], paths: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "key": data_key,
                "path": paths.get(name),
                "state": data_state(ns, data_key),
            }
            for name, data_key in bound.items()
        ]

    return {
        "root": ns.root,
        "process": key,
        "spec": leaf.spec,
        "group": grouping(ns.graph).process_group[key],
        "command": leaf.command,
        "image": command.image if command else None,
        "command_line": [render(arg, leaf.vars) for arg in command.command] if command else [],
        "stdout": command.stdout if command else None,
        "vars": dict(leaf.vars),
        "inputs": bindings(leaf.inputs, command.inputs if command else {}),
        "outputs": bindings(leaf.outputs, command.outputs if command else {}),
        "state": process_state(ns, key),
        "runs": ns.runs.get(key, 0),
        "task": task.to_dict() if task else None,
        "story": [
            {"time": when, "from": old, "to": new}
            for when, name, old, new in list(ns.story)
            if name == key
        ][-STORY_LINES:],
    }
