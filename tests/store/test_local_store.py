"""The local store: lookups that never follow a link out, publishes of all or none, and
staging folders that an unprivileged task pod can write."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from gaia.errors import StoreError
from gaia.store import LocalStore
from gaia.store.local import SCAN_ABOVE
from gaia.worker.outputs import UnsafeOutput


def made(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("extra", [0, SCAN_ABOVE + 5], ids=["one by one", "one scan"])
def test_a_lookup_tells_existing_missing_and_unusable_keys(tmp_path: Path, extra: int) -> None:
    store = LocalStore(tmp_path / "data")
    space = tmp_path / "data" / "ns"
    made(space / "there")
    made(space / "dir" / "file")
    made(tmp_path / "outside" / "secret")
    (space / "escape").symlink_to(tmp_path / "outside")
    (space / "dir" / "sideways").symlink_to(space / "there")  # a link that stays inside
    (space / "loop").symlink_to(space / "loop")
    filler = [f"absent/{n}" for n in range(extra)]
    lookup = store.lookup(
        "ns",
        [
            "there",
            "dir",
            "dir/file",
            "dir/sideways",
            "missing",
            "escape/secret",
            "escape",
            "bad/../../x",
            "there/under/a/file",
            "loop/x",
            *filler,
        ],
    )
    assert lookup.existing == {"there", "dir", "dir/file", "dir/sideways"}
    assert sorted(lookup.unusable) == ["bad/../../x", "escape", "escape/secret", "loop/x"]
    assert "resolves outside namespace 'ns'" in lookup.unusable["escape/secret"]
    assert "cannot be resolved" in lookup.unusable["loop/x"]


def test_one_scan_finds_keys_at_every_depth_and_a_link_on_the_way(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    space = tmp_path / "data" / "ns"
    made(space / "a" / "b" / "c" / "deep")
    made(space / "a" / "shallow")
    made(space / "top")
    made(tmp_path / "outside" / "x" / "secret")
    filler = [f"absent/{n}" for n in range(SCAN_ABOVE + 5)]
    keys = ["a/b/c/deep", "a/shallow", "top", "a/b", "a/b/c/gone", *filler]
    assert store.lookup("ns", keys).existing == {"a/b/c/deep", "a/shallow", "top", "a/b"}
    # A link planted deep on a key's path, found by the same scan: that key alone is
    # resolved the careful way.
    (space / "a" / "b" / "c" / "x").symlink_to(tmp_path / "outside" / "x")
    lookup = store.lookup("ns", [*keys, "a/b/c/x/secret"])
    assert lookup.existing == {"a/b/c/deep", "a/shallow", "top", "a/b"}
    assert list(lookup.unusable) == ["a/b/c/x/secret"]


def test_a_publish_that_fails_half_way_takes_back_what_it_moved(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    staged_a = made(tmp_path / "staging" / "a")
    staged_b = made(tmp_path / "staging" / "b")
    made(tmp_path / "data" / "ns" / "blocked")  # a file where b needs a directory
    with pytest.raises(StoreError, match="cannot publish 'blocked/b'"):
        store.publish("ns", {"first": staged_a, "blocked/b": staged_b})
    assert not (tmp_path / "data" / "ns" / "first").exists()  # all or none
    assert store.lookup("ns", ["first"]).existing == frozenset()


def test_a_publish_syncs_the_folder_each_output_lands_in(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    """The runner syncs an output's content, not the staging folder it leaves: the rename
    into the data is made durable here, before the key counts as complete."""
    store = LocalStore(tmp_path / "data")
    store.publish("ns", {"top": made(tmp_path / "a"), "deep/er/b": made(tmp_path / "b")})

    space = tmp_path / "data" / "ns"
    assert set(fsynced) >= {space, space / "deep" / "er"}


def test_what_a_job_staged_is_synced_before_it_is_published(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    """A Job's container writes its outputs straight into its staging folder on the
    volume; the publish only renames them, so their content is synced here first."""
    store = LocalStore(tmp_path / "data")
    paths = {"one": "/out/o", "tree": "/out/d/", "wrong": "/out/w"}
    staged = store.staged_outputs("ns", "job-1", paths)
    made(staged["one"])
    made(staged["tree"] / "deep" / "f")
    (staged["wrong"]).mkdir()  # a folder where a file was declared: not produced

    sealed = store.seal_staged(staged, paths)

    assert sealed == {"one": staged["one"], "tree": staged["tree"]}
    tree = staged["tree"]
    assert set(fsynced) == {staged["one"], tree / "deep" / "f", tree / "deep", tree}


def test_a_link_a_job_staged_fails_its_task_by_name(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    paths = {"one": "/out/o", "tree": "/out/d/"}
    staged = store.staged_outputs("ns", "job-1", paths)
    made(staged["tree"] / "f")
    (staged["tree"] / "escape").symlink_to("/etc")
    staged["one"].symlink_to("/nowhere")  # dangling, yet a link all the same
    assert store.is_staged(staged["one"])
    with pytest.raises(UnsafeOutput, match=r"output /out/o is a symbolic link \(-> /nowhere"):
        store.seal_staged({"one": staged["one"]}, paths)
    with pytest.raises(UnsafeOutput, match="output /out/d/ holds a symbolic link: /out/d/escape"):
        store.seal_staged({"tree": staged["tree"]}, paths)


def test_a_publish_never_writes_through_a_link_out(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    (tmp_path / "outside").mkdir()
    (tmp_path / "data" / "ns").mkdir(parents=True)
    (tmp_path / "data" / "ns" / "out").symlink_to(tmp_path / "outside")
    staged = made(tmp_path / "staging" / "x")
    with pytest.raises(StoreError, match="resolves outside"):
        store.publish("ns", {"out/x": staged})
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_delete_never_follows_a_link_out(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    kept = made(tmp_path / "outside" / "x")
    (tmp_path / "data" / "ns").mkdir(parents=True)
    (tmp_path / "data" / "ns" / "out").symlink_to(tmp_path / "outside")
    store.delete("ns", ["out/x"])
    assert kept.exists()


TASK = 65532  # the user and group of task pods (kube/pod_security.py)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")


def as_task_user(script: str, where: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in ``where`` as the task pods' unprivileged user and group, as a pod
    would (which has the folder mounted: it enters it without passing through its parents,
    here by starting in it)."""
    return subprocess.run(
        ["sh", "-c", script],
        cwd=where,
        user=TASK,
        group=TASK,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_root
@pytest.mark.slow  # it starts the task user's processes
def test_a_staging_folder_is_made_for_the_task_pods_group(tmp_path: Path) -> None:
    base = tmp_path / "data"
    base.mkdir()
    base.chmod(0o755)  # as a volume's root: others may enter, not write
    store = LocalStore(base)
    store.prepare_staging("ns", "job-1", ["/out", "/deep/er"], TASK)
    staging = base / ".gaia" / "staging" / "ns" / "job-1"
    for folder in (staging, staging / "out", staging / "deep" / "er"):
        assert folder.stat().st_gid == TASK, folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o2770, folder
    # The task's user writes its outputs there, and nowhere else on the volume.
    wrote = as_task_user("mkdir sub && echo hi > sub/o", staging / "out")
    assert wrote.returncode == 0, wrote.stderr
    assert (staging / "out" / "sub").stat().st_gid == TASK  # setgid: the group stays
    outside = as_task_user("echo x > ../../../../../escaped", staging / "out")
    assert outside.returncode != 0 and "Permission denied" in outside.stderr
    assert not (base / "escaped").exists()
    # The operator publishes what the task wrote, and clears the rest.
    store.publish("ns", store.staged_outputs("ns", "job-1", {"result": "/out/sub/"}))
    assert (base / "ns" / "result" / "o").read_text() == "hi\n"
    store.clear_staging("ns", "job-1")
    assert not staging.exists()


@needs_root
def test_preparing_again_changes_nothing_and_never_follows_a_link(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    store.prepare_staging("ns", "job-1", ["/out"], TASK)
    made(tmp_path / "data" / ".gaia" / "staging" / "ns" / "job-1" / "out" / "o")
    store.prepare_staging("ns", "job-1", ["/out"], TASK)  # a re-check's second Job creation
    assert (tmp_path / "data" / ".gaia" / "staging" / "ns" / "job-1" / "out" / "o").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "data" / ".gaia" / "staging" / "ns" / "job-2").symlink_to(elsewhere)
    with pytest.raises(StoreError, match="job-2 is not a directory"):
        store.prepare_staging("ns", "job-2", [], TASK)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    assert elsewhere.stat().st_gid != TASK
