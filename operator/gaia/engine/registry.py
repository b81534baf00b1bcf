"""The global command registry: all-or-nothing merges with the checks that span commands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gaia.engine.model import Command, parse_command
from gaia.errors import InvalidRequest

__all__ = ["Registry"]


class Registry:
    """Every registered command, by key."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        # Replaced on each change, never changed in place: a merge that waited on the
        # store tells by identity whether the commands it planned with are still these.
        self.commands: dict[str, Command] = {command.key: command for command in commands}

    def __contains__(self, key: str) -> bool:
        return key in self.commands

    def prepare(self, raw_commands: object) -> tuple[dict[str, Command], set[str]]:
        """Validate a batch; return the would-be registry and the keys whose meaning changed.

        "Changed" covers new or replaced commands and every composite that (transitively)
        uses one, since processes of those composites must recompute too. Nothing is
        mutated: the caller checks the namespaces, then calls :meth:`commit`.
        """
        if not isinstance(raw_commands, list):
            raise InvalidRequest("'commands' must be a list of commands")
        batch: dict[str, Command] = {}
        for raw in raw_commands:
            command = parse_command(raw)
            if command.key in batch:
                raise InvalidRequest(f"command {command.key!r} appears twice in one request")
            batch[command.key] = command
        replaced = {key for key, command in batch.items() if self.commands.get(key) != command}
        merged = {**self.commands, **batch}
        for key in batch:
            check_steps(merged[key], merged)
        return merged, users_of(replaced, merged)

    def commit(self, merged: dict[str, Command]) -> None:
        self.commands = merged

    def remove(self, key: str) -> None:
        """Forget a command nothing uses any more (a deleted GaiaCommand)."""
        self.commands = {k: c for k, c in self.commands.items() if k != key}


def check_steps(command: Command, commands: Mapping[str, Command]) -> None:
    """Every step names a known command, binds exactly its inputs and outputs, and no
    composite contains itself."""
    for step in command.steps:
        at = f"command {command.key!r} step {step.key!r}"
        inner = commands.get(step.command)
        if inner is None:
            raise InvalidRequest(f"{at}: unknown command {step.command!r}")
        for bound, declared, what in (
            (step.inputs, inner.inputs, "input"),
            (step.outputs, inner.outputs, "output"),
        ):
            if missing := sorted(declared.keys() - bound.keys()):
                raise InvalidRequest(f"{at}: {step.command!r} {what}s {missing} are not bound")
            if extra := sorted(bound.keys() - declared.keys()):
                raise InvalidRequest(f"{at}: {step.command!r} has no {what}s {extra}")
        if extra_vars := sorted(step.vars.keys() - inner.vars.keys()):
            raise InvalidRequest(f"{at}: {step.command!r} has no vars {extra_vars}")
    _check_no_recursion(command, commands)


def _check_no_recursion(command: Command, commands: Mapping[str, Command]) -> None:
    path: list[str] = []

    def visit(key: str) -> None:
        if key in path:
            cycle = " -> ".join([*path[path.index(key) :], key])
            raise InvalidRequest(f"composite commands contain themselves: {cycle}")
        inner = commands.get(key)
        if inner is None:
            return
        path.append(key)
        for step in inner.steps:
            visit(step.command)
        path.pop()

    visit(command.key)


def users_of(keys: set[str], commands: Mapping[str, Command]) -> set[str]:
    """``keys`` plus every composite that uses any of them, directly or nested."""
    users = set(keys)
    grew = True
    while grew:
        grew = False
        for command in commands.values():
            if command.key not in users and any(s.command in users for s in command.steps):
                users.add(command.key)
                grew = True
    return users
