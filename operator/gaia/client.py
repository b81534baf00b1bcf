"""The Python client of a Gaia server: the public API of SPEC.md ("The client").

    import gaia

    flow = gaia.Gaia({"gaia_host": "localhost:24442"})
    flow.command(gaia.load_yaml("examples/triangle/commands.yaml"))
    flow.merge("triangle", gaia.load_yaml("examples/triangle/processes.yaml"))
    flow.trigger("triangle")
    flow.status("triangle")["status"]["state"]       # "running", then "complete"
    flow.expire("triangle", ["md5-rabbit"])
    flow.listen("triangle")                          # print events until Ctrl-C

Every method returns the server's JSON reply as a dict. A reply of 4xx/5xx raises the
:mod:`gaia.errors` class of its status code (400 InvalidRequest, 404 NotFound, 413 TooLarge,
503 Unavailable, any other GaiaError) whose message is the server's own; an unreachable
server raises ConnectionFailed. HTTP uses only the standard library. Events come from the
server's ``GET /events`` stream, or from Kafka topics when ``kafka_host`` is configured.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import yaml

from gaia.errors import (
    ConnectionFailed,
    Forbidden,
    GaiaError,
    InvalidRequest,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from gaia.tokens import find_token
from gaia.wire import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TOPICS
from gaia.wire import Event as EventName

__all__ = ["DEFAULT_HOST", "EventSource", "EventStream", "Gaia", "format_event", "load_yaml"]

logger = logging.getLogger(__name__)


Event = dict[str, Any]
Reply = dict[str, Any]
_ERRORS: dict[int, type[GaiaError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
    503: Unavailable,
}


class EventSource(Protocol):
    """Events as dicts, in order; ``close()`` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[Event]: ...
    def close(self) -> None: ...


