"""The operator's settings from its environment, and where they route tasks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gaia.engine.model import Command
from gaia.errors import InvalidRequest
from gaia.kube.config import DEFAULT_IMAGE, OperatorConfig
from gaia.kube.host import KubeHost

VARIABLES = (
    "GAIA_IMAGE",
    "GAIA_WORKER_IMAGE",
    "GAIA_WORKER_TAKES",
    "GAIA_STORE",
    "GAIA_WORKER_SERVICE_ACCOUNT",
    "GAIA_WATCH_NAMESPACE",
    "GAIA_JOB_TTL_SECONDS",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_workers_default_to_the_gaia_image_and_to_tasks_of_their_image(env: Any) -> None:
    config = OperatorConfig.from_env()
    assert (config.worker_image, config.worker_takes) == (DEFAULT_IMAGE, "image")
    env.setenv("GAIA_IMAGE", "registry/gaia:1.2")
    assert OperatorConfig.from_env().worker_image == "registry/gaia:1.2"
    env.setenv("GAIA_WORKER_IMAGE", "registry/tools-with-gaia:3")
    env.setenv("GAIA_WORKER_TAKES", "all")
    config = OperatorConfig.from_env()
    assert (config.worker_image, config.worker_takes) == ("registry/tools-with-gaia:3", "all")


def test_workers_account_and_the_watched_namespace(env: Any) -> None:
    config = OperatorConfig.from_env()
    assert (config.worker_account, config.watch_namespace) == ("gaia-worker", "")
    env.setenv("GAIA_WORKER_SERVICE_ACCOUNT", "gaia-prod-worker")
    env.setenv("GAIA_WATCH_NAMESPACE", "team-a")
    config = OperatorConfig.from_env()
    assert (config.worker_account, config.watch_namespace) == ("gaia-prod-worker", "team-a")


@pytest.mark.parametrize(("name", "value"), [("GAIA_WORKER_TAKES", "some"), ("GAIA_STORE", "nfs")])
def test_a_bad_setting_is_refused_naming_the_variable(env: Any, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(InvalidRequest, match=f"{name}={value!r}: use one of"):
        OperatorConfig.from_env()


def test_finished_jobs_are_kept_ten_minutes_unless_told_otherwise(env: Any) -> None:
    assert OperatorConfig.from_env().job_ttl == 600
    env.setenv("GAIA_JOB_TTL_SECONDS", "0")  # a succeeded Job goes at once
    assert OperatorConfig.from_env().job_ttl == 0
    for bad in ("-1", "1.5", "soon"):
        env.setenv("GAIA_JOB_TTL_SECONDS", bad)
        with pytest.raises(InvalidRequest, match=f"GAIA_JOB_TTL_SECONDS={bad!r}"):
            OperatorConfig.from_env()


@pytest.mark.parametrize(
    ("takes", "image", "to_workers"),
    [
        ("image", "tools:3", True),
        ("image", "ubuntu", False),  # its programs are not in the worker's image
        ("image", None, False),
        ("all", "ubuntu", True),
    ],
)
def test_tasks_go_to_workers_that_have_their_image_and_never_as_root(
    tmp_path: Path, takes: str, image: str | None, to_workers: bool
) -> None:
    host = KubeHost(
        None,  # type: ignore[arg-type]  # routing needs no cluster
        tmp_path,
        "gaia-data",
        worker_image="tools:3",
        worker_takes=takes,
    )
    command = Command(key="c", image=image, command=("true",))
    assert not host.desk.takes(command)  # no worker has asked for work: Jobs
    host.desk.queue.hear("w1")
    assert host.desk.takes(command) is to_workers
    # Worker pods run unprivileged: a command that asks for root always runs as a Job.
    assert not host.desk.takes(replace(command, run_as_root=True))
