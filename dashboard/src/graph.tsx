// The namespace's graph as SVG: laid out left to right by dagre, coloured by state,
// panned by dragging and zoomed with the wheel. Layout runs only when the graph's shape
// changes (a merge, an expansion); state changes only recolour.

import { Graph, layout } from "@dagrejs/dagre";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { GraphNode } from "./types";

const CHAR = 7.3; // width of one character of the 12px monospace labels
const MAX_LABEL = 36;
const MIN_FIT = 0.45; // fitting never shrinks labels below legible
const PROCESS_HEIGHT = 44;
const DATA_HEIGHT = 28;
const BAR_STATES = ["complete", "running", "queued", "error", "computing"];

interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

interface Layout {
  boxes: Map<string, Box>;
  edges: { from: string; to: string; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
}

export function shortLabel(label: string): string {
  return label.length > MAX_LABEL ? "…" + label.slice(label.length - MAX_LABEL + 1) : label;
}

function size(node: GraphNode): { width: number; height: number } {
  const grouped = node.size > 1 && !node.more;
  const text = shortLabel(node.label).length + (grouped ? String(node.size).length + 3 : 0);
  const width = Math.max(node.kind === "process" ? 96 : 72, text * CHAR + 28);
  return { width, height: node.kind === "process" ? PROCESS_HEIGHT : DATA_HEIGHT };
}

function computeLayout(nodes: GraphNode[], edges: [string, string][]): Layout {
  const graph = new Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 56, marginx: 16, marginy: 16 });
  graph.setDefaultEdgeLabel(() => ({}));
  // dagre stacks what it is given last on top: feed it backwards, so that members are
  // drawn top down in the server's (natural) order.
  const index = new Map(nodes.map((node, i) => [node.id, i]));
  const ordered = edges
    .slice()
    .sort((a, b) => (index.get(a[0])! - index.get(b[0])!) || (index.get(a[1])! - index.get(b[1])!));
  for (const node of nodes.slice().reverse()) graph.setNode(node.id, size(node));
  for (const [from, to] of ordered.reverse()) graph.setEdge(from, to);
  layout(graph);
  const boxes = new Map<string, Box>();
  for (const node of nodes) {
    const placed = graph.node(node.id);
    boxes.set(node.id, { x: placed.x, y: placed.y, width: placed.width, height: placed.height });
  }
  const laid = graph.graph();
  return {
    boxes,
    edges: edges.map(([from, to]) => ({
      from,
      to,
      points: (graph.edge({ v: from, w: to })?.points ?? []) as { x: number; y: number }[],
    })),
    width: laid.width ?? 0,
    height: laid.height ?? 0,
  };
}

function path(points: { x: number; y: number }[]): string {
  if (points.length === 0) return "";
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const mid = {
      x: (points[i].x + points[i + 1].x) / 2,
      y: (points[i].y + points[i + 1].y) / 2,
    };
    d += ` Q${points[i].x},${points[i].y} ${mid.x},${mid.y}`;
  }
  const last = points[points.length - 1];
  return d + ` L${last.x},${last.y}`;
}

interface View {
  x: number;
  y: number;
  k: number;
}

