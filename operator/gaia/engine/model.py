"""The model: commands (leaf or composite), process specs as users write them, and the
leaf processes they expand into. Parsing from plain dicts (YAML/JSON) lives here too, so
that every malformed field is reported with the key that holds it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gaia.engine.keys import (
    data_key_problem,
    missing_vars,
    name_problem,
    normalise_data_key,
    text_problem,
)
from gaia.engine.resources import Resources, parse_env, parse_resources
from gaia.errors import InvalidRequest

__all__ = ["Command", "Process", "ProcessSpec", "Step", "parse_command", "parse_process"]

Scalar = str | int | float | bool
VarValue = str | list[str]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a composite command: a command with its names bound to the composite's."""

    key: str
    command: str
    inputs: Mapping[str, str]  # step command's input -> composite name
    outputs: Mapping[str, str]
    vars: Mapping[str, str]  # step command's var -> template over the composite's vars


@dataclass(frozen=True, slots=True)
class Command:
    """A global, reusable template. Leaf commands run; composites expand into steps.

    For a leaf, ``inputs``/``outputs`` map names to container paths; for a composite
    they map names to ``""``. ``vars`` maps names to defaults (None: no default).
    """

    key: str
    image: str | None = None
    command: tuple[str, ...] = ()
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str | None] = field(default_factory=dict)
    stdout: str | None = None
    timeout: float | None = None  # seconds of wall time
    steps: tuple[Step, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # set in the task's clean environment
    network: bool = False  # whether the task may use the network (a sandbox has none)
    resources: Resources | None = None  # cpu, memory and processes a task may use
    # On a cluster, run the task's pod as root (uid 0, still without capabilities); tasks
    # run as an unprivileged user otherwise. A sandbox on one machine never gives root.
    run_as_root: bool = False

    @property
    def composite(self) -> bool:
        return bool(self.steps)

    def to_dict(self) -> dict[str, Any]:
        if self.composite:
            return {
                "key": self.key,
                "inputs": list(self.inputs),
                "outputs": list(self.outputs),
                "vars": dict(self.vars),
                "steps": [
                    {
                        "key": step.key,
                        "command": step.command,
                        "inputs": dict(step.inputs),
                        "outputs": dict(step.outputs),
                        "vars": dict(step.vars),
                    }
                    for step in self.steps
                ],
            }
        out: dict[str, Any] = {
            "key": self.key,
            "image": self.image,
            "command": list(self.command),
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "vars": dict(self.vars),
        }
        if self.stdout is not None:
            out["stdout"] = self.stdout
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.env:
            out["env"] = dict(self.env)
        if self.network:
            out["network"] = True
        if self.resources:
            out["resources"] = self.resources.to_dict()
        if self.run_as_root:
            out["runAsRoot"] = True
        return out


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """A process as the user wrote it, before fan-out and composite expansion."""

    key: str
    command: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    vars: Mapping[str, VarValue]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "command": self.command,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "vars": {name: list(v) if isinstance(v, list) else v for name, v in self.vars.items()},
        }


# Not frozen: a merge makes one per leaf process (1,000,000 for the largest), and a frozen
# dataclass's __init__ sets each field through object.__setattr__, three times as slow.
# Treat it as frozen all the same: the graph's indexes are built from its bindings.
@dataclass(slots=True)
class Process:
    """A leaf process: one runnable invocation of a leaf command in a namespace."""

    key: str
    spec: str  # the user's process key it expanded from
    command: str  # a leaf command's key
    inputs: Mapping[str, str]  # command input -> data key
    outputs: Mapping[str, str]
    vars: Mapping[str, str]  # the command's vars, resolved
    uses: frozenset[str]  # every command involved: the leaf and enclosing composites


def _mapping(raw: object, where: str, field_name: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{where}: '{field_name}' must be a mapping, got {_kind(raw)}")
    for name in raw:
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where}: '{field_name}' has a non-string name {name!r}")
        _check_text(name, f"{where}: '{field_name}' name {_shown(name)}")
    return dict(raw)


def _shown(text: str) -> str:
    """``text`` quoted for a message, even when it holds a lone surrogate."""
    return repr(text.encode("utf-8", "backslashreplace").decode())


def _check_text(text: str, where: str) -> None:
    if problem := text_problem(text):
        raise InvalidRequest(f"{where} {problem}")


def _kind(value: object) -> str:
    return type(value).__name__


