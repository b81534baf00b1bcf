"""Argo CD's health check for GaiaNamespaces, run the way Argo CD runs it.

Argo CD (util/lua/lua.go) runs a health script in gopher-lua, a Lua 5.1, with only the
base, table and package libraries and a restricted ``os`` (no string, io, math or debug),
sets the resource as the global ``obj`` (JSON objects and arrays become tables), runs the
script as a chunk and reads the table it returns: ``status`` must be one of Argo CD's
health codes, ``message`` is shown beside it. Here the same, in a real Lua 5.1 (lupa).

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

GITOPS = Path(__file__).resolve().parents[2] / "examples" / "gitops"
SCRIPT = GITOPS / "argocd" / "health.lua"
CONFIG_MAP = GITOPS / "argocd" / "argocd-cm.yaml"
KEY = "resource.customizations.health.gaia.dev_GaiaNamespace"
CODES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# What Argo CD's VM opens: base, table, package, and an `os` with only time and date.
_SANDBOX = """
string, io, math, debug, coroutine = nil, nil, nil, nil, nil
os = {time = os.time, date = os.date}
"""


def installed_script() -> str:
    """The script as users install it: the argocd-cm snippet's value."""
    return str(yaml.safe_load(CONFIG_MAP.read_text())["data"][KEY])


def health(resource: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Argo CD's verdict on ``resource`` (a GaiaNamespace as the API server returns it)."""
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(register_eval=False, register_builtins=False)
    assert lua.execute("return _VERSION") == "Lua 5.1"
    lua.execute(_SANDBOX)
    lua.globals()["obj"] = lua.table_from(resource, recursive=True)
    returned = lua.execute(script if script is not None else installed_script())
    assert lua.eval("type")(returned) == "table", f"the script returned {returned!r}"
    verdict = {str(k): str(v) for k, v in returned.items()}
    assert verdict.get("status") in CODES, verdict  # else Argo CD shows Unknown
    return verdict
