"""``gaia serve``: the standalone host behind the HTTP API, until SIGINT or SIGTERM.

The API wants a bearer token on every call. The server makes a random one at each start
(or reads ``--token-file``) and leaves it in ``~/.gaia/tokens/PORT``, readable by its
user alone, where that user's clients find it (``gaia.Gaia({"gaia_host": ...})`` and the
CLI): for them nothing changes, for anyone else the door is shut.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path

from aiohttp import web

from gaia import tokens
from gaia.api import auth, dashboard
from gaia.api.server import build_app
from gaia.errors import InvalidRequest, Unavailable
from gaia.standalone.host import StandaloneHost

__all__ = ["Door", "serve", "standalone_app"]


class Door:
    """The token and the names of one standalone server (``port`` may be learnt only once
    it is bound: 0 asks for a free one)."""

    def __init__(self, bound: str, port: int, token: str | None = None) -> None:
        self.bound, self.port = bound, port
        self.token = token or tokens.new_token()
        self.guard = auth.TokenGuard(self.token, self._hint())

    def _hint(self) -> str:
        return (
            "clients of the user who started the server find its token in "
            "~/.gaia/tokens/<port>; others set GAIA_TOKEN (or the client's 'token') to the "
            "token given with --token-file, or printed in the dashboard's address at start"
        )

    def hosts(self) -> Callable[[], Iterable[str]] | None:
        if auth.binds_everywhere(self.bound):
            return None  # its names are not known: the token alone keeps it shut
        return lambda: auth.loopback_names(self.bound, self.port)

    def open(self) -> None:
        tokens.write_token_file(self.port, self.token)

    def close(self) -> None:
        tokens.remove_token_file(self.port, self.token)


def standalone_app(host: StandaloneHost, door: Door) -> web.Application:
    """The HTTP API over ``host``: the host starts (restoring what was saved) with the
    app, and stops with it (killing running tasks, which run again at the next start)."""
    app = build_app(host, door.guard, hosts=door.hosts())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await host.start()
        yield
        await host.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def _check_port(host: str, port: int) -> None:
    """Raise Unavailable if ``host:port`` cannot be listened on (as aiohttp would)."""
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? "
            "give --port another number)"
        ) from None


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the token file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise InvalidRequest(f"the token in {path} is too short: use 16 characters or more")
    return token


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
    token_file: Path | None = None,
) -> None:
    """Run the standalone server. With ``kafka`` (HOST:PORT), events also go to Kafka
    topics; an unreachable broker raises at once. How tasks are sealed (``sandbox``) is
    said at the start, and so is a sandbox that cannot start (no task runs then)."""
    door = Door(host, port, read_token(token_file) if token_file else None)
    # aiohttp binds only after the app has started: a port in use would be found after
    # this server restored its namespaces, started their tasks and replaced the running
    # server's token file with its own.
    _check_port(host, port)
    standalone = StandaloneHost(
        data_dir,
        workers=workers,
        idle_timeout=idle_timeout,
        kafka=kafka,
        kafka_topics=kafka_topics,
        sandbox=sandbox,
    )
    events = (
        f"; events also on Kafka at {kafka} ({', '.join(standalone.kafka.topics.values())})"
        if standalone.kafka is not None
        else ""
    )
    print(
        f"gaia: serving {data_dir.resolve()} on http://{host}:{port} with {workers} workers"
        + events,
        flush=True,
    )
    print(f"gaia: {standalone.sandbox.summary()}", flush=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    print(f"gaia: dashboard at {dashboard.url(f'{shown}:{port}', door.token)}", flush=True)
    print(f"gaia: the API's token is in {tokens.token_file(port)}", flush=True)
    app = standalone_app(standalone, door)

    async def open_door(app: web.Application) -> AsyncIterator[None]:
        door.open()
        yield
        door.close()

    app.cleanup_ctx.append(open_door)
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        handle_signals=True,
        shutdown_timeout=5.0,
    )
