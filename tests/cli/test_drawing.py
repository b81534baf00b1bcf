"""`gaia graph`'s renderers (gaia.drawing) on a graph view: the layered SVG layout keeps
every edge pointing right, and the text formats quote what they must."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from gaia.drawing import _layers, dot, draw, mermaid, svg


def _node(
    node_id: str, kind: str = "process", state: str = "complete", size: int = 1
) -> dict[str, Any]:
    return {
        "id": node_id,
        "kind": kind,
        "label": node_id.split(":", 1)[1],
        "state": state,
        "size": size,
    }


GRAPH = {
    "root": "demo",
    "nodes": [
        _node("d:in", "data"),
        _node("pg:cat", size=3, state="running"),
        _node("dg:cat>OUT", "data", "computing", size=3),
        _node("p:sum", state="waiting"),
        _node('d:out "final"', "data", "missing"),
    ],
    "edges": [
        ["d:in", "pg:cat"],
        ["pg:cat", "dg:cat>OUT"],
        ["dg:cat>OUT", "p:sum"],
        ["p:sum", 'd:out "final"'],
        ["d:in", "p:sum"],
    ],
}


def test_layers_follow_the_longest_path_from_the_sources() -> None:
    assert _layers(GRAPH["nodes"], GRAPH["edges"]) == [
        ["d:in"],
        ["pg:cat"],
        ["dg:cat>OUT"],
        ["p:sum"],
        ['d:out "final"'],
    ]


def test_svg_draws_every_node_with_edges_left_to_right() -> None:
    root = ET.fromstring(svg(GRAPH))
    ns = "{http://www.w3.org/2000/svg}"
    assert [t.text for t in root.iter(f"{ns}text")] == [
        "in", "cat (3)", "cat>OUT (3)", "sum", 'out "final"',
    ]  # fmt: skip
    for path in root.iter(f"{ns}path"):
        numbers = [float(n) for n in re.findall(r"-?\d+\.?\d*", path.get("d", ""))]
        if len(numbers) == 8:  # an edge: M x,y C ... x,y
            assert numbers[6] > numbers[0]


def test_text_formats_quote_labels_and_colour_by_state() -> None:
    assert 'n4(["out #quot;final#quot;"]):::missing' in mermaid(GRAPH)
    assert "n1[[" in mermaid(GRAPH)  # a group of processes
    assert '"d:out \\"final\\"" [label="out \\"final\\""' in dot(GRAPH)
    assert draw(GRAPH, "dot") == dot(GRAPH)
