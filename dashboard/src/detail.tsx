// The side panel: one process (command line, inputs, outputs, runs, live log tail), one
// data key, or one group's members, with the actions that apply to each.

import { useEffect, useRef, useState } from "preact/hooks";
import { call } from "./api";
import { describeCounts } from "./graph";
import type { GraphNode, LogsReply, MembersReply, ProcessReply } from "./types";

export type Selection =
  | { kind: "process"; key: string }
  | { kind: "data"; key: string }
  | { kind: "group"; id: string };

const LOG_LINES = 500;

export function when(seconds: number | null | undefined): string {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

export function took(start: number | null | undefined, end: number | null | undefined): string {
  if (!start) return "–";
  const seconds = (end ?? Date.now() / 1000) - start;
  return seconds < 1 ? `${seconds.toFixed(2)}s` : `${seconds.toFixed(1)}s`;
}

export function Badge(props: { state: string }) {
  return <span class={`badge state-${props.state}`}>{props.state}</span>;
}

/** A button that asks once more before it acts. */
function Confirm(props: { label: string; question: string; onConfirm: () => void }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return (
      <button type="button" data-action={props.label} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  }
  return (
    <span class="confirm">
      {props.question}{" "}
      <button
        type="button"
        class="danger"
        data-action={`confirm-${props.label}`}
        onClick={() => {
          setAsking(false);
          props.onConfirm();
        }}
      >
        {props.label}
      </button>{" "}
      <button type="button" onClick={() => setAsking(false)}>
        cancel
      </button>
    </span>
  );
}

export function ProcessDetail(props: {
  root: string;
  process: string;
  detail: ProcessReply | null;
  log: string[];
  onExpire: (keys: string[]) => void;
  onSelect: (selection: Selection) => void;
}) {
  const { detail } = props;
  const logBox = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const box = logBox.current;
    if (box) box.scrollTop = box.scrollHeight;
  }, [props.log.length]);
  if (!detail) return <p class="muted">loading {props.process}…</p>;
  const task = detail.task;
  return (
    <div class="detail process-detail" data-process={detail.process}>
      <h2>
        {detail.process} <Badge state={detail.state} />
      </h2>
      <p class="muted">
        command <b>{detail.command}</b>
        {detail.image ? ` · image ${detail.image}` : ""}
        {detail.spec !== detail.process ? ` · from ${detail.spec}` : ""}
      </p>
      <h3>Command line</h3>
      <pre class="command-line">{detail.command_line.map(quote).join(" ")}</pre>
      {detail.stdout && <p class="muted">standard output → {detail.stdout}</p>}
      <Bindings title="Inputs" rows={detail.inputs} onSelect={props.onSelect} />
      <Bindings title="Outputs" rows={detail.outputs} onSelect={props.onSelect} />
      {Object.keys(detail.vars).length > 0 && (
        <>
          <h3>Vars</h3>
          <table class="kv">
            <tbody>
              {Object.entries(detail.vars).map(([name, value]) => (
                <tr key={name}>
                  <td>{name}</td>
                  <td>{value}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h3>
        Runs <span class="muted">({detail.runs})</span>
      </h3>
      {task ? (
        <table class="kv task">
          <tbody>
            <tr>
              <td>latest</td>
              <td>
                {task.task} <Badge state={task.state} />
              </td>
            </tr>
            <tr>
              <td>started</td>
              <td>{when(task.started)}</td>
            </tr>
            <tr>
              <td>took</td>
              <td>{took(task.started, task.ended)}</td>
            </tr>
            <tr>
              <td>exit code</td>
              <td>{task.exit_code ?? "–"}</td>
            </tr>
            {Object.keys(task.handle).length > 0 && (
              <tr>
                <td>where</td>
                <td>
                  {Object.entries(task.handle)
                    .map(([k, v]) => `${k} ${String(v)}`)
                    .join(", ")}
                </td>
              </tr>
            )}
            {task.error && (
              <tr class="error-row">
                <td>error</td>
                <td>{task.error}</td>
              </tr>
            )}
          </tbody>
        </table>
      ) : (
        <p class="muted">not run yet</p>
      )}
      {detail.story.length > 0 && (
        <details class="story">
          <summary>transitions</summary>
          <ul>
            {detail.story.map((entry, i) => (
              <li key={i}>
                {when(entry.time)} {entry.from || "·"} → {entry.to}
              </li>
            ))}
          </ul>
        </details>
      )}
      <h3>Log</h3>
      <pre class="log-tail" id="log-tail" ref={logBox}>
        {props.log.length ? props.log.join("\n") : <span class="muted">(no output yet)</span>}
      </pre>
      <div class="actions">
        <Confirm
          label="expire"
          question={`Expire ${detail.process} and everything downstream?`}
          onConfirm={() => props.onExpire([detail.process])}
        />
      </div>
    </div>
  );
}

function Bindings(props: {
  title: string;
  rows: ProcessReply["inputs"];
  onSelect: (selection: Selection) => void;
}) {
  if (!props.rows.length) return null;
  return (
    <>
      <h3>{props.title}</h3>
      <table class="bindings">
        <tbody>
          {props.rows.map((row) => (
            <tr key={row.name}>
              <td class="muted">{row.name}</td>
              <td>
                <a
                  href="#"
                  onClick={(e) => {
                    e.preventDefault();
                    props.onSelect({ kind: "data", key: row.key });
                  }}
                >
                  {row.key}
                </a>
              </td>
              <td class="muted">{row.path}</td>
              <td>
                <Badge state={row.state} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'"'"'`)}'`;
}

export function DataDetail(props: {
  root: string;
  dataKey: string;
  node: GraphNode | undefined;
  onExpire: (keys: string[]) => void;
}) {
  return (
    <div class="detail data-detail" data-key={props.dataKey}>
      <h2>
        {props.dataKey} {props.node && <Badge state={props.node.state} />}
      </h2>
      <p class="muted">
        a data key: a file or folder in the namespace's data store. Expiring it recomputes its
        producer (or, for a source, what reads it) and everything downstream.
      </p>
      <div class="actions">
        <Confirm
          label="expire"
          question={`Expire ${props.dataKey} and everything downstream?`}
          onConfirm={() => props.onExpire([props.dataKey])}
        />
      </div>
    </div>
  );
}

export function GroupDetail(props: {
  root: string;
  node: GraphNode | undefined;
  group: string;
  label: string | undefined;
  expanded: boolean;
  version: number;
  onExpand: (group: string, open: boolean) => void;
  onSelect: (selection: Selection) => void;
  onExpire: (keys: string[]) => void;
}) {
  const [state, setState] = useState<string>("");
  const [offset, setOffset] = useState(0);
  const [page, setPage] = useState<MembersReply | null>(null);
  const [error, setError] = useState<string | null>(null);
  const limit = 100;
  useEffect(() => {
    call<MembersReply>("/members", {
      root: props.root,
      group: props.group,
      state: state || null,
      offset,
      limit,
    })
      .then((reply) => {
        setPage(reply);
        setError(null);
      })
      .catch((e: Error) => setError(e.message));
  }, [props.root, props.group, state, offset, props.version, props.node?.counts]);
  const node = props.node;
  const kind = page?.kind ?? node?.kind ?? "process";
  const spec = props.group.startsWith("pg:") && !props.group.slice(3).includes(":");
  return (
    <div class="detail group-detail" data-group={props.group}>
      <h2>
        {props.label ?? (node?.more ? undefined : node?.label) ?? props.group}{" "}
        {node && <Badge state={node.state} />}
      </h2>
      <p class="muted">
        {kind === "process" ? "a fan-out of processes" : "data keys"}
        {node?.command ? ` of command ${node.command}` : ""}
        {node ? ` · ${describeCounts(node.counts)}` : ""}
      </p>
      <div class="actions">
        {kind === "process" && (
          <button
            type="button"
            data-action={props.expanded ? "collapse" : "expand"}
            onClick={() => props.onExpand(props.group, !props.expanded)}
          >
            {props.expanded ? "collapse in the graph" : "expand in the graph"}
          </button>
        )}
        {spec && (
          <Confirm
            label="expire"
            question={`Expire every process of ${props.group.slice(3)}?`}
            onConfirm={() => props.onExpire([props.group.slice(3)])}
          />
        )}
      </div>
      <div class="filter">
        <label>
          show{" "}
          <select
            value={state}
            onChange={(e) => {
              setState((e.target as HTMLSelectElement).value);
              setOffset(0);
            }}
          >
            <option value="">all</option>
            {(kind === "process"
              ? ["complete", "running", "queued", "error", "waiting"]
              : ["complete", "computing", "missing"]
            ).map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        {page && (
          <span class="muted">
            {" "}
            {page.total ? `${offset + 1}–${offset + page.members.length}` : 0} of{" "}
            {page.total.toLocaleString("en")}
          </span>
        )}
        <button type="button" disabled={offset === 0} onClick={() => setOffset(offset - limit)}>
          ‹
        </button>
        <button
          type="button"
          disabled={!page || offset + limit >= page.total}
          onClick={() => setOffset(offset + limit)}
        >
          ›
        </button>
      </div>
      {error && <p class="error">{error}</p>}
      <ul class="members">
        {page?.members.map((member) => (
          <li key={member.key}>
            <a
              href="#"
              onClick={(e) => {
                e.preventDefault();
                props.onSelect({ kind: page.kind, key: member.key });
              }}
            >
              {member.key}
            </a>{" "}
            <Badge state={member.state} />
          </li>
        ))}
      </ul>
    </div>
  );
}

/** The log of a process's latest run, then its live lines. */
export async function fetchLog(root: string, process: string): Promise<string[]> {
  const reply = await call<LogsReply>("/logs", { root, process });
  const lines = reply.log ? reply.log.replace(/\n$/, "").split("\n") : [];
  return lines.slice(-LOG_LINES);
}

export function appendLog(lines: string[], line: string): string[] {
  const next = lines.length >= LOG_LINES ? lines.slice(1 - LOG_LINES) : lines.slice();
  next.push(line);
  return next;
}