export function GraphView(props: {
  nodes: GraphNode[];
  edges: [string, string][];
  shape: string; // changes when the layout must be computed again
  selected: string | null;
  onSelect: (node: GraphNode) => void;
  onExpand: (node: GraphNode) => void;
  onRendered?: () => void;
}) {
  const svg = useRef<SVGSVGElement>(null);
  const laid = useMemo(() => computeLayout(props.nodes, props.edges), [props.shape]);
  const [view, setView] = useState<View>({ x: 0, y: 0, k: 1 });
  const drag = useRef<{ x: number; y: number; moved: boolean } | null>(null);
  const touched = useRef(false); // the user moved the view: resizing no longer refits

  function fit(): void {
    const element = svg.current;
    if (!element) return;
    const { width, height } = element.getBoundingClientRect();
    // The whole graph if it is legible so; else legible, from its top left corner.
    const k = Math.max(
      MIN_FIT,
      Math.min(1.4, width / (laid.width + 40), height / (laid.height + 40)),
    );
    setView({
      k,
      x: Math.max(8, (width - laid.width * k) / 2),
      y: Math.max(8, (height - laid.height * k) / 2),
    });
  }

  // Before the first paint: a node shown unfitted, then moved, is a click that misses.
  useLayoutEffect(() => {
    touched.current = false;
    fit();
  }, [laid]);
  useEffect(() => {
    const element = svg.current;
    if (!element) return;
    const observer = new ResizeObserver(() => touched.current || fit());
    observer.observe(element);
    return () => observer.disconnect();
  }, [laid]);
  useEffect(() => {
    props.onRendered?.();
  }, [laid]);

  function onWheel(event: WheelEvent): void {
    event.preventDefault();
    touched.current = true;
    const rect = svg.current!.getBoundingClientRect();
    const factor = Math.exp(-event.deltaY * 0.0015);
    setView((v) => {
      const k = Math.min(4, Math.max(0.05, v.k * factor));
      const px = event.clientX - rect.left;
      const py = event.clientY - rect.top;
      return { k, x: px - ((px - v.x) * k) / v.k, y: py - ((py - v.y) * k) / v.k };
    });
  }

  function onPointerDown(event: PointerEvent): void {
    drag.current = { x: event.clientX, y: event.clientY, moved: false };
  }

  function onPointerMove(event: PointerEvent): void {
    const start = drag.current;
    if (!start || !(event.buttons & 1)) return;
    const dx = event.clientX - start.x;
    const dy = event.clientY - start.y;
    if (!start.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    start.moved = true;
    touched.current = true;
    start.x = event.clientX;
    start.y = event.clientY;
    setView((v) => ({ ...v, x: v.x + dx, y: v.y + dy }));
  }

  function clicked(node: GraphNode): void {
    if (drag.current?.moved) return;
    props.onSelect(node);
  }

  useEffect(() => {
    const element = svg.current;
    if (!element) return;
    element.addEventListener("wheel", onWheel, { passive: false });
    return () => element.removeEventListener("wheel", onWheel);
  }, []);

  return (
    <div class="graph">
      <svg
        ref={svg}
        class="graph-canvas"
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={() => setTimeout(() => (drag.current = null), 0)}
      >
        <defs>
          <marker
            id="arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto-start-reverse"
          >
            <path d="M0,0 L10,5 L0,10 z" class="arrow" />
          </marker>
        </defs>
        <g transform={`translate(${view.x},${view.y}) scale(${view.k})`}>
          {laid.edges.map((edge) => (
            <path
              key={edge.from + "\u0000" + edge.to}
              class="edge"
              d={path(edge.points)}
              marker-end="url(#arrow)"
            />
          ))}
          {props.nodes.map((node) => {
            const box = laid.boxes.get(node.id);
            return box ? (
              <NodeShape
                key={node.id}
                node={node}
                box={box}
                selected={props.selected === node.id}
                onClick={() => clicked(node)}
                onExpand={() => props.onExpand(node)}
              />
            ) : null;
          })}
        </g>
      </svg>
      <div class="graph-buttons">
        <button
          type="button"
          data-action="fit"
          onClick={() => {
            touched.current = false;
            fit();
          }}
          title="fit the graph to the window"
        >
          fit
        </button>
      </div>
    </div>
  );
}

function NodeShape(props: {
  node: GraphNode;
  box: Box;
  selected: boolean;
  onClick: () => void;
  onExpand: () => void;
}) {
  const { node, box } = props;
  const grouped = node.size > 1 && !node.more;
  const left = -box.width / 2;
  const top = -box.height / 2;
  const radius = node.kind === "process" ? 6 : box.height / 2;
  const classes = [
    "node",
    node.kind,
    `state-${node.state}`,
    grouped ? "group" : "",
    node.more ? "more" : "",
    props.selected ? "selected" : "",
  ].join(" ");
  const label = shortLabel(node.label);
  return (
    <g
      class={classes}
      transform={`translate(${box.x},${box.y})`}
      data-id={node.id}
      data-kind={node.kind}
      data-state={node.state}
      data-label={node.label}
      data-size={node.size}
      onClick={props.onClick}
      onDblClick={grouped && node.kind === "process" ? props.onExpand : undefined}
    >
      <title>
        {node.label}
        {grouped || node.more ? "\n" + describeCounts(node.counts) : ""}
        {node.command ? `\ncommand ${node.command}` : ""}
        {grouped && node.kind === "process" ? "\ndouble-click to expand" : ""}
      </title>
      {grouped && (
        <rect
          class="stack"
          x={left + 4}
          y={top - 4}
          width={box.width}
          height={box.height}
          rx={radius}
        />
      )}
      {props.selected && (
        <rect
          class="halo"
          x={left - 4}
          y={top - 4}
          width={box.width + 8}
          height={box.height + 8}
          rx={radius + 3}
        />
      )}
      <rect class="body" x={left} y={top} width={box.width} height={box.height} rx={radius} />
      {grouped || node.more ? <Bar node={node} box={box} /> : null}
      <text class="label" x={0} y={node.kind === "process" && grouped ? -3 : 4}>
        {label}
        {grouped ? <tspan class="count">{` ×${node.size.toLocaleString("en")}`}</tspan> : null}
      </text>
    </g>
  );
}

function Bar(props: { node: GraphNode; box: Box }) {
  const { node, box } = props;
  const width = box.width - 16;
  const y = box.height / 2 - (node.kind === "process" ? 12 : 8);
  let x = -width / 2;
  const total = Math.max(1, node.size);
  return (
    <g class="bar">
      <rect class="bar-back" x={-width / 2} y={y} width={width} height={5} rx={2} />
      {BAR_STATES.filter((s) => node.counts[s]).map((state) => {
        const w = (width * node.counts[state]) / total;
        const part = <rect class={`bar-${state}`} x={x} y={y} width={w} height={5} />;
        x += w;
        return part;
      })}
    </g>
  );
}

export function describeCounts(counts: Record<string, number>): string {
  return Object.entries(counts)
    .map(([state, n]) => `${n.toLocaleString("en")} ${state}`)
    .join(", ");
}
