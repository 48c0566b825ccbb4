"""The storage contract, run against each backend: POSIX directories and MinIO buckets."""

from __future__ import annotations

import hashlib
import io
import os
import zlib

import pytest

from sgs.model.checksum import Adler32, Checksums
from sgs.storage import (
    ChecksumMismatchError,
    InvalidKeyError,
    ObjectNotFoundError,
    S3Store,
    Store,
    checksum_bytes,
)

pytestmark = pytest.mark.integration


def reference_checksums(data: bytes) -> Checksums:
    return Checksums(
        size=len(data), adler32=Adler32(zlib.adler32(data) & 0xFFFFFFFF), sha256=hashlib.sha256(data).hexdigest()
    )


def test_put_stat_get_delete_round_trip(store: Store) -> None:
    data = os.urandom(300_001)
    sums = store.put("raw/ab/cd/one.fits", io.BytesIO(data))
    assert sums == reference_checksums(data)
    info = store.stat("raw/ab/cd/one.fits")
    assert info.size == len(data)
    assert info.checksums in (None, sums)  # S3 records them as metadata, POSIX does not
    out = io.BytesIO()
    assert store.get("raw/ab/cd/one.fits", out) == sums
    assert out.getvalue() == data
    store.delete("raw/ab/cd/one.fits")
    assert not store.exists("raw/ab/cd/one.fits")
    store.delete("raw/ab/cd/one.fits")  # deleting what is gone is not an error


def test_missing_objects_are_reported_as_such(store: Store) -> None:
    with pytest.raises(ObjectNotFoundError, match="no-such"):
        store.stat("no-such/object")
    with pytest.raises(ObjectNotFoundError), store.open("no-such/object"):
        pass


def test_list_by_prefix_shows_only_committed_objects(store: Store) -> None:
    for name in ("a/1", "a/2", "ab/3", "b/4"):
        store.put_bytes(name, name.encode())
    with store.writer("a/unfinished") as writer:
        writer.write(b"partial")
        assert {o.key for o in store.list("a")} == {"a/1", "a/2", "ab/3"}
    assert {o.key for o in store.list("a/")} == {"a/1", "a/2"}
    assert {o.key: o.size for o in store.list()} == {"a/1": 3, "a/2": 3, "ab/3": 4, "b/4": 3}


def test_uris_round_trip_and_foreign_ones_are_refused(store: Store, other_store: Store) -> None:
    key = "nir_stack/3f/a2/3fa2c81e.fits"
    assert store.key_of(store.uri(key)) == key
    with pytest.raises(InvalidKeyError):
        store.key_of(other_store.uri(key))
    for foreign in ("file:///etc/passwd", "s3://another-bucket/x", "http://example.org/x", "file:///tmp/../etc/x"):
        with pytest.raises(InvalidKeyError):
            store.key_of(foreign)


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a/../../b", ".hidden", "a//b"])
def test_every_operation_refuses_keys_outside_the_store(store: Store, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.stat(key)
    with pytest.raises(InvalidKeyError), store.open(key):
        pass
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.delete(key)
    with pytest.raises(InvalidKeyError):
        store.uri(key)


def test_nothing_is_visible_before_commit_and_nothing_stays_after_abort(store: Store) -> None:
    store.put_bytes("obj", b"old content")
    big = os.urandom(11 << 20)  # > 2 parts of 5 MiB on S3
    with store.writer("obj") as writer:
        for start in range(0, len(big), 1 << 20):
            writer.write(big[start : start + (1 << 20)])
        assert store.read_bytes("obj") == b"old content"
        writer.abort()
    assert store.read_bytes("obj") == b"old content"
    with store.writer("new") as writer:
        writer.write(big)
    assert not store.exists("new")  # leaving the block without commit aborts
    assert_no_partials(store)


def test_content_that_differs_from_expected_is_never_published(store: Store) -> None:
    good = os.urandom(12 << 20)
    bad = bytearray(good)
    bad[7 << 20] ^= 0xFF
    with pytest.raises(ChecksumMismatchError, match="sha256") as refused:
        store.put("obj", io.BytesIO(bytes(bad)), expected=checksum_bytes(good))
    assert refused.value.differences
    assert not store.exists("obj")
    assert_no_partials(store)
    assert store.put("obj", io.BytesIO(good), expected=checksum_bytes(good)) == reference_checksums(good)


@pytest.mark.parametrize("size", [0, 1, (5 << 20) - 1, 5 << 20, (23 << 20) + 7])
def test_sizes_around_the_part_boundaries(store: Store, size: int) -> None:
    data = os.urandom(size)
    assert store.put("obj", io.BytesIO(data)) == reference_checksums(data)
    assert store.stat("obj").size == size
    assert hashlib.sha256(store.read_bytes("obj")).hexdigest() == hashlib.sha256(data).hexdigest()


def test_many_small_objects(store: Store) -> None:
    expected = {}
    for index in range(200):
        data = os.urandom(10_000 + index)
        expected[f"small/{index:04d}"] = store.put_bytes(f"small/{index:04d}", data)
    assert {o.key: o.size for o in store.list("small/")} == {k: v.size for k, v in expected.items()}
    for key in list(expected)[::37]:
        assert checksum_bytes(store.read_bytes(key)) == expected[key]


def assert_no_partials(store: Store) -> None:
    if isinstance(store, S3Store):
        assert list(store._uploads("obj")) == []
        assert list(store._uploads("new")) == []
    else:
        assert store.clean_partials(0) == 0
