"""The HTTP API: JSON over POST, errors as ``{"error": ...}`` with a 4xx, events as
server-sent events on ``GET /events``.

Handlers are thin: they read the body, call the controller, and send its reply.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gaia.bus import EventBus
from gaia.controller import Controller
from gaia.errors import GaiaError, InvalidRequest, TooLarge

__all__ = ["MAX_BODY", "build_app", "serve"]

logger = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024
KEEPALIVE = 15.0


class Backend(Protocol):
    """What the API serves: the standalone Controller, or the operator's KubeApi. Each
    call returns the reply dict, or an awaitable of it."""

    bus: EventBus

    def command(self, commands: object) -> Any: ...
    def merge(self, root: object, processes: object) -> Any: ...
    def trigger(self, root: object) -> Any: ...
    def halt(self, root: object) -> Any: ...
    def status(self, root: object) -> Any: ...
    def expire(self, root: object, keys: object) -> Any: ...
    def launch(self, keys: object) -> Any: ...
    def logs(self, root: object, process: object) -> Any: ...
    def workflows(self) -> Any: ...
    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]: ...


CONTROLLER = web.AppKey("controller", Backend)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GaiaError as exc:
        return _error(exc.http_status, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body over the limit of {MAX_BODY} bytes")
    except web.HTTPNotFound:
        paths = sorted(
            {str(r.resource.canonical) for r in request.app.router.routes() if r.resource}
        )
        return _error(404, f"no such endpoint {request.path!r}; the API has {paths}")
    except web.HTTPMethodNotAllowed as exc:
        return _error(
            405,
            f"{request.method} is not allowed on {request.path}; use {sorted(exc.allowed_methods)}",
        )
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug: say so without a traceback on the wire
        logger.exception("internal error on %s", request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise TooLarge(
            f"request body of {request.content_length} bytes is over the limit of {MAX_BODY}"
        )
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _root(body: dict[str, Any]) -> Any:
    """Later clients call the namespace ``workflow``; accept both."""
    if "root" in body:
        return body["root"]
    if "workflow" in body:
        return body["workflow"]
    raise InvalidRequest("the body must name the namespace as 'root'")


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise InvalidRequest(f"the body must have '{name}'")
    return body[name]


def _call(action: Callable[[Backend, dict[str, Any]], Any]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = await _body(request)
        return web.json_response(await _awaited(action(request.app[CONTROLLER], body)))

    return handler


def _on_body(call: Callable[[dict[str, Any]], Any]) -> Callable[[Backend, dict[str, Any]], Any]:
    return lambda _backend, body: call(body)


async def _upload(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {}
    for key, call in (
        ("commands", lambda: backend.command(body["commands"])),
        ("processes", lambda: backend.merge(_root(body), body["processes"])),
    ):
        if key in body:
            reply.update(await _awaited(call()))
    return reply


ROUTES: dict[str, Callable[[Backend, dict[str, Any]], Any]] = {
    "/command": lambda c, b: c.command(_field(b, "commands")),
    "/merge": lambda c, b: c.merge(_root(b), _field(b, "processes")),
    "/trigger": lambda c, b: c.trigger(_root(b)),
    "/run": lambda c, b: c.trigger(_root(b)),
    "/halt": lambda c, b: c.halt(_root(b)),
    "/status": lambda c, b: c.status(_root(b)),
    "/expire": lambda c, b: c.expire(_root(b), _field(b, "expire")),
    "/launch": lambda c, b: c.launch(_field(b, "keys")),
    "/logs": lambda c, b: c.logs(_root(b), _field(b, "process")),
    "/workflows": lambda c, b: c.workflows(),
    "/upload": _upload,
}


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; ``?root=NS`` filters, ``?since=ID`` (or the standard
    ``Last-Event-ID`` header of a reconnecting browser) replays kept events first."""
    controller = request.app[CONTROLLER]
    root = request.query.get("root") or None
    subscription = controller.bus.subscribe(root)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        replayed = 0
        since = request.query.get("since") or request.headers.get("Last-Event-ID")
        if since is not None and since.isdigit():
            for saved in controller.events_since(int(since), root):
                await response.write(_sse(saved))
                replayed = saved["id"]
        while not controller.bus.is_dropped(subscription):
            event = await subscription.get(KEEPALIVE)
            if controller.bus.is_dropped(subscription):
                break
            if event is None:
                await response.write(b": keep-alive\n\n")
            elif event["id"] > replayed:
                await response.write(_sse(event))
    except ConnectionResetError:
        pass
    finally:
        subscription.close()
    return response


def _sse(event: dict[str, Any]) -> bytes:
    return f"id: {event.get('id', '')}\ndata: {json.dumps(event)}\n\n".encode()


async def health(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "ok": True,
            "workflows": (await _awaited(request.app[CONTROLLER].workflows()))["workflows"],
        }
    )


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def build_app(
    controller: Backend,
    extra_routes: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> web.Application:
    """``extra_routes`` (path -> call on the JSON body) adds POST endpoints of a backend's
    own, such as the operator's worker protocol (``/work/...``)."""
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY)
    app[CONTROLLER] = controller
    for path, action in ROUTES.items():
        app.router.add_post(path, _call(action))
    for path, call in (extra_routes or {}).items():
        app.router.add_post(path, _call(_on_body(call)))
    app.router.add_get("/events", events)
    app.router.add_get("/health", health)

    async def lifecycle(app: web.Application) -> Any:
        if isinstance(controller, Controller):  # the operator runs its backend itself
            controller.start()
        yield
        if isinstance(controller, Controller):
            await controller.close()

    async def end_streams(app: web.Application) -> None:
        controller.bus.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    return app


def serve(
    host: str,
    port: int,
    data_dir: Path,
    workers: int,
    idle_timeout: float = 300.0,
    *,
    kafka: str | None = None,
    kafka_topics: Mapping[str, str] | None = None,
    sandbox: str = "auto",
) -> None:
    """Run the standalone server until SIGINT or SIGTERM (run_app handles both); running
    tasks are killed on the way out and run again at the next start. With ``kafka``
    (HOST:PORT), events also go to Kafka topics; an unreachable broker raises at once.
    How tasks are sealed (``sandbox``) is said at the start, and so is a sandbox that
    cannot start (no task runs then)."""
    controller = Controller(
        data_dir,
        workers=workers,
        idle_timeout=idle_timeout,
        kafka=kafka,
        kafka_topics=kafka_topics,
        sandbox=sandbox,
    )
    events = (
        f"; events also on Kafka at {kafka} ({', '.join(controller.kafka.topics.values())})"
        if controller.kafka is not None
        else ""
    )
    print(
        f"gaia: serving {data_dir.resolve()} on http://{host}:{port} with {workers} workers"
        + events,
        flush=True,
    )
    print(f"gaia: {controller.sandbox.summary()}", flush=True)
    web.run_app(
        build_app(controller),
        host=host,
        port=port,
        print=None,
        handle_signals=True,
        shutdown_timeout=5.0,
    )
