"""Data stores: where a namespace's keys live. A key is complete iff its store holds it.

``LocalStore`` is a directory (the standalone server, and the operator's shared volume);
``gaia.store.s3.S3Store`` is an S3 bucket (imported from there: it needs boto3). Both
offer :class:`Store`, what the Kubernetes operator uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gaia.engine.lookup import Lookup
from gaia.store.local import STAGING, LocalStore

__all__ = ["STAGING", "LocalStore", "Store"]


class Store(Protocol):
    """What the operator needs of a store. A *staged* location (a path, an object prefix)
    is where a Job left the output of one container path, under ``STAGING/<root>/<job>/``."""

    def lookup(self, root: str, keys: Iterable[str]) -> Lookup:
        """Which of ``keys`` exist, and which it cannot hold (with why), in as few
        requests as the store allows. Raises StoreError when the store cannot answer."""
        ...

    def delete(self, root: str, keys: Iterable[str]) -> None: ...

    def staged_outputs(self, root: str, job: str, outputs: Mapping[str, str]) -> dict[str, Any]:
        """Data key -> the staged location of its container path ``outputs[key]``."""
        ...

    def is_staged(self, staged: Any) -> bool: ...

    def seal_staged(self, staged: Mapping[str, Any], outputs: Mapping[str, str]) -> dict[str, Any]:
        """Of ``staged`` (data key -> staged location of container path
        ``outputs[key]``, as a Job's container left it), the outputs fit to publish, made
        durable; raises TaskFailed for one that holds a link or special file, StoreError
        for one it cannot read."""
        ...

    def publish(self, root: str, staged: Mapping[str, Any]) -> None:
        """Move staged outputs (from :meth:`staged_outputs`) to their keys, all of them
        or (raising StoreError) none."""
        ...

    def prepare_staging(self, root: str, job: str, directories: Iterable[str], group: int) -> None:
        """Make ``STAGING/<root>/<job>/`` and its container ``directories`` writable by a
        task pod of ``group``, before the pod starts (where staging is a folder)."""
        ...

    def clear_staging(self, root: str, job: str) -> None: ...
