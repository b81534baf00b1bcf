// The shapes of the API's replies that the page reads (see gaia/engine/views.py).

export type Counts = Record<string, number>;

export interface NamespaceSummary {
  root: string;
  state: string;
  counts: Counts;
}

export interface GraphNode {
  id: string; // "p:KEY" / "d:KEY" for one key, "pg:..." / "dg:..." for a group, "more:..."
  kind: "process" | "data";
  label: string;
  group: string;
  size: number;
  state: string;
  counts: Counts;
  command?: string;
  more?: boolean;
}

export interface GraphReply {
  root: string;
  state: string;
  counts: Counts;
  version: number;
  event: number; // the newest event this reply reflects
  groups: number;
  expanded: string[];
  labels: Record<string, string>; // the expanded groups' labels
  truncated: boolean;
  nodes: GraphNode[];
  edges: [string, string][];
}

export interface Binding {
  name: string;
  key: string;
  path: string | null;
  state: string;
}

export interface TaskRecord {
  state: string;
  run: number;
  task: string;
  queued: number | null;
  started: number | null;
  ended: number | null;
  exit_code: number | null;
  handle: Record<string, unknown>;
  error?: string;
  log_tail?: string[];
}

export interface ProcessReply {
  root: string;
  process: string;
  spec: string;
  group: string;
  command: string;
  image: string | null;
  command_line: string[];
  stdout: string | null;
  vars: Record<string, string>;
  inputs: Binding[];
  outputs: Binding[];
  state: string;
  runs: number;
  task: TaskRecord | null;
  story: { time: number; from: string; to: string }[];
}

export interface MembersReply {
  root: string;
  kind: "process" | "data";
  total: number;
  offset: number;
  members: { key: string; state: string }[];
}

export interface LogsReply {
  root: string;
  process: string;
  run: number | null;
  log: string;
}

export interface GaiaEvent {
  id?: number;
  event: string;
  root: string | null;
  process?: string;
  task?: string;
  key?: string;
  state?: string;
  counts?: Counts;
  line?: string;
  stream?: string;
  [field: string]: unknown;
}
