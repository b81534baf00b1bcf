"""The local store: lookups that never follow a link out, and publishes of all or none."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaia.errors import StoreError
from gaia.store import LocalStore
from gaia.store.local import SCAN_ABOVE


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
            *filler,
        ],
    )
    assert lookup.existing == {"there", "dir", "dir/file", "dir/sideways"}
    assert sorted(lookup.unusable) == ["bad/../../x", "escape", "escape/secret"]
    assert "resolves outside namespace 'ns'" in lookup.unusable["escape/secret"]


def test_a_publish_that_fails_half_way_takes_back_what_it_moved(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    staged_a = made(tmp_path / "staging" / "a")
    staged_b = made(tmp_path / "staging" / "b")
    made(tmp_path / "data" / "ns" / "blocked")  # a file where b needs a directory
    with pytest.raises(StoreError, match="cannot publish 'blocked/b'"):
        store.publish("ns", {"first": staged_a, "blocked/b": staged_b})
    assert not (tmp_path / "data" / "ns" / "first").exists()  # all or none
    assert store.lookup("ns", ["first"]).existing == frozenset()


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
