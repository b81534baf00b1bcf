"""The local data store: namespace NS's key K is the file or directory ``DIR/NS/K``.

Users drop source files in and read results out with ordinary tools. Outputs arrive
by ``os.replace`` from a staging area on the same filesystem, so a key either exists
whole or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from gaia.engine.keys import data_key_problem, root_problem
from gaia.errors import InvalidRequest, StoreError

__all__ = ["STAGING", "LocalStore"]

logger = logging.getLogger(__name__)

# Where a Kubernetes task's outputs wait for publication, relative to the store's base:
# STAGING/<root>/<job>/<container path>. Keys starting with '.gaia' are private, so no
# namespace key can collide with it.
STAGING = ".gaia/staging"


class LocalStore:
    def __init__(self, base: Path) -> None:
        self.base = base.resolve()

    def namespace_dir(self, root: str) -> Path:
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        return self.base / root

    def path(self, root: str, key: str) -> Path:
        """The host path of ``key``; refuses any key that would leave the namespace."""
        if problem := data_key_problem(key, private_ok=True):
            raise InvalidRequest(problem)
        space = self.namespace_dir(root)
        path = space / key
        # Keys are checked syntactically; this guards against symlinks planted inside.
        if not path.resolve().is_relative_to(space.resolve()):
            raise InvalidRequest(f"data key {key!r} resolves outside namespace {root!r}")
        return path

    def exists(self, root: str, key: str) -> bool:
        try:
            return self.path(root, key).exists()
        except OSError as exc:
            raise StoreError(f"namespace {root!r}: cannot look up {key!r}: {exc}") from exc

    def existing(self, root: str, keys: Iterable[str]) -> set[str]:
        return {key for key in keys if self.exists(root, key)}

    def delete(self, root: str, keys: Iterable[str]) -> None:
        for key in keys:
            path = self.path(root, key)
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                raise StoreError(f"namespace {root!r}: cannot delete {key!r}: {exc}") from exc

    def staged_outputs(self, root: str, job: str, outputs: Mapping[str, str]) -> dict[str, Path]:
        """Data key -> where a Job stages its container path ``outputs[key]``."""
        staging = self.base / STAGING / root / job
        return {key: staging / path.strip("/") for key, path in outputs.items()}

    def is_staged(self, staged: Path) -> bool:
        return staged.exists()

    def clear_staging(self, root: str, job: str) -> None:
        shutil.rmtree(self.base / STAGING / root / job, ignore_errors=True)

    def publish(self, root: str, staged: Mapping[str, Path]) -> None:
        """Move staged outputs (data key -> staged path) into place, each atomically."""
        for key, source in staged.items():
            target = self.path(root, key)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)  # a stale directory: os.replace cannot overwrite it
                os.replace(source, target)
            except OSError as exc:
                raise StoreError(f"namespace {root!r}: cannot publish {key!r}: {exc}") from exc
            logger.debug("published %s/%s", root, key)
