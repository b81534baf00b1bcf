"""Gaia's exceptions: one tree, rooted at :class:`GaiaError`.

    GaiaError                   anything Gaia raises on purpose
    ├── InvalidRequest          bad input: rejected whole, nothing changed (HTTP 400)
    │   ├── NotFound            names a namespace, process, command or key that does not exist (404)
    │   ├── TooLarge            a request over the server's size limit (413)
    │   └── NotJson             a body sent as something other than application/json (415)
    ├── Unauthorized            no token, or one the server does not accept (401)
    ├── Forbidden               a caller who may not do this, or a request from another site (403)
    ├── StoreError              the data store failed to read, write or publish a key
    ├── TaskFailed              a task could not be started or run by its executor
    ├── Unavailable             the Kubernetes API server is away: nothing changed, retry (503)
    └── ConnectionFailed        the client could not reach a Gaia server

Messages name the namespace, process and keys involved, so that the text alone tells a
user what to fix. The HTTP API sends ``str(error)`` as ``{"error": ...}`` and the client
raises the same class again from the status code.
"""

from __future__ import annotations

__all__ = [
    "ConnectionFailed",
    "Forbidden",
    "GaiaError",
    "InvalidRequest",
    "NotFound",
    "NotJson",
    "StoreError",
    "TaskFailed",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class GaiaError(Exception):
    """Base of every error Gaia raises on purpose."""

    http_status = 500


class InvalidRequest(GaiaError):
    """The request is malformed or violates a rule; nothing was changed."""

    http_status = 400


class NotFound(InvalidRequest):
    """A namespace, process, command or data key named in a request does not exist."""

    http_status = 404


class TooLarge(InvalidRequest):
    """The request body exceeds the server's limit."""

    http_status = 413


class NotJson(InvalidRequest):
    """A request body not sent as ``application/json``."""

    http_status = 415


class Unauthorized(GaiaError):
    """No bearer token, or one the server does not accept; nothing was done."""

    http_status = 401


class Forbidden(GaiaError):
    """The caller may not do this (Kubernetes RBAC said no), or the request came from
    another web site or named another host; nothing was done."""

    http_status = 403


class StoreError(GaiaError):
    """The data store failed to read, write or publish a key."""


class TaskFailed(GaiaError):
    """An executor could not start or run a task."""


class Unavailable(GaiaError):
    """A service the server depends on (the Kubernetes API server) cannot take the
    request now; nothing was changed, and the same request can be sent again."""

    http_status = 503


class ConnectionFailed(GaiaError):
    """The client could not reach the Gaia server."""

    http_status = 503
