"""The local data store: namespace NS's key K is the file or directory ``DIR/NS/K``.

Users drop source files in and read results out with ordinary tools. Outputs arrive
by ``os.replace`` from a staging area on the same filesystem, so a key either exists
whole or not at all, and a task's outputs are published all together or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from gaia.engine.keys import data_key_problem, folders_of, parents, plain_keys, root_problem
from gaia.engine.lookup import Lookup
from gaia.errors import InvalidRequest, StoreError
from gaia.worker import outputs as output_files

__all__ = ["STAGING", "LocalStore", "sync_parents"]

logger = logging.getLogger(__name__)

# Where a Kubernetes task's outputs wait for publication, relative to the store's base:
# STAGING/<root>/<job>/<container path>. Keys starting with '.gaia' are private, so no
# namespace key can collide with it.
STAGING = ".gaia/staging"
# Fewer keys than this are looked up one by one; more, by one scan of their directories.
SCAN_ABOVE = 32


class LocalStore:
    def __init__(self, base: Path) -> None:
        self.base = base.resolve()

    def namespace_dir(self, root: str) -> Path:
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        return self.base / root

    def path(self, root: str, key: str) -> Path:
        """The host path of ``key``; refuses any key that would leave the namespace."""
        if problem := self._problem(root, key):
            raise InvalidRequest(problem)
        return self.namespace_dir(root) / key

    def _problem(self, root: str, key: str) -> str | None:
        """Why ``key`` cannot be held here: a bad name, or a path that resolves outside
        the namespace (a symbolic link planted on its way)."""
        if problem := data_key_problem(key, private_ok=True):
            return problem
        space = self.namespace_dir(root)
        if not _link_on_the_way(space, key):
            return None
        try:
            inside = (space / key).resolve().is_relative_to(space.resolve())
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            return f"data key {key!r} cannot be resolved: {exc}"
        if not inside:
            return f"data key {key!r} resolves outside namespace {root!r} (a symbolic link?)"
        return None

    def exists(self, root: str, key: str) -> bool:
        return key in self.lookup(root, [key])

    def lookup(self, root: str, keys: Iterable[str]) -> Lookup:
        """Which of ``keys`` exist, and which cannot be held here (with why). Many keys
        are found by one scan of the directories that hold them, not a stat each."""
        keys = list(dict.fromkeys(keys))
        space = self.namespace_dir(root)
        unusable: dict[str, str] = {}
        if plain_keys(keys):  # all plain, as a fan-out's are: checked at once
            checked = keys
        else:
            checked = []
            for key in keys:
                if problem := data_key_problem(key, private_ok=True):
                    unusable[key] = problem
                else:
                    checked.append(key)
        try:
            if not os.path.lexists(space):  # a new namespace: nothing exists yet
                return Lookup.of((), unusable)
            if len(checked) > SCAN_ABOVE and space.is_dir() and not space.is_symlink():
                existing, linked = _scan(space, checked)
            else:
                existing, linked = set(), set(checked)
            for key in linked:  # the careful way: resolve every link on the path
                if problem := self._problem(root, key):
                    unusable[key] = problem
                elif os.path.lexists(space / key):
                    existing.add(key)
        except OSError as exc:
            raise StoreError(f"namespace {root!r}: cannot look up its keys: {exc}") from exc
        return Lookup.of(existing, unusable)

    def delete(self, root: str, keys: Iterable[str]) -> None:
        for key in keys:
            if problem := self._problem(root, key):
                # Never follow a link out of the namespace, not even to delete.
                logger.warning("namespace %s: not deleting %r: %s", root, key, problem)
                continue
            try:
                _remove(self.namespace_dir(root) / key)
            except OSError as exc:
                raise StoreError(f"namespace {root!r}: cannot delete {key!r}: {exc}") from exc

    def staged_outputs(self, root: str, job: str, outputs: Mapping[str, str]) -> dict[str, Path]:
        """Data key -> where a Job stages its container path ``outputs[key]``."""
        staging = self.base / STAGING / root / job
        return {key: staging / path.strip("/") for key, path in outputs.items()}

    def is_staged(self, staged: Path) -> bool:
        return os.path.lexists(staged)  # a link too: seal_staged refuses it by name

    def seal_staged(
        self, staged: Mapping[str, Path], outputs: Mapping[str, str]
    ) -> dict[str, Path]:
        """What a Job's container wrote straight onto the volume, made durable before
        :meth:`publish` renames it into the data (which syncs only the folders it lands
        in): each file and folder of each output fsynced, so that a node crash cannot
        leave a key that looks complete without its content. The same rules as a
        worker's outputs: a link or special file fails the task (UnsafeOutput, naming its
        container path ``outputs[key]``); an output of the wrong kind (a folder for a
        file, or the reverse) is left out, as not produced."""
        sealed: dict[str, Path] = {}
        for key, where in staged.items():
            try:
                if not output_files.sync_if_produced(where, outputs[key]):
                    continue
            except PermissionError as exc:
                raise StoreError(
                    f"cannot read staged output {outputs[key]} to sync it: {exc} (the "
                    "operator reads what task pods write: the chart gives it DAC_OVERRIDE)"
                ) from exc
            except OSError as exc:
                raise StoreError(f"cannot read staged output {outputs[key]}: {exc}") from exc
            sealed[key] = where
        return sealed

    def clear_staging(self, root: str, job: str) -> None:
        shutil.rmtree(self.base / STAGING / root / job, ignore_errors=True)

    def prepare_staging(self, root: str, job: str, directories: Iterable[str], group: int) -> None:
        """Make a task's staging folder ``STAGING/<root>/<job>/``, and each of the container
        ``directories`` in it, writable by ``group``: the task's pod runs as an unprivileged
        user of that group, and the operator moves (or deletes) what it wrote as root or as
        the folder's owner. Setgid, so that what the task makes inside keeps the group.

        The operator gives the folder to ``group`` as its owner and a member of the group
        (the chart runs it with that supplementary group; no capability needed). Where it
        cannot (not in the group, a volume that squashes root), it makes the folder
        writable by all instead: only the task's own pod (a subPath), or its worker, reaches
        it. The staging area's other folders stay the operator's."""
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        staging = self.base / STAGING / root / job
        folders = [staging, *(staging / path.strip("/") for path in directories)]
        try:
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            for folder in folders:
                _share(folder, group)
        except OSError as exc:
            raise StoreError(
                f"namespace {root!r}: cannot make the staging folder of {job}: {exc}"
            ) from exc

    def publish(self, root: str, staged: Mapping[str, Path]) -> None:
        """Move staged outputs (data key -> staged path) into place: each atomically, and
        all of them or none (a failure takes back the ones already moved)."""
        targets: dict[str, Path] = {}
        for key, source in staged.items():
            if problem := self._problem(root, key):
                raise StoreError(f"namespace {root!r}: cannot publish {key!r}: {problem}")
            if not os.path.lexists(source):
                raise StoreError(f"namespace {root!r}: nothing was staged for {key!r}")
            targets[key] = self.namespace_dir(root) / key
        moved: list[Path] = []
        try:
            for key, source in staged.items():
                target = targets[key]
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)  # a stale directory: os.replace cannot overwrite it
                os.replace(source, target)
                moved.append(target)
            sync_parents(moved)
        except OSError as exc:
            for target in moved:  # a task publishes all of its outputs or none
                try:
                    _remove(target)
                except OSError as undo:
                    logger.error("could not take back %s after a failed publish: %s", target, undo)
            raise StoreError(f"namespace {root!r}: cannot publish {key!r}: {exc}") from exc
        logger.debug("published %s/%s", root, sorted(staged))


def _share(folder: Path, group: int) -> None:
    """``folder`` writable by ``group``; never through a symbolic link."""
    mode = 0o2770
    status = folder.lstat()
    if not stat.S_ISDIR(status.st_mode):
        raise StoreError(f"{folder} is not a directory (a symbolic link?)")
    if status.st_gid != group:
        try:
            os.chown(folder, -1, group, follow_symlinks=False)
        except PermissionError as exc:
            logger.warning(
                "cannot give %s to group %d (%s): making it writable by all; run the "
                "operator in that group (the chart's podSecurityContext.supplementalGroups)",
                folder,
                group,
                exc,
            )
            mode = 0o2777
    os.chmod(folder, mode)


def _link_on_the_way(space: Path, key: str) -> bool:
    """Whether the namespace folder, or any part of ``key`` in it, is a symbolic link (or
    cannot be read): only then is the key resolved the careful way. One ``lstat`` per
    part, and none past the first that does not exist; resolving every key (each folder
    from ``/`` down, in Python) was a tenth of the server's time per task."""
    path = str(space)
    for part in ("", *key.split("/")):
        if part:
            path = f"{path}/{part}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False  # nothing below it exists: no link either
        except OSError:
            return True  # let the careful way say what is wrong
        if stat.S_ISLNK(mode):
            return True
    return False


def _scan(space: Path, keys: list[str]) -> tuple[set[str], set[str]]:
    """One ``scandir`` of each directory that holds a key: (keys found, keys to resolve
    the careful way because a symbolic link lies on their path)."""
    wanted = set(keys)
    folders = folders_of(keys)
    found: set[str] = set()
    links: set[str] = set()
    pending = [""]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(space / folder if folder else space))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            relative = f"{folder}/{entry.name}" if folder else entry.name
            if relative in wanted:
                (links if entry.is_symlink() else found).add(relative)
            if relative in folders:
                if entry.is_symlink():
                    links.add(relative)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(relative)
    if not links:  # the usual case: no key to resolve the careful way
        return found, links
    linked = {key for key in keys if key in links or any(p in links for p in parents(key))}
    return found - linked, linked


def sync_parents(paths: Iterable[Path]) -> None:
    """Make renames or moves to ``paths`` durable before their keys count as complete:
    fsync each folder they landed in, once (outputs and keys share them)."""
    for folder in {path.parent for path in paths}:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    """A file, a link (never what it points to) or a folder with all it holds."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
