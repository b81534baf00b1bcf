"""`gaia task fetch|upload` (gaia.worker.transfer) against a real S3-compatible server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gaia.errors import StoreError
from gaia.store.s3 import S3Store
from gaia.worker import transfer

pytestmark = pytest.mark.slow


def test_fetch_downloads_files_and_directory_keys(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    for name, body in (("p/ns/a", b"A"), ("p/ns/dir/x", b"X"), ("p/ns/dir/y/z", b"Z")):
        s3_client.put_object(Bucket=bucket, Key=name, Body=body)
    store = S3Store(bucket, "p", s3_client)
    count = transfer.fetch(store, "ns", tmp_path, [("/in/a", "a"), ("/in/d", "dir")])
    assert count == 3
    assert (tmp_path / "fs/in/a").read_bytes() == b"A"
    assert (tmp_path / "fs/in/d/y/z").read_bytes() == b"Z"
    with pytest.raises(StoreError, match=r"namespace 'ns': cannot fetch input 'nope'"):
        transfer.fetch(store, "ns", tmp_path, [("/in/n", "nope")])


def test_upload_stages_what_exists_and_names_what_does_not(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "fs/out/tree/sub").mkdir(parents=True)
    (tmp_path / "fs/out/o").write_text("o\n")
    (tmp_path / "fs/out/tree/sub/leaf").write_text("leaf\n")
    store = S3Store(bucket, "", s3_client)
    missing = transfer.upload(
        store, "ns", "job-1", tmp_path, ["/out/o", "/out/tree/", "/out/absent"]
    )
    assert missing == ["/out/absent"]
    reply = s3_client.list_objects_v2(Bucket=bucket)
    assert sorted(i["Key"] for i in reply["Contents"]) == [
        ".gaia/staging/ns/job-1/out/o",
        ".gaia/staging/ns/job-1/out/tree/sub/leaf",
    ]


def test_upload_waits_for_the_exit_code_and_uploads_nothing_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run/exit").write_text("3\n")
    monkeypatch.delenv("GAIA_S3_BUCKET", raising=False)  # never reached: nothing to upload
    assert transfer.main_upload("ns", "job", tmp_path, ["/out/o"]) == 3
    with pytest.raises(StoreError, match="no exit code"):
        transfer.wait_exit(tmp_path / "run/other", timeout=0.3)


@pytest.mark.parametrize(
    ("link", "output", "named"),
    [
        (
            "out/tree/creds",
            "/out/tree/",
            "output /out/tree/ holds a symbolic link: /out/tree/creds",
        ),
        ("out/o", "/out/o", "output /out/o is a symbolic link"),
    ],
)
def test_upload_never_follows_a_link_and_names_it(
    s3_client: Any, bucket: str, tmp_path: Path, link: str, output: str, named: str
) -> None:
    """A command could point a link at the upload container's own files (its credentials)."""
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2\n")
    (tmp_path / "fs/out/tree").mkdir(parents=True)
    (tmp_path / "fs/out/tree/data").write_text("data\n")
    (tmp_path / "fs" / link).symlink_to(secret)
    store = S3Store(bucket, "", s3_client)

    with pytest.raises(StoreError, match=named) as raised:
        transfer.upload(store, "ns", "job-2", tmp_path, [output])
    assert "namespace 'ns': Job job-2: refusing to upload" in str(raised.value)
    reply = s3_client.list_objects_v2(Bucket=bucket, Prefix=".gaia/staging/ns/job-2/")
    bodies = [
        s3_client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in reply.get("Contents", [])
    ]
    assert not any(b"hunter2" in body for body in bodies)
