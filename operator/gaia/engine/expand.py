"""Expansion: a user's process spec becomes leaf processes.

Fan-out first (one combination of list values per process, keyed by the reduced values
in var-name order), then composites, recursively: each step becomes ``<process>:<step>``
and each intermediate name a private key under ``.private/<process>/``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import cast

from gaia.engine.keys import (
    MAX_NAME,
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
    reduced: list[dict[str, str]] = []  # per list var: value -> its part of process keys
    for name in list_names:
        parts = {}
        for value in spec.vars[name]:
            parts[value] = reduce_value(value)
            if not parts[value]:
                raise InvalidRequest(
                    f"process {spec.key!r}: fan-out value {value!r} of var {name!r} has no "
                    "letter, digit or '-' to name its process by"
                )
        reduced.append(parts)
    combos = []
    if len(list_names) == 1:  # the usual fan-out, over one list: no product to take
        name, parts, prefix = list_names[0], reduced[0], spec.key + "-"
        for value in spec.vars[name]:
            combo = scalars.copy()
            combo[name] = value
            combos.append((prefix + parts[value], combo))
    else:
        for values in itertools.product(*(spec.vars[name] for name in list_names)):
            key = "-".join(
                [spec.key, *(parts[v] for parts, v in zip(reduced, values, strict=True))]
            )
            combo = scalars.copy()
            combo.update(zip(list_names, values, strict=True))
            combos.append((key, combo))
    if len({key for key, _ in combos}) == len(combos):
        return combos
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
    defaults = {name: d for name, d in command.vars.items() if d is not None}
    checked: set[tuple[str, ...]] = set()  # what every combination shares is checked once
    uses = frozenset((command.key,))
    for key, values in fan_out(spec):
        # A spec key and reduced values make a valid key, unless too long.
        if len(key) > MAX_NAME and (problem := name_problem(key, "expanded process key")):
            raise InvalidRequest(f"process {key!r}: {problem}")
        known = defaults | values
        if not checked:
            _check_templates(spec.inputs, known, f"process {key!r}", "input")
            _check_templates(spec.outputs, known, f"process {key!r}", "output")
        inputs = _render_keys(spec.inputs, known, key, "input")
        outputs = _render_keys(spec.outputs, known, key, "output")
        if checked and not command.composite:
            # Every combination binds the same names and sets the same vars: what the
            # first one passed, each passes; only the values differ.
            given = {name: known[name] for name in command.vars}
            processes.append(Process(key, spec.key, command.key, inputs, outputs, given, uses))
            continue
        _invoke(key, spec.key, command, inputs, outputs, values, commands, (), processes, checked)
    return processes


def _check_templates(
    bindings: Mapping[str, str], values: Mapping[str, str], where: str, what: str
) -> None:
    """Every placeholder names a var: the same names for every fan-out combination."""
    for name, template in bindings.items():
        if unknown := missing_vars([template], values):
            raise InvalidRequest(
                f"{where}: {what} {name!r} ({template!r}) uses {unknown}, which name no var"
            )


def _render_keys(
    bindings: Mapping[str, str], values: Mapping[str, str], process: str, what: str
) -> dict[str, str]:
    rendered = {}
    for name, template in bindings.items():
        key = render(template, values)
        if problem := data_key_problem(key):
            raise InvalidRequest(f"process {process!r}: {what} {name!r}: {problem}")
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
    checked: set[tuple[str, ...]],
) -> None:
    # The names bound are the same for every fan-out combination (the spec's or a step's):
    # checked once per command and place in the composites.
    shape = (command.key, *enclosing)
    if shape not in checked:
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
        checked.add(shape)
    given = {name: values.get(name, default) for name, default in command.vars.items()}
    if None in given.values():
        name = next(name for name, value in given.items() if value is None)
        raise InvalidRequest(
            f"process {key!r}: var {name!r} of command {command.key!r} has no value"
        )
    resolved = cast(dict[str, str], given)
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
            checked,
        )
