"""Reading a task's outputs without following links: what is published is what it wrote.

A task may leave a symbolic link in its output (``root -> /``): published, it would point
into the reader's machine; uploaded, the uploader would send whatever it points to (the
upload container's credentials, say). So an output must consist of regular files and
directories only. The walk goes through directory file descriptors (``openat``), never
through a path that could be swapped for a link half-way, and names the first link or
special file it meets by its container path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from gaia.errors import TaskFailed

__all__ = ["UnsafeOutput", "open_file", "sync", "sync_if_produced", "walk"]

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafeOutput(TaskFailed):
    """An output holds a symbolic link or a special file (a fifo, a socket, a device)."""


def _kind(mode: int) -> str | None:
    """What is wrong with a file of this mode, or None for a regular file or directory."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def _refuse(output: str, where: str, kind: str, link: str | None) -> UnsafeOutput:
    target = f" (-> {link})" if link is not None else ""
    if where == output:
        return UnsafeOutput(f"output {output} is {kind}{target}, not data")
    return UnsafeOutput(f"output {output} holds {kind}: {where}{target}")


def _unreadable(output: str, where: str, error: OSError) -> UnsafeOutput:
    """A folder of the output that cannot be opened: whatever is inside it (a link, a
    fifo) could not be checked."""
    return UnsafeOutput(
        f"output {output} holds a folder that cannot be read: {where} ({error.strerror})"
    )


def _readlink(name: str, dir_fd: int | None) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def open_file(host: Path, output: str) -> int:
    """Open the file output ``output`` (staged at ``host``) for reading, refusing a link or
    special file (UnsafeOutput); FileNotFoundError or IsADirectoryError when no file is
    there."""
    try:
        fd = os.open(host, _READ)
    except OSError as exc:
        if not host.is_symlink():
            raise
        raise _refuse(output, output, "a symbolic link", _readlink(str(host), None)) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(str(host))
        raise _refuse(output, output, _kind(mode) or "not a file", None)
    return fd


def walk(host: Path, output: str) -> Iterator[tuple[str, int, int]]:
    """The directory output ``output`` (staged at ``host``): yield ``(relative path, fd,
    directory fd)`` for each regular file, and ``("", -1, fd)`` for each directory after
    its files. The fds are closed when the next item is asked for. Raises UnsafeOutput
    naming the first link or special file, FileNotFoundError when ``host`` is missing,
    NotADirectoryError when it is not a directory."""
    top = os.lstat(host)
    if not stat.S_ISDIR(top.st_mode):
        kind = _kind(top.st_mode)
        if kind is None:
            raise NotADirectoryError(str(host))
        link = _readlink(str(host), None) if stat.S_ISLNK(top.st_mode) else None
        raise _refuse(output, output, kind, link)
    base = output.rstrip("/")

    def unreadable(error: OSError) -> None:  # fwalk skips what it cannot open: not us
        raise _unreadable(output, os.fsdecode(error.filename or "?"), error)

    for dirpath, dirnames, filenames, dirfd in os.fwalk(
        host, follow_symlinks=False, onerror=unreadable
    ):
        relative_dir = os.path.relpath(dirpath, host)
        prefix = "" if relative_dir == "." else relative_dir + "/"
        for name in [*dirnames, *filenames]:
            mode = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
            kind = _kind(mode)
            if kind is not None:
                link = _readlink(name, dirfd) if stat.S_ISLNK(mode) else None
                raise _refuse(output, f"{base}/{prefix}{name}", kind, link)
        for name in dirnames:  # what fwalk cannot open it skips: name it first
            try:
                os.close(os.open(name, _READ | os.O_DIRECTORY, dir_fd=dirfd))
            except OSError as exc:
                raise _unreadable(output, f"{base}/{prefix}{name}", exc) from exc
        for name in filenames:
            fd = os.open(name, _READ, dir_fd=dirfd)
            try:
                yield prefix + name, fd, dirfd
            finally:
                os.close(fd)
        yield prefix, -1, dirfd


def sync(host: Path, output: str) -> None:
    """Check an output as :func:`walk` does and fsync every file and directory of it, so
    that its content is on disk before it counts as complete. The folder that holds it
    is not synced: the output is published by renaming it elsewhere, and the publisher
    syncs the folder it lands in (a staging folder is of no use after a crash)."""
    if output.endswith("/"):
        for name, fd, dirfd in walk(host, output):
            if fd >= 0:
                _drop_set_id(fd, output, f"{output.rstrip('/')}/{name}")
            os.fsync(fd if fd >= 0 else dirfd)
    else:
        fd = open_file(host, output)
        try:
            _drop_set_id(fd, output, output)
            os.fsync(fd)
        finally:
            os.close(fd)


def _drop_set_id(fd: int, output: str, where: str) -> None:
    """A published file runs as no one: a set-user-ID or set-group-ID bit the task left
    would let whoever runs the file later (any user of the machine) act as the task's
    user, or the server's. Cleared, as a copy without privileges would."""
    mode = os.fstat(fd).st_mode
    if mode & (stat.S_ISUID | stat.S_ISGID):
        try:
            os.fchmod(fd, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
        except PermissionError as exc:
            raise UnsafeOutput(
                f"output {output} holds a set-user-ID or set-group-ID file that cannot be "
                f"cleared: {where} ({exc.strerror})"
            ) from exc


def sync_if_produced(host: Path, output: str) -> bool:
    """:func:`sync`, or False when the output was not produced: nothing at ``host``, or
    not of the declared kind (a folder where a file was declared, or the reverse)."""
    try:
        sync(host, output)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    return True
