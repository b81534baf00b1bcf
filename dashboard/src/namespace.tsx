// One namespace: its grouped graph, kept live by the event stream, and the side panel.
//
// Events patch what they name directly (a process or data key drawn on its own); groups
// are recounted by asking for the grouped graph again, at most every half second or so
// (a reply costs the server a walk of the namespace's sets, never a whole status).

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { call, follow, type StreamState } from "./api";
import {
  appendLog,
  Badge,
  DataDetail,
  fetchLog,
  GroupDetail,
  ProcessDetail,
  type Selection,
} from "./detail";
import { GraphView } from "./graph";
import { Throttle } from "./throttle";
import type { GaiaEvent, GraphNode, GraphReply, MembersReply, ProcessReply } from "./types";

const STEP_STATES: Record<string, string> = {
  "step-start": "running",
  "step-complete": "complete",
  "step-error": "error",
  "step-terminated": "waiting",
};

function patch(graph: GraphReply, event: GaiaEvent): GraphReply {
  let id: string | null = null;
  let state: string | null = null;
  if (event.event in STEP_STATES && event.process) {
    id = "p:" + event.process;
    state = STEP_STATES[event.event];
  } else if (event.event === "data-complete" && event.key) {
    id = "d:" + event.key;
    state = "complete";
  }
  let next = graph;
  if (id && state && graph.nodes.some((n) => n.id === id && n.state !== state)) {
    next = {
      ...graph,
      nodes: graph.nodes.map((n) => (n.id === id ? { ...n, state: state!, counts: { [state!]: 1 } } : n)),
    };
  }
  if (event.event.startsWith("flow-") && event.state) {
    next = { ...next, state: event.state, counts: event.counts ?? next.counts };
  }
  return next;
}

/** Lines fetched from the log, then the streamed ones it does not already end with. */
function joinLog(fetched: string[], streamed: string[]): string[] {
  for (let k = Math.min(streamed.length, fetched.length); k > 0; k--) {
    const tail = fetched.slice(fetched.length - k);
    if (tail.every((line, i) => line === streamed[i])) return fetched.concat(streamed.slice(k));
  }
  return fetched.concat(streamed);
}

const RECENT = 10_000; // events kept to replay over a /graph reply

function expandKey(root: string): string {
  return `gaia-expand:${root}`;
}

