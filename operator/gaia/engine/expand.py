"""Expansion: a user's process spec becomes leaf processes.

Fan-out first (one combination of list values per process, keyed by the reduced values
in var-name order), then composites, recursively: each step becomes ``<process>:<step>``
and each intermediate name a private key under ``.private/<process>/``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from gaia.engine.keys import (
    PRIVATE_PREFIX,
    data_key_problem,
    missing_vars,
    name_problem,
    reduce_value,
    render,
)
from gaia.engine.model import Command, Process, ProcessSpec
from gaia.errors import InvalidRequest

__all__ = ["expand", "fan_out"]


def fan_out(spec: ProcessSpec) -> list[tuple[str, dict[str, str]]]:
    """The (process key, scalar vars) of every combination of the spec's list vars."""
    list_names = sorted(name for name, value in spec.vars.items() if isinstance(value, list))
    scalars = {name: value for name, value in spec.vars.items() if isinstance(value, str)}
    if not list_names:
        return [(spec.key, scalars)]
    combos = []
    for values in itertools.product(*(spec.vars[name] for name in list_names)):
        suffix = []
        for name, value in zip(list_names, values, strict=True):
            reduced = reduce_value(value)
            if not reduced:
                raise InvalidRequest(
                    f"process {spec.key!r}: fan-out value {value!r} of var {name!r} has no "
                    "letter, digit or '-' to name its process by"
                )
            suffix.append(reduced)
        key = "-".join([spec.key, *suffix])
        combos.append((key, {**scalars, **dict(zip(list_names, values, strict=True))}))
    seen: dict[str, dict[str, str]] = {}
    for key, combo in combos:
        if key in seen:
            raise InvalidRequest(
                f"process {spec.key!r}: fan-out values {seen[key]} and {combo} both name "
                f"the process {key!r}; make the values differ in letters or digits"
            )
        seen[key] = combo
    return combos


def expand(spec: ProcessSpec, commands: Mapping[str, Command]) -> list[Process]:
    """Every leaf process of ``spec``; raises InvalidRequest naming what is wrong."""
    command = commands.get(spec.command)
    if command is None:
        raise InvalidRequest(f"process {spec.key!r} uses unknown command {spec.command!r}")
    processes: list[Process] = []
    for key, values in fan_out(spec):
        where = f"process {key!r}"
        if problem := name_problem(key, "expanded process key"):
            raise InvalidRequest(f"{where}: {problem}")
        known = {name: d for name, d in command.vars.items() if d is not None} | values
        inputs = _render_keys(spec.inputs, known, where, "input")
        outputs = _render_keys(spec.outputs, known, where, "output")
        _invoke(key, spec.key, command, inputs, outputs, values, commands, (), processes)
    return processes


def _render_keys(
    bindings: Mapping[str, str], values: Mapping[str, str], where: str, what: str
) -> dict[str, str]:
    rendered = {}
    for name, template in bindings.items():
        if unknown := missing_vars([template], values):
            raise InvalidRequest(
                f"{where}: {what} {name!r} ({template!r}) uses {unknown}, which name no var"
            )
        key = render(template, values)
        if problem := data_key_problem(key):
            raise InvalidRequest(f"{where}: {what} {name!r}: {problem}")
        rendered[name] = key
    return rendered


def _invoke(
    key: str,
    spec_key: str,
    command: Command,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    values: Mapping[str, str],
    commands: Mapping[str, Command],
    enclosing: tuple[str, ...],
    into: list[Process],
) -> None:
    where = f"process {key!r}"
    for bound, declared, what in (
        (inputs, command.inputs, "input"),
        (outputs, command.outputs, "output"),
    ):
        if missing := sorted(declared.keys() - bound.keys()):
            raise InvalidRequest(
                f"{where}: command {command.key!r} {what}s {missing} are not bound"
            )
        if extra := sorted(bound.keys() - declared.keys()):
            raise InvalidRequest(f"{where}: command {command.key!r} has no {what}s {extra}")
    resolved = {}
    for name, default in command.vars.items():
        value = values.get(name, default)
        if value is None:
            raise InvalidRequest(f"{where}: var {name!r} of command {command.key!r} has no value")
        resolved[name] = value
    if not command.composite:
        into.append(
            Process(
                key=key,
                spec=spec_key,
                command=command.key,
                inputs=dict(inputs),
                outputs=dict(outputs),
                vars=resolved,
                uses=frozenset((*enclosing, command.key)),
            )
        )
        return
    names = {**inputs, **outputs}
    for step in command.steps:
        for name in (*step.inputs.values(), *step.outputs.values()):
            names.setdefault(name, f"{PRIVATE_PREFIX}{key}/{name}")
    for step in command.steps:
        inner = commands[step.command]
        _invoke(
            f"{key}:{step.key}",
            spec_key,
            inner,
            {slot: names[name] for slot, name in step.inputs.items()},
            {slot: names[name] for slot, name in step.outputs.items()},
            {var: render(template, resolved) for var, template in step.vars.items()},
            commands,
            (*enclosing, command.key),
            into,
        )
