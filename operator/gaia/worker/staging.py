"""A task's files on the host: checked before it runs, laid out, collected after it ran.

Everything the command writes lives under the task's staging root ``<workdir>/fs``, where
a container path ``/a/b`` is ``<workdir>/fs/a/b``. Each top-level name of a written
container path (``/out`` for ``/out/o``) is a staging directory that a sandbox binds at
that name; the command must create a directory output itself, so that "not produced"
stays detectable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gaia.engine.keys import parents
from gaia.engine.model import RUNTIME_OWNED
from gaia.worker import outputs as output_files

__all__ = ["check", "collect", "host_path", "lay_out", "unreadable_input", "written_tops"]


def host_path(fs: Path, container_path: str) -> Path:
    """The staged host path of a container path (a trailing ``/`` is dropped)."""
    return fs / container_path.strip("/")


def check(
    inputs: Mapping[str, Path],
    outputs: Iterable[str],
    stdout: str | None,
    binds: Mapping[str, Path] | None = None,
    system: Iterable[str] = (),
) -> str | None:
    """Return why these files cannot be laid out, or None when they can. ``system``: the
    top-level folders the sandbox shows from the host (bubblewrap's), where no container
    path may go: it would take the host's folder's place, and on a root server the
    sandbox runs its own tools (setpriv, their libraries) from there as root."""
    binds = binds or {}
    outputs = list(outputs)
    shown = frozenset(system)
    for path in [*inputs, *outputs, *([stdout] if stdout else []), *binds]:
        segments = path.rstrip("/").split("/")
        if not path.startswith("/") or len(segments) < 2:
            return f"container path {path!r} must be absolute and not the root"
        if "\0" in path or any(s in ("", ".", "..") for s in segments[1:]):
            return f"container path {path!r} has an empty, '.' or '..' segment"
        if segments[1] in RUNTIME_OWNED:
            return f"container path {path!r} is under /{segments[1]}, which the sandbox owns"
        if segments[1] in shown:
            return (
                f"container path {path!r} is under /{segments[1]}, which the sandbox shows "
                "from this machine, read-only; use a folder of its own (/in, /out, /work)"
            )
    for path, source in inputs.items():
        if not (source.is_dir() if path.endswith("/") else source.is_file()):
            kind = "directory" if path.endswith("/") else "file"
            return f"input {path} needs the {kind} {source}, which does not exist"
    return _check_binds(binds, [*inputs, *outputs, *([stdout] if stdout else [])])


def _check_binds(binds: Mapping[str, Path], others: Sequence[str]) -> str | None:
    """Binds must exist and overlap no other container path (nor each other).

    Nothing may be staged inside a bind (it would not be collected), and without a sandbox
    a symlink laid out inside a bound host directory would land in the host's data.
    """
    for path, source in binds.items():
        if not source.exists():
            return f"writable bind {path} needs {source}, which does not exist"
    bound = [path.rstrip("/") for path in binds]
    for index, path in enumerate(bound):
        for other in [*bound[index + 1 :], *(p.rstrip("/") for p in others)]:
            if other == path or other.startswith(path + "/") or path.startswith(other + "/"):
                return f"writable bind {path} overlaps container path {other}"
    return None


def unreadable_input(inputs: Mapping[str, Path], uid: int) -> str | None:
    """Why the unprivileged ``uid`` cannot read an input (its top level), or None.

    A task of a server running as root runs as another user: a private input (mode 600)
    would fail deep inside the command with "Permission denied"; say so before it starts.
    """
    for path, source in inputs.items():
        info = source.stat()
        need = 0o5 if stat.S_ISDIR(info.st_mode) else 0o4  # read (and search, for a folder)
        if info.st_uid == uid:
            allowed = (info.st_mode >> 6) & need == need
        elif info.st_gid == uid:
            allowed = (info.st_mode >> 3) & need == need
        else:
            allowed = info.st_mode & need == need
        if not allowed:
            return (
                f"input {path} ({source}) is not readable by the task's user {_user(uid)}: "
                "tasks read their inputs as that user; make it readable by others "
                f"(chmod -R o+rX {source})"
            )
    return None


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:
        return str(uid)


def written_tops(
    inputs: Mapping[str, Path], outputs: Sequence[str], stdout: str | None, binds: Iterable[str]
) -> list[str]:
    """The top-level names that are staging directories in a sandbox: every first segment
    of a container path, except an input file directly under ``/`` (bound as itself)."""
    top_files = {path for path in inputs if path.count("/") == 1}
    paths = [*inputs, *outputs, *([stdout] if stdout else []), *binds]
    return sorted({path.split("/")[1] for path in paths if path not in top_files})


def lay_out(
    fs: Path,
    outputs: Sequence[str],
    stdout: str | None,
    tops: Sequence[str],
    mounted: Iterable[str],
    owner: int | None,
) -> None:
    """Create the staging directories: ``tops``, the parents of each written file and of
    each path ``mounted`` (inputs and binds) inside a top, which the sandbox would make
    private to root. ``owner`` (a uid, also the gid) gets them when the task runs as
    another user. Runs before every task: paths stay strings."""
    written = [*outputs, *([stdout] if stdout else [])]
    # Folders relative to fs. Tools write into existing directories; a directory output
    # itself must be made by the command, so that "not produced" stays detectable.
    made = set(tops)
    made.update(_parent(path) for path in written)
    made.update(
        _parent(path)
        for path in mounted
        if path.count("/", 0, len(path.rstrip("/"))) > 1 and path.split("/")[1] in tops
    )
    made.discard("")  # a file right under the root: fs itself
    kept = {each for folder in made for each in (*parents(folder), folder)}
    root = str(fs)
    os.makedirs(root, exist_ok=True)
    _clear(root, kept, "", top=True)
    for folder in made:
        try:
            os.mkdir(os.path.join(root, folder))
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(os.path.join(root, folder), exist_ok=True)
    if owner is not None:
        for folder in kept:
            os.chown(os.path.join(root, folder), owner, owner, follow_symlinks=False)


def _parent(container_path: str) -> str:
    """The folder, relative to the staging root, that holds a container path."""
    return container_path.strip("/").rpartition("/")[0]


def _clear(folder: str, kept: set[str], prefix: str, *, top: bool = False) -> None:
    """Empty a staging root a previous task may have used: every file goes (nothing of
    one task is seen by the next, nor taken for its output), every folder this task does
    not need too (``kept``: relative to the root, ``prefix`` is ``folder``'s). A folder
    costs milliseconds to make or remove on some disks: the ones a task of the same shape
    needs again stay."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        relative = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            if top or relative in kept:
                # A staging top this task does not use is emptied but kept: no sandbox
                # shows it, and the next task of the other shape needs it again.
                _clear(entry.path, kept, relative + "/")
            else:
                shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def clear(folder: Path) -> None:
    """Empty ``folder`` (a task's scratch), keeping it."""
    _clear(str(folder), set(), "")


def collect(fs: Path, outputs: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Find the staged outputs and put them on disk: ({container path: host path},
    [container paths missing]). Every file and directory of them is fsynced; a symbolic
    link or special file anywhere in them raises UnsafeOutput, naming it."""
    staged: dict[str, Path] = {}
    missing: list[str] = []
    for path in outputs:
        host = host_path(fs, path)
        if output_files.sync_if_produced(host, path):
            staged[path] = host
        else:
            missing.append(path)
    return staged, missing
