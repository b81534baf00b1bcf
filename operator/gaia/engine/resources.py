"""A leaf command's ``resources`` and ``env``: parsed and checked, Kubernetes-shaped.

``resources`` takes Kubernetes quantities, so that one command reads the same on a cluster
(requests/limits) and on one machine (where the task runner enforces them itself)::

    resources: {cpu: 500m, memory: 256Mi, processes: 64}

``cpu`` is in cores (``2``, ``0.5``, ``"500m"``), ``memory`` in bytes (``268435456``,
``"256Mi"``, ``"1G"``, ``"129e6"``), ``processes`` a count. The wall-time limit is the
command's ``timeout``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from gaia.errors import InvalidRequest

__all__ = ["Resources", "parse_env", "parse_resources"]

FIELDS = ("cpu", "memory", "processes")
MAX_PROCESSES = 4_194_304  # the kernel's highest pid_max
MIN_MEMORY = 1 << 20  # no program starts in less than 1 MiB
MAX_MEMORY = (1 << 63) - 1  # what a resource limit can hold
MAX_CPU = 10**9  # millicores: a million cores
_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]{1,2}))?"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Resources:
    """What one task may use; None: no limit of that kind."""

    cpu: int | None = None  # millicores (1000 = one core)
    memory: int | None = None  # bytes
    processes: int | None = None  # processes and threads at once

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.cpu, self.memory, self.processes))

    def to_dict(self) -> dict[str, Any]:
        """Canonical Kubernetes quantities (``2``, ``"500m"``, ``"256Mi"``); parses back equal."""
        out: dict[str, Any] = {}
        if self.cpu is not None:
            out["cpu"] = self.cpu // 1000 if self.cpu % 1000 == 0 else f"{self.cpu}m"
        if self.memory is not None:
            out["memory"] = _memory_text(self.memory)
        if self.processes is not None:
            out["processes"] = self.processes
        return out


def _memory_text(size: int) -> str | int:
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        if size % _BINARY[suffix] == 0:
            return f"{size // _BINARY[suffix]}{suffix}"
    return size


def parse_resources(raw: object, where: str) -> Resources | None:
    """``resources`` of a command; ``where`` names it in errors (``command 'md5'``)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidRequest(
            f"{where}: 'resources' must be a mapping such as {{cpu: 500m, memory: 256Mi, "
            f"processes: 64}}, got {type(raw).__name__}"
        )
    if unknown := sorted(str(name) for name in set(raw) - set(FIELDS)):
        raise InvalidRequest(
            f"{where}: resources has unknown fields {unknown}; it has {list(FIELDS)} "
            "(the wall-time limit is the command's 'timeout')"
        )
    return Resources(
        cpu=_cpu(raw.get("cpu"), where),
        memory=_memory(raw.get("memory"), where),
        processes=_processes(raw.get("processes"), where),
    )


def _quantity(value: object, where: str, name: str, example: str) -> Fraction | None:
    """A Kubernetes quantity as an exact number (suffixes applied), or None when unset."""
    if value is None:
        return None
    problem = f"{where}: resources.{name} {value!r} is not a quantity such as {example}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(problem)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(problem)
        number = Fraction(str(value))
    elif isinstance(value, int):
        number = Fraction(value)
    else:
        match = _QUANTITY.fullmatch(value.strip())
        if match is None:
            raise InvalidRequest(problem)
        number = Fraction(match["number"])
        if suffix := match["suffix"]:
            number *= (
                Fraction(1, 1000) if suffix == "m" else _BINARY.get(suffix) or _DECIMAL[suffix]
            )
        elif match["exponent"]:
            number *= Fraction(10) ** int(match["exponent"])
    if number <= 0:
        raise InvalidRequest(f"{where}: resources.{name} must be more than 0, got {value!r}")
    return number


def _cpu(value: object, where: str) -> int | None:
    cores = _quantity(value, where, "cpu", "2, 0.5 or '500m' (cores)")
    if cores is None:
        return None
    millis = cores * 1000
    if millis.denominator != 1:
        raise InvalidRequest(
            f"{where}: resources.cpu {value!r} is finer than 1m (a thousandth of a core)"
        )
    if millis > MAX_CPU:
        raise InvalidRequest(f"{where}: resources.cpu {value!r} is more than a million cores")
    return int(millis)


def _memory(value: object, where: str) -> int | None:
    if isinstance(value, str) and value.strip().endswith("m"):
        raise InvalidRequest(
            f"{where}: resources.memory {value!r} is in thousandths of a byte; "
            f"did you mean {value.strip()[:-1]}Mi?"
        )
    size = _quantity(value, where, "memory", "'256Mi', '1Gi', '500M' or 268435456 (bytes)")
    if size is None:
        return None
    if size < MIN_MEMORY:
        plain = isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
        hint = f" (a plain number is bytes: did you mean '{value}Mi'?)" if plain else ""
        raise InvalidRequest(f"{where}: resources.memory {value!r} is less than 1Mi{hint}")
    if size > MAX_MEMORY:
        raise InvalidRequest(f"{where}: resources.memory {value!r} is more than 8Ei")
    return math.ceil(size)


def _processes(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise InvalidRequest(
            f"{where}: resources.processes must be a whole number from 1 to {MAX_PROCESSES}, "
            f"got {value!r}"
        )
    return value


def parse_env(raw: object, where: str) -> dict[str, str]:
    """``env`` of a command: variable names (identifiers) to string values."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{where}: 'env' must be a mapping of names to strings")
    env: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise InvalidRequest(
                f"{where}: env name {name!r} is not a variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if not isinstance(value, str):
            raise InvalidRequest(
                f"{where}: env {name!r} must be a string, got {type(value).__name__} "
                f'(quote numbers: {name}: "{value}")'
            )
        if "\0" in value:
            raise InvalidRequest(f"{where}: env {name!r} contains a NUL character")
        env[name] = value
    return env
