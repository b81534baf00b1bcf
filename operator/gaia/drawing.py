"""A namespace's graph (the grouped view of ``POST /graph``) as text for notebooks and
docs: Mermaid, Graphviz DOT, or a standalone SVG.

The SVG is laid out here, with no Graphviz: layers by longest path from the sources, left
to right, and within each layer an order that a few barycentre sweeps settle (the
Sugiyama recipe, without its edge routing). That is plenty for the tens to hundreds of
nodes a grouped graph has; for Graphviz's own layout, pipe ``--format dot`` into ``dot``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["FORMATS", "dot", "draw", "mermaid", "svg"]

FORMATS = ("mermaid", "dot", "svg")
# (fill, stroke) by state, as on the dashboard
COLOURS: Mapping[str, tuple[str, str]] = {
    "complete": ("#e6f5ec", "#2f9e5f"),
    "running": ("#e5effb", "#2f7fd8"),
    "computing": ("#e5effb", "#2f7fd8"),
    "queued": ("#f0f6fd", "#8db7e8"),
    "error": ("#fbe8e8", "#d64545"),
    "waiting": ("#ffffff", "#a7b0ba"),
    "missing": ("#f7f8f9", "#c9ced4"),
}
CHAR, PAD, GAP_X, GAP_Y = 7.2, 24, 56, 14
HEIGHT = {"process": 40, "data": 28}

Node = Mapping[str, Any]


def draw(graph: Mapping[str, Any], form: str) -> str:
    """``graph`` (a ``/graph`` reply) in ``form``: one of FORMATS."""
    renderers = {"mermaid": mermaid, "dot": dot, "svg": svg}
    return renderers[form](graph)


def label(node: Node) -> str:
    """The node's key, or its group's pattern with the member count (``cat-* (2)``)."""
    text = str(node["label"])
    if int(node.get("size") or 1) > 1 and not node.get("more"):
        text += f" ({int(node['size']):,})"
    return text


def mermaid(graph: Mapping[str, Any]) -> str:
    ids = {node["id"]: f"n{i}" for i, node in enumerate(graph["nodes"])}
    lines = ["flowchart LR"]
    for node in graph["nodes"]:
        text = label(node).replace('"', "#quot;")
        if node["kind"] == "data":
            shape = f'(["{text}"])'
        elif int(node.get("size") or 1) > 1:
            shape = f'[["{text}"]]'  # a group of processes
        else:
            shape = f'["{text}"]'
        lines.append(f"  {ids[node['id']]}{shape}:::{node['state']}")
    lines += [f"  {ids[a]} --> {ids[b]}" for a, b in graph["edges"]]
    for state, (fill, stroke) in COLOURS.items():
        lines.append(f"  classDef {state} fill:{fill},stroke:{stroke}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(graph: Mapping[str, Any]) -> str:
    lines = [
        f"digraph {_quoted(str(graph.get('root', 'gaia')))} {{",
        "  rankdir=LR;",
        '  node [fontname="monospace", fontsize=10, shape=box, style="rounded,filled"];',
    ]
    for node in graph["nodes"]:
        fill, stroke = COLOURS.get(node["state"], COLOURS["waiting"])
        style = "rounded,filled" + (",dashed" if node["kind"] == "data" else "")
        extra = ", peripheries=2" if int(node.get("size") or 1) > 1 else ""
        lines.append(
            f"  {_quoted(node['id'])} [label={_quoted(label(node))}, style={_quoted(style)}, "
            f'fillcolor="{fill}", color="{stroke}"{extra}];'
        )
    lines += [f"  {_quoted(a)} -> {_quoted(b)};" for a, b in graph["edges"]]
    return "\n".join([*lines, "}"]) + "\n"


def _layers(nodes: Sequence[Node], edges: Sequence[Sequence[str]]) -> list[list[str]]:
    """Nodes by layer (longest path from a source), each layer in barycentre order."""
    order = [node["id"] for node in nodes]
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    layer: dict[str, int] = {}
    waiting = {n: len(preds[n]) for n in order}
    ready = [n for n in order if not waiting[n]]
    while ready:
        current = ready.pop(0)
        layer[current] = max((layer[p] + 1 for p in preds[current]), default=0)
        for nxt in succs[current]:
            waiting[nxt] -= 1
            if not waiting[nxt]:
                ready.append(nxt)
    for n in order:  # a cycle (never from Gaia) still gets drawn
        layer.setdefault(n, 0)
    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in order:
        layers[layer[n]].append(n)
    for sweep in range(4):
        down = sweep % 2 == 0
        for index in range(1, len(layers)) if down else range(len(layers) - 2, -1, -1):
            near = {n: i for i, n in enumerate(layers[index - 1 if down else index + 1])}
            links = preds if down else succs

            def centre(n: str, near: dict[str, int] = near, links: Any = links) -> float:
                places = [near[m] for m in links[n] if m in near]
                return sum(places) / len(places) if places else float("inf")

            position = {n: i for i, n in enumerate(layers[index])}
            layers[index].sort(key=lambda n: (centre(n), position[n]))
    return layers


def svg(graph: Mapping[str, Any]) -> str:
    nodes = {node["id"]: node for node in graph["nodes"]}
    layers = _layers(graph["nodes"], graph["edges"])
    width = {n: len(label(nodes[n])) * CHAR + PAD for n in nodes}
    height = {n: HEIGHT[nodes[n]["kind"]] for n in nodes}
    columns = [max((width[n] for n in layer), default=0) for layer in layers]
    stacks = [sum(height[n] + GAP_Y for n in layer) - GAP_Y for layer in layers]
    tallest = max(stacks, default=0)
    box: dict[str, tuple[float, float]] = {}  # centre of each node
    x = 16.0
    for layer, column, stack in zip(layers, columns, stacks, strict=True):
        y = 16 + (tallest - stack) / 2
        for n in layer:
            box[n] = (x + column / 2, y + height[n] / 2)
            y += height[n] + GAP_Y
        x += column + GAP_X
    total_w, total_h = x - GAP_X + 16, tallest + 32
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="monospace" font-size="12">',
        f"<title>{escape(str(graph.get('root', '')))}</title>",
        '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa6b4"/></marker>'
        "</defs>",
    ]
    for a, b in graph["edges"]:
        (ax, ay), (bx, by) = box[a], box[b]
        ax, bx = ax + width[a] / 2, bx - width[b] / 2
        mid = (ax + bx) / 2
        out.append(
            f'<path d="M{ax:.1f},{ay:.1f} C{mid:.1f},{ay:.1f} {mid:.1f},{by:.1f} {bx:.1f},{by:.1f}" '
            'fill="none" stroke="#9aa6b4" stroke-width="1.3" marker-end="url(#a)"/>'
        )
    for n, node in nodes.items():
        cx, cy = box[n]
        w, h = width[n], height[n]
        fill, stroke = COLOURS.get(node["state"], COLOURS["waiting"])
        radius = 6 if node["kind"] == "process" else h / 2
        dash = (
            ' stroke-dasharray="4 3"'
            if node["kind"] == "data" and node["state"] != "complete"
            else ""
        )
        text = escape(label(node))
        out.append(f'<g class="{escape(node["kind"])} {escape(node["state"])}">')
        out.append(f"<title>{text}: {escape(node['state'])}</title>")
        if int(node.get("size") or 1) > 1 and not node.get("more"):
            out.append(
                f'<rect x="{cx - w / 2 + 4:.1f}" y="{cy - h / 2 - 4:.1f}" width="{w:.1f}" '
                f'height="{h}" rx="{radius}" fill="#fff" stroke="{stroke}"/>'
            )
        out.append(
            f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h}" '
            f'rx="{radius}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
        out.append(f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle">{text}</text></g>')
    return "\n".join([*out, "</svg>"]) + "\n"
