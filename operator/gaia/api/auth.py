"""Who may call the HTTP API, and from where.

Every request but ``/health`` and the dashboard's static files passes :func:`guarded`:

- the ``Host`` header must name this server (a DNS-rebinding page names its own), and an
  ``Origin`` header, when a browser sends one, must be this server itself (any other web
  page gets 403 before anything runs);
- a ``POST`` body must be ``application/json`` (415): a browser's "simple" cross-origin
  request, which needs no preflight, cannot be;
- the caller must show a bearer token (401), which the host's :class:`Guard` checks.

Then each call is authorized on what it touches (:class:`Access`): the standalone guard
lets its one user do everything, the operator's asks Kubernetes RBAC (kube/access.py).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gaia.errors import Forbidden, NotJson, Unauthorized

__all__ = ["Access", "Guard", "TokenGuard", "binds_everywhere", "guarded", "loopback_names"]

PUBLIC = ("/health", "/", "/ui", "/ui/")  # and /ui/assets/*: the page asks for the token


@dataclass(frozen=True)
class Access:
    """What a call does, in the words of Kubernetes RBAC: ``verbs`` on a ``resource`` of
    the group ``gaia.dev``, for one Gaia namespace (``root``) or, without one, for all."""

    verbs: tuple[str, ...]  # each needed: get, list, create, patch, update
    resource: str  # gaianamespaces, gaiacommands, gaiaworkers
    root: str | None = None


class Guard(Protocol):
    """A host's answer to "who is this, and may they?"."""

    def hint(self) -> str:
        """How a caller gets a token: said in every 401."""
        ...

    async def authenticate(self, token: str) -> Any:
        """The caller the token names; Unauthorized if none."""
        ...

    async def authorize(self, caller: Any, access: Access) -> None:
        """Forbidden (naming what was refused) unless ``caller`` may do ``access``."""
        ...


class TokenGuard:
    """The standalone server's guard: one secret token, one user who may do everything."""

    def __init__(self, token: str, hint: str) -> None:
        self.token = token
        self._hint = hint

    def hint(self) -> str:
        return self._hint

    async def authenticate(self, token: str) -> Any:
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Unauthorized(f"the token is not this server's; {self._hint}")
        return "owner"

    async def authorize(self, caller: Any, access: Access) -> None:
        return None


def guarded(guard: Guard, hosts: Callable[[], Iterable[str]] | None) -> Middleware:
    """The middleware. ``hosts`` gives the names this server answers to (host or
    host:port, lowercase); None accepts any (a server bound to every interface, whose
    names it cannot know, relies on its token alone)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/health":
            return await handler(request)
        host = (request.headers.get("Host") or "").lower()
        if hosts is not None and host not in set(hosts()):
            raise Forbidden(
                f"this server does not answer to the name {host!r} (a page of another site "
                "may be trying to reach it); use the address it was started with"
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() not in (f"http://{host}", f"https://{host}"):
            raise Forbidden(f"requests from {origin} are refused: the API is not for other sites")
        if path in PUBLIC or path.startswith("/ui/assets/"):
            return await handler(request)
        if request.method == "POST" and request.content_type != "application/json":
            raise NotJson(
                f"the body must be JSON, sent as 'Content-Type: application/json' "
                f"(got {request.content_type!r})"
            )
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(f"this server needs a bearer token; {guard.hint()}")
        request["caller"] = await guard.authenticate(token.strip())
        return await handler(request)

    return middleware


def loopback_names(bound: str, port: int) -> set[str]:
    """What a client on this machine may call a server bound to ``bound``:``port``."""
    names = {"localhost", "127.0.0.1", "[::1]", bound.lower()}
    if ":" in bound and not bound.startswith("["):
        names.add(f"[{bound.lower()}]")
    return names | {f"{name}:{port}" for name in names}


def binds_everywhere(bound: str) -> bool:
    if bound in ("", "0.0.0.0", "::"):
        return True
    try:
        return not ipaddress.ip_address(bound.strip("[]")).is_loopback
    except ValueError:
        return bound.lower() != "localhost"
