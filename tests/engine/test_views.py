"""The dashboard's views of a namespace (gaia.engine.views): fan-outs folded into groups,
expanded on demand, counted by state; one process in detail; members by page."""

from __future__ import annotations

from typing import Any

import pytest
from engine_host import ECHO, MAKE, Host

from gaia.engine import views
from gaia.engine.grouping import grouping, natural_key, pattern
from gaia.errors import InvalidRequest, NotFound


def _nodes(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["id"]: node for node in graph["nodes"]}


def _fanout(values: int) -> Host:
    """gen-<v> writes gen/<v> from the source seed; use-<v> reads it and writes use/<v>."""
    host = Host([ECHO, MAKE], {"seed"})
    vs = [str(v) for v in range(values)]
    host.merge(
        [
            {"key": "gen", "command": "echo", "vars": {"V": vs},
             "inputs": {"IN": "seed"}, "outputs": {"OUT": "gen/{{V}}"}},
            {"key": "use", "command": "echo", "vars": {"V": vs},
             "inputs": {"IN": "gen/{{V}}"}, "outputs": {"OUT": "use/{{V}}"}},
        ]
    )  # fmt: skip
    return host


def test_a_fan_out_is_one_node_with_its_size_and_singles_stay_themselves(triangle: Host) -> None:
    nodes = _nodes(views.graph(triangle.ns))
    assert nodes["pg:cat"]["label"] == "cat-*"
    assert nodes["pg:cat"]["size"] == 2
    assert nodes["dg:cat>OUTPUT"]["label"] == "cat/*"
    assert nodes["p:md5-rabbit"]["label"] == "md5-rabbit"
    # each step of a composite is a node of its own
    assert {"p:both:cat-ab", "p:both:wc-ab", "d:.private/both/AB"} <= nodes.keys()
    assert not any(key.startswith("p:cat-") for key in nodes)


def test_group_edges_follow_the_data(triangle: Host) -> None:
    edges = {tuple(edge) for edge in views.graph(triangle.ns)["edges"]}
    assert ("d:md5/rabbit", "pg:cat") in edges
    assert ("dg:hello>OUTPUT", "pg:cat") in edges
    assert ("pg:cat", "dg:cat>OUTPUT") in edges
    assert ("dg:cat>OUTPUT", "p:both:cat-ab") in edges
    assert ("dg:cat>OUTPUT", "pg:wc") in edges


def test_counts_by_state_follow_the_tasks(triangle: Host) -> None:
    nodes = _nodes(views.graph(triangle.ns))
    assert nodes["pg:hello"]["counts"] == {"queued": 2}
    assert nodes["pg:cat"]["state"] == "waiting"
    triangle.finish("hello-rabbit")
    triangle.carry_out(triangle.ns.task_started("hello-snake", 1, {}))
    nodes = _nodes(views.graph(triangle.ns))
    assert nodes["pg:hello"]["counts"] == {"complete": 1, "running": 1}
    assert nodes["pg:hello"]["state"] == "running"
    assert nodes["dg:hello>OUTPUT"]["counts"] == {"complete": 1, "computing": 1}
    triangle.finish("hello-snake", ok=False)
    nodes = _nodes(views.graph(triangle.ns))
    assert nodes["pg:hello"]["state"] == "error"
    assert nodes["dg:hello>OUTPUT"]["counts"] == {"complete": 1, "missing": 1}
    triangle.run_all()
    triangle.trigger()
    triangle.run_all()
    graph = views.graph(triangle.ns)
    assert graph["state"] == "complete"
    assert all(node["state"] == "complete" for node in graph["nodes"])


def test_expanding_a_group_draws_its_members_and_their_keys(triangle: Host) -> None:
    graph = views.graph(triangle.ns, ["pg:cat"])
    nodes = _nodes(graph)
    assert graph["expanded"] == ["dg:cat>OUTPUT", "pg:cat"]
    assert {"p:cat-rabbit", "p:cat-snake", "d:cat/rabbit", "d:cat/snake"} <= nodes.keys()
    assert "pg:cat" not in nodes and "dg:cat>OUTPUT" not in nodes
    edges = {tuple(edge) for edge in graph["edges"]}
    assert ("d:md5/rabbit", "p:cat-rabbit") in edges
    assert ("dg:hello>OUTPUT", "p:cat-snake") in edges
    assert ("p:cat-rabbit", "d:cat/rabbit") in edges
    assert ("d:cat/snake", "pg:wc") in edges
    assert ("d:cat/snake", "p:both:cat-ab") in edges
    ids = {node["id"] for node in graph["nodes"]}
    assert all(a in ids and b in ids for a, b in edges)


def test_expanding_everything_draws_every_process(triangle: Host) -> None:
    nodes = _nodes(views.graph(triangle.ns, ["*"]))
    processes = [n for n in nodes.values() if n["kind"] == "process"]
    assert sorted(n["label"] for n in processes) == sorted(triangle.ns.graph.processes)


