"""S3-only behaviour: multipart uploads in flight, interrupted ones cleaned up, recorded checksums."""

from __future__ import annotations

import os

import pytest

from sgs.storage import S3Store, StoreUnavailableError, checksum_bytes
from sgs.storage.s3 import S3Writer

pytestmark = pytest.mark.integration


def _interrupted_upload(store: S3Store, key: str, parts: int) -> None:
    """Leave a multipart upload behind the way a killed worker does: parts sent, never completed or aborted."""
    writer = store.writer(key)
    assert isinstance(writer, S3Writer)
    for _ in range(parts):
        writer.write(os.urandom(store.part_size))
    writer._shutdown_pool()  # the process "dies": no commit, no abort


def test_an_interrupted_multipart_upload_is_cleaned_up(s3_store_factory: list[S3Store]) -> None:
    store = s3_store_factory[0]
    _interrupted_upload(store, "raw/ab/cd/big.fits", parts=2)
    assert len(list(store._uploads("raw/ab/cd/big.fits"))) == 1
    assert not store.exists("raw/ab/cd/big.fits")
    assert store.clean_partials(3600, prefix="raw/ab/cd/big.fits") == 0  # too young: may still be live
    assert store.clean_partials(0, prefix="raw/ab/cd/big.fits") == 1
    assert list(store._uploads("raw/ab/cd/big.fits")) == []


def test_a_retried_write_to_the_same_key_removes_the_stale_upload(s3_store_factory: list[S3Store]) -> None:
    store = s3_store_factory[0]
    _interrupted_upload(store, "obj", parts=1)
    store.stale_upload_s = 0
    data = os.urandom(store.part_size * 2 + 1)
    store.put_bytes("obj", data)
    assert list(store._uploads("obj")) == []
    assert checksum_bytes(store.read_bytes("obj")) == checksum_bytes(data)


def test_checksums_are_recorded_with_the_object(s3_store_factory: list[S3Store]) -> None:
    store = s3_store_factory[0]
    small, big = os.urandom(1000), os.urandom(store.part_size + 1)
    store.put_bytes("small", small)
    store.put_bytes("big", big, expected=checksum_bytes(big))
    assert store.stat("small").checksums == checksum_bytes(small)
    assert store.stat("big").checksums == checksum_bytes(big)
    store.put_bytes("big-unknown", big)  # multipart without expected: known only after the parts are sent
    assert store.stat("big-unknown").checksums is None


def test_an_unreachable_store_says_so(s3_store_factory: list[S3Store]) -> None:
    live = s3_store_factory[0]
    dead = S3Store.connect("site-z", "127.0.0.1:9", live.bucket, "k", "s" * 16, secure=False)
    with pytest.raises(StoreUnavailableError, match="site-z"):
        dead.stat("obj")