def _scalar(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{where}: {value!r} is not a usable value")
    if isinstance(value, str):
        if problem := text_problem(value):  # the message is made only when needed
            raise InvalidRequest(f"{where}: {_shown(value)} {problem}")
        return value
    if isinstance(value, int | float):
        return str(value)
    raise InvalidRequest(f"{where}: expected a string or number, got {_kind(value)}")


def _check_nesting(where: str, inputs: Mapping[str, str], written: list[tuple[str, str]]) -> None:
    """No path inside a written one (it would be published as part of it, or be both a
    file and a folder), nor a written path inside an input (read-only). Inputs inside an
    input folder are fine: the inner one is mounted over it."""
    every = [(f"input {name!r}", path, False) for name, path in inputs.items()]
    every += [(what, path, True) for what, path in written]
    for outer_what, outer, outer_written in every:
        folder = outer.rstrip("/") + "/"
        for inner_what, inner, inner_written in every:
            if inner.rstrip("/").startswith(folder) and (outer_written or inner_written):
                raise InvalidRequest(
                    f"{where}: {inner_what} path {inner!r} lies inside {outer_what} path "
                    f"{outer!r}; give each its own place"
                )


# Top-level folders the sandbox or the container runtime provides itself: no container
# path may lie under them (the staging of tasks refuses them too).
RUNTIME_OWNED = frozenset({"proc", "dev", "sys"})


def _container_paths(raw: object, where: str, field_name: str) -> dict[str, str]:
    paths = {}
    for name, path in _mapping(raw, where, field_name).items():
        if not isinstance(path, str) or not path.startswith("/") or text_problem(path):
            shown = _shown(path) if isinstance(path, str) else repr(path)
            raise InvalidRequest(
                f"{where}: {field_name} {name!r} must be an absolute container path, got {shown}"
            )
        segments = path.rstrip("/").split("/")[1:]
        if ".." in segments:
            raise InvalidRequest(f"{where}: {field_name} {name!r} path {path!r} contains '..'")
        if not segments or "" in segments or "." in segments:
            raise InvalidRequest(
                f"{where}: {field_name} {name!r} path {path!r} is the root or has an empty "
                "or '.' segment"
            )
        if segments[0] in RUNTIME_OWNED:
            raise InvalidRequest(
                f"{where}: {field_name} {name!r} path {path!r} is under /{segments[0]}, which "
                "the sandbox or container runtime provides"
            )
        paths[name] = path
    return paths


def _names(raw: object, where: str, field_name: str) -> dict[str, str | None]:
    """A composite's inputs, outputs or vars: a list of names (or a mapping to defaults)."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        pairs: dict[str, Any] = {}
        for name in raw:
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"{where}: '{field_name}' has a non-string name {name!r}")
            if name in pairs:
                raise InvalidRequest(f"{where}: '{field_name}' names {name!r} twice")
            pairs[name] = None
        return pairs
    return {
        name: None if value is None else _scalar(value, f"{where}: {field_name} {name!r}")
        for name, value in _mapping(raw, where, field_name).items()
    }


def parse_command(raw: object) -> Command:
    """A :class:`Command` from its dict form; checks that need other commands come later."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"a command must be a mapping, got {_kind(raw)}")
    key = raw.get("key")
    if problem := name_problem(key, "command key"):
        raise InvalidRequest(problem)
    assert isinstance(key, str)
    where = f"command {key!r}"
    if raw.get("steps") is not None:
        return _parse_composite(key, raw, where)
    known = {"key", "image", "command", "inputs", "outputs", "vars", "stdout", "timeout"}
    known |= {"env", "network", "resources", "runAsRoot"}
    if unknown := sorted(set(raw) - known - {"steps"}):
        raise InvalidRequest(_unknown_fields(where, unknown, known))
    line = raw.get("command")
    if isinstance(line, str):
        raise InvalidRequest(f'{where}: \'command\' must be a list of strings, e.g. ["echo", "hi"]')
    if not isinstance(line, list) or not line:
        raise InvalidRequest(f"{where}: 'command' must be a non-empty list of strings")
    argv = tuple(_scalar(arg, f"{where}: command line") for arg in line)
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image or text_problem(image)):
        raise InvalidRequest(f"{where}: 'image' must be a non-empty string")
    inputs = _container_paths(raw.get("inputs"), where, "input")
    outputs = _container_paths(raw.get("outputs"), where, "output")
    defaults = {
        name: None if value is None else _scalar(value, f"{where}: var {name!r}")
        for name, value in _mapping(raw.get("vars"), where, "vars").items()
    }
    stdout = raw.get("stdout")
    if stdout is not None and (
        not isinstance(stdout, str) or not stdout.startswith("/") or text_problem(stdout)
    ):
        raise InvalidRequest(f"{where}: 'stdout' must be an absolute container path")
    timeout = raw.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidRequest(f"{where}: 'timeout' must be a positive number of seconds")
    network = raw.get("network", False)
    if not isinstance(network, bool):
        raise InvalidRequest(f"{where}: 'network' must be true or false, got {network!r}")
    run_as_root = raw.get("runAsRoot", False)
    if not isinstance(run_as_root, bool):
        raise InvalidRequest(f"{where}: 'runAsRoot' must be true or false, got {run_as_root!r}")
    written = [(f"output {name!r}", path) for name, path in outputs.items()]
    for what, path in [*written, *([("'stdout'", stdout)] if stdout else [])]:
        if path.count("/") == 1:  # "/o": nowhere to stage it, in a sandbox or a pod
            raise InvalidRequest(
                f"{where}: {what} path {path!r} is a file directly under '/'; "
                f"put it in a directory, such as '/out{path}'"
            )
    if clash := sorted(set(inputs.values()) & set(outputs.values())):
        raise InvalidRequest(f"{where}: paths {clash} are both an input and an output")
    _check_nesting(where, inputs, written + ([("'stdout'", stdout)] if stdout else []))
    for paths, what in ((inputs, "inputs"), (outputs, "outputs")):
        if len(set(paths.values())) != len(paths):
            raise InvalidRequest(f"{where}: two {what} share one container path")
    if unknown_vars := missing_vars(argv, defaults):
        raise InvalidRequest(
            f"{where}: the command line uses {{{{{unknown_vars[0]}}}}} but declares no var "
            f"{unknown_vars[0]!r} (unknown: {unknown_vars}; vars: {sorted(defaults)})"
        )
    return Command(
        key=key,
        image=image,
        command=argv,
        inputs=inputs,
        outputs=outputs,
        vars=defaults,
        stdout=stdout,
        timeout=float(timeout) if timeout is not None else None,
        env=parse_env(raw.get("env"), where),
        network=network,
        resources=parse_resources(raw.get("resources"), where) or None,
        run_as_root=run_as_root,
    )


