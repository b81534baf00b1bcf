"""How a task's command runs: sealed by bubblewrap, or (when told) not at all.

Commands are written for a container: they read ``/in/in`` and write ``/out/out``. There
is no container engine on one machine; ``bwrap`` stands in for it, and ``none`` runs the
command as it is.

``bwrap`` (what ``auto`` means)
    The command sees only: the read-only system directories (``/usr``, ``/bin``, ``/lib*``,
    ``/sbin``, ``/etc``), a private ``/proc``, a minimal ``/dev`` and an empty private
    ``/tmp``; its own inputs, read-only at their container paths; and its staging
    directories (``/out``...), writable. Nothing else of the host: no ``/home``, ``/root``,
    ``/var``, ``/srv``, ``/mnt``, no data directory, state database or other task. It has
    its own pid, IPC and (unless the command says ``network: true``) network namespace,
    no capabilities, and a clean environment: ``PATH``, ``HOME=/tmp``, ``LANG`` and the
    command's ``env``. A server running as root runs it as user nobody (65534), so that
    files only root may read stay closed to it and its process limit holds (see
    :mod:`gaia.worker.limits`); any other server runs it as its own user, in a user
    namespace. Killing bubblewrap kills every process the command started.

``none``
    No isolation at all (unsafe: the command can do whatever the server's user can). Inputs
    are symlinked into the staging root and every container path (and its parent
    directories) found inside an argument or an ``env`` value is replaced by its staged
    host path, e.g. ``--in=/in/in`` becomes ``--in=<workdir>/fs/in/in``; a path the
    command builds at run time is not rewritten. A parent directory that exists on the
    host (``/tmp`` for ``/tmp/out/x``) is only rewritten when it stands alone. ``rewrite``
    is its former name.

``auto`` and ``bwrap`` never fall back to ``none``: when bubblewrap cannot run here,
:attr:`Sandbox.problem` says why, and the runner fails every task with that message.
Whether it works is probed once per process (:func:`sandbox`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from gaia.engine.resources import Resources
from gaia.worker import limits as rlimits
from gaia.worker.staging import host_path

__all__ = ["MODES", "NOBODY", "Launch", "Sandbox", "Task", "launch", "resolve", "sandbox"]

logger = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "none")
ALIASES = {"rewrite": "none"}
NOBODY = 65534  # the user a root server's tasks run as
SYSTEM_DIRS = ("bin", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BASE_ENV = {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8"}  # a command's env adds to it
PROBE_TIMEOUT = 30.0
# Characters that continue a path component: a match must not be followed by one of them.
_NAME_CHARS = r"\w.\-"
# What a root server's sandbox keeps, only to become the task's user (setpriv drops them).
_SWITCH_USER_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
_PROBING = threading.Lock()  # workers that start at once wait for one probe
_probed: dict[str, Sandbox] = {}  # the probe's answer, once there is one


@dataclass(frozen=True)
class Sandbox:
    """How tasks run in this process, probed once."""

    mode: str  # "bwrap" or "none"
    problem: str | None = None  # why no task can run
    limits_problem: str | None = None  # why a command's resources cannot be enforced
    bwrap: str | None = None
    setpriv: str | None = None  # a root server's way to the task's user
    env: str | None = None  # a root server's way to the command's environment, after setpriv
    unshare: str | None = None  # a root server's user namespace per task (process limits)
    prlimit: str | None = None
    disable_userns: bool = False  # bubblewrap can forbid user namespaces inside

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def summary(self) -> str:
        """One line for the server's start."""
        if self.problem is not None:
            return (
                f"tasks will NOT run: {self.problem}. Install bubblewrap "
                "(apt-get install bubblewrap), or start with --sandbox none to run tasks "
                "without isolation (unsafe: they can do all that this server's user can)"
            )
        if self.mode == "none":
            return (
                "tasks run WITHOUT isolation (--sandbox none): they can read, change and "
                "reach all that this server's user can (unsafe)"
            )
        user = f"user nobody ({NOBODY})" if self.as_root else "this server's user"
        line = (
            f"tasks run sealed by bubblewrap as {user}: no network unless the command asks, "
            "no capabilities, only their own inputs and outputs"
        )
        if self.limits_problem is not None:
            line += f"; commands with resources will fail: {self.limits_problem}"
        return line


class Launch(NamedTuple):
    """How to start a prepared task: its argv, host working directory and environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Task:
    """What :func:`launch` needs to know of one task."""

    command: Sequence[str]
    inputs: Mapping[str, Path]  # container path -> host path
    binds: Mapping[str, Path]  # container path -> host directory, bound read-write
    tops: Sequence[str]  # top-level staging directories (see staging.written_tops)
    paths: Sequence[str]  # every container path: rewritten without a sandbox
    env: Mapping[str, str]
    network: bool
    resources: Resources | None
    timeout: float | None
    uid: int | None  # None: nobody under a root server, else the server's user
    hide: Sequence[Path]  # host paths to cover if they lie in a bound system directory


def _which(name: str) -> str | None:
    return shutil.which(name)


def _run(argv: list[str]) -> str | None:
    """Run a probe; None when it exits 0, else why not."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            env={"PATH": PATH},
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    why = done.stderr.decode(errors="replace").strip().splitlines()
    return why[-1] if why else f"exit code {done.returncode}"


