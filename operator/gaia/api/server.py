"""The HTTP API: JSON over POST, errors as ``{"error": ...}`` with a 4xx, events as
server-sent events on ``GET /events``. One implementation serves both hosts.

Handlers are thin: they read the body, call the backend, and shape its answer into the
reply of SPEC.md. Bodies are strict JSON: no NaN or Infinity, no lone surrogates or NUL
characters anywhere (no Gaia name can hold them), and a bounded nesting depth.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web

from gaia.api import dashboard
from gaia.api.auth import Access, Guard, guarded
from gaia.bus import EventBus
from gaia.bus.memory import BACKLOG
from gaia.engine.keys import root_problem, text_problem
from gaia.errors import GaiaError, InvalidRequest, TooLarge

__all__ = ["MAX_BODY", "MAX_DEPTH", "Backend", "build_app", "dumps"]

logger = logging.getLogger(__name__)
MAX_BODY = 64 * 1024 * 1024
MAX_DEPTH = 64  # the deepest Gaia request nests about six levels
KEEPALIVE = 15.0


class Backend(Protocol):
    """What the API serves: the standalone host, or the operator's KubeApi. A call may
    return its answer or an awaitable of it; the routes shape it into SPEC.md's reply."""

    bus: EventBus

    def command(self, commands: object) -> Any: ...  # -> every command, as dicts
    def check_upload(self, root: object, commands: object, processes: object) -> None: ...
    def merge(self, root: object, processes: object) -> Any: ...  # -> process keys changed
    def trigger(self, root: object) -> Any: ...
    def halt(self, root: object) -> Any: ...
    def status(self, root: object, detail: object = True) -> Any: ...  # -> {"root", "status"}
    def expire(self, root: object, keys: object) -> Any: ...  # -> {"process", "data"}
    def launch(self, keys: object) -> Any: ...  # -> {"launch": [...], "running": [...]}
    def logs(self, root: object, process: object) -> Any: ...
    def workflows(self) -> Any: ...
    def events_since(self, after: int, root: str | None) -> list[dict[str, Any]]: ...
    # the dashboard's views (gaia.engine.views)
    def overview(self) -> Any: ...
    def graph(self, root: object, expand: object) -> Any: ...
    def members(self, root: object, query: dict[str, Any]) -> Any: ...
    def process(self, root: object, process: object) -> Any: ...


BATCH = 1000  # events sent to a listener in one write, at most
OFF_THE_LOOP = 1 << 20  # request bodies bigger than this are parsed on a thread

CONTROLLER = web.AppKey("controller", Backend)
GUARD = web.AppKey("guard", Guard)


def dumps(value: Any) -> bytes:
    """A reply in JSON. orjson: the status of a big namespace is tens of megabytes, which
    the standard library encodes ten times slower; a part encoded before (the graph,
    unchanged between calls) comes in as an ``orjson.Fragment``."""
    return orjson.dumps(value)