export function NamespacePage(props: { root: string; onStream: (state: StreamState) => void }) {
  const { root } = props;
  const [graph, setGraph] = useState<GraphReply | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [expand, setExpand] = useState<string[]>(() =>
    JSON.parse(sessionStorage.getItem(expandKey(root)) ?? "[]"),
  );
  const [selection, setSelection] = useState<Selection | null>(null);
  const [detail, setDetail] = useState<ProcessReply | null>(null);
  const [log, setLog] = useState<string[]>([]);
  const expandRef = useRef(expand);
  const selectionRef = useRef(selection);
  const logBuffer = useRef<string[] | null>(null); // lines streamed while the log loads
  // Events patched in lately: a /graph reply that crossed them on the way is brought
  // up to date with the ones newer than it (its `event`), never set back by them.
  const recent = useRef<GaiaEvent[]>([]);

  expandRef.current = expand;
  selectionRef.current = selection;

  const graphRefresh = useMemo(
    () =>
      new Throttle(async () => {
        try {
          const reply = await call<GraphReply>("/graph", { root, expand: expandRef.current });
          recent.current = recent.current.filter((e) => (e.id ?? 0) > reply.event);
          setGraph(recent.current.reduce(patch, reply));
          setError(null);
        } catch (e) {
          setError((e as Error).message);
        }
      }),
    [root],
  );

  const detailRefresh = useMemo(
    () =>
      new Throttle(async () => {
        const current = selectionRef.current;
        if (current?.kind !== "process") return;
        try {
          const reply = await call<ProcessReply>("/process", { root, process: current.key });
          if (selectionRef.current === current) setDetail(reply);
        } catch (e) {
          setNotice((e as Error).message);
        }
      }),
    [root],
  );

  useEffect(() => {
    const stream = follow(
      root,
      (event) => {
        if (event.event === "log") {
          const current = selectionRef.current;
          if (current?.kind === "process" && event.process === current.key) {
            if (logBuffer.current) logBuffer.current.push(String(event.line ?? ""));
            else setLog((lines) => appendLog(lines, String(event.line ?? "")));
          }
          return;
        }
        recent.current.push(event);
        if (recent.current.length > RECENT) recent.current.splice(0, RECENT / 2);
        setGraph((g) => (g ? patch(g, event) : g));
        graphRefresh.request();
        const current = selectionRef.current;
        if (current?.kind === "process" && event.process === current.key) {
          if (event.event === "step-start") setLog([]); // a new run, a new log
          detailRefresh.request();
        }
      },
      props.onStream,
    );
    graphRefresh.request(); // after subscribing: nothing is missed in between
    return () => {
      stream.stop();
      graphRefresh.stop();
      detailRefresh.stop();
    };
  }, [root]);

  useEffect(() => {
    sessionStorage.setItem(expandKey(root), JSON.stringify(expand));
    graphRefresh.now();
  }, [expand]);

  useEffect(() => {
    setDetail(null);
    setLog([]);
    if (selection?.kind !== "process") return;
    logBuffer.current = [];
    detailRefresh.now();
    fetchLog(root, selection.key)
      .then((lines) => {
        if (selectionRef.current === selection) setLog(joinLog(lines, logBuffer.current ?? []));
      })
      .catch((e: Error) => setNotice(e.message))
      .finally(() => (logBuffer.current = null));
  }, [selection]);

  async function act(path: string, body: object, done: (reply: any) => string): Promise<void> {
    try {
      const reply = await call(path, { root, ...body });
      setNotice(done(reply));
      graphRefresh.now();
      detailRefresh.now();
    } catch (e) {
      setNotice((e as Error).message);
    }
  }

  function expire(keys: string[]): void {
    act("/expire", { expire: keys }, (reply) => {
      const { process = [], data = [] } = reply.expire ?? {};
      return `expired ${process.length} processes and ${data.length} data keys; recomputing`;
    });
  }

  function select(node: GraphNode): void {
    if (node.more || node.size > 1) setSelection({ kind: "group", id: node.group });
    else if (node.kind === "process") setSelection({ kind: "process", key: node.label });
    else setSelection({ kind: "data", key: node.label });
  }

  function toggle(group: string, open: boolean): void {
    setExpand((current) =>
      open ? [...current.filter((g) => g !== group), group] : current.filter((g) => g !== group),
    );
  }

  const nodesById = useMemo(() => new Map(graph?.nodes.map((n) => [n.id, n]) ?? []), [graph]);
  const shape = graph
    ? `${graph.version}|${graph.expanded.join(",")}|${graph.nodes.length}|${graph.edges.length}`
    : "";
  const selectedId = selectedNode(selection, nodesById);

  return (
    <div class="namespace" data-root={root}>
      <div class="toolbar">
        <h1>{root}</h1>
        {graph && (
          <span id="ns-state" data-state={graph.state}>
            <Badge state={graph.state} />
          </span>
        )}
        {graph && <Counts counts={graph.counts} />}
        <span class="spacer" />
        <Finder root={root} onPick={(key) => setSelection({ kind: "process", key })} />
        <button
          type="button"
          data-action="trigger"
          onClick={() => act("/trigger", {}, () => `triggered ${root}`)}
        >
          trigger
        </button>
        <button
          type="button"
          data-action="halt"
          onClick={() => act("/halt", {}, () => `halted ${root}; trigger resumes it`)}
        >
          halt
        </button>
        {graph && graph.groups > 0 && (
          <button
            type="button"
            data-action="expand-all"
            onClick={() => setExpand(expand.includes("*") ? [] : ["*"])}
          >
            {expand.includes("*") ? "group fan-outs" : "expand all"}
          </button>
        )}
      </div>
      {(notice || error) && (
        <div class={error ? "notice error" : "notice"} id="notice">
          {error ?? notice}
          <button type="button" class="link" onClick={() => (setNotice(null), setError(null))}>
            ×
          </button>
        </div>
      )}
      {graph?.truncated && (
        <div class="notice">
          Some expanded groups show their first members only; the rest is one "more" node.
        </div>
      )}
      <div class="body">
        {graph ? (
          <GraphView
            nodes={graph.nodes}
            edges={graph.edges}
            shape={shape}
            selected={selectedId}
            onSelect={select}
            onExpand={(node) => toggle(node.group, true)}
            onRendered={() => {
              if (!document.body.dataset.firstRender) {
                // milliseconds since the page was asked for (navigation start)
                requestAnimationFrame(() => {
                  document.body.dataset.firstRender = String(Math.round(performance.now()));
                });
              }
            }}
          />
        ) : (
          <div class="graph loading">{error ? "" : "loading…"}</div>
        )}
        {selection && (
          <aside class="panel">
            <button type="button" class="close link" onClick={() => setSelection(null)}>
              ×
            </button>
            {selection.kind === "process" && (
              <ProcessDetail
                root={root}
                process={selection.key}
                detail={detail}
                log={log}
                onExpire={expire}
                onSelect={setSelection}
              />
            )}
            {selection.kind === "data" && (
              <DataDetail
                root={root}
                dataKey={selection.key}
                node={nodesById.get("d:" + selection.key)}
                onExpire={expire}
              />
            )}
            {selection.kind === "group" && (
              <GroupDetail
                root={root}
                group={selection.id}
                node={nodesById.get(selection.id) ?? nodesById.get("more:" + selection.id)}
                label={graph?.labels[selection.id]}
                expanded={graph?.expanded.includes(selection.id) ?? false}
                version={graph?.version ?? 0}
                onExpand={toggle}
                onSelect={setSelection}
                onExpire={expire}
              />
            )}
          </aside>
        )}
      </div>
    </div>
  );
}

