"""What the runner's tests share: a task spec with defaults, a synchronous run, and the
mark for tests that need a working bubblewrap."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gaia.worker import sandbox as sandboxes
from gaia.worker.runner import TaskResult, TaskSpec, run_task

# The runner's own probe, with every option that tasks use.
_PROBED = sandboxes.sandbox("bwrap")
NEEDS_BWRAP = pytest.mark.skipif(
    _PROBED.problem is not None,
    reason=f"{_PROBED.problem} (apt-get install bubblewrap)",
)
BWRAP = pytest.param("bwrap", marks=NEEDS_BWRAP)
# "none": the unsafe mode, which these tests run on purpose, beside the sandbox
SANDBOXES = pytest.mark.parametrize("sandbox", [BWRAP, "none"])


def spec(command: tuple[str, ...], **fields: Any) -> TaskSpec:
    defaults: dict[str, Any] = {
        "root": "triangle",
        "process": "md5-rabbit",
        "run": 1,
        "image": "ubuntu",
        "inputs": {},
        "outputs": (),
    }
    return TaskSpec(command=command, **{**defaults, **fields})


def run(task: TaskSpec, workdir: Path, sandbox: str, **kwargs: Any) -> TaskResult:
    return asyncio.run(run_task(task, workdir, sandbox=sandbox, **kwargs))
