"""The task runner runs real processes, stages their outputs and cleans up after them.

Every test that runs a task is marked slow; those that refuse a task before it starts
are the fast tier's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from task_helpers import NEEDS_BWRAP, SANDBOXES, run, spec

from gaia.worker.runner import run_task
from processes import alive, processes_naming, sleep_marker, sleepers
from waiting import eventually, eventually_async


@pytest.fixture
def rabbit(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "rabbit"
    path.parent.mkdir()
    path.write_bytes(b"a white rabbit\n")
    return path


@pytest.mark.slow
@SANDBOXES
def test_stdout_is_captured_as_the_output(sandbox: str, tmp_path: Path, rabbit: Path) -> None:
    task = spec(
        ("md5sum", "/in/in"), inputs={"/in/in": rabbit}, outputs=("/out/out",), stdout="/out/out"
    )
    result = run(task, tmp_path / "work", sandbox)

    assert result.ok, result.error
    assert result.exit_code == 0 and result.error is None
    staged = result.staged["/out/out"]
    assert staged.is_relative_to(tmp_path / "work")
    digest = hashlib.md5(rabbit.read_bytes()).hexdigest()
    # Under bwrap the tool sees the container path; without a sandbox, the staged host path.
    name = "/in/in" if sandbox == "bwrap" else str(tmp_path / "work" / "fs" / "in" / "in")
    assert staged.read_text() == f"{digest}  {name}\n"
    assert (tmp_path / "work" / "log").read_text() == f"{digest}  {name}\n"
    assert result.log_tail == (f"{digest}  {name}",)


@pytest.mark.slow
@SANDBOXES
def test_a_file_written_at_its_container_path_is_staged(sandbox: str, tmp_path: Path) -> None:
    task = spec(("sh", "-c", "echo computed > /out/deep/result"), outputs=("/out/deep/result",))
    result = run(task, tmp_path, sandbox)

    assert result.ok, result.error
    assert result.staged["/out/deep/result"].read_text() == "computed\n"


@pytest.mark.slow
@SANDBOXES
def test_directory_input_and_output(sandbox: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a").write_text("A")
    script = "mkdir /out/sim && cp /in/dir/a /out/sim/a && echo B > /out/sim/b"
    task = spec(("sh", "-c", script), inputs={"/in/dir/": source}, outputs=("/out/sim/",))
    result = run(task, tmp_path / "work", sandbox)

    assert result.ok, result.error
    staged = result.staged["/out/sim/"]
    assert staged.is_dir()
    assert sorted(p.name for p in staged.iterdir()) == ["a", "b"]
    assert (staged / "a").read_text() == "A"


@pytest.mark.slow
@SANDBOXES
def test_a_missing_declared_output_fails_naming_it(sandbox: str, tmp_path: Path) -> None:
    task = spec(("sh", "-c", "echo nothing > /out/other"), outputs=("/out/out", "/out/dir/"))
    result = run(task, tmp_path, sandbox)

    assert not result.ok
    assert result.exit_code == 0
    assert result.staged == {}
    assert result.error is not None
    assert "md5-rabbit" in result.error
    assert "declared outputs /out/out, /out/dir/ were not produced" in result.error


@pytest.mark.slow
@SANDBOXES
def test_a_non_zero_exit_fails_and_stages_nothing(sandbox: str, tmp_path: Path) -> None:
    script = "echo partial > /out/out; echo oops >&2; exit 3"
    result = run(spec(("sh", "-c", script), outputs=("/out/out",)), tmp_path, sandbox)

    assert not result.ok
    assert result.exit_code == 3
    assert result.staged == {}
    assert (
        result.error == "process 'md5-rabbit' (run 1) in namespace 'triangle' failed: exit code 3"
    )
    assert result.log_tail == ("oops",)


@pytest.mark.slow
def test_a_command_that_cannot_start_fails(tmp_path: Path) -> None:
    result = run(spec(("/no/such/tool",)), tmp_path, "none")

    assert not result.ok and result.exit_code is None
    assert result.error is not None and "could not start '/no/such/tool'" in result.error


@pytest.mark.slow
def test_death_by_signal_is_reported(tmp_path: Path) -> None:
    result = run(spec(("sh", "-c", "kill -KILL $$")), tmp_path, "none")

    assert not result.ok and result.exit_code is None
    assert result.error is not None and result.error.endswith("killed by signal SIGKILL")


@pytest.mark.slow
@SANDBOXES
def test_on_line_gets_each_line_as_it_arrives(sandbox: str, tmp_path: Path) -> None:
    seen: list[tuple[str, str, float]] = []
    started: list[int] = []
    script = "echo one; echo two >&2; echo three; sleep 0.4; printf 'no newline' >&2"
    result = run(
        spec(("sh", "-c", script)),
        tmp_path,
        sandbox,
        on_line=lambda stream, line: seen.append((stream, line, time.monotonic())),
        on_start=started.append,
    )

    assert result.ok, result.error
    assert len(started) == 1 and started[0] > 0
    lines = [(stream, line) for stream, line, _ in seen]
    assert [line for stream, line in lines if stream == "stdout"] == ["one", "three"]
    assert [line for stream, line in lines if stream == "stderr"] == ["two", "no newline"]
    # The first lines came while the command was still running, not all at the end.
    assert seen[-1][2] - seen[0][2] > 0.3
    assert sorted((tmp_path / "log").read_text().splitlines()) == sorted(line for _, line in lines)


@pytest.mark.slow
@SANDBOXES
def test_large_output_on_both_streams_does_not_deadlock(sandbox: str, tmp_path: Path) -> None:
    counts = {"stdout": 0, "stderr": 0}

    def count(stream: str, line: str) -> None:
        counts[stream] += 1

    script = "seq 100000 >&2 & seq 100000; wait"
    task = spec(("sh", "-c", script), outputs=("/out/out",), stdout="/out/out", timeout=20)
    result = run(task, tmp_path, sandbox, on_line=count)

    assert result.ok, result.error
    assert counts == {"stdout": 100000, "stderr": 100000}
    expected = "".join(f"{n}\n" for n in range(1, 100001))
    assert result.staged["/out/out"].read_text() == expected
    assert len(result.log_tail) == 50


@pytest.mark.slow
@SANDBOXES
def test_a_timeout_kills_the_command_and_reports_it(sandbox: str, tmp_path: Path) -> None:
    marker = sleep_marker()
    task = spec(
        ("sh", "-c", f"sleep {marker} & echo x > /out/out; sleep {marker}"),
        outputs=("/out/out",),
        timeout=0.5,
    )
    began = time.monotonic()
    result = run(task, tmp_path, sandbox)

    assert time.monotonic() - began < 60  # a guard: untimed, the sleeps last five minutes
    assert not result.ok
    assert result.exit_code is None and result.staged == {}
    assert result.error is not None and result.error.endswith("timed out after 0.5s")
    _assert_gone(marker)


@pytest.mark.slow
@SANDBOXES
def test_cancelling_kills_the_whole_process_tree(sandbox: str, tmp_path: Path) -> None:
    marker = sleep_marker()
    pids: list[int] = []

    async def scenario() -> None:
        task = spec(("sh", "-c", f"sleep {marker} & sleep {marker}"), outputs=("/out/out",))
        running = asyncio.create_task(
            run_task(task, tmp_path, sandbox=sandbox, on_start=pids.append)
        )
        # Both sleeps (the child and the grandchild) can run before the runner has
        # reported the start: a cancel then lands in the start, which is another test.
        await eventually_async(
            lambda: (pids, sleepers(marker)),
            "the start reported and both sleeps running",
            until=lambda got: got[0] and len(got[1]) == 2,
        )
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(scenario())
    assert not alive(pids[0])
    _assert_gone(marker)


@pytest.mark.slow
@SANDBOXES
def test_a_cancel_at_any_moment_of_the_start_leaves_nothing_running(
    sandbox: str, tmp_path: Path
) -> None:
    """A halt can land while the sandbox is still being set up; asyncio's own cleanup of a
    cancelled start killed only bwrap and then waited for pipes its sandbox held open."""
    marker = sleep_marker()

    async def cancel_after(delay: float, workdir: Path) -> None:
        task = spec(("sh", "-c", f"sleep {marker}"), outputs=("/out/out",))
        running = asyncio.create_task(run_task(task, workdir, sandbox=sandbox))
        await asyncio.sleep(delay)
        running.cancel()
        # A guard against a hang, not a timing claim: cancelling takes at most the grace.
        done, _ = await asyncio.wait({running}, timeout=30)
        assert done, f"cancelled {delay * 1000:.1f} ms after the start, the task never ended"

    async def scenario() -> None:
        for step in range(16):
            await cancel_after(step * 0.0005, tmp_path / str(step))

    asyncio.run(scenario())
    assert processes_naming(marker) == []


@pytest.mark.slow
@NEEDS_BWRAP
def test_inputs_are_read_only_under_bwrap(tmp_path: Path, rabbit: Path) -> None:
    script = "echo scribble >> /in/in; rm -f /in/in; echo still here > /out/out"
    task = spec(("sh", "-c", script), inputs={"/in/in": rabbit}, outputs=("/out/out",))
    result = run(task, tmp_path / "work", "bwrap")

    assert result.ok, result.error
    assert rabbit.read_bytes() == b"a white rabbit\n"
    # Read-only mounts, and (under a root server) a user who does not own the file.
    assert any(
        "Read-only file system" in line or "Permission denied" in line for line in result.log_tail
    )


@pytest.mark.slow
def test_without_a_sandbox_container_paths_are_rewritten_inside_arguments(
    tmp_path: Path, rabbit: Path
) -> None:
    args = ("--in=/in/in", "/in/in/x", "/in/input", "/data/in/in", "/in", "/inn", "-o", "/out/o")
    task = spec(("echo", *args), inputs={"/in/in": rabbit}, outputs=("/out/o",), stdout="/out/o")
    result = run(task, tmp_path, "rewrite")  # the former name of "none" still works

    assert result.ok, result.error
    fs = tmp_path / "fs"
    expected = f"--in={fs}/in/in {fs}/in/in/x {fs}/in/input /data/in/in {fs}/in /inn -o {fs}/out/o"
    assert result.staged["/out/o"].read_text() == expected + "\n"


@pytest.mark.slow
@SANDBOXES
def test_container_paths_under_tmp(sandbox: str, tmp_path: Path, rabbit: Path) -> None:
    inputs = {"/tmp/gaia-in/rabbit": rabbit}
    task = spec(
        ("cat", "/tmp/gaia-in/rabbit"),
        inputs=inputs,
        outputs=("/tmp/gaia-out/out",),
        stdout="/tmp/gaia-out/out",
    )
    result = run(task, tmp_path / "work", sandbox)

    assert result.ok, result.error
    assert result.staged["/tmp/gaia-out/out"].read_bytes() == rabbit.read_bytes()
    assert result.staged["/tmp/gaia-out/out"].is_relative_to(tmp_path / "work")


@pytest.mark.slow
@SANDBOXES
def test_an_input_file_directly_under_the_root(sandbox: str, tmp_path: Path, rabbit: Path) -> None:
    task = spec(
        ("cp", "/rabbit.txt", "/out/out"), inputs={"/rabbit.txt": rabbit}, outputs=("/out/out",)
    )
    result = run(task, tmp_path / "work", sandbox)

    assert result.ok, result.error
    assert result.staged["/out/out"].read_bytes() == rabbit.read_bytes()


@pytest.mark.slow
@SANDBOXES
def test_a_writable_bind_is_written_in_place(sandbox: str, tmp_path: Path, rabbit: Path) -> None:
    host = tmp_path / "volume" / "out"
    host.mkdir(parents=True)
    (host / "before").write_text("kept\n")
    script = 'cat /in/in > /out/copy && cat /out/before > "$COPY_TO" && echo "$GREETING"'
    task = spec(
        ("sh", "-c", script),
        inputs={"/in/in": rabbit},
        binds={"/out": host},
        uid=0,  # the volume is root's: the task runs as a container's root (no capabilities)
        env={"COPY_TO": "/out/again", "GREETING": "hello from env"},
    )
    result = run(task, tmp_path / "work", sandbox)

    assert result.ok, result.error
    assert (host / "copy").read_bytes() == rabbit.read_bytes()
    # Environment values are container paths too: without a sandbox they are rewritten.
    assert (host / "again").read_text() == "kept\n"
    assert result.log_tail == ("hello from env",)
    assert sorted(p.name for p in host.iterdir()) == ["again", "before", "copy"]
    assert not (host / "copy").is_symlink()


@pytest.mark.slow
@SANDBOXES
def test_a_failed_task_keeps_what_it_wrote_to_a_bind(sandbox: str, tmp_path: Path) -> None:
    host = tmp_path / "volume"
    host.mkdir()
    script = "echo partial > /data/rw/part; exit 2"
    task = spec(("sh", "-c", script), binds={"/data/rw/": host}, uid=0)
    result = run(task, tmp_path / "work", sandbox)

    assert not result.ok and result.exit_code == 2
    assert (host / "part").read_text() == "partial\n"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"binds": {"/out": Path("/no/such/dir")}}, "writable bind /out needs /no/such/dir"),
        ({"binds": {"/out": Path("/")}, "outputs": ("/out/x",)}, "overlaps container path /out/x"),
        ({"binds": {"/a/b": Path("/"), "/a": Path("/")}}, "writable bind /a/b overlaps"),
        ({"binds": {"/dev/x": Path("/")}}, "is under /dev"),
        ({"inputs": {"/in/in": Path("/no/such/file")}}, "input /in/in needs the file"),
        ({"outputs": ("/proc/out",)}, "is under /proc"),
        ({"outputs": ("out",)}, "must be absolute"),
        ({"outputs": ("/out/../etc",)}, "'..' segment"),
    ],
)
def test_a_task_that_cannot_run_fails_before_starting(
    tmp_path: Path, fields: dict[str, Any], reason: str
) -> None:
    started: list[int] = []
    result = run(spec(("true",), **fields), tmp_path, "none", on_start=started.append)

    assert not result.ok and started == []
    assert result.error is not None and reason in result.error


def test_an_unknown_sandbox_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sandbox 'docker'"):
        run(spec(("true",)), tmp_path, "docker")


# Processes are found by a unique `sleep` duration, which also works inside bwrap's own
# pid namespace, where the pids the command sees are not the host's.


def _assert_gone(marker: str) -> None:
    eventually(lambda: sleepers(marker), f"every `sleep {marker}` to die", until=lambda s: s == [])


@pytest.mark.slow
@SANDBOXES
def test_a_reused_workdir_shows_a_task_nothing_of_the_one_before(
    sandbox: str, tmp_path: Path, rabbit: Path
) -> None:
    """Workers reuse one folder for all their tasks (making folders is what costs most on
    some disks): what a failed task left must neither be seen by the next one nor be
    taken for its output."""
    work = tmp_path / "slot"
    first = spec(
        ("sh", "-c", "mkdir /out/sim && echo secret > /out/sim/x && echo s > /out/o; exit 1"),
        inputs={"/in/in": rabbit},
        outputs=("/out/sim/", "/out/o"),
    )
    assert not run(first, work, sandbox).ok
    peek = "ls -R /out > /out/seen 2>&1; cat /out/sim/x /out/o 2>/dev/null >> /out/seen; true"
    second = spec(("sh", "-c", peek), outputs=("/out/seen", "/out/sim/"), run=2)
    result = run(second, work, sandbox)
    assert not result.ok  # /out/sim/ was the first task's, not made by this one
    assert "/out/sim/" in (result.error or "")
    seen = (work / "fs" / "out" / "seen").read_text()
    assert "secret" not in seen and "sim" not in seen and "in" not in seen.split()
