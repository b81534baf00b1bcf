"""A leaf command's env, network, resources and runAsRoot: parsed, checked, and
round-tripped; and what a command cannot ask for (a pod's privileges)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gaia.engine.model import parse_command
from gaia.engine.resources import Resources
from gaia.errors import InvalidRequest


def leaf(**fields: Any) -> dict[str, Any]:
    return {"key": "sim", "image": "ubuntu", "command": ["run"], **fields}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"cpu": "500m"}, Resources(cpu=500)),
        ({"cpu": 2}, Resources(cpu=2000)),
        ({"cpu": 0.25}, Resources(cpu=250)),
        ({"cpu": "1.5"}, Resources(cpu=1500)),
        ({"memory": "256Mi"}, Resources(memory=256 << 20)),
        ({"memory": "1G"}, Resources(memory=10**9)),
        ({"memory": "1.5Gi"}, Resources(memory=3 << 29)),
        ({"memory": "129e6"}, Resources(memory=129 * 10**6)),
        ({"memory": 268435456}, Resources(memory=1 << 28)),
        ({"processes": 64}, Resources(processes=64)),
        (
            {"cpu": "1", "memory": "64Mi", "processes": 8},
            Resources(cpu=1000, memory=64 << 20, processes=8),
        ),
    ],
)
def test_resources_take_kubernetes_quantities(
    resources: dict[str, Any], expected: Resources
) -> None:
    command = parse_command(leaf(resources=resources))

    assert command.resources == expected
    # The canonical form (what the state database and the API keep) parses back equal.
    assert parse_command(command.to_dict()) == command


def test_the_canonical_form_reads_as_kubernetes_writes_it() -> None:
    command = parse_command(leaf(resources={"cpu": 0.5, "memory": 1 << 30, "processes": 3}))

    assert command.to_dict()["resources"] == {"cpu": "500m", "memory": "1Gi", "processes": 3}


def test_env_and_network_round_trip() -> None:
    command = parse_command(leaf(env={"THREADS": "4", "MODE": ""}, network=True))

    assert dict(command.env) == {"THREADS": "4", "MODE": ""}
    assert command.network is True
    assert parse_command(command.to_dict()) == command


def test_a_command_without_them_is_unchanged() -> None:
    command = parse_command(leaf(resources={}))

    assert command.resources is None and command.env == {} and command.network is False
    assert set(command.to_dict()) == {"key", "image", "command", "inputs", "outputs", "vars"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resources": "big"}, r"command 'sim': 'resources' must be a mapping"),
        ({"resources": {"gpu": 1}}, r"command 'sim': resources has unknown fields \['gpu'\]"),
        ({"resources": {"time": 5}}, r"unknown fields \['time'\].*'timeout'"),
        ({"resources": {"cpu": "lots"}}, r"command 'sim': resources.cpu 'lots' is not a quantity"),
        ({"resources": {"cpu": 0}}, r"resources.cpu must be more than 0"),
        ({"resources": {"cpu": "-1"}}, r"resources.cpu '-1' is not a quantity"),
        ({"resources": {"cpu": "0.0005"}}, r"resources.cpu '0.0005' is finer than 1m"),
        ({"resources": {"cpu": True}}, r"resources.cpu True is not a quantity"),
        ({"resources": {"memory": "256MB"}}, r"resources.memory '256MB' is not a quantity"),
        ({"resources": {"memory": "256m"}}, r"did you mean 256Mi\?"),
        ({"resources": {"memory": 512}}, r"resources.memory 512 is less than 1Mi.*'512Mi'"),
        ({"resources": {"memory": "9Ei"}}, r"resources.memory '9Ei' is more than 8Ei"),
        ({"resources": {"processes": 0}}, r"resources.processes must be a whole number"),
        ({"resources": {"processes": "8"}}, r"resources.processes must be a whole number"),
        ({"resources": {"processes": 2.5}}, r"resources.processes must be a whole number"),
        ({"env": ["A=1"]}, r"command 'sim': 'env' must be a mapping"),
        ({"env": {"1A": "x"}}, r"command 'sim': env name '1A' is not a variable name"),
        ({"env": {"A-B": "x"}}, r"env name 'A-B' is not a variable name"),
        ({"env": {"N": 4}}, r"command 'sim': env 'N' must be a string, got int"),
        ({"env": {"N": "a\0b"}}, r"env 'N' contains a NUL character"),
        ({"network": "yes"}, r"command 'sim': 'network' must be true or false"),
        ({"runAsRoot": "yes"}, r"command 'sim': 'runAsRoot' must be true or false"),
        ({"runAsRoot": 1}, r"command 'sim': 'runAsRoot' must be true or false, got 1"),
    ],
)
def test_bad_fields_are_refused_naming_the_command_and_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_command(leaf(**fields))


def test_run_as_root_round_trips_and_is_off_unless_asked() -> None:
    command = parse_command(leaf(runAsRoot=True))

    assert command.run_as_root is True
    assert command.to_dict()["runAsRoot"] is True
    assert parse_command(command.to_dict()) == command
    assert parse_command(leaf()).run_as_root is False
    assert parse_command(leaf(runAsRoot=False)) == parse_command(leaf())


@pytest.mark.parametrize(
    "fields",
    [
        {"privileged": True},
        {"hostPath": "/"},
        {"hostNetwork": True},
        {"securityContext": {"privileged": True}},
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
    ],
)
def test_a_command_cannot_ask_for_the_pods_privileges(fields: dict[str, Any]) -> None:
    (name,) = fields
    with pytest.raises(InvalidRequest) as refused:
        parse_command(leaf(**fields))

    message = str(refused.value)
    assert f"command 'sim': unknown fields ['{name}']" in message
    assert "Gaia alone sets up" in message and "runAsRoot" in message


def test_any_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match=r"unknown fields \['colour'\]; a command has"):
        parse_command(leaf(colour="blue"))


@pytest.mark.parametrize("name", ["env", "network", "resources", "runAsRoot"])
def test_a_composite_command_has_none_of_them(name: str) -> None:
    composite = {
        "key": "both",
        "inputs": ["A"],
        "outputs": ["B"],
        "steps": [{"key": "s", "command": "sim", "inputs": {"I": "A"}, "outputs": {"O": "B"}}],
        name: {},
    }
    with pytest.raises(InvalidRequest, match=rf"unknown fields \['{name}'\] for a composite"):
        parse_command(composite)


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        (
            {"outputs": {"OUT": "/out/x", "O2": "//out/x"}},
            "output 'O2' path '//out/x' is the root or has an empty",
        ),
        (
            {"outputs": {"OUT": "/out/./x"}},
            "path '/out/./x' is the root or has an empty or '.' segment",
        ),
        ({"inputs": {"IN": "/"}}, "input 'IN' path '/' is the root"),
        (
            {"outputs": {"OUT": "/proc/x"}},
            "path '/proc/x' is under /proc, which the sandbox or container runtime provides",
        ),
        ({"inputs": {"IN": "/dev/shm/x"}}, "is under /dev"),
    ],
)
def test_a_container_path_no_task_could_use_is_refused_when_the_command_is_registered(
    paths: dict[str, Any], named: str
) -> None:
    """Accepted, such a command made every one of its tasks fail at run time."""
    with pytest.raises(InvalidRequest, match=re.escape(named)):
        parse_command(leaf(**paths))


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        (
            {"outputs": {"OUT": "/out/", "O2": "/out/x"}},
            "output 'O2' path '/out/x' lies inside output 'OUT' path '/out/'",
        ),
        (
            {"inputs": {"IN": "/out/x"}, "outputs": {"OUT": "/out/"}},
            "input 'IN' path '/out/x' lies inside output 'OUT' path '/out/'",
        ),
        (
            {"inputs": {"IN": "/in/"}, "outputs": {"OUT": "/in/result"}},
            "output 'OUT' path '/in/result' lies inside input 'IN' path '/in/'",
        ),
        (
            {"outputs": {"OUT": "/out/x", "O2": "/out/x/y"}},
            "output 'O2' path '/out/x/y' lies inside output 'OUT' path '/out/x'",
        ),
    ],
)
def test_paths_inside_a_written_one_are_refused_when_the_command_is_registered(
    paths: dict[str, Any], named: str
) -> None:
    """Accepted, an input inside an output folder was published as an empty, root-owned
    file the task never wrote; an output inside another failed at publish."""
    with pytest.raises(InvalidRequest, match=re.escape(named)):
        parse_command(leaf(**paths))


def test_an_input_inside_an_input_folder_is_fine() -> None:
    command = parse_command(leaf(inputs={"REF": "/in/", "IDX": "/in/ref.idx"}))
    assert command.inputs == {"REF": "/in/", "IDX": "/in/ref.idx"}
