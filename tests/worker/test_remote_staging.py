"""An operator's worker hands its outputs over on the data volume, durably."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaia.errors import TaskFailed
from gaia.worker.remote import RemoteWorker
from gaia.worker.runner import TaskResult


def test_staged_outputs_are_synced_where_the_operator_publishes_them(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    """The work folder is usually the pod's own file system: moving an output to the data
    volume copies it, and the copy must be on disk before the operator is told (it then
    only renames it into the data)."""
    work, staging = tmp_path / "work", tmp_path / "data" / "staging" / "job"
    (work / "fs" / "out" / "dir" / "sub").mkdir(parents=True)
    (work / "fs" / "out" / "file").write_text("f\n")
    (work / "fs" / "out" / "dir" / "sub" / "a").write_text("a\n")
    worker = RemoteWorker("w", "127.0.0.1:1", idle=1, data=tmp_path / "data", work=work)
    staged = {"/out/file": work / "fs" / "out" / "file", "/out/dir/": work / "fs" / "out" / "dir"}
    worker._stage(TaskResult(True, 0, staged, None, ()), staging)

    out = staging / "out"
    assert (out / "file").read_text() == "f\n" and (out / "dir" / "sub" / "a").read_text() == "a\n"
    expected = {out / "file", out / "dir", out / "dir" / "sub", out / "dir" / "sub" / "a", out}
    assert set(fsynced) >= expected


def test_an_output_swapped_for_a_link_after_the_run_is_not_staged(tmp_path: Path) -> None:
    """Something the task left running (unsandboxed, a daemon can escape its group) could
    replace a checked output by a link before it is moved: staging refuses it by name."""
    work, staging = tmp_path / "work", tmp_path / "data" / "staging" / "job"
    (work / "fs" / "out").mkdir(parents=True)
    (work / "fs" / "out" / "file").symlink_to("/etc/passwd")
    worker = RemoteWorker("w", "127.0.0.1:1", idle=1, data=tmp_path / "data", work=work)
    staged = {"/out/file": work / "fs" / "out" / "file"}
    with pytest.raises(TaskFailed, match="output /out/file is a symbolic link"):
        worker._stage(TaskResult(True, 0, staged, None, ()), staging)