class Gaia:
    """A connection to one Gaia server; see the module docstring."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.host = str(config.get("gaia_host") or DEFAULT_HOST)
        self.scheme, self.hostname, self.port = _parse_host(self.host)
        netloc = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.address = f"{netloc}:{self.port}"
        self._token = config.get("token")
        self.url = f"{self.scheme}://{self.address}"
        self.kafka_host: str | None = config.get("kafka_host") or None
        self.kafka_topics = {**DEFAULT_TOPICS, **(config.get("kafka_topics") or {})}
        self.timeout = _seconds(config, "timeout", 60)
        # How long listen() keeps trying to reach a server that went away (a restart).
        self.reconnect = _seconds(config, "reconnect", 60)

    def __repr__(self) -> str:
        return f"Gaia({{'gaia_host': {self.url!r}}})"

    def command(self, commands: list[Any]) -> Reply:
        """Merge these commands (an empty list merges none); reply lists all commands."""
        return self._post("/command", {"commands": commands})

    def merge(self, root: str, processes: list[Any]) -> Reply:
        """Add or update processes of namespace ``root``; reply names what changed."""
        return self._post("/merge", {"root": root, "processes": processes})

    def trigger(self, root: str) -> Reply:
        """Start every runnable process of ``root`` (retrying failed ones)."""
        return self._post("/trigger", {"root": root})

    def halt(self, root: str) -> Reply:
        """Cancel the running tasks of ``root`` and start nothing until the next trigger."""
        return self._post("/halt", {"root": root})

    def status(self, root: str, detail: bool = True) -> Reply:
        """The state, graph, data, tasks and waiting keys of ``root``; with
        ``detail=False`` its state and counts alone (cheap for a big namespace)."""
        body: dict[str, Any] = {"root": root}
        if not detail:
            body["detail"] = False
        return self._post("/status", body)

    def expire(self, root: str, keys: list[str]) -> Reply:
        """Expire process or data keys of ``root`` and everything downstream."""
        return self._post("/expire", {"root": root, "expire": keys})

    def launch(self, keys: list[str]) -> Reply:
        """Start one worker per key (a key already running starts nothing)."""
        return self._post("/launch", {"keys": keys})

    def logs(self, root: str, process: str) -> Reply:
        """The log of the latest task of ``process``: ``{"root", "process", "run", "log"}``."""
        return self._post("/logs", {"root": root, "process": process})

    def workflows(self) -> Reply:
        """Every namespace and its state: ``{"workflows": {namespace: state}}``."""
        return self._post("/workflows", {})

    def overview(self) -> Reply:
        """Every namespace with its state and counts: ``{"namespaces": [...]}``."""
        return self._post("/overview", {})

    def graph(self, root: str, expand: list[str] | None = None) -> Reply:
        """The graph of ``root`` with fan-outs grouped (``expand``: group ids, or ``["*"]``)."""
        return self._post("/graph", {"root": root, "expand": expand or []})

    def process(self, root: str, process: str) -> Reply:
        """One process: its command line, inputs, outputs and latest task."""
        return self._post("/process", {"root": root, "process": process})

    def members(self, root: str, **query: Any) -> Reply:
        """Keys by page: ``group=``, or ``prefix=`` (and ``kind="data"``); ``state=``,
        ``offset=``, ``limit=``."""
        return self._post("/members", {"root": root, **query})

    def events(self, root: str | None = None, since: int | None = None) -> EventSource:
        """Open the stream of events (of ``root``, or all); iterate it, ``close()`` it.
        ``since`` (an event id) first replays the later events the server kept."""
        if self.kafka_host:
            topics = list(self.kafka_topics.values())
            return _KafkaEvents(self.kafka_host, topics, root, min(self.timeout, 10.0))
        return EventStream(self, root, since)

    def listen(
        self, root: str | None = None, handler: Callable[[Event], Any] | None = None
    ) -> None:
        """Pass each event to ``handler`` (default :meth:`handle`) until Ctrl-C.

        When the stream breaks (the server restarted, say), listening resumes after the
        last event seen; the server first replays what it kept meanwhile. A server that
        stays unreachable for the config's ``reconnect`` seconds (default 60) raises
        ConnectionFailed. An exception from ``handler`` ends listening.
        """
        handle = handler or self.handle
        last: int | None = None
        source = self.events(root)
        try:
            while True:
                try:
                    for event in source:
                        handle(event)
                        if isinstance(event.get("id"), int):
                            last = event["id"]
                finally:
                    source.close()
                if self.kafka_host:
                    return  # the Kafka consumer reconnects by itself; its end is final
                logger.warning("the event stream from %s ended; reconnecting", self.address)
                source = self._reconnect(root, last)
        except KeyboardInterrupt:
            pass

    def _reconnect(self, root: str | None, since: int | None) -> EventSource:
        deadline = time.monotonic() + self.reconnect
        delay = 0.2
        while True:
            time.sleep(delay)  # also paces a server that keeps ending streams at once
            try:
                return self.events(root, since)
            except ConnectionFailed:
                if time.monotonic() + delay > deadline:
                    raise
            delay = min(delay * 2, 5.0)

    def handle(self, event: Event) -> None:
        """Print one line per event; override in a subclass to do something else."""
        print(format_event(event), flush=True)

    def _post(self, path: str, body: Mapping[str, Any]) -> Reply:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode("utf-8"),
            headers=self.headers(
                {"Content-Type": "application/json", "Accept": "application/json"}
            ),
            method="POST",
        )
        logger.debug("POST %s%s", self.url, path)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._error(exc.code, exc.read(), f"POST {path}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, f"POST {path}") from exc
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise GaiaError(
                f"the server at {self.address} answered POST {path} with something other "
                f"than JSON: {raw[:200].decode('utf-8', 'replace')!r}"
            ) from exc
        if not isinstance(reply, dict):
            raise GaiaError(f"the server at {self.address} answered POST {path} with {reply!r}")
        return reply

    @property
    def token(self) -> str | None:
        """The bearer token sent (see gaia.tokens: config, GAIA_TOKEN, the local server's
        file, the kubeconfig), looked up at each call: a local server restarted with a
        new token is followed."""
        return find_token(self._token, self.hostname, self.port)

    def headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        token = self.token
        return {**extra, "Authorization": f"Bearer {token}"} if token else dict(extra)

    def _error(self, status: int, body: bytes, what: str) -> GaiaError:
        """The exception for an error reply: the server's own message, its status's class."""
        cls = _ERRORS.get(status, GaiaError)
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = None
        if isinstance(message, str) and message:
            return cls(message)
        text = body.decode("utf-8", "replace").strip()[:300]
        return cls(
            f"the server at {self.address} answered {what} with HTTP {status}"
            + (f": {text}" if text else " and no explanation")
        )

    def _unreachable(self, exc: BaseException, what: str) -> ConnectionFailed:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return ConnectionFailed(
                f"no answer from the Gaia server at {self.address} to {what} within "
                f"{self.timeout:g}s; is it overloaded? (raise the client's 'timeout')"
            )
        return ConnectionFailed(
            f"cannot reach a Gaia server at {self.address} ({_describe(reason)}). Start one with "
            f"`gaia serve --port {self.port}`, or point gaia_host (--host, $GAIA_HOST) "
            "at a running server."
        )


class EventStream:
    """The server-sent events of ``GET /events[?root=NS]``, parsed into dicts.

    Iterating blocks until the next event and ends when the server closes the stream or
    :meth:`close` is called (from any thread). Connecting raises like the other calls.
    """

    def __init__(self, client: Gaia, root: str | None = None, since: int | None = None) -> None:
        """``since`` (an event id) first replays the later events the server kept."""
        self._client = client
        query = {"root": root} if root else {}
        if since is not None:
            query["since"] = str(since)
        path = "/events" + (f"?{urlencode(query)}" if query else "")
        factory = (
            http.client.HTTPSConnection if client.scheme == "https" else http.client.HTTPConnection
        )
        self._connection = factory(client.hostname, client.port, timeout=client.timeout)
        self._lock = threading.Lock()
        self._closed = self._reading = self._released = False
        try:
            headers = client.headers({"Accept": "text/event-stream"})
            self._connection.request("GET", path, headers=headers)
            self._socket = self._connection.sock
            self._response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._connection.close()
            raise client._unreachable(exc, f"GET {path}") from exc
        if self._response.status >= 400:
            body = self._response.read()
            self._connection.close()
            raise client._error(self._response.status, body, f"GET {path}")
        if self._socket is not None:
            self._socket.settimeout(None)  # events may be minutes apart: wait for them

    def __iter__(self) -> Iterator[Event]:
        data: list[str] = []
        try:
            while True:
                with self._lock:
                    if self._closed:
                        break
                    self._reading = True
                try:
                    raw = self._response.readline()
                finally:
                    with self._lock:
                        self._reading = False
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if data:
                        event = _decode_event("\n".join(data))
                        data = []
                        if event is not None:
                            yield event
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                # ":" keep-alive comments and the event:/id:/retry: fields carry nothing we use
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if not self._closed:
                logger.debug("event stream from %s ended: %s", self._client.address, exc)
        finally:
            with self._lock:
                self._closed = True
            self._release()

    def close(self) -> None:
        """End the stream; a thread blocked in iteration returns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._reading
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if not reading:  # else the reading thread releases the connection as it returns
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._response.close()
        self._connection.close()


