"""A task is sealed: each escape is attempted from inside a task, through the real runner.

The tests run as root here, the hardest case: the sandbox must take away what root has.
One test runs the runner as another user too (a server that is not root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from task_helpers import NEEDS_BWRAP, SANDBOXES, run, spec

from gaia.engine.resources import Resources
from gaia.worker import sandbox as sandboxes
from processes import sleep_marker, sleepers

pytestmark = pytest.mark.slow  # every test runs tasks: real processes

ROOT = os.geteuid() == 0
STATUS = ("grep", "-E", "^(Uid|Cap|NoNewPrivs)", "/proc/self/status")


def status_fields(lines: tuple[str, ...]) -> dict[str, str]:
    """/proc/self/status as printed by the task: field -> value."""
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the server's, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


# -- privileges ------------------------------------------------------------------------


@NEEDS_BWRAP
@pytest.mark.parametrize("uid", [None, 0], ids=["default-user", "container-root"])
def test_a_task_has_no_capabilities(tmp_path: Path, uid: int | None) -> None:
    result = run(spec(STATUS, uid=uid), tmp_path, "bwrap")

    assert result.ok, result.error
    status = status_fields(result.log_tail)
    for field in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(status[field], 16) == 0, f"{field} is {status[field]}"
    expected = "0" if uid == 0 else str(sandboxes.NOBODY if ROOT else os.geteuid())
    assert status["Uid"].split() == [expected] * 4
    assert status["NoNewPrivs"] == "1"  # set-user-ID programs give nothing back


@NEEDS_BWRAP
def test_a_task_cannot_remount_or_write_the_host(tmp_path: Path) -> None:
    marker = f"gaia-escape-{os.getpid()}"
    script = f"""
        mount -o remount,rw /usr && echo REMOUNTED
        mount -t tmpfs none /usr/local && echo MOUNTED
        echo x > /etc/{marker} && echo WROTE-ETC
        echo x > /usr/{marker} && echo WROTE-USR
        ls /var && echo SEES-VAR
        true
    """
    result = run(spec(("sh", "-c", script)), tmp_path, "bwrap")

    assert result.ok, result.error
    assert not {"REMOUNTED", "MOUNTED", "WROTE-ETC", "WROTE-USR", "SEES-VAR"} & set(
        result.log_tail
    ), result.log_tail
    assert not Path(f"/etc/{marker}").exists() and not Path(f"/usr/{marker}").exists()


# -- what a task can see -----------------------------------------------------------------


@NEEDS_BWRAP
def test_a_task_sees_the_system_its_inputs_and_its_outputs_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mine").mkdir(parents=True)
    (data / "mine" / "x").write_text("mine\n")
    (data / "other-namespace").mkdir()
    (data / "other-namespace" / "secret").write_text("not yours\n")
    (data / ".gaia").mkdir()
    (data / ".gaia" / "state.db").write_text("the server's state\n")
    script = f"""
        ls -A /
        cat /in/x
        for path in {data}/other-namespace/secret {data}/.gaia/state.db /root /home /work \\
                    /srv /mnt /var {tmp_path}; do
            test -e "$path" && echo "VISIBLE $path"
        done
        cat /etc/shadow > /dev/null 2>&1 && echo "READ /etc/shadow"
        echo done > /out/out
    """
    task = spec(("sh", "-c", script), inputs={"/in/x": data / "mine" / "x"}, outputs=("/out/out",))
    result = run(task, tmp_path / "work", "bwrap", hide=(data,))

    assert result.ok, result.error
    lines = list(result.log_tail)
    system = {name for name in sandboxes.SYSTEM_DIRS if os.path.lexists(f"/{name}")}
    assert set(lines[: lines.index("mine")]) == system | {"dev", "proc", "tmp", "in", "out"}
    assert not [line for line in lines if line.startswith(("VISIBLE", "READ"))], lines


@NEEDS_BWRAP
@pytest.mark.skipif(not ROOT, reason="tasks run as the server's own user, who can read it")
def test_a_private_input_of_a_root_server_fails_before_the_task_starts(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.write_text("root's only\n")
    private.chmod(0o600)
    started: list[int] = []
    task = spec(("cat", "/in/in"), inputs={"/in/in": private})
    result = run(task, tmp_path / "work", "bwrap", on_start=started.append)

    assert not result.ok and started == []
    assert result.error is not None
    assert f"input /in/in ({private}) is not readable by the task's user nobody (65534)" in (
        result.error
    )
    assert f"chmod -R o+rX {private}" in result.error


def test_a_task_with_the_network_finds_a_resolver_configured_outside_etc(tmp_path: Path) -> None:
    target = tmp_path / "run" / "stub-resolv.conf"  # as systemd-resolved links it
    target.parent.mkdir()
    target.write_text("nameserver 127.0.0.53\n")
    link = tmp_path / "resolv.conf"
    link.symlink_to(target)

    assert sandboxes._resolver_binds.__wrapped__(str(link)) == [
        "--ro-bind",
        str(target),
        str(target),
    ]
    assert sandboxes._resolver_binds.__wrapped__(str(target)) == []  # a file: in /etc already


def test_a_data_directory_inside_a_system_directory_is_covered(tmp_path: Path) -> None:
    binds = sandboxes._system_binds([Path("/etc"), Path("/srv/x"), tmp_path], [])

    assert binds[-2:] == ["--tmpfs", "/etc"]  # the only hidden path that is shown at all
    assert "/srv/x" not in binds and str(tmp_path) not in binds


@SANDBOXES
def test_a_task_has_a_clean_environment(
    sandbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAIA_SERVER_SECRET", "hunter2")
    result = run(spec(("env",), env={"MODE": "fast", "LANG": "C"}), tmp_path, sandbox)

    assert result.ok, result.error
    env = dict(line.split("=", 1) for line in result.log_tail)
    env.pop("PWD", None)  # bubblewrap says where it started the command
    assert sorted(env) == ["HOME", "LANG", "MODE", "PATH"]
    assert env["MODE"] == "fast" and env["LANG"] == "C"  # the command's own win
    assert env["HOME"] == ("/tmp" if sandbox == "bwrap" else str(tmp_path / "tmp"))


@NEEDS_BWRAP
def test_the_commands_environment_reaches_no_process_on_the_host(tmp_path: Path) -> None:
    """bubblewrap runs on the host (as root, on a root server): an LD_PRELOAD in its
    environment would run a library the command names there. glibc's LD_DEBUG_OUTPUT
    shows which processes saw the command's variables: each writes a trace file."""
    trace = tmp_path / "trace"
    env = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(trace)}
    result = run(spec(("true",), env=env), tmp_path / "work", "bwrap")

    assert result.ok, result.error
    assert not list(tmp_path.glob("trace.*")), "a process outside the sandbox saw the env"