function selectedNode(selection: Selection | null, nodes: Map<string, GraphNode>): string | null {
  if (!selection) return null;
  if (selection.kind === "group") return nodes.has(selection.id) ? selection.id : "more:" + selection.id;
  return (selection.kind === "process" ? "p:" : "d:") + selection.key;
}

export function Counts(props: { counts: Record<string, number> }) {
  const c = props.counts;
  return (
    <span class="counts">
      <b>{(c.complete ?? 0).toLocaleString("en")}</b>/{(c.processes ?? 0).toLocaleString("en")}{" "}
      processes · {c.running ?? 0} running · {c.queued ?? 0} queued ·{" "}
      <span class={c.failed ? "failed" : ""}>{c.failed ?? 0} failed</span> ·{" "}
      {(c.data_complete ?? 0).toLocaleString("en")}/{(c.data ?? 0).toLocaleString("en")} data keys
    </span>
  );
}

/** Find a process by the start of its key. */
function Finder(props: { root: string; onPick: (key: string) => void }) {
  const [text, setText] = useState("");
  const [found, setFound] = useState<MembersReply | null>(null);
  useEffect(() => {
    if (!text) {
      setFound(null);
      return;
    }
    const timer = setTimeout(() => {
      call<MembersReply>("/members", { root: props.root, prefix: text, limit: 12 })
        .then(setFound)
        .catch(() => setFound(null));
    }, 150);
    return () => clearTimeout(timer);
  }, [text]);
  return (
    <span class="finder">
      <input
        type="search"
        placeholder="find a process…"
        value={text}
        onInput={(e) => setText((e.target as HTMLInputElement).value)}
      />
      {found && text && (
        <ul class="found">
          {found.members.map((m) => (
            <li key={m.key}>
              <a
                href="#"
                onClick={(e) => {
                  e.preventDefault();
                  setText("");
                  props.onPick(m.key);
                }}
              >
                {m.key}
              </a>{" "}
              <Badge state={m.state} />
            </li>
          ))}
          {found.total > found.members.length && (
            <li class="muted">… {found.total - found.members.length} more</li>
          )}
          {found.total === 0 && <li class="muted">no process starts with that</li>}
        </ul>
      )}
    </span>
  );
}
