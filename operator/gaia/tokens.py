"""Where a client finds the bearer token of the server it calls.

In order: the client's config ``token``; the environment variable ``GAIA_TOKEN``; for a
server on this machine, the file its user's ``gaia serve`` left (``~/.gaia/tokens/PORT``,
readable by that user alone); for a cluster, the current kubeconfig context's token. Kept
apart from the server (no aiohttp), so the client stays light.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "find_token",
    "kubeconfig_token",
    "new_token",
    "read_token_file",
    "remove_token_file",
    "token_file",
    "write_token_file",
]

logger = logging.getLogger(__name__)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_file(port: int) -> Path:
    """Where a server on this machine leaves its token for clients of the same user."""
    return Path.home() / ".gaia" / "tokens" / str(port)


def write_token_file(port: int, token: str) -> Path:
    """Write ``token`` readable by this user alone (0600, in a 0700 folder)."""
    path = token_file(port)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(aside, path)
    return path


def read_token_file(port: int) -> str | None:
    try:
        return token_file(port).read_text().strip() or None
    except OSError:
        return None


def remove_token_file(port: int, token: str) -> None:
    """At shutdown: the file goes, unless another server has written its own since."""
    if read_token_file(port) == token:
        try:
            token_file(port).unlink()
        except OSError as exc:
            logger.debug("could not remove the token file: %s", exc)


def is_local(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def kubeconfig_token() -> str | None:
    """The current kubeconfig context's user token, where it has one (a static token;
    `kubectl create token NAME` prints one to put there, or in GAIA_TOKEN)."""
    paths = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    for path in paths.split(os.pathsep):
        try:
            config: Any = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(config, dict):
            continue
        current = config.get("current-context")
        context = _named(config.get("contexts"), current).get("context") or {}
        user = _named(config.get("users"), context.get("user")).get("user") or {}
        token = user.get("token")
        if isinstance(token, str) and token:
            return token
        token_path = user.get("tokenFile")
        if isinstance(token_path, str):
            try:
                return Path(token_path).read_text().strip() or None
            except OSError:
                return None
    return None


def _named(entries: Any, name: Any) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return {}


def find_token(configured: Any, hostname: str, port: int) -> str | None:
    """The token to send to ``hostname:port`` (see the module docstring)."""
    if isinstance(configured, str) and configured:
        return configured
    if token := os.environ.get("GAIA_TOKEN"):
        return token
    if is_local(hostname) and (token := read_token_file(port)):
        return token
    return kubeconfig_token()
