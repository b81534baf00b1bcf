"""``gaia task fetch|upload``: the helper containers of a task pod on the S3 store.

A pod's emptyDir (mounted at ``--work``, default ``/gaia/work``) holds the task's files at
``fs/<container path>``. ``fetch`` (the init container) downloads each input object, or
every object under a directory key, to its container path. ``upload`` (a container beside
the command) waits for the command's exit code in ``run/exit``; if it is 0 it uploads each
declared output to the Job's staging prefix ``<prefix>/.gaia/staging/<root>/<job>/``, and it
exits with the command's code, so a failed command uploads nothing. The operator publishes
the staged objects once the Job succeeded. ``upload`` never follows a symbolic link: the
command could point one at the upload container's own files (its credentials), so a link
or special file anywhere in an output fails the upload, naming it (gaia.worker.outputs).

Both read the bucket from ``GAIA_S3_BUCKET``, ``GAIA_S3_PREFIX``, ``GAIA_S3_ENDPOINT`` and
``GAIA_S3_REGION``, and credentials from the standard AWS variables.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gaia.errors import InvalidRequest, StoreError
from gaia.store.s3 import S3Store, make_client
from gaia.worker import outputs as output_files

__all__ = ["fetch", "store_from_env", "upload"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2


def store_from_env() -> S3Store:
    bucket = os.environ.get("GAIA_S3_BUCKET")
    if not bucket:
        raise InvalidRequest("GAIA_S3_BUCKET is not set: which bucket holds the data?")
    client = make_client(os.environ.get("GAIA_S3_ENDPOINT"), os.environ.get("GAIA_S3_REGION"))
    return S3Store(bucket, os.environ.get("GAIA_S3_PREFIX", ""), client)


def _local(work: Path, container_path: str) -> Path:
    relative = container_path.strip("/")
    if not relative or ".." in Path(relative).parts:
        raise InvalidRequest(f"{container_path!r} is not a container path")
    return work / "fs" / relative


def fetch(store: S3Store, root: str, work: Path, inputs: Sequence[tuple[str, str]]) -> int:
    """Download each (container path, data key); return the number of objects."""
    count = 0
    for path, key in inputs:
        name = store.object_key(root, key)
        target = _local(work, path)
        try:
            objects = list(store.objects(name))
            if not objects:
                raise StoreError(f"s3://{store.bucket}/{name} does not exist")
            for obj in objects:
                local = target if obj == name else target / obj[len(name) + 1 :]
                local.parent.mkdir(parents=True, exist_ok=True)
                store.client.download_file(store.bucket, obj, str(local))
                count += 1
        except StoreError as exc:
            raise StoreError(f"namespace {root!r}: cannot fetch input {key!r}: {exc}") from exc
        except Exception as exc:
            raise StoreError(
                f"namespace {root!r}: cannot fetch input {key!r} to {path}: {exc}"
            ) from exc
        logger.info("fetched %s to %s", key, path)
    return count


def wait_exit(exit_file: Path, timeout: float | None = None) -> int:
    """Wait for the command's exit code; 1 when the file does not hold a number."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not exit_file.exists():
        if deadline is not None and time.monotonic() > deadline:
            raise StoreError(f"no exit code in {exit_file} after {timeout:g}s")
        time.sleep(POLL_SECONDS)
    text = exit_file.read_text().strip()
    try:
        return int(text)
    except ValueError:
        logger.error("%s holds %r, not an exit code", exit_file, text)
        return 1


def upload(store: S3Store, root: str, job: str, work: Path, outputs: Sequence[str]) -> list[str]:
    """Upload each declared output that exists to the staging prefix; return the missing.

    Files are read through descriptors opened without following links; a symbolic link or
    special file in an output raises StoreError naming it (what was uploaded before stays
    in the staging prefix, which the operator never publishes for a failed Job)."""
    staging = store.staging_prefix(root, job)
    missing = []
    for path in outputs:
        local = _local(work, path)
        name = f"{staging}/{path.strip('/')}"
        try:
            count = _upload_output(store, local, path, name)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            missing.append(path)
            continue
        except output_files.UnsafeOutput as exc:
            raise StoreError(f"namespace {root!r}: Job {job}: refusing to upload: {exc}") from exc
        except Exception as exc:
            raise StoreError(
                f"namespace {root!r}: cannot upload output {path} of Job {job}: {exc}"
            ) from exc
        logger.info("uploaded %s (%d objects)", path, count)
    return missing


def _upload_output(store: S3Store, local: Path, path: str, name: str) -> int:
    if not path.endswith("/"):
        with os.fdopen(output_files.open_file(local, path), "rb") as file:
            store.client.upload_fileobj(file, store.bucket, name)
        return 1
    count = 0
    for relative, fd, _ in output_files.walk(local, path):
        if fd < 0:
            continue  # a directory: S3 has none
        with os.fdopen(os.dup(fd), "rb") as file:
            store.client.upload_fileobj(file, store.bucket, f"{name}/{relative}")
        count += 1
    return count


def main_fetch(root: str, work: Path, inputs: Sequence[tuple[str, str]]) -> int:
    count = fetch(store_from_env(), root, work, inputs)
    print(f"gaia task fetch: {len(inputs)} inputs, {count} objects", file=sys.stderr)
    return 0


def main_upload(
    root: str,
    job: str,
    work: Path,
    outputs: Sequence[str],
    exit_file: Path | None = None,
    timeout: float | None = None,
) -> int:
    code = wait_exit(exit_file or work / "run" / "exit", timeout)
    if code != 0:
        print(f"gaia task upload: the command exited {code}; nothing uploaded", file=sys.stderr)
        return code
    missing = upload(store_from_env(), root, job, work, outputs)
    if missing:  # the operator reports them ("declared outputs ... were not produced")
        print(f"gaia task upload: not produced: {', '.join(missing)}", file=sys.stderr)
    return 0
