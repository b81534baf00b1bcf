"""What a store said of some data keys, asked before a change: the engine's only view of
the store. Hosts ask first and hand the answer in, so the engine never waits on I/O and
a store that fails does so before anything has changed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Lookup"]


@dataclass(frozen=True)
class Lookup:
    existing: frozenset[str] = frozenset()
    # data key -> why the store cannot hold it (it resolves outside the namespace, say)
    unusable: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, existing: Iterable[str], unusable: Mapping[str, str] | None = None) -> Lookup:
        return cls(frozenset(existing), dict(unusable or {}))

    def __contains__(self, key: object) -> bool:
        """Whether the store holds ``key``, whole."""
        return key in self.existing
