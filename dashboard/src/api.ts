// Talking to the Gaia API that served this page: JSON POSTs and the event stream.
//
// A token (once the API requires one) comes in the URL's fragment, `#token=...`, which
// browsers never send to a server; it is kept in sessionStorage for this tab only, taken
// out of the address bar, and sent as `Authorization: Bearer` on every call. The event
// stream is read with fetch and a streaming reader rather than EventSource, which cannot
// send that header.

import type { GaiaEvent } from "./types";

const TOKEN_KEY = "gaia-token";

/** Take `token=...` out of the fragment into sessionStorage; return the route left. */
export function adoptToken(): void {
  const parts = location.hash.replace(/^#/, "").split("&");
  const rest: string[] = [];
  for (const part of parts) {
    if (part.startsWith("token=")) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(part.slice(6)));
    } else if (part) {
      rest.push(part);
    }
  }
  const hash = rest.length ? "#" + rest.join("&") : "";
  if (hash !== location.hash) {
    history.replaceState(null, "", location.pathname + location.search + hash);
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** POST `body` to `path`; the reply's JSON, or an ApiError with the server's message. */
export async function call<T>(path: string, body: object = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(`the Gaia server cannot be reached (${String(error)})`, 0);
  }
  const text = await response.text();
  let reply: unknown = undefined;
  try {
    reply = JSON.parse(text);
  } catch {
    // not JSON: said below
  }
  if (!response.ok) {
    const message =
      reply && typeof reply === "object" && "error" in reply
        ? String((reply as { error: unknown }).error)
        : `HTTP ${response.status} from ${path}`;
    throw new ApiError(message, response.status);
  }
  return reply as T;
}

export type StreamState = "connecting" | "live" | "reconnecting";

/**
 * Follow `GET /events` (of one namespace, or all) until `stop()`: each event goes to
 * `onEvent`; a broken stream reconnects with `since` = the last id seen, so the server
 * replays what it kept meanwhile.
 */
export function follow(
  root: string | null,
  onEvent: (event: GaiaEvent) => void,
  onState: (state: StreamState) => void,
): { stop: () => void } {
  const controller = new AbortController();
  let last: number | null = null;
  let stopped = false;

  async function once(): Promise<void> {
    const query = new URLSearchParams();
    if (root) query.set("root", root);
    if (last !== null) query.set("since", String(last));
    const response = await fetch(`/events?${query}`, {
      headers: headers({ Accept: "text/event-stream" }),
      signal: controller.signal,
    });
    if (!response.ok || !response.body) {
      throw new ApiError(`the event stream answered HTTP ${response.status}`, response.status);
    }
    onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue; // a keep-alive comment
        const event = JSON.parse(data) as GaiaEvent;
        if (typeof event.id === "number") last = event.id;
        onEvent(event);
      }
    }
  }

  (async () => {
    let delay = 250;
    while (!stopped) {
      onState(last === null ? "connecting" : "reconnecting");
      try {
        await once();
        delay = 250;
      } catch {
        if (stopped) return;
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  })();

  return {
    stop() {
      stopped = true;
      controller.abort();
    },
  };
}