def json_reply(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(value), status=status, content_type="application/json", headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="gaia"'} if status == 401 else None
    return json_reply({"error": message}, status, headers)


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
    if len(raw) > OFF_THE_LOOP:
        # Parsing and checking tens of megabytes takes seconds of Python: on a thread the
        # loop still gets its turns (the interpreter switches threads every few ms), so
        # /health and other callers are slowed, not stopped.
        return await asyncio.to_thread(parse_body, raw)
    return parse_body(raw)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, strictly (see the module docstring)."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    _check_values(body, "body", 0)
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; use a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _check_values(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if problem := text_problem(value):
            raise InvalidRequest(f"{where} {problem}")
    elif isinstance(value, dict):
        for name, item in value.items():
            if problem := text_problem(name):
                raise InvalidRequest(f"a name in {where} {problem}")
            _check_values(item, f"{where}.{name}", depth + 1)
    elif isinstance(value, list):
        # A fan-out's list holds 10^5 strings: each is checked here, and its place in
        # the body spelt out only for a bad one.
        shallow = depth < MAX_DEPTH
        for index, item in enumerate(value):
            if shallow and isinstance(item, str):
                if problem := text_problem(item):
                    raise InvalidRequest(f"{where}[{index}] {problem}")
            else:
                _check_values(item, f"{where}[{index}]", depth + 1)


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


Action = Callable[[Backend, dict[str, Any]], Awaitable[dict[str, Any]]]
# What a call touches, from its body: authorized before the call runs.
Accesses = Callable[[dict[str, Any]], list[Access]]


def _call(action: Action, accesses: Accesses) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = await _body(request)
        guard = request.app[GUARD]
        for access in accesses(body):
            await guard.authorize(request["caller"], access)
        reply = await action(request.app[CONTROLLER], body)
        return json_reply(reply)

    return handler


def _named_root(body: dict[str, Any]) -> str | None:
    """The namespace a body names, for authorization (None: it names none, or a bad one,
    which the call itself refuses)."""
    root = body.get("root", body.get("workflow"))
    return root if isinstance(root, str) else None


def on_root(verb: str) -> Accesses:
    """A call on the namespace the body names."""
    return lambda body: [Access((verb,), "gaianamespaces", _named_root(body))]


def on_all(verb: str, resource: str) -> Accesses:
    return lambda body: [Access((verb,), resource)]


COMMANDS = Access(("create", "update"), "gaiacommands")


def _command_access(body: dict[str, Any]) -> list[Access]:
    """Merging commands changes them; ``command([])`` only lists them."""
    if body.get("commands") == []:
        return [Access(("list",), "gaiacommands")]
    return [COMMANDS]


def _upload_access(body: dict[str, Any]) -> list[Access]:
    accesses = [COMMANDS] if "commands" in body else []
    if "processes" in body:
        accesses += on_root("patch")(body)
    return accesses


def _on_call(call: Callable[[Backend, dict[str, Any]], Any]) -> Action:
    """A route whose backend call already answers with the reply."""

    async def action(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await _awaited(call(backend, body))
        return reply

    return action


def _on_body(call: Callable[[dict[str, Any]], Any]) -> Action:
    async def action(_backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await _awaited(call(body))
        return reply

    return action


async def _command(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    return {"commands": await _awaited(backend.command(_field(body, "commands")))}


async def _merge(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    root = _root(body)
    changed = await _awaited(backend.merge(root, _field(body, "processes")))
    return {"processes": {root: changed}}


async def _trigger(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    root = _root(body)
    await _awaited(backend.trigger(root))
    return {"trigger": root}


async def _halt(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    root = _root(body)
    await _awaited(backend.halt(root))
    return {"halt": root}


async def _expire(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    return {"expire": await _awaited(backend.expire(_root(body), _field(body, "expire")))}


async def _upload(backend: Backend, body: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {}
    if "commands" in body and "processes" in body:  # all or nothing: check both first
        backend.check_upload(_root(body), _field(body, "commands"), _field(body, "processes"))
    if "commands" in body:
        reply.update(await _command(backend, body))
    if "processes" in body:
        reply.update(await _merge(backend, body))
    return reply


ROUTES: dict[str, tuple[Action, Accesses]] = {
    "/command": (_command, _command_access),
    "/merge": (_merge, on_root("patch")),
    "/trigger": (_trigger, on_root("patch")),
    "/run": (_trigger, on_root("patch")),
    "/halt": (_halt, on_root("patch")),
    "/status": (
        _on_call(lambda b, body: b.status(_root(body), body.get("detail", True))),
        on_root("get"),
    ),
    "/expire": (_expire, on_root("patch")),
    "/launch": (
        _on_call(lambda b, body: b.launch(_field(body, "keys"))),
        on_all("create", "gaiaworkers"),
    ),
    "/logs": (
        _on_call(lambda b, body: b.logs(_root(body), _field(body, "process"))),
        on_root("get"),
    ),
    "/workflows": (_on_call(lambda b, body: b.workflows()), on_all("list", "gaianamespaces")),
    "/upload": (_upload, _upload_access),
    "/overview": (_on_call(lambda b, body: b.overview()), on_all("list", "gaianamespaces")),
    "/graph": (
        _on_call(lambda b, body: b.graph(_root(body), body.get("expand") or [])),
        on_root("get"),
    ),
    "/members": (_on_call(lambda b, body: b.members(_root(body), body)), on_root("get")),
    "/process": (
        _on_call(lambda b, body: b.process(_root(body), _field(body, "process"))),
        on_root("get"),
    ),
}


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; ``?root=NS`` filters, ``?since=ID`` (or the standard
    ``Last-Event-ID`` header of a reconnecting browser) replays kept events first."""
    controller = request.app[CONTROLLER]
    root = request.query.get("root") or None
    if root is not None and (problem := root_problem(root)):
        raise InvalidRequest(problem)
    since = _event_id(request.query.get("since") or request.headers.get("Last-Event-ID"))
    access = (
        Access(("get",), "gaianamespaces", root) if root else Access(("list",), "gaianamespaces")
    )
    await request.app[GUARD].authorize(request["caller"], access)
    subscription = controller.bus.subscribe(root)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        if since is not None:
            replayed = since
            for saved in controller.events_since(since, root):
                await response.write(_sse(saved))
                replayed = saved["id"]
            subscription.pass_through(replayed)  # live ones it has sent from the history
        while not controller.bus.is_dropped(subscription):
            if not await subscription.wait(KEEPALIVE):
                if not controller.bus.is_dropped(subscription):
                    await response.write(b": keep-alive\n\n")
                continue
            # What queued up meanwhile goes in the same write, encoded once for every
            # listener: a write per event per listener held the loop.
            await response.write(subscription.ready_encoded(BATCH, _sse))
    except ConnectionResetError:
        pass
    finally:
        subscription.close()
    return response


def _event_id(text: str | None) -> int | None:
    """``since`` or ``Last-Event-ID``: checked before the stream's headers go out, after
    which an error could only break the stream."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise InvalidRequest(f"since {text[:40]!r} is not an event id (a whole number >= 0)")
    return int(text)


# Each event goes to every listener as the same object: encoded once, not once per
# listener (200 dashboards following a task that prints 300,000 lines held the loop).
# Kept for as many events as the bus keeps for its listeners (twice its backlog), so a
# listener that lags but is not dropped finds them encoded; the oldest goes first, in
# O(1) (deleting a dict's first key over and over made finding the next one slower).
_ENCODED: OrderedDict[int, tuple[dict[str, Any], bytes]] = OrderedDict()  # id(event) ->
_ENCODED_KEPT = 2 * BACKLOG


def _sse(event: dict[str, Any]) -> bytes:
    found = _ENCODED.get(id(event))
    if found is not None and found[0] is event:
        return found[1]
    encoded = b"id: %d\ndata: %s\n\n" % (event.get("id") or 0, dumps(event))
    if len(_ENCODED) >= _ENCODED_KEPT:
        _ENCODED.popitem(last=False)
    _ENCODED[id(event)] = (event, encoded)
    return encoded


async def health(request: web.Request) -> web.Response:
    """For probes, without a token: says nothing about the namespaces."""
    return web.json_response({"ok": True})


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def build_app(
    controller: Backend,
    guard: Guard,
    extra_routes: Mapping[str, tuple[Callable[[dict[str, Any]], Any], Accesses]] | None = None,
    *,
    hosts: Callable[[], Iterable[str]] | None = None,
) -> web.Application:
    """The API over ``controller``, every call checked by ``guard`` (see api/auth.py);
    ``hosts`` names this server may be called by (None: any). ``extra_routes`` (path ->
    (call on the JSON body, what it touches)) adds POST endpoints of a backend's own,
    such as the operator's worker protocol (``/work/...``)."""
    app = web.Application(
        middlewares=[errors_as_json, guarded(guard, hosts)], client_max_size=MAX_BODY
    )
    app[CONTROLLER] = controller
    app[GUARD] = guard
    for path, (action, accesses) in ROUTES.items():
        app.router.add_post(path, _call(action, accesses))
    for path, (call, accesses) in (extra_routes or {}).items():
        app.router.add_post(path, _call(_on_body(call), accesses))
    app.router.add_get("/events", events)
    app.router.add_get("/health", health)
    dashboard.add_routes(app)

    async def end_streams(app: web.Application) -> None:
        controller.bus.close()

    app.on_shutdown.append(end_streams)
    return app
