"""How big one request and one namespace may grow: a small GaiaNamespace must not be able
to exhaust the server's memory (a fan-out's cartesian product is counted before a single
process is made), nor one ``launch`` start thousands of workers.

Each limit is a 4xx naming it and how to raise it; hosts read them from their config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gaia.engine.keys import PLACEHOLDER, PRIVATE_PREFIX
from gaia.engine.model import Command, ProcessSpec
from gaia.errors import InvalidRequest

__all__ = ["DEFAULT_LIMITS", "Limits", "key_chars_of", "processes_of"]


@dataclass(frozen=True)
class Limits:
    processes_per_merge: int = 1_000_000  # GAIA_MAX_PROCESSES_PER_MERGE, after fan-out
    processes_per_namespace: int = 2_000_000  # GAIA_MAX_PROCESSES_PER_NAMESPACE
    workers_per_launch: int = 64  # GAIA_MAX_WORKERS_PER_LAUNCH
    workers: int = 256  # GAIA_MAX_WORKERS: launched workers alive at once
    var_bytes: int = 65_536  # GAIA_MAX_VAR_BYTES: one var's value
    # GAIA_MAX_KEY_CHARS_PER_MERGE: the data keys a merge binds, all their characters
    # (a 1,000,000-process merge binding 3 keys of 40 characters each uses 120,000,000)
    key_chars_per_merge: int = 128_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        """The limits set in ``environ`` (GAIA_MAX_...), the others at their defaults;
        InvalidRequest naming a variable that is not a positive whole number."""
        values = {}
        for name, variable in ENV.items():
            raw = environ.get(variable)
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise InvalidRequest(f"{variable}={raw!r}: use a positive whole number")
                values[name] = int(raw)
        return cls(**values)

    def check_key_chars(self, root: str, chars: int) -> None:
        if chars > self.key_chars_per_merge:
            raise InvalidRequest(
                f"namespace {root!r}: the merge would bind data keys of {chars:,} characters "
                f"in all, over the limit of {self.key_chars_per_merge:,} per merge "
                "(GAIA_MAX_KEY_CHARS_PER_MERGE); merge fewer processes at a time, or bind "
                "fewer or shorter keys"
            )

    def check_merge(self, root: str, count: int, total: int) -> None:
        if count > self.processes_per_merge:
            raise InvalidRequest(
                f"namespace {root!r}: the merge would make {count:,} processes, over the "
                f"limit of {self.processes_per_merge:,} per merge "
                "(GAIA_MAX_PROCESSES_PER_MERGE); merge fewer at a time"
            )
        if total > self.processes_per_namespace:
            raise InvalidRequest(
                f"namespace {root!r}: the merge would bring the namespace to {total:,} "
                f"processes, over the limit of {self.processes_per_namespace:,} "
                "(GAIA_MAX_PROCESSES_PER_NAMESPACE)"
            )

    def check_vars(self, spec: ProcessSpec) -> None:
        for name, value in spec.vars.items():
            for item in value if isinstance(value, list) else [value]:
                if len(item.encode("utf-8")) > self.var_bytes:
                    raise InvalidRequest(
                        f"process {spec.key!r}: a value of var {name!r} is over the limit of "
                        f"{self.var_bytes:,} bytes (GAIA_MAX_VAR_BYTES)"
                    )

    def check_launch(self, asked: int, running: int) -> None:
        if asked > self.workers_per_launch:
            raise InvalidRequest(
                f"launch: {asked:,} workers asked for at once, over the limit of "
                f"{self.workers_per_launch} (GAIA_MAX_WORKERS_PER_LAUNCH)"
            )
        if running + asked > self.workers:
            raise InvalidRequest(
                f"launch: {running} workers run and {asked} more would pass the limit of "
                f"{self.workers} (GAIA_MAX_WORKERS)"
            )


DEFAULT_LIMITS = Limits()
ENV = {
    "processes_per_merge": "GAIA_MAX_PROCESSES_PER_MERGE",
    "processes_per_namespace": "GAIA_MAX_PROCESSES_PER_NAMESPACE",
    "workers_per_launch": "GAIA_MAX_WORKERS_PER_LAUNCH",
    "workers": "GAIA_MAX_WORKERS",
    "var_bytes": "GAIA_MAX_VAR_BYTES",
    "key_chars_per_merge": "GAIA_MAX_KEY_CHARS_PER_MERGE",
}


def processes_of(spec: ProcessSpec, commands: Mapping[str, Command]) -> int:
    """How many leaf processes ``spec`` expands into, counted without expanding it: the
    product of its list vars' lengths, times the leaves of its command."""
    combinations = math.prod(len(v) for v in spec.vars.values() if isinstance(v, list))
    return combinations * _leaves(spec.command, commands, ())


def key_chars_of(spec: ProcessSpec, commands: Mapping[str, Command]) -> int:
    """At most how many characters the data keys ``spec`` binds come to, counted without
    expanding it: each binding's template with its vars' longest values, once per
    combination of its list vars. A few hundred kilobytes of request (300 outputs of
    long templates, fanned out over 3,000 values) would otherwise make gigabytes of keys."""
    command = commands.get(spec.command)
    defaults = {n: v for n, v in command.vars.items() if v is not None} if command else {}
    longest = {name: len(value) for name, value in defaults.items()}
    for name, value in spec.vars.items():
        longest[name] = max(map(len, value), default=0) if isinstance(value, list) else len(value)
    per_combination = 0
    for template in (*spec.inputs.values(), *spec.outputs.values()):
        literal = len(PLACEHOLDER.sub("", template))
        per_combination += literal + sum(longest.get(n, 0) for n in PLACEHOLDER.findall(template))
    # A composite's steps bind private keys, ".private/<process>/<name>", each as long as
    # the process key (the spec's, with its longest values) and the name allow.
    process_key = len(spec.key) + sum(longest.get(n, 0) + 1 for n in spec.vars)
    per_combination += _private_chars(spec.command, commands, (), process_key)
    combinations = math.prod(len(v) for v in spec.vars.values() if isinstance(v, list))
    return combinations * per_combination


def _private_chars(
    key: str, commands: Mapping[str, Command], path: tuple[str, ...], process: int
) -> int:
    """The characters of the private keys one invocation of a composite makes (its
    process key ``process`` characters long): ``.private/<process>/<name>`` for each name
    its steps bind that is not its own input or output, and those of the composites in
    it (whose process keys are ``<process>:<step>``)."""
    command = commands.get(key)
    if command is None or not command.composite or key in path:
        return 0
    bound = {
        name for step in command.steps for name in (*step.inputs.values(), *step.outputs.values())
    }
    private = bound - set(command.inputs) - set(command.outputs)
    chars = sum(len(PRIVATE_PREFIX) + process + 1 + len(name) for name in private)
    for step in command.steps:
        chars += _private_chars(step.command, commands, (*path, key), process + 1 + len(step.key))
    return chars


def _leaves(key: str, commands: Mapping[str, Command], path: tuple[str, ...]) -> int:
    command = commands.get(key)
    if command is None or not command.composite or key in path:
        return 1  # unknown or recursive: expand() says what is wrong
    return sum(_leaves(step.command, commands, (*path, key)) for step in command.steps)
