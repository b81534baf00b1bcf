"""The S3 store: namespace NS's key K is the object ``PREFIX/NS/K`` of a bucket, or, for a
directory key, every object under ``PREFIX/NS/K/``.

Works with AWS S3 and S3-compatible servers (MinIO, Ceph, moto, ...) through boto3. Task
pods upload their outputs to a private staging prefix ``PREFIX/.gaia/staging/NS/<job>/``;
the operator publishes them (server-side copy to the final keys, then deletion of the
staged copies) only after the Job succeeded and only for the live run. S3 has no rename:
a reader may see a directory key half-copied while it is published, and a single object
appears whole (a copy is atomic per object).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from gaia.engine.keys import data_key_problem, root_problem
from gaia.engine.lookup import Lookup
from gaia.errors import InvalidRequest, StoreError
from gaia.store.local import STAGING

__all__ = ["S3Store", "make_client"]

logger = logging.getLogger(__name__)

LISTING_ABOVE = 50  # keys: more than this are looked up with one listing
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


def make_client(endpoint: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; credentials come from the standard AWS variables and files."""
    import boto3  # imported here: it is slow to import, and only S3 users need it
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


class S3Store:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    # -- names -----------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def object_key(self, root: str, key: str) -> str:
        """The object name of ``key``; refuses a key that would leave the namespace."""
        if problem := root_problem(root):
            raise InvalidRequest(problem)
        if problem := data_key_problem(key, private_ok=True):
            raise InvalidRequest(problem)
        return self._join(root, key)

    def staging_prefix(self, root: str, job: str) -> str:
        """Where a Job's outputs are uploaded before they are published."""
        return self._join(STAGING, root, job)

    # -- the store interface (as LocalStore) -----------------------------------------------

    def exists(self, root: str, key: str) -> bool:
        name = self.object_key(root, key)
        try:
            return self._has(name)
        except Exception as exc:
            raise StoreError(f"namespace {root!r}: cannot look up {key!r}: {_why(exc)}") from exc

    def lookup(self, root: str, keys: Iterable[str]) -> Lookup:
        """Which of ``keys`` exist (a request per key for a few, one listing of the
        namespace for many), and which cannot be object names (with why)."""
        unusable: dict[str, str] = {}
        checked = []
        for key in dict.fromkeys(keys):
            if problem := data_key_problem(key, private_ok=True):
                unusable[key] = problem
            else:
                checked.append(key)
        if len(checked) <= LISTING_ABOVE:
            return Lookup.of((key for key in checked if self.exists(root, key)), unusable)
        held = self.listing(root)
        return Lookup.of((key for key in checked if key in held), unusable)

    def listing(self, root: str) -> set[str]:
        """Every key :meth:`exists` finds in ``root`` (each object and the directories
        above it), from one paginated listing rather than a lookup per key."""
        base = self.object_key(root, "_")[:-1]  # "<prefix>/<root>/"
        held: set[str] = set()
        try:
            for name in self._under(base):
                parts = name[len(base) :].split("/")
                held.update("/".join(parts[:end]) for end in range(1, len(parts) + 1))
        except Exception as exc:
            raise StoreError(f"namespace {root!r}: cannot list its keys: {_why(exc)}") from exc
        return held

    def delete(self, root: str, keys: Iterable[str]) -> None:
        for key in keys:
            name = self.object_key(root, key)
            try:
                self._delete_tree(name)
            except Exception as exc:
                raise StoreError(f"namespace {root!r}: cannot delete {key!r}: {_why(exc)}") from exc

    def staged_outputs(self, root: str, job: str, outputs: Mapping[str, str]) -> dict[str, str]:
        """Data key -> the staged object (or prefix) of its container path."""
        staging = self.staging_prefix(root, job)
        return {key: f"{staging}/{path.strip('/')}" for key, path in outputs.items()}

    def is_staged(self, staged: str) -> bool:
        return self._has(staged)

    def seal_staged(self, staged: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, str]:
        """Uploaded objects are durable, and their uploader refused links already."""
        return dict(staged)

    def publish(self, root: str, staged: Mapping[str, str]) -> None:
        """Copy staged outputs (data key -> staged object or prefix) to their keys, then
        delete the staged copies. A key's previous content (file or directory) is
        replaced. All keys or none: a failed copy deletes what this call had copied."""
        moves = []
        for key, source in staged.items():
            try:
                target = self.object_key(root, key)
                copies = list(self.objects(source))
                previous = set(self.objects(target))
            except Exception as exc:
                raise StoreError(
                    f"namespace {root!r}: cannot publish {key!r}: {_why(exc)}"
                ) from exc
            if not copies:
                raise StoreError(
                    f"namespace {root!r}: cannot publish {key!r}: nothing staged at "
                    f"s3://{self.bucket}/{source}"
                )
            moves.append((key, source, target, copies, previous))
        written: list[str] = []
        key = ""
        try:
            for key, source, target, copies, _ in moves:  # noqa: B007 (named on failure)
                for name in copies:
                    self.client.copy(
                        {"Bucket": self.bucket, "Key": name},
                        self.bucket,
                        target + name[len(source) :],
                    )
                    written.append(target + name[len(source) :])
        except Exception as exc:
            try:
                self._delete_names(written)
            except Exception as undo:
                logger.error("could not take back a failed publish in %s: %s", root, undo)
            raise StoreError(f"namespace {root!r}: cannot publish {key!r}: {_why(exc)}") from exc
        kept = set(written)
        try:
            for _, _, _, copies, previous in moves:
                # Stale objects go after the copies, so the key never looks absent.
                self._delete_names(sorted(previous - kept))
                self._delete_names(copies)
        except Exception as exc:  # published whole; only leftovers remain
            logger.warning("namespace %s: could not delete leftovers of a publish: %s", root, exc)
        logger.debug("published %s/%s", root, sorted(staged))

    def prepare_staging(self, root: str, job: str, directories: Iterable[str], group: int) -> None:
        """Nothing to make: a task pod on S3 stages into its own emptyDir, then uploads."""

    def clear_staging(self, root: str, job: str) -> None:
        """Forget what a Job staged (best effort: a leftover is only wasted space)."""
        try:
            self._delete_names(list(self._under(self.staging_prefix(root, job) + "/")))
        except Exception as exc:
            logger.warning("could not clear the staging area of %s/%s: %s", root, job, exc)

    # -- objects ---------------------------------------------------------------------------

    def _has(self, name: str) -> bool:
        """The object ``name``, or any object under ``name/``."""
        if self._head(name):
            return True
        reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=name + "/", MaxKeys=1)
        return bool(reply.get("KeyCount") or reply.get("Contents"))

    def _head(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _under(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents") or []:
                yield item["Key"]

    def objects(self, name: str) -> Iterator[str]:
        """The object ``name`` if it exists, and every object under ``name/``."""
        if self._head(name):
            yield name
        yield from self._under(name + "/")

    def _delete_tree(self, name: str) -> None:
        self._delete_names(list(self.objects(name)))

    def _delete_names(self, names: list[str]) -> None:
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start : start + DELETE_BATCH]
            reply = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True},
            )
            if errors := reply.get("Errors"):
                first = errors[0]
                raise StoreError(
                    f"could not delete {first.get('Key')!r}: {first.get('Message') or first}"
                )


def _why(exc: BaseException) -> str:
    """A short reason: the S3 error code and message when there is one."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message') or ''}".rstrip(": ")
    return str(exc)
