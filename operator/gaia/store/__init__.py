"""Data stores: where a namespace's keys live. A key is complete iff its store holds it."""

from gaia.store.local import LocalStore

__all__ = ["LocalStore"]
