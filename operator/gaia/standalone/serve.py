"""``gaia serve``: the standalone host behind the HTTP API, until SIGINT or SIGTERM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from gaia.api import dashboard
from gaia.api.server import build_app
from gaia.standalone.host import StandaloneHost

__all__ = ["serve", "standalone_app"]


def standalone_app(host: StandaloneHost) -> web.Application:
    """The HTTP API over ``host``: the host starts (restoring what was saved) with the
    app, and stops with it (killing running tasks, which run again at the next start)."""
    app = build_app(host)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await host.start()
        yield
        await host.close()

    app.cleanup_ctx.append(lifecycle)
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
    """Run the standalone server. With ``kafka`` (HOST:PORT), events also go to Kafka
    topics; an unreachable broker raises at once. How tasks are sealed (``sandbox``) is
    said at the start, and so is a sandbox that cannot start (no task runs then)."""
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
    print(f"gaia: dashboard at {dashboard.url(f'{shown}:{port}')}", flush=True)
    web.run_app(
        standalone_app(standalone),
        host=host,
        port=port,
        print=None,
        handle_signals=True,
        shutdown_timeout=5.0,
    )