def test_a_huge_group_expands_to_its_first_members_and_one_node_for_the_rest() -> None:
    host = _fanout(1000)
    graph = views.graph(host.ns, ["pg:gen"])
    nodes = _nodes(graph)
    drawn = [n for n in nodes if n.startswith("p:gen-")]
    assert len(drawn) == views.GROUP_LIMIT
    assert "p:gen-0" in nodes and "p:gen-99" in nodes and "p:gen-100" not in nodes
    assert nodes["more:pg:gen"]["size"] == 1000 - views.GROUP_LIMIT
    assert nodes["more:pg:gen"]["counts"] == {"queued": 1000 - views.GROUP_LIMIT}
    assert graph["truncated"]
    edges = {tuple(edge) for edge in graph["edges"]}
    assert ("d:seed", "p:gen-5") in edges and ("d:seed", "more:pg:gen") in edges
    assert ("d:gen/5", "pg:use") in edges
    assert ("more:dg:gen>OUT", "pg:use") in edges
    assert len(graph["nodes"]) < 2 * views.GROUP_LIMIT + 10


def test_a_big_namespace_is_drawn_as_a_handful_of_nodes() -> None:
    graph = views.graph(_fanout(5000).ns)
    assert len(graph["nodes"]) == 5  # seed, gen-*, gen/*, use-*, use/*
    assert graph["counts"]["processes"] == 10_000


def test_unknown_groups_and_bad_expansions_are_refused(triangle: Host) -> None:
    with pytest.raises(NotFound, match="no group"):
        views.graph(triangle.ns, ["pg:nope"])
    with pytest.raises(InvalidRequest, match="'expand'"):
        views.graph(triangle.ns, "pg:cat")


def test_the_grouping_is_kept_until_the_graph_changes(triangle: Host) -> None:
    first = grouping(triangle.ns.graph)
    triangle.finish("hello-rabbit")
    assert grouping(triangle.ns.graph) is first
    triangle.merge([{"key": "extra", "command": "hello", "outputs": {"OUTPUT": "extra"}}])
    assert grouping(triangle.ns.graph) is not first


def test_members_come_by_page_filtered_by_state() -> None:
    host = _fanout(250)
    host.finish("gen-3")
    page = views.members(host.ns, {"group": "pg:gen", "offset": 100, "limit": 50})
    assert page["total"] == 250 and len(page["members"]) == 50
    assert page["members"][0] == {"key": "gen-100", "state": "queued"}
    done = views.members(host.ns, {"group": "pg:gen", "state": "complete"})
    assert done["members"] == [{"key": "gen-3", "state": "complete"}]
    found = views.members(host.ns, {"prefix": "use-2"})
    assert [m["key"] for m in found["members"][:3]] == ["use-2", "use-20", "use-21"]
    assert found["total"] == 61  # use-2, use-20..29, use-200..249
    data = views.members(host.ns, {"group": "dg:gen>OUT", "limit": 2})
    assert data["kind"] == "data" and data["members"][0] == {"key": "gen/0", "state": "computing"}
    with pytest.raises(InvalidRequest, match="'limit'"):
        views.members(host.ns, {"limit": -1})


def test_a_process_in_detail_shows_what_runs_on_what(triangle: Host) -> None:
    triangle.finish("hello-rabbit")
    detail = views.process(triangle.ns, "hello-rabbit", triangle.registry.commands)
    assert detail["command_line"] == ["echo", "hello", "rabbit", "world"]
    assert detail["spec"] == "hello" and detail["group"] == "pg:hello"
    assert detail["outputs"] == [
        {"name": "OUTPUT", "key": "hello/rabbit", "path": "/out/out", "state": "complete"}
    ]
    assert detail["state"] == "complete" and detail["runs"] == 1
    assert detail["task"]["state"] == "complete"
    assert [entry["to"] for entry in detail["story"]] == ["queued", "running", "complete"]
    cat = views.process(triangle.ns, "cat-rabbit", triangle.registry.commands)
    assert [(i["name"], i["key"], i["state"]) for i in cat["inputs"]] == [
        ("A", "md5/rabbit", "computing"),
        ("B", "hello/rabbit", "complete"),
    ]
    assert cat["task"] is None and cat["runs"] == 0
    with pytest.raises(NotFound, match="no process 'nope'"):
        views.process(triangle.ns, "nope", triangle.registry.commands)


def test_namespaces_are_listed_with_state_and_counts(triangle: Host) -> None:
    listed = views.namespaces({"test": triangle.ns})["namespaces"]
    assert listed == [{"root": "test", "state": "running", "counts": triangle.ns.counts()}]


def test_labels_and_order_read_naturally() -> None:
    assert pattern(["cat/rabbit", "cat/snake"]) == "cat/*"
    assert pattern([".private/a-1/AB", ".private/a-2/AB"]) == ".private/a-*/AB"
    assert sorted(["gen-10", "gen-2", "gen-1"], key=natural_key) == ["gen-1", "gen-2", "gen-10"]
