"""Gaia: run networks of dependent computations, standalone or on Kubernetes.

The client API::

    import gaia
    flow = gaia.Gaia({"gaia_host": "localhost:24442"})
    flow.command(gaia.load_yaml("examples/triangle/commands.yaml"))
    flow.merge("triangle", gaia.load_yaml("examples/triangle/processes.yaml"))
    flow.status("triangle")["status"]["state"]
"""

from gaia.client import Gaia, load_yaml
from gaia.errors import (
    ConnectionFailed,
    Forbidden,
    GaiaError,
    InvalidRequest,
    NotFound,
    StoreError,
    TaskFailed,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "ConnectionFailed",
    "Forbidden",
    "Gaia",
    "GaiaError",
    "InvalidRequest",
    "NotFound",
    "StoreError",
    "TaskFailed",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "load_yaml",
]
__version__ = "0.1.0"
