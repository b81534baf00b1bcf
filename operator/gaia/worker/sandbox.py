"""How a task's command sees its inputs and outputs at their container paths.

Commands are written for a container: they read ``/in/in`` and write ``/out/out``. On this
machine there is no container engine, so one of two modes stands in for it. Both keep
everything the command writes under the task's staging root ``<workdir>/fs``, where a
container path ``/a/b`` lives at ``<workdir>/fs/a/b``.

``bwrap``
    bubblewrap builds a private mount namespace: the host's top-level directories are
    bound read-only, each top-level name used by a container path (``/in``, ``/out``) is
    the writable staging directory ``<workdir>/fs/<name>``, and every input is bound
    read-only at its exact container path on top. The command sees exactly the paths it
    was written for, inputs cannot be modified, and it runs in its own pid namespace, so
    killing bubblewrap kills everything the command started. Writable binds (a host
    directory bound read-write at its container path, as a pod's writable volume mount)
    are bound after the inputs; a bind may not overlap any other container path.

``rewrite``
    No isolation. Inputs are symlinked into the staging root and every container path
    (and its parent directories) found inside an argument is replaced by its staged host
    path, e.g. ``--in=/in/in`` becomes ``--in=<workdir>/fs/in/in``. Tools that print their
    own file names (``md5sum``, ``wc``) therefore show the host path in this mode, and a
    path the command builds at run time (from a shell variable, say) is not rewritten.
    A parent directory that exists on the host (``/tmp`` for ``/tmp/out/x``) is only
    rewritten when it stands alone, never as the start of a longer path, so that host
    paths such as ``/tmp/other`` keep working. Writable binds are symlinked like inputs,
    and the values of the task's environment variables are rewritten like arguments.

``auto`` picks ``bwrap`` when bubblewrap is installed and works here, else ``rewrite``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from gaia.errors import TaskFailed

__all__ = [
    "MODES",
    "Launch",
    "check",
    "collect",
    "host_path",
    "path_rewriter",
    "prepare",
    "resolve_mode",
]

logger = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "rewrite")

# Top-level names the sandbox provides itself; a container path may not live under them.
RESERVED = frozenset({"proc", "dev", "sys"})
# Host top-level entries that bwrap replaces instead of binding from the host.
_NOT_BOUND = RESERVED | {"tmp"}
# Characters that continue a path component: a match must not be followed by one of them.
_NAME_CHARS = r"\w.\-"


class Launch(NamedTuple):
    """How to start a prepared task: its argv, host working directory and extra env."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]  # variables to set on top of the inherited environment


def check(
    inputs: Mapping[str, Path],
    outputs: Iterable[str],
    stdout: str | None,
    binds: Mapping[str, Path] | None = None,
) -> str | None:
    """Return why these files cannot be laid out, or None when they can."""
    binds = binds or {}
    outputs = list(outputs)
    for path in [*inputs, *outputs, *([stdout] if stdout else []), *binds]:
        segments = path.rstrip("/").split("/")
        if not path.startswith("/") or len(segments) < 2:
            return f"container path {path!r} must be absolute and not the root"
        if "\0" in path or any(s in ("", ".", "..") for s in segments[1:]):
            return f"container path {path!r} has an empty, '.' or '..' segment"
        if segments[1] in RESERVED:
            return f"container path {path!r} is under /{segments[1]}, which the sandbox owns"
    for path, source in inputs.items():
        if not (source.is_dir() if path.endswith("/") else source.is_file()):
            kind = "directory" if path.endswith("/") else "file"
            return f"input {path} needs the {kind} {source}, which does not exist"
    return _check_binds(binds, [*inputs, *outputs, *([stdout] if stdout else [])])


def _check_binds(binds: Mapping[str, Path], others: Sequence[str]) -> str | None:
    """Binds must exist and overlap no other container path (nor each other).

    Nothing may be staged inside a bind (it would not be collected), and in rewrite mode a
    symlink laid out inside a bound host directory would land in the host's data.
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


def host_path(fs: Path, container_path: str) -> Path:
    """The staged host path of a container path (a trailing ``/`` is dropped)."""
    return fs / container_path.strip("/")


def collect(workdir: Path, outputs: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Find the staged outputs: ({container path: host path}, [container paths missing])."""
    staged: dict[str, Path] = {}
    missing: list[str] = []
    for path in outputs:
        host = host_path(workdir / "fs", path)
        # A symlink would publish a pointer into the task's view, not the data.
        made = host.is_dir() if path.endswith("/") else host.is_file()
        if made and not host.is_symlink():
            staged[path] = host
        else:
            missing.append(path)
    return staged, missing


