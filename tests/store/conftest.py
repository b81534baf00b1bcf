"""A client and a fresh bucket on the session's S3-compatible server (tests/conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


@pytest.fixture
def s3_client(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    from gaia.store.s3 import make_client

    return make_client(s3_endpoint, "us-east-1")


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"gaia-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name
