"""The dashboard's files, served by the HTTP API at ``/ui/``.

The page is built ahead of time (``make dashboard``, from ``dashboard/`` at the top of the
repository) into ``gaia/dashboard/`` and shipped inside the Python package, so serving it
needs no Node. The page itself is public, like any login page: everything it shows comes
from the API calls it makes, which carry the token it reads from the URL's fragment
(``/ui/#token=...``) as ``Authorization: Bearer``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["BUNDLE", "add_routes", "url"]

BUNDLE = Path(__file__).resolve().parent.parent / "dashboard"
HEADERS = {
    "Cache-Control": "no-cache",  # names are fixed: revalidate (ETag) on every load
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}
MISSING = """<!doctype html><meta charset="utf-8"><title>Gaia</title>
<p>The dashboard of this Gaia was not built. In a checkout of Gaia, <code>make dashboard</code>
builds it (with Node.js); the API itself works without it.</p>"""


def url(address: str, token: str | None = None, route: str | None = None) -> str:
    """The dashboard's address on a server at ``address`` (``host:port`` or a URL),
    carrying the API's ``token`` in the fragment (never sent to a server) and the page's
    ``route`` (such as ``/ns/triangle``)."""
    base = address if "://" in address else f"http://{address}"
    parts = [p for p in (f"token={token}" if token else "", route or "") if p]
    return base.rstrip("/") + "/ui/" + ("#" + "&".join(parts) if parts else "")


async def _index(request: web.Request) -> web.StreamResponse:
    page = BUNDLE / "index.html"
    if not page.is_file():
        return web.Response(text=MISSING, content_type="text/html", status=503, headers=HEADERS)
    return web.FileResponse(page, headers=HEADERS)


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = (BUNDLE / "assets" / name).resolve()
    if path.parent != (BUNDLE / "assets").resolve() or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=HEADERS)


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


def add_routes(app: web.Application) -> None:
    """``GET /ui/`` (the page), ``/ui/assets/NAME`` (its files); ``/`` and ``/ui`` lead there."""
    app.router.add_get("/", _to_index)
    app.router.add_get("/ui", _to_index)
    app.router.add_get("/ui/", _index)
    app.router.add_get("/ui/assets/{name}", _asset)