@NEEDS_BWRAP
def test_the_commands_environment_reaches_it_only_once_it_is_unprivileged(
    tmp_path: Path,
) -> None:
    """On a root server setpriv runs as root inside the sandbox before it becomes the
    task's user: the command's variables must reach only what runs after it."""
    env = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": "/out/trace"}
    task = spec(("sh", "-c", "echo done > /out/o"), env=env, outputs=("/out/o",))
    result = run(task, tmp_path, "bwrap")

    assert result.ok, result.error
    traces = list((tmp_path / "fs" / "out").glob("trace.*"))
    assert traces, "the command never saw its own environment"
    user = sandboxes.NOBODY if ROOT else os.geteuid()
    assert {path.stat().st_uid for path in traces} == {user}  # none written as root


@NEEDS_BWRAP
@pytest.mark.parametrize("path", ["/usr/bin/setpriv", "/lib64/x", "/etc/ld.so.preload", "/bin/"])
def test_no_container_path_may_take_a_system_folders_place(tmp_path: Path, path: str) -> None:
    """A path under /usr would replace the host's /usr in the sandbox, from where a root
    server's sandbox runs setpriv as root: the task would choose what runs as root."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "x").write_text("x\n")
    top = path.split("/")[1]
    binding = {path: source if path.endswith("/") else source / "x"}
    for task in (spec(("true",), inputs=binding), spec(("true",), outputs=(path,))):
        result = run(task, tmp_path / "work", "bwrap")

        assert not result.ok
        assert result.error is not None
        assert f"is under /{top}, which the sandbox shows from this machine" in result.error


# -- network -----------------------------------------------------------------------------


def _connect(port: int) -> tuple[str, ...]:
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10)"
    return ("python3", "-c", code + "; print('REACHED')")


@NEEDS_BWRAP
def test_a_task_has_no_network_unless_its_command_asks(tmp_path: Path, listener: int) -> None:
    sealed = run(spec(_connect(listener)), tmp_path / "sealed", "bwrap")
    allowed = run(spec(_connect(listener), network=True), tmp_path / "allowed", "bwrap")

    assert not sealed.ok and "REACHED" not in sealed.log_tail
    assert any("ConnectionRefusedError" in line for line in sealed.log_tail), sealed.log_tail
    assert allowed.ok, allowed.log_tail
    assert allowed.log_tail == ("REACHED",)


# -- resources ---------------------------------------------------------------------------


@SANDBOXES
def test_a_fork_bomb_is_stopped_at_the_process_limit(sandbox: str, tmp_path: Path) -> None:
    if sandbox == "none" and ROOT:
        pytest.skip("root's processes are never limited: without a sandbox tasks stay root")
    marker = sleep_marker()
    task = spec(
        ("sh", "-c", f"while :; do sleep {marker} & done"),
        resources=Resources(processes=8),
        timeout=60,
    )
    result = run(task, tmp_path, sandbox)

    assert not result.ok
    assert result.error is not None
    assert "timed out" not in result.error
    assert "hit its limit of 8 processes (resources.processes)" in result.error, result.error
    assert sleepers(marker) == []


@NEEDS_BWRAP
@pytest.mark.parametrize(("children", "ok"), [(3, True), (4, False)])
def test_the_process_limit_counts_the_tasks_own_processes(
    tmp_path: Path, children: int, ok: bool
) -> None:
    script = " ".join(["sleep 0.5 &"] * children) + " wait"
    task = spec(("sh", "-c", script), resources=Resources(processes=4))
    result = run(task, tmp_path, "bwrap")

    assert result.ok is ok, (result.error, result.log_tail)


@SANDBOXES
def test_memory_beyond_the_limit_fails_the_task_naming_it(sandbox: str, tmp_path: Path) -> None:
    task = spec(
        ("python3", "-c", "b = bytearray(256 << 20)"),
        resources=Resources(memory=64 << 20),
    )
    result = run(task, tmp_path, sandbox)

    assert not result.ok and result.exit_code == 1
    assert result.error is not None
    assert "ran out of memory: 64Mi per process (resources.memory)" in result.error, result.error
    assert "MemoryError" in result.error


@NEEDS_BWRAP
def test_the_private_tmp_is_capped_at_the_memory_limit(tmp_path: Path) -> None:
    for where in ("/tmp", "/dev/shm"):
        script = f"dd if=/dev/zero of={where}/big bs=1M count=100"
        task = spec(("sh", "-c", script), resources=Resources(memory=32 << 20))
        result = run(task, tmp_path / where[1:], "bwrap")

        assert not result.ok
        assert any("No space left on device" in line for line in result.log_tail), where


@NEEDS_BWRAP
def test_the_private_tmp_and_shm_are_writable(tmp_path: Path) -> None:
    script = "echo t > /tmp/t && echo s > /dev/shm/s && echo h > $HOME/h && cat /tmp/t /dev/shm/s"
    result = run(spec(("sh", "-c", script)), tmp_path, "bwrap")

    assert result.ok, result.log_tail
    assert result.log_tail == ("t", "s")


@NEEDS_BWRAP
def test_cpu_time_beyond_cpu_times_timeout_kills_the_task(tmp_path: Path) -> None:
    # 50m (a twentieth of a core) over 20 s: one CPU-second, then SIGXCPU.
    task = spec(("sh", "-c", "while :; do :; done"), resources=Resources(cpu=50), timeout=20)
    result = run(task, tmp_path, "bwrap")

    assert not result.ok
    assert result.error is not None
    # bubblewrap's init reports the command's death by SIGXCPU as 128 + 24
    assert "killed by signal SIGXCPU" in result.error or "exit code 152" in result.error
    assert "it used up its CPU time: 1s per process (resources.cpu 50m" in result.error


# -- outputs -----------------------------------------------------------------------------


@SANDBOXES
@pytest.mark.parametrize(
    ("script", "named"),
    [
        ("ln -s / /out/sim/root", "output /out/sim/ holds a symbolic link: /out/sim/root (-> /)"),
        (
            "mkdir -p /out/sim/a/b && ln -s /etc/passwd /out/sim/a/b/p",
            "output /out/sim/ holds a symbolic link: /out/sim/a/b/p (-> /etc/passwd)",
        ),
        ("mkfifo /out/sim/pipe", "output /out/sim/ holds a fifo: /out/sim/pipe"),
        (
            "rm -r /out/sim && ln -s /etc /out/sim",
            "output /out/sim/ is a symbolic link (-> /etc), not data",
        ),
    ],
    ids=["to-root", "deep", "fifo", "the-output-itself"],
)
def test_a_link_in_an_output_directory_fails_the_task_naming_it(
    sandbox: str, tmp_path: Path, script: str, named: str
) -> None:
    task = spec(("sh", "-c", f"mkdir /out/sim && echo data > /out/sim/x && {script}"))
    task = spec(task.command, outputs=("/out/sim/",))
    result = run(task, tmp_path, sandbox)

    assert not result.ok and result.staged == {}
    assert result.error is not None and result.error.endswith(named), result.error


@SANDBOXES
def test_a_file_output_that_is_a_link_fails_naming_it(sandbox: str, tmp_path: Path) -> None:
    task = spec(("ln", "-s", "/etc/passwd", "/out/out"), outputs=("/out/out",))
    result = run(task, tmp_path, sandbox)

    assert not result.ok
    assert result.error is not None
    assert result.error.endswith("output /out/out is a symbolic link (-> /etc/passwd), not data")


@SANDBOXES
def test_set_user_and_group_id_bits_of_outputs_are_cleared(sandbox: str, tmp_path: Path) -> None:
    """A published set-user-ID copy of a shell would let any user of the machine act as
    the task's user (or the server's, on a server that is not root)."""
    script = (
        "cp /bin/sh /out/sh && chmod 4755 /out/sh && mkdir /out/tree && "
        "cp /bin/sh /out/tree/sh && chmod 6750 /out/tree/sh && chmod 2755 /out/tree"
    )
    task = spec(("sh", "-c", script), outputs=("/out/sh", "/out/tree/"))
    result = run(task, tmp_path, sandbox)

    assert result.ok, result.error
    out = tmp_path / "fs" / "out"
    assert stat.S_IMODE((out / "sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "tree" / "sh").stat().st_mode) == 0o750
    assert (out / "tree").stat().st_mode & stat.S_ISGID  # a folder's only shares its group


@SANDBOXES
def test_staged_outputs_are_fsynced_before_success(
    sandbox: str, tmp_path: Path, fsynced: list[Path]
) -> None:
    script = "mkdir -p /out/sim/sub && echo a > /out/sim/a && echo b > /out/sim/sub/b"
    task = spec(("sh", "-c", f"{script} && echo f > /out/file"), outputs=("/out/sim/", "/out/file"))
    result = run(task, tmp_path, sandbox)

    assert result.ok, result.error
    out = tmp_path / "fs" / "out"
    expected = {out / "sim", out / "sim" / "a", out / "sim" / "sub", out / "sim" / "sub" / "b"}
    assert set(fsynced) >= expected | {out / "file"}
    # The staging folder they leave is not: its publisher syncs the folder they land in
    # (tests/store/test_local_store.py).
    assert out not in fsynced


# -- no sandbox, no task -----------------------------------------------------------------


def test_without_bubblewrap_auto_finds_no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    box = sandboxes._probe_bwrap()  # the probe itself, not the answer kept for tasks

    assert box.problem == "bubblewrap (bwrap) is not installed"
    assert "tasks will NOT run" in box.summary() and "--sandbox none" in box.summary()


def test_without_a_sandbox_no_task_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = sandboxes.Sandbox("bwrap", problem="bubblewrap (bwrap) is not installed")
    monkeypatch.setitem(sandboxes._probed, "bwrap", missing)
    started: list[int] = []
    result = run(spec(("touch", str(tmp_path / "ran"))), tmp_path, "auto", on_start=started.append)

    assert not result.ok and started == [] and not (tmp_path / "ran").exists()
    assert result.error == (
        "process 'md5-rabbit' (run 1) in namespace 'triangle' failed: no sandbox to run it in: "
        "bubblewrap (bwrap) is not installed (start the server with --sandbox none to run "
        "tasks without isolation, unsafely)"
    )


# -- a server that is not root -----------------------------------------------------------

_AS_ANOTHER_USER = """
import asyncio, json, sys
from pathlib import Path
from gaia.engine.resources import Resources
from gaia.worker.runner import TaskSpec, run_task