@functools.cache
def _bwrap_works() -> bool:
    """Probe bubblewrap once per process with the namespaces that tasks will use."""
    exe = shutil.which("bwrap")
    if exe is None:
        logger.info("sandbox: bwrap is not installed; rewriting container paths instead")
        return False
    probe = [exe, "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--dev", "/dev"]
    try:
        done = subprocess.run([*probe, "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("sandbox: bwrap probe failed (%s); rewriting container paths instead", exc)
        return False
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip()
        logger.info("sandbox: bwrap does not work here (%s); rewriting container paths", why)
        return False
    logger.info("sandbox: running tasks under bubblewrap (%s)", exe)
    return True


async def resolve_mode(requested: str) -> str:
    """Turn ``auto`` into ``bwrap`` or ``rewrite``; check the other names."""
    if requested not in MODES:
        raise ValueError(f"unknown sandbox {requested!r}: use one of {', '.join(MODES)}")
    if requested != "auto":
        return requested
    # The probe starts a process: keep it off the event loop.
    return "bwrap" if await asyncio.to_thread(_bwrap_works) else "rewrite"


def prepare(
    mode: str,
    command: Sequence[str],
    inputs: Mapping[str, Path],
    outputs: Sequence[str],
    stdout: str | None,
    workdir: Path,
    *,
    binds: Mapping[str, Path] | None = None,
    env: Mapping[str, str] | None = None,
) -> Launch:
    """Lay out the staging root under ``workdir`` and return how to start the command.

    ``binds`` (container path -> existing host path) are bound read-write; ``env`` holds
    the task's own environment variables. Raises TaskFailed when ``mode`` is ``bwrap`` and
    bubblewrap is not installed, and OSError when the staging root cannot be laid out.
    """
    binds = binds or {}
    env = dict(env or {})
    fs = workdir / "fs"
    scratch = workdir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    written = [*outputs, *([stdout] if stdout else [])]
    # Tools write into existing directories; a directory output itself must be made by the
    # command, so that "not produced" stays detectable.
    for path in written:
        host_path(fs, path.rstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    paths = [*inputs, *written, *binds]
    if mode == "bwrap":
        return Launch(_bwrap_argv(command, inputs, binds, paths, fs), scratch, env)
    for path, source in [*inputs.items(), *binds.items()]:
        link = host_path(fs, path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.absolute(), target_is_directory=source.is_dir())
    rewrite = path_rewriter(paths, fs)
    rewritten = {name: rewrite(value) for name, value in env.items()}
    return Launch([rewrite(arg) for arg in command], scratch, rewritten)


def _bwrap_argv(
    command: Sequence[str],
    inputs: Mapping[str, Path],
    binds: Mapping[str, Path],
    paths: Sequence[str],
    fs: Path,
) -> list[str]:
    exe = shutil.which("bwrap")
    if exe is None:
        raise TaskFailed("sandbox 'bwrap' was requested but bwrap is not installed")
    # An input file directly under "/" is bound as itself; every other top-level name is
    # a staging directory bound in place of the host's.
    top_files = {path for path in inputs if path.count("/") == 1}
    tops = sorted({path.split("/")[1] for path in paths if path not in top_files})
    # No --new-session: the runner already starts bwrap in a session of its own (so no
    # terminal to inject into), and the sandbox must stay in bwrap's process group for
    # a kill of the group to reach it even while bwrap is still setting up.
    argv = [exe, "--unshare-pid", "--die-with-parent"]
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in _NOT_BOUND or entry.name in tops or entry.path in top_files:
                continue
            if entry.is_symlink():  # /bin -> usr/bin and friends
                argv += ["--symlink", os.readlink(entry.path), entry.path]
            else:
                argv += ["--ro-bind", entry.path, entry.path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if "tmp" not in tops:  # else /tmp is a staging directory, bound below
        argv += ["--tmpfs", "/tmp"]
    for top in tops:
        staging = fs / top
        staging.mkdir(parents=True, exist_ok=True)
        argv += ["--bind", str(staging), f"/{top}"]
    # Parents before children, so that an input inside an input directory stays visible.
    for path in sorted(inputs, key=lambda p: p.rstrip("/").count("/")):
        argv += ["--ro-bind", str(inputs[path].absolute()), path.rstrip("/")]
    # check() keeps binds apart from every other path, so their order does not matter.
    for path, source in binds.items():
        argv += ["--bind", str(source.absolute()), path.rstrip("/")]
    return [*argv, "--chdir", "/tmp", "--", *command]


def path_rewriter(paths: Iterable[str], fs: Path) -> Callable[[str], str]:
    """Return a function that maps container paths inside an argument to staged paths.

    Matches cover ``paths`` and their parent directories, longest first, only at path
    boundaries: ``/in/in`` matches in ``--in=/in/in`` and ``/in/in/x`` but not in
    ``/in/input`` or ``/data/in/in``.
    """
    declared = {path.rstrip("/") for path in paths}
    parents = {str(parent) for path in declared for parent in Path(path).parents} - {"/"}
    parents -= declared
    alternatives: list[tuple[str, bool]] = [(path, True) for path in declared]
    # A parent that exists on the host (/tmp, /usr) may only be rewritten on its own.
    alternatives += [(path, not os.path.lexists(path)) for path in parents]
    alternatives.sort(key=lambda item: len(item[0]), reverse=True)
    if not alternatives:
        return lambda arg: arg
    body = "|".join(
        re.escape(path) + (f"(?![{_NAME_CHARS}])" if deep else f"(?![{_NAME_CHARS}/])")
        for path, deep in alternatives
    )
    pattern = re.compile(f"(?<![{_NAME_CHARS}/~])(?:{body})")
    prefix = str(fs.absolute())

    def rewrite(arg: str) -> str:
        return pattern.sub(lambda match: prefix + match.group(0), arg)

    return rewrite
