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
    plain_keys,
    reduce_value,
    render,
    template_parts,
)
from gaia.engine.model import Command, Process, ProcessSpec
from gaia.errors import InvalidRequest

__all__ = ["expand", "fan_out"]


def fan_out(
    spec: ProcessSpec, defaults: Mapping[str, str] | None = None
) -> list[tuple[str, dict[str, str]]]:
    """The (process key, scalar vars) of every combination of the spec's list vars; each
    combination's vars start from ``defaults``, which the spec's own vars override."""
    list_names = sorted(name for name, value in spec.vars.items() if isinstance(value, list))
    scalars = dict(defaults or {})
    scalars.update((name, value) for name, value in spec.vars.items() if isinstance(value, str))
    if not list_names:
        return [(spec.key, scalars)]
    reduced = [_reduced(spec, name) for name in list_names]  # each value's part of keys
    if len(list_names) == 1:  # the usual fan-out, over one list: no product to take
        name, prefix = list_names[0], spec.key + "-"
        keys = [prefix + part for part in reduced[0]]
        combos = list(
            zip(keys, [{**scalars, name: value} for value in spec.vars[name]], strict=True)
        )
    else:
        combos = []
        for values, parts in zip(
            itertools.product(*(spec.vars[name] for name in list_names)),
            itertools.product(*reduced),
            strict=True,
        ):
            combo = scalars.copy()
            combo.update(zip(list_names, values, strict=True))
            combos.append(("-".join([spec.key, *parts]), combo))
    if len({key for key, _ in combos}) == len(combos):
        return combos
    seen: dict[str, dict[str, str]] = {}
    for key, combo in combos:
        named = {name: combo[name] for name in list_names}
        if key in seen:
            raise InvalidRequest(
                f"process {spec.key!r}: fan-out values {seen[key]} and {named} both name "
                f"the process {key!r}; make the values differ in letters or digits"
            )
        seen[key] = named
    return combos


def _reduced(spec: ProcessSpec, name: str) -> list[str]:
    """The values of list var ``name``, reduced to what names their processes."""
    values = spec.vars[name]
    assert isinstance(values, list)
    joined = "".join(values)
    if joined.isascii() and joined.isalnum() and all(values):  # the usual v1, v2...: as is
        return values
    reduced = [reduce_value(value) for value in values]
    for value, part in zip(values, reduced, strict=True):
        if not part:
            raise InvalidRequest(
                f"process {spec.key!r}: fan-out value {value!r} of var {name!r} has no "
                "letter, digit or '-' to name its process by"
            )
    return reduced


def expand(spec: ProcessSpec, commands: Mapping[str, Command]) -> list[Process]:
    """Every leaf process of ``spec``; raises InvalidRequest naming what is wrong."""
    command = commands.get(spec.command)
    if command is None:
        raise InvalidRequest(f"process {spec.key!r} uses unknown command {spec.command!r}")
    processes: list[Process] = []
    defaults = {name: d for name, d in command.vars.items() if d is not None}
    checked: set[tuple[str, ...]] = set()  # what every combination shares is checked once
    combos = fan_out(spec, defaults)
    for key, known in combos if command.composite else combos[:1]:
        # A spec key and reduced values make a valid key, unless too long.
        if len(key) > MAX_NAME and (problem := name_problem(key, "expanded process key")):
            raise InvalidRequest(f"process {key!r}: {problem}")
        if not checked:
            _check_templates(spec.inputs, known, f"process {key!r}", "input")
            _check_templates(spec.outputs, known, f"process {key!r}", "output")
        inputs = _render_keys(spec.inputs, known, key, "input")
        outputs = _render_keys(spec.outputs, known, key, "output")
        _invoke(key, spec.key, command, inputs, outputs, known, commands, (), processes, checked)
    if not command.composite and len(combos) > 1:
        processes += _leaves_alike(spec, command, combos[1:])
    return processes


def _leaves_alike(
    spec: ProcessSpec, command: Command, combos: list[tuple[str, dict[str, str]]]
) -> list[Process]:
    """The leaves of a fan-out after its first, of a leaf command: each binds the same
    names and sets the same vars as the first, which passed the checks; only the values
    differ. The loop a merge of 1,000,000 processes runs 1,000,000 times, kept tight:
    each binding's keys are rendered and checked a column at a time."""
    if too_long := [key for key, _ in combos if len(key) > MAX_NAME]:
        key = too_long[0]
        raise InvalidRequest(f"process {key!r}: {name_problem(key, 'expanded process key')}")
    vars_ = [known for _, known in combos]
    if vars_[0].keys() != command.vars.keys():  # vars for the keys alone: left out
        names = tuple(command.vars)
        vars_ = [{name: known[name] for name in names} for known in vars_]
    # Otherwise each combination is exactly the leaf's vars: used as it is.
    return list(
        map(
            Process,
            [key for key, _ in combos],
            itertools.repeat(spec.key),
            itertools.repeat(command.key),
            _bindings(combos, spec.inputs, "input"),
            _bindings(combos, spec.outputs, "output"),
            vars_,
            itertools.repeat(frozenset((command.key,))),
        )
    )


def _bindings(
    combos: list[tuple[str, dict[str, str]]], templates: Mapping[str, str], what: str
) -> list[dict[str, str]]:
    """For each combination, its inputs or outputs: name -> data key."""
    columns = [_column(combos, name, template, what) for name, template in templates.items()]
    if len(columns) == 1:  # one input, one output: the usual
        (name,) = templates
        return [{name: key} for key in columns[0]]
    names = tuple(templates)
    if not names:
        return [{} for _ in combos]
    return [dict(zip(names, keys, strict=True)) for keys in zip(*columns, strict=True)]


def _column(
    combos: list[tuple[str, dict[str, str]]], name: str, template: str, what: str
) -> list[str]:
    """The data key ``template`` renders to for each combination, each checked."""
    literals, names = template_parts(template)
    if len(names) == 1:  # the usual "out/{{V}}"
        before, var, after = literals[0], names[0], literals[1]
        keys = [before + known[var] + after for _, known in combos]
    else:
        keys = [render(template, known) for _, known in combos]
    if not plain_keys(keys):  # the usual keys pass at once; otherwise each is asked
        for (process, _), key in zip(combos, keys, strict=True):
            if problem := data_key_problem(key):
                raise InvalidRequest(f"process {process!r}: {what} {name!r}: {problem}")
    return keys


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