port, work = int(sys.argv[1]), Path(sys.argv[2])

def task(command, **fields):
    return TaskSpec(root="ns", process="p", run=1, image=None, command=tuple(command),
                    inputs={}, outputs=(), **fields)

def run(name, spec):
    result = asyncio.run(run_task(spec, work / name, sandbox="bwrap"))
    return {"ok": result.ok, "error": result.error, "tail": list(result.log_tail)}

connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10)"
print(json.dumps({
    "status": run("status", task(["grep", "-E", "^(Uid|Cap)", "/proc/self/status"])),
    "three": run("three", task(["sh", "-c", "sleep 0.5 & sleep 0.5 & sleep 0.5 & wait"],
                               resources=Resources(processes=4))),
    "four": run("four", task(["sh", "-c", "sleep 0.5 & sleep 0.5 & sleep 0.5 & sleep 0.5 & wait"],
                              resources=Resources(processes=4))),
    "network": run("network", task(["python3", "-c", connect])),
    "root": run("root", task(["ls", "-A", "/"])),
    "hidden": run("hidden", TaskSpec(
        root="ns", process="p", run=1, image=None, inputs={}, outputs=("/out/d/",),
        command=("sh", "-c", "mkdir -p /out/d/h && ln -s /etc/passwd /out/d/h/l && "
                             "chmod 0311 /out/d/h"))),
    "env": run("env", task(["true"], env={"LD_DEBUG": "files",
                                         "LD_DEBUG_OUTPUT": str(work / "trace")})),
    "traces": [path.name for path in work.glob("trace.*")],
}))
"""


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gaia-nobody-"))
    os.chown(path, sandboxes.NOBODY, sandboxes.NOBODY)
    yield path
    shutil.rmtree(path)


@NEEDS_BWRAP
@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="needs root to switch")
def test_a_server_that_is_not_root_seals_tasks_as_its_own_user(
    nobody_dir: Path, listener: int
) -> None:
    user = ["setpriv", f"--reuid={sandboxes.NOBODY}", f"--regid={sandboxes.NOBODY}"]
    script = textwrap.dedent(_AS_ANOTHER_USER)
    done = subprocess.run(
        [*user, "--clear-groups", sys.executable, "-c", script, str(listener), str(nobody_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=nobody_dir,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)

    status = status_fields(tuple(results["status"]["tail"]))
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["Uid"].split() == [str(sandboxes.NOBODY)] * 4
    # bubblewrap's own init shares the task's user namespace: the limit still means 4
    assert results["three"]["ok"], results["three"]
    assert not results["four"]["ok"]
    assert "hit its limit of 4 processes" in results["four"]["error"]
    assert not results["network"]["ok"]
    assert any("ConnectionRefusedError" in line for line in results["network"]["tail"])
    assert "root" not in results["root"]["tail"] and "work" not in results["root"]["tail"]
    # A folder the server cannot open could hide a link: the task fails, naming it.
    assert not results["hidden"]["ok"]
    assert results["hidden"]["error"].endswith(
        "output /out/d/ holds a folder that cannot be read: /out/d/h (Permission denied)"
    )
    # bubblewrap, on the host as the server's user, never saw the command's variables.
    assert results["env"]["ok"], results["env"]
    assert results["traces"] == []
