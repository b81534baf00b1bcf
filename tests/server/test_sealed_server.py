"""Through a real `gaia serve`: tasks that try to escape, and a server without a sandbox.

(The runner's tests, tests/worker/test_sealed_tasks.py, try each escape in detail.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from gaia_server import Server, wait_for

import gaia
from processes import sleep_marker, sleepers

pytestmark = pytest.mark.slow

SECRET = "GAIA_SERVER_SECRET"


def leaf(key: str, script: str, **fields: Any) -> dict[str, Any]:
    """A command running ``script`` in sh, its standard output being its output."""
    return {
        "key": key,
        "image": "debian",
        "command": ["sh", "-c", script],
        "stdout": "/out/out",
        "outputs": {"OUT": "/out/out"},
        **fields,
    }


def attacks(server: Server, marker: str, trace: str) -> list[dict[str, Any]]:
    health = f"http://{server.address}/health"
    reach = f"python3 -c \"import urllib.request as u; print(u.urlopen('{health}', timeout=10).status)\""
    look = f"""
        env
        for path in {server.data}/.gaia/state.db {server.data}/other/secret /root /home /var \\
                    /srv /mnt /work; do
            test -e "$path" && echo "VISIBLE $path"
        done
        cat /etc/shadow > /dev/null 2>&1 && echo "READ /etc/shadow"
        mount -o remount,rw /usr 2>/dev/null && echo REMOUNTED
        mount -t tmpfs none /var 2>/dev/null && echo MOUNTED
        echo pwned 2>/dev/null > /etc/gaia-pwned-{os.getpid()} && echo WROTE
        echo looked
    """
    return [
        leaf("reach", reach),
        leaf("reach-net", reach, network=True),
        leaf("look", look),
        leaf(
            "bomb",
            f"while :; do sleep {marker} & done",
            resources={"processes": 16},
            timeout=120,
        ),
        leaf("hog", "python3 -c 'b = bytearray(512 << 20)'", resources={"memory": "64Mi"}),
        {
            "key": "link",
            "image": "debian",
            "command": ["sh", "-c", "mkdir /out/d && echo x > /out/d/x && ln -s / /out/d/root"],
            "outputs": {"OUT": "/out/d/"},
        },
        # Each process that sees the command's variables writes a trace file there: an
        # LD_PRELOAD would run in the same processes.
        leaf("preload", "echo ran", env={"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": trace}),
        {
            "key": "setuid",
            "image": "debian",
            "command": ["sh", "-c", "cp /bin/sh /out/sh && chmod 4755 /out/sh"],
            "outputs": {"OUT": "/out/sh"},
        },
        # Its own /usr/bin/setpriv, which a root server's sandbox would run as root.
        leaf("system", "echo ran", stdout="/usr/bin/setpriv", outputs={"OUT": "/usr/bin/setpriv"}),
    ]


def test_escapes_from_inside_a_task_fail(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={**os.environ, SECRET: "hunter2"}).start()
    try:
        (server.data / "other").mkdir(parents=True)
        (server.data / "other" / "secret").write_text("another namespace's data\n")
        marker = sleep_marker()
        flow = server.client()
        commands = attacks(server, marker, str(tmp_path / "trace"))
        flow.command(commands)
        processes = [
            {"key": c["key"], "command": c["key"], "outputs": {"OUT": c["key"]}} for c in commands
        ]
        flow.merge("attacks", processes)
        status = wait_for(flow, "attacks", ("error",), timeout=120)
    finally:
        server.stop()
    tasks, data = status["tasks"], server.data / "attacks"

    # The server's HTTP port is out of reach, unless the command asks for the network.
    assert tasks["reach"]["state"] == "error"
    assert any("Connection refused" in line for line in tasks["reach"]["log_tail"])
    assert tasks["reach-net"]["state"] == "complete"
    assert (data / "reach-net").read_text() == "200\n"
    # Nothing of the server's environment, files or privileges.
    assert tasks["look"]["state"] == "complete"
    seen = (data / "look").read_text().splitlines()
    assert seen[-1] == "looked"
    assert sorted(line.split("=")[0] for line in seen if "=" in line) == [
        "HOME",
        "LANG",
        "PATH",
        "PWD",
    ]
    assert [line for line in seen if "=" not in line] == ["looked"], seen
    assert not Path(f"/etc/gaia-pwned-{os.getpid()}").exists()
    # Limits stop the task, and the error names the limit.
    assert tasks["bomb"]["state"] == "error"
    assert "limit of 16 processes (resources.processes)" in tasks["bomb"]["error"]
    assert sleepers(marker) == []
    assert tasks["hog"]["state"] == "error"
    assert "ran out of memory: 64Mi per process (resources.memory)" in tasks["hog"]["error"]
    # A link in an output directory fails the task, naming it; nothing is published.
    assert tasks["link"]["state"] == "error"
    assert tasks["link"]["error"].endswith(
        "output /out/d/ holds a symbolic link: /out/d/root (-> /)"
    )
    assert not (data / "link").exists()
    # bubblewrap, on the host, runs without the command's variables.
    assert tasks["preload"]["state"] == "complete"
    assert not list(tmp_path.glob("trace.*"))
    # What a task publishes runs as no one: set-user-ID bits are cleared.
    assert tasks["setuid"]["state"] == "complete"
    assert (data / "setuid").stat().st_mode & 0o7777 == 0o755
    # No container path takes a system folder's place.
    assert tasks["system"]["state"] == "error"
    assert "is under /usr, which the sandbox shows from this machine" in tasks["system"]["error"]
    # The server's own folder (state, logs, the tasks' working folders) is its alone.
    assert (server.data / ".gaia").stat().st_mode & 0o777 == 0o700


def test_without_bubblewrap_no_task_runs_unless_told_none(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "no-programs-here")}  # no bwrap to find
    hello = leaf("hello", "echo hello")
    process = {"key": "hello", "command": "hello", "outputs": {"OUT": "hello"}}

    server = Server(tmp_path / "data", env=env).start()
    try:
        flow = server.client()
        flow.command([hello])
        flow.merge("greet", [process])
        status = wait_for(flow, "greet", ("error",))
    finally:
        server.stop()
    said = server.log.read_text()
    assert "tasks will NOT run: bubblewrap (bwrap) is not installed" in said
    error = status["tasks"]["hello"]["error"]
    assert "no sandbox to run it in: bubblewrap (bwrap) is not installed" in error
    assert "--sandbox none" in error
    assert not (server.data / "greet" / "hello").exists()

    unsafe = Server(tmp_path / "data", env=env, args=["--sandbox", "none"])
    unsafe.port, unsafe.log = server.port, server.log
    unsafe.start()
    try:
        flow = unsafe.client()
        flow.trigger("greet")
        wait_for(flow, "greet")
    finally:
        unsafe.stop()
    assert "tasks run WITHOUT isolation (--sandbox none)" in unsafe.log.read_text()
    assert (unsafe.data / "greet" / "hello").read_text() == "hello\n"


def test_the_triangle_runs_sealed_out_of_the_box(server: Server, triangle: gaia.Gaia) -> None:
    wait_for(triangle, "triangle")
    assert "tasks run sealed by bubblewrap" in server.log.read_text()
