"""S3Store against a real S3-compatible HTTP server (moto), through boto3."""

from __future__ import annotations

from typing import Any

import pytest

from gaia.errors import InvalidRequest, StoreError
from gaia.store.s3 import S3Store


def put(client: Any, bucket: str, name: str, body: bytes = b"x") -> None:
    client.put_object(Bucket=bucket, Key=name, Body=body)


def names(client: Any, bucket: str) -> list[str]:
    reply = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in reply.get("Contents") or [])


def read(client: Any, bucket: str, name: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=name)["Body"].read()
    return body


@pytest.mark.slow
def test_exists_sees_files_and_directory_keys(s3_client: Any, bucket: str) -> None:
    store = S3Store(bucket, "/team/a/", s3_client)
    put(s3_client, bucket, "team/a/ns/animals/rabbit")
    put(s3_client, bucket, "team/a/ns/tree/leaf/x")
    put(s3_client, bucket, "team/a/other/only-here")
    assert store.exists("ns", "animals/rabbit")
    assert store.exists("ns", "tree") and store.exists("ns", "tree/leaf")
    assert not store.exists("ns", "animals/rab")  # a prefix of a name is not a key
    assert not store.exists("ns", "only-here")
    assert store.object_key("ns", "a/b") == "team/a/ns/a/b"
    assert S3Store(bucket, "", s3_client).object_key("ns", "a/b") == "ns/a/b"
    with pytest.raises(InvalidRequest):
        store.exists("ns", "../other/only-here")


@pytest.mark.slow
def test_a_listing_finds_what_exists_finds(s3_client: Any, bucket: str) -> None:
    store = S3Store(bucket, "/team/b/", s3_client)
    for name in ("animals/rabbit", "tree/leaf/x", ".private/p/tmp", "nsx-not-ours"):
        put(s3_client, bucket, f"team/b/ns/{name}")
    put(s3_client, bucket, "team/b/nsother/animals/snake")
    held = store.listing("ns")
    assert held == {
        "animals",
        "animals/rabbit",
        "tree",
        "tree/leaf",
        "tree/leaf/x",
        ".private",
        ".private/p",
        ".private/p/tmp",
        "nsx-not-ours",
    }
    asked = ["animals/rabbit", "animals/snake", "tree/leaf", "animals/rab", "nope"]
    for key in asked:
        assert (key in held) == store.exists("ns", key)
    found = {"animals/rabbit", "tree/leaf"}
    assert store.lookup("ns", asked).existing == found  # a lookup per key
    many = asked + [f"absent/{n}" for n in range(60)]
    assert store.lookup("ns", many).existing == found  # one listing


@pytest.mark.slow
def test_delete_removes_a_file_and_everything_under_a_directory_key(
    s3_client: Any, bucket: str
) -> None:
    store = S3Store(bucket, "", s3_client)
    for name in ("ns/f", "ns/d/1", "ns/d/sub/2", "ns/dd/keep", "ns/keep"):
        put(s3_client, bucket, name)
    store.delete("ns", ["f", "d", "absent"])
    assert names(s3_client, bucket) == ["ns/dd/keep", "ns/keep"]


@pytest.mark.slow
def test_publish_copies_staged_files_and_directories_then_clears_them(
    s3_client: Any, bucket: str
) -> None:
    store = S3Store(bucket, "p", s3_client)
    staged = store.staged_outputs("ns", "job-1", {"md5/rabbit": "/out/out", "tree": "/out/tree/"})
    assert staged == {
        "md5/rabbit": "p/.gaia/staging/ns/job-1/out/out",
        "tree": "p/.gaia/staging/ns/job-1/out/tree",
    }
    assert not store.is_staged(staged["md5/rabbit"])
    put(s3_client, bucket, "p/.gaia/staging/ns/job-1/out/out", b"digest\n")
    put(s3_client, bucket, "p/.gaia/staging/ns/job-1/out/tree/a", b"A")
    put(s3_client, bucket, "p/.gaia/staging/ns/job-1/out/tree/b/c", b"C")
    put(s3_client, bucket, "p/ns/tree/stale", b"old")  # the key's previous content goes
    assert all(store.is_staged(s) for s in staged.values())
    store.publish("ns", staged)
    assert names(s3_client, bucket) == ["p/ns/md5/rabbit", "p/ns/tree/a", "p/ns/tree/b/c"]
    assert read(s3_client, bucket, "p/ns/md5/rabbit") == b"digest\n"
    assert read(s3_client, bucket, "p/ns/tree/b/c") == b"C"
    assert store.exists("ns", "tree") and store.exists("ns", "md5/rabbit")


@pytest.mark.slow
def test_clear_staging_forgets_one_job(s3_client: Any, bucket: str) -> None:
    store = S3Store(bucket, "", s3_client)
    put(s3_client, bucket, ".gaia/staging/ns/job-1/out/out")
    put(s3_client, bucket, ".gaia/staging/ns/job-10/out/out")
    store.clear_staging("ns", "job-1")
    assert names(s3_client, bucket) == [".gaia/staging/ns/job-10/out/out"]


@pytest.mark.slow
def test_errors_name_the_namespace_and_key(s3_client: Any, bucket: str) -> None:
    store = S3Store(bucket, "", s3_client)
    with pytest.raises(StoreError, match=r"namespace 'ns': cannot publish 'md5/rabbit'.*nothing"):
        store.publish("ns", {"md5/rabbit": ".gaia/staging/ns/j/out/out"})
    missing = S3Store(bucket + "-nope", "", s3_client)
    with pytest.raises(StoreError, match=r"namespace 'ns': cannot look up 'a/b': NoSuchBucket"):
        missing.exists("ns", "a/b")
    with pytest.raises(StoreError, match=r"namespace 'ns': cannot delete 'a/b'"):
        missing.delete("ns", ["a/b"])
