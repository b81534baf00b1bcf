// The Gaia dashboard: the namespaces (#/), and one namespace's graph (#/ns/NAME).
// The fragment may also carry `token=...` (see api.ts).

import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { adoptToken, call, follow, type StreamState } from "./api";
import { Badge } from "./detail";
import { Counts, NamespacePage } from "./namespace";
import { Throttle } from "./throttle";
import type { NamespaceSummary } from "./types";
import "./style.css";

function route(): string | null {
  const match = location.hash.match(/^#\/ns\/([^&]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function App() {
  const [root, setRoot] = useState(route());
  const [stream, setStream] = useState<StreamState>("connecting");
  useEffect(() => {
    const changed = () => {
      adoptToken();
      setRoot(route());
    };
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  useEffect(() => {
    document.title = root ? `${root} · Gaia` : "Gaia";
  }, [root]);
  return (
    <div class="app">
      <header>
        <a class="brand" href="#/">
          Gaia
        </a>
        <nav>
          <a href="#/">namespaces</a>
          {root && <span> / {root}</span>}
        </nav>
        <span class="spacer" />
        <span class={`stream stream-${stream}`} id="stream" data-state={stream}>
          {stream === "live" ? "● live" : stream}
        </span>
      </header>
      <main>
        {root ? (
          <NamespacePage key={root} root={root} onStream={setStream} />
        ) : (
          <Overview onStream={setStream} />
        )}
      </main>
    </div>
  );
}

function Overview(props: { onStream: (state: StreamState) => void }) {
  const [spaces, setSpaces] = useState<NamespaceSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = useMemo(
    () =>
      new Throttle(async () => {
        try {
          setSpaces((await call<{ namespaces: NamespaceSummary[] }>("/overview")).namespaces);
          setError(null);
        } catch (e) {
          setError((e as Error).message);
        }
      }, 1000),
    [],
  );
  useEffect(() => {
    const stream = follow(
      null,
      (event) => {
        if (event.event !== "log") refresh.request();
      },
      props.onStream,
    );
    refresh.request();
    return () => {
      stream.stop();
      refresh.stop();
    };
  }, []);
  return (
    <div class="overview">
      <h1>Namespaces</h1>
      {error && <p class="error">{error}</p>}
      {spaces && spaces.length === 0 && (
        <p class="muted">
          No namespaces yet: merge processes into one (<code>gaia run DIR</code>, or the client's{" "}
          <code>merge</code>) and it appears here.
        </p>
      )}
      {spaces && spaces.length > 0 && (
        <table class="namespaces">
          <thead>
            <tr>
              <th>namespace</th>
              <th>state</th>
              <th>progress</th>
              <th>counts</th>
            </tr>
          </thead>
          <tbody>
            {spaces.map((space) => (
              <tr key={space.root} data-root={space.root} data-state={space.state}>
                <td>
                  <a href={`#/ns/${encodeURIComponent(space.root)}`}>{space.root}</a>
                </td>
                <td>
                  <Badge state={space.state} />
                </td>
                <td>
                  <Progress counts={space.counts} />
                </td>
                <td>
                  <Counts counts={space.counts} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function Progress(props: { counts: Record<string, number> }) {
  const { processes = 0, complete = 0, running = 0, failed = 0 } = props.counts;
  const share = (n: number) => `${processes ? (100 * n) / processes : 0}%`;
  return (
    <span class="progress" title={`${complete} of ${processes} complete`}>
      <span class="bar-complete" style={{ width: share(complete) }} />
      <span class="bar-running" style={{ width: share(running) }} />
      <span class="bar-error" style={{ width: share(failed) }} />
    </span>
  );
}

adoptToken();
render(<App />, document.getElementById("app")!);
