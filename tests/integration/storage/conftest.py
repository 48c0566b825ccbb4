"""Stores on real directories and real MinIO buckets (one fresh bucket per test, removed afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject

from sgs.storage import PosixStore, S3Store, Store
from sgs.testing.minio import MinioPart

SMALL_PART = 5 << 20
"""S3's smallest part size, so multipart paths run on objects of a few tens of MiB."""


def _empty_and_remove(client: Minio, bucket: str) -> None:
    names = [DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True) if o.object_name]
    for error in client.remove_objects(bucket, names):
        raise AssertionError(f"could not remove {error}")
    client.remove_bucket(bucket)


@pytest.fixture
def s3_store_factory(minio_sites: list[MinioPart]) -> Iterator[list[S3Store]]:
    """A fresh bucket on each test MinIO, as stores of sites a, b, c (small parts, 2 in flight)."""
    stores = []
    for part in minio_sites:
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        part.client().make_bucket(bucket)
        stores.append(
            S3Store.connect(
                part.site,
                part.endpoint,
                bucket,
                part.access_key,
                part.secret_key,
                secure=False,
                part_size=SMALL_PART,
                parts_in_flight=2,
            )
        )
    yield stores
    for part, store in zip(minio_sites, stores, strict=True):
        _empty_and_remove(part.client(), store.bucket)


@pytest.fixture(params=["posix", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same contract tests against each backend."""
    if request.param == "posix":
        return PosixStore("site-a", tmp_path / "site-a")
    stores: list[S3Store] = request.getfixturevalue("s3_store_factory")
    return stores[0]


@pytest.fixture(params=["posix", "s3"])
def other_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A second Site's store (another directory, another MinIO server)."""
    if request.param == "posix":
        return PosixStore("site-b", tmp_path / "site-b")
    stores: list[S3Store] = request.getfixturevalue("s3_store_factory")
    return stores[1]