# Pod settings that would reach the host: a command cannot ask for any of them (Gaia
# writes the pod's security context itself, docs/security.md).
POD_PRIVILEGES = {
    "privileged", "hostPath", "hostNetwork", "hostPID", "hostIPC", "hostUsers",
    "securityContext", "capabilities", "volumes", "volumeMounts", "runAsUser",
    "allowPrivilegeEscalation", "serviceAccountName", "nodeName",
}  # fmt: skip


def _unknown_fields(where: str, unknown: list[str], known: set[str]) -> str:
    message = f"{where}: unknown fields {unknown}; a command has {sorted(known)}"
    if privileged := [name for name in unknown if name in POD_PRIVILEGES]:
        message += (
            f". {privileged} would change the task's pod, which Gaia alone sets up: a task "
            "runs unprivileged, with no capabilities, host paths or host network "
            "('runAsRoot: true' gives it uid 0, see docs/security.md)"
        )
    return message


def _parse_composite(key: str, raw: Mapping[str, Any], where: str) -> Command:
    known = {"key", "inputs", "outputs", "vars", "steps"}
    if unknown := sorted(set(raw) - known):
        raise InvalidRequest(f"{where}: unknown fields {unknown} for a composite command")
    inputs = _names(raw.get("inputs"), where, "inputs")
    outputs = _names(raw.get("outputs"), where, "outputs")
    defaults = _names(raw.get("vars"), where, "vars")
    if clash := sorted(inputs.keys() & outputs.keys()):
        raise InvalidRequest(f"{where}: names {clash} are both an input and an output")
    raw_steps = raw["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise InvalidRequest(f"{where}: 'steps' must be a non-empty list")
    steps: list[Step] = []
    for index, raw_step in enumerate(raw_steps):
        if not isinstance(raw_step, Mapping):
            raise InvalidRequest(f"{where}: step {index} must be a mapping")
        step_key = raw_step.get("key")
        if problem := name_problem(step_key, f"{where}: step key"):
            raise InvalidRequest(problem)
        assert isinstance(step_key, str)
        at = f"{where} step {step_key!r}"
        command = raw_step.get("command")
        if not isinstance(command, str) or not command:
            raise InvalidRequest(f"{at}: 'command' must name a command")
        step_vars = {
            name: _scalar(value, f"{at}: var {name!r}")
            for name, value in _mapping(raw_step.get("vars"), at, "vars").items()
        }
        if unknown_vars := missing_vars(step_vars.values(), defaults):
            raise InvalidRequest(
                f"{at}: vars use {unknown_vars}, which the composite does not declare"
            )
        steps.append(
            Step(
                key=step_key,
                command=command,
                inputs={
                    k: _scalar(v, f"{at}: input {k!r}")
                    for k, v in _mapping(raw_step.get("inputs"), at, "inputs").items()
                },
                outputs={
                    k: _scalar(v, f"{at}: output {k!r}")
                    for k, v in _mapping(raw_step.get("outputs"), at, "outputs").items()
                },
                vars=step_vars,
            )
        )
    _check_step_names(where, steps, inputs.keys(), outputs.keys())
    return Command(
        key=key,
        inputs=dict.fromkeys(inputs, ""),
        outputs=dict.fromkeys(outputs, ""),
        vars=defaults,
        steps=tuple(steps),
    )


def _check_step_names(where: str, steps: list[Step], inputs: Any, outputs: Any) -> None:
    """Each name is produced once, inputs are never produced, outputs always are."""
    seen: set[str] = set()
    producer: dict[str, str] = {}
    for step in steps:
        if step.key in seen:
            raise InvalidRequest(f"{where}: two steps are keyed {step.key!r}")
        seen.add(step.key)
        for name in step.outputs.values():
            if name in inputs:
                raise InvalidRequest(
                    f"{where}: step {step.key!r} writes {name!r}, an input of the composite"
                )
            if name in producer:
                raise InvalidRequest(
                    f"{where}: {name!r} is produced by both step {producer[name]!r} and step {step.key!r}"
                )
            producer[name] = step.key
    for name in outputs:
        if name not in producer:
            raise InvalidRequest(f"{where}: output {name!r} is produced by no step")
    for step in steps:
        for name in step.inputs.values():
            if name not in inputs and name not in producer:
                raise InvalidRequest(
                    f"{where}: step {step.key!r} reads {name!r}, which is neither an input of "
                    "the composite nor produced by a step"
                )


def parse_process(raw: object) -> ProcessSpec:
    """A :class:`ProcessSpec` from its dict form (data keys checked, templates not yet)."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"a process must be a mapping, got {_kind(raw)}")
    key = raw.get("key")
    if problem := name_problem(key, "process key"):
        raise InvalidRequest(problem)
    assert isinstance(key, str)
    where = f"process {key!r}"
    known = {"key", "command", "inputs", "outputs", "vars"}
    if unknown := sorted(set(raw) - known):
        raise InvalidRequest(f"{where}: unknown fields {unknown}; a process has {sorted(known)}")
    command = raw.get("command")
    if not isinstance(command, str) or not command:
        raise InvalidRequest(f"{where}: 'command' must name a command")
    bindings: list[dict[str, str]] = []
    for field_name in ("inputs", "outputs"):
        bound = {}
        for name, data_key in _mapping(raw.get(field_name), where, field_name).items():
            if not isinstance(data_key, str):
                raise InvalidRequest(
                    f"{where}: {field_name[:-1]} {name!r} must be a data key string"
                )
            data_key = normalise_data_key(data_key)
            # Placeholders are checked after substitution; here, the literal parts.
            if problem := data_key_problem(data_key.replace("{{", "x").replace("}}", "x")):
                raise InvalidRequest(f"{where}: {field_name[:-1]} {name!r}: {problem}")
            bound[name] = data_key
        bindings.append(bound)
    values: dict[str, VarValue] = {}
    for name, value in _mapping(raw.get("vars"), where, "vars").items():
        if isinstance(value, list):
            at = f"{where}: var {name!r}"  # one message prefix for a list of 10^5 values
            values[name] = [_scalar(item, at) for item in value]
        else:
            values[name] = _scalar(value, f"{where}: var {name!r}")
    return ProcessSpec(
        key=key, command=command, inputs=bindings[0], outputs=bindings[1], vars=values
    )