def _probe_task(box: Sandbox, resources: Resources | None) -> list[str]:
    task = Task(
        command=["true"],
        inputs={},
        binds={},
        tops=[],
        paths=[],
        env={},
        network=False,
        resources=resources,
        timeout=None,
        uid=None,
        hide=(),
    )
    return _bwrap_argv(box, task, Path("/nonexistent"))


def _probe_bwrap() -> Sandbox:
    """Probe bubblewrap with what every task uses, then with limits (2 or 3 processes)."""
    root = os.geteuid() == 0
    tools = {name: _which(name) for name in ("bwrap", "setpriv", "env", "unshare", "prlimit")}
    if tools["bwrap"] is None:
        return Sandbox("bwrap", problem="bubblewrap (bwrap) is not installed")
    if root and tools["setpriv"] is None:
        return Sandbox(
            "bwrap",
            problem="setpriv (util-linux) is not installed; a server running as root needs "
            "it to run tasks as an unprivileged user",
        )
    if root and tools["env"] is None:
        return Sandbox("bwrap", problem="env (coreutils) is not installed")
    box = Sandbox(
        "bwrap",
        bwrap=tools["bwrap"],
        setpriv=tools["setpriv"],
        env=tools["env"],
        unshare=tools["unshare"],
        prlimit=tools["prlimit"],
        disable_userns=not root,
    )
    why = _run(_probe_task(box, None))
    if why is not None and box.disable_userns:  # bubblewrap before 0.8 lacks the option
        box = replace(box, disable_userns=False)
        why = _run(_probe_task(box, None))
    if why is not None:
        logger.warning("sandbox: bubblewrap does not work here: %s", why)
        return Sandbox("bwrap", problem=f"bubblewrap cannot create a sandbox here ({why})")
    logger.debug("sandbox: bubblewrap works (%s)", box.bwrap)
    limits_problem = _limits_problem(box, root)
    if limits_problem is None:
        probe = _probe_task(box, Resources(processes=64, memory=1 << 30))
        if (why := _run(probe)) is not None:
            limits_problem = f"a sandbox with resource limits does not start here ({why})"
    return replace(box, limits_problem=limits_problem)


def _limits_problem(box: Sandbox, root: bool) -> str | None:
    if box.prlimit is None:
        return "prlimit (util-linux) is not installed"
    if root and box.unshare is None:
        return "unshare (util-linux) is not installed"
    return None


def sandbox(requested: str) -> Sandbox:
    """The sandbox for a ``--sandbox`` value; probes bubblewrap once per process."""
    mode = ALIASES.get(requested, requested)
    if mode not in MODES:
        raise ValueError(f"unknown sandbox {requested!r}: use one of {', '.join(MODES)}")
    if mode == "none":
        return _unsandboxed()
    with _PROBING:
        if "bwrap" not in _probed:
            _probed["bwrap"] = _probe_bwrap()
    return _probed["bwrap"]


@functools.cache
def _unsandboxed() -> Sandbox:
    prlimit = _which("prlimit")
    problem = None if prlimit else "prlimit (util-linux) is not installed"
    return Sandbox("none", prlimit=prlimit, limits_problem=problem)


async def resolve(requested: str) -> Sandbox:
    """:func:`sandbox`; the first probe (processes) runs off the event loop."""
    if "bwrap" in _probed or ALIASES.get(requested, requested) not in ("auto", "bwrap"):
        return sandbox(requested)
    return await asyncio.to_thread(sandbox, requested)


def task_user(box: Sandbox, uid: int | None) -> int | None:
    """The host user the command runs as when it is not the server's own, else None."""
    if box.mode != "bwrap" or not box.as_root:
        return None
    chosen = NOBODY if uid is None else uid
    return None if chosen == 0 else chosen


def launch(box: Sandbox, task: Task, fs: Path, scratch: Path) -> Launch:
    """How to start ``task``, whose staging root ``fs`` is laid out (without a sandbox,
    inputs and binds are symlinked into it here)."""
    if box.mode == "bwrap":
        # Not the command's env: bubblewrap runs on the host, as root on a root server,
        # and would load an LD_PRELOAD the command names there. The command's variables
        # reach it inside the sandbox, once nothing privileged runs any more.
        return Launch(_bwrap_argv(box, task, fs), scratch, dict(_BASE_ENV))
    for path, source in [*task.inputs.items(), *task.binds.items()]:
        link = host_path(fs, path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source.absolute(), target_is_directory=source.is_dir())
    rewrite = path_rewriter(task.paths, fs)
    env = {"PATH": PATH, "HOME": str(scratch), "LANG": "C.UTF-8"}
    env.update({name: rewrite(value) for name, value in task.env.items()})
    prefix = _limits(box, task, extra_processes=0)
    return Launch([*prefix, *(rewrite(arg) for arg in task.command)], scratch, env)