def _seconds(config: Mapping[str, Any], name: str, default: float) -> float:
    value = config.get(name, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"config {name!r} must be a number of seconds, got {value!r}"
        ) from None


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _decode_event(text: str) -> Event | None:
    try:
        event = json.loads(text)
    except ValueError:
        logger.warning("ignoring an event that is not JSON: %.200s", text)
        return None
    return event if isinstance(event, dict) else None


class _KafkaEvents:
    """Events from Kafka topics (kafka-python), filtered to one namespace if given."""

    def __init__(
        self, kafka_host: str, topics: list[str], root: str | None, timeout: float
    ) -> None:
        self._kafka_host, self._topics, self._root = kafka_host, topics, root
        self._timeout_ms = int(timeout * 1000)
        self._closed = False

    def __iter__(self) -> Iterator[Event]:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError
        from kafka.serializer import Deserializer

        class JsonValues(Deserializer):
            def deserialize(self, topic: str, headers: Any, data: bytes) -> Any:
                return _json_value(data)

        try:
            consumer = KafkaConsumer(
                *self._topics,
                bootstrap_servers=self._kafka_host,
                bootstrap_timeout_ms=self._timeout_ms,
                value_deserializer=JsonValues(),
            )
        except KafkaError as exc:
            raise ConnectionFailed(
                f"cannot reach the Kafka broker at {self._kafka_host} ({exc}); start it, or "
                "leave kafka_host unset to read events from the Gaia server over HTTP"
            ) from exc
        try:
            while not self._closed:
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        event = record.value
                        if isinstance(event, dict) and self._root in (None, event.get("root")):
                            yield event
        except KafkaError as exc:
            raise ConnectionFailed(f"lost the Kafka broker at {self._kafka_host}: {exc}") from exc
        finally:
            consumer.close()

    def close(self) -> None:
        self._closed = True


def _json_value(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def format_event(event: Event) -> str:
    """One human line for an event: ``12:00:01 triangle step-complete md5-rabbit 0.05s``."""
    when = time.strftime("%H:%M:%S", time.localtime(float(event.get("time") or time.time())))
    kind = str(event.get("event", "?"))
    process = event.get("process") or ""
    if kind == EventName.LOG:
        detail = f"{process} [{event.get('stream', 'stdout')}] {event.get('line', '')}"
    elif kind == EventName.STEP_COMPLETE and isinstance(event.get("duration"), int | float):
        detail = f"{process} {event['duration']:.2f}s"
    elif kind == EventName.STEP_ERROR:
        detail = f"{process}: {event.get('error') or 'failed'}"
    elif kind.startswith("flow-"):
        counts = event.get("counts") or {}
        detail = f"{event.get('state', kind[5:])}"
        if counts:
            detail += f" {counts.get('complete', 0)}/{counts.get('processes', 0)} processes"
    elif kind.startswith("worker-"):
        detail = str(event.get("worker", ""))
    else:
        detail = str(event.get("key") or process)
    return f"{when} {event.get('root', '-')} {kind} {detail}".rstrip()


def load_yaml(path: str | PathLike[str]) -> Any:
    """The YAML document in ``path`` (a list or a mapping).

    A missing or unreadable file, malformed YAML (named with its line and column) or a
    document that is neither a list nor a mapping raises InvalidRequest.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequest(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InvalidRequest(f"{source} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {source}: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise InvalidRequest(f"{source}{where}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{source}: malformed YAML: {exc}") from exc
    if not isinstance(document, list | dict):
        found = "nothing" if document is None else f"a {type(document).__name__}"
        raise InvalidRequest(f"{source}: expected a YAML list or mapping, found {found}")
    return document


def _parse_host(value: str) -> tuple[str, str, int]:
    """``host:port`` or ``http(s)://host:port`` as (scheme, hostname, port)."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise InvalidRequest(
            f"gaia_host {value!r} is not a server address; write it like {DEFAULT_HOST!r} "
            "or 'http://host:24442'"
        )
    return parts.scheme, parts.hostname, port