def _command_env(box: Sandbox, task: Task) -> list[str]:
    """On a root server, the command's variables set by `env` after setpriv: setpriv runs
    as root inside the sandbox, and an LD_PRELOAD in its environment would run the
    task's code as root there. A program whose name holds '=' goes through sh, which
    `env` would take for one more variable."""
    if not task.env:
        return []
    assert box.env is not None
    prefix = [box.env, *(f"{name}={value}" for name, value in task.env.items())]
    if "=" in task.command[0]:
        prefix += ["/bin/sh", "-c", 'exec "$0" "$@"']
    return prefix


def _limits(box: Sandbox, task: Task, extra_processes: int) -> list[str]:
    if not task.resources:
        return []
    assert box.prlimit is not None, "run_task checks limits_problem first"
    return rlimits.prlimit_args(box.prlimit, task.resources, task.timeout, extra_processes)


def _bwrap_argv(box: Sandbox, task: Task, fs: Path) -> list[str]:
    assert box.bwrap is not None
    # No --new-session: the runner already starts bwrap in a session of its own (so no
    # terminal to inject into), and the sandbox must stay in bwrap's process group for
    # a kill of the group to reach it even while bwrap is still setting up.
    argv = [box.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not task.network:
        argv.append("--unshare-net")
    user = task_user(box, task.uid)
    prefix: list[str] = []
    if user is not None:
        # Root's bubblewrap mounts what only root may read (data under /root, say), then
        # setpriv becomes the task's user for good: no capabilities, none to regain
        # (no_new_privs), no groups. Its own user namespace makes its process count its own.
        argv += ["--cap-drop", "ALL"]
        for cap in _SWITCH_USER_CAPS:
            argv += ["--cap-add", cap]
        assert box.setpriv is not None
        prefix = [box.setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        prefix += ["--nnp", "--bounding-set=-all", "--inh-caps=-all"]
        if task.resources and task.resources.processes is not None:
            assert box.unshare is not None
            prefix += [box.unshare, "--user", "--map-current-user"]
        prefix += _limits(box, task, extra_processes=0)
        prefix += _command_env(box, task)
    else:
        argv += ["--unshare-user", "--cap-drop", "ALL"]
        if task.uid is not None:
            argv += ["--uid", str(task.uid), "--gid", str(task.uid)]
        if box.disable_userns:
            argv.append("--disable-userns")
        # Set for the first program bubblewrap starts, which runs unprivileged already.
        for name, value in task.env.items():
            argv += ["--setenv", name, value]
        # bubblewrap's init runs in the task's user namespace too: one more process
        prefix = _limits(box, task, extra_processes=1)
    argv += _system_binds(task.hide, task.tops)
    if task.network:
        argv += _resolver_binds()
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # Private, writable by any user (as on a host) and, with a memory limit, that big.
    memory = task.resources.memory if task.resources else None
    scratch = ["--perms", "1777", *(["--size", str(memory)] if memory is not None else [])]
    argv += [*scratch, "--tmpfs", "/dev/shm"]
    if "tmp" not in task.tops:  # else /tmp is a staging directory, bound below
        argv += [*scratch, "--tmpfs", "/tmp"]
    for top in task.tops:
        argv += ["--bind", str(fs / top), f"/{top}"]
    # Parents before children, so that an input inside an input directory stays visible.
    for path in sorted(task.inputs, key=lambda p: p.rstrip("/").count("/")):
        argv += ["--ro-bind", str(task.inputs[path].absolute()), path.rstrip("/")]
    # staging.check keeps binds apart from every other path, so their order does not matter.
    for path, source in task.binds.items():
        argv += ["--bind", str(source.absolute()), path.rstrip("/")]
    return [*argv, "--chdir", "/tmp", "--", *prefix, *task.command]


@functools.cache
def _system_entries() -> tuple[tuple[str, str | None], ...]:
    """The system directories that exist here: (path, symlink target or None)."""
    entries: list[tuple[str, str | None]] = []
    for name in SYSTEM_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            entries.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            entries.append((path, None))
    return tuple(entries)


@functools.cache
def _resolver_binds(link: str = "/etc/resolv.conf") -> list[str]:
    """Where the resolver's configuration really is, when that is outside the system
    directories (systemd-resolved links it into /run): without it, a task with the network
    could not look up a name."""
    real = os.path.realpath(link)
    shown = [path for path, target in _system_entries() if target is None]
    if real == link or not os.path.isfile(real):
        return []
    if any(real.startswith(top + "/") for top in shown):
        return []
    return ["--ro-bind", real, real]


def _system_binds(hide: Iterable[Path], tops: Sequence[str]) -> list[str]:
    argv: list[str] = []
    bound = []
    for path, target in _system_entries():
        if path[1:] in tops:  # a container path's staging directory takes its place
            continue
        if target is not None:  # /bin -> usr/bin and friends
            argv += ["--symlink", target, path]
        else:
            argv += ["--ro-bind", path, path]
            bound.append(path)
    # Data kept inside a system directory (a data directory under /etc, say) stays hidden.
    for hidden in hide:
        real = os.path.realpath(hidden)
        if any(real == top or real.startswith(top + "/") for top in bound):
            argv += ["--tmpfs", real]
    return argv


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
