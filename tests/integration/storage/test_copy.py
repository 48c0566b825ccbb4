"""Streaming verified copies between every pair of backends (directories, two MinIO servers)."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from sgs.model.checksum import Checksums
from sgs.storage import (
    ChecksumMismatchError,
    CopyAbortedError,
    PosixStore,
    S3Store,
    Store,
    checksum_bytes,
    copy,
    replica_key,
    verify,
)
from sgs.storage.posix import PosixWriter

pytestmark = pytest.mark.integration


def _corrupt(store: Store, key: str) -> None:
    """Flip one byte of a stored object, keeping its size (bit rot, a bad disk, a buggy writer)."""
    data = bytearray(store.read_bytes(key))
    data[len(data) // 2] ^= 0x01
    if isinstance(store, PosixStore):
        (store.root / key).write_bytes(bytes(data))
    else:
        store.put_bytes(key, bytes(data))


def test_copy_between_backends_is_checksummed_and_verified(store: Store, other_store: Store) -> None:
    data = os.urandom((12 << 20) + 12345)  # multipart on S3 (5 MiB parts)
    key = replica_key("nir_stack", uuid.uuid4(), ".fits")
    sums = store.put_bytes(key, data)
    seen: list[int] = []
    result = copy(store, key, other_store, key, expected=sums, progress=seen.append)
    assert (result.checksums, result.copied, result.verified) == (sums, True, True)
    assert sum(seen) == len(data)
    assert result.destination_uri == other_store.uri(key)
    assert checksum_bytes(other_store.read_bytes(key)) == checksum_bytes(data)


def test_a_retried_copy_lands_on_the_same_key_and_reuses_a_verified_copy(store: Store, other_store: Store) -> None:
    key = replica_key("raw", uuid.uuid4(), ".fits")
    sums = store.put_bytes(key, os.urandom(100_000))
    copy(store, key, other_store, key, expected=sums)
    again = copy(store, key, other_store, key, expected=sums, reuse_existing=True)
    assert (again.copied, again.verified) == (False, True)
    assert [o.key for o in other_store.list("raw/")] == [key]
    _corrupt(other_store, key)
    repaired = copy(store, key, other_store, key, expected=sums, reuse_existing=True)
    assert repaired.copied
    assert verify(other_store, key, sums) == sums


def test_a_corrupted_destination_is_caught_by_verify(store: Store, other_store: Store) -> None:
    key = "raw/obj.fits"
    sums = store.put_bytes(key, os.urandom(6 << 20))
    copy(store, key, other_store, key, expected=sums)
    _corrupt(other_store, key)
    with pytest.raises(ChecksumMismatchError, match="adler32") as caught:
        verify(other_store, key, sums)
    assert caught.value.expected == sums
    assert caught.value.actual.size == sums.size


def test_a_source_that_does_not_match_its_replica_record_is_not_copied(store: Store, other_store: Store) -> None:
    key = "raw/obj.fits"
    recorded = store.put_bytes(key, os.urandom(7 << 20))
    _corrupt(store, key)
    with pytest.raises(ChecksumMismatchError):
        copy(store, key, other_store, key, expected=recorded)
    assert not other_store.exists(key)


def test_an_aborted_copy_leaves_nothing(store: Store, other_store: Store) -> None:
    key = "raw/big.fits"
    store.put_bytes(key, os.urandom(20 << 20))
    stop = threading.Event()

    def stop_after_first_chunk(_: int) -> None:
        stop.set()

    with pytest.raises(CopyAbortedError):
        copy(store, key, other_store, key, abort=stop, progress=stop_after_first_chunk)
    assert not other_store.exists(key)
    if isinstance(other_store, S3Store):
        assert list(other_store._uploads(key)) == []
    else:
        assert other_store.clean_partials(0) == 0


class _CorruptingWriter(PosixWriter):
    """Fault injection: the file changes between its rename and the read-back (a disk or firmware fault we
    cannot produce on a healthy test machine)."""

    def _commit(self, checksums: Checksums) -> None:
        super()._commit(checksums)
        with self._final.open("r+b") as handle:
            first = handle.read(1)
            handle.seek(0)
            handle.write(bytes([first[0] ^ 0xFF]))


class _FaultyDisk(PosixStore):
    def writer(self, key: str, expected: Checksums | None = None) -> PosixWriter:
        plain = super().writer(key, expected)
        plain.abort()
        return _CorruptingWriter(self, key, self.root / key)


def test_the_copy_s_own_verify_catches_a_bad_write_and_removes_it(store: Store, tmp_path: Path) -> None:
    key = "raw/obj.fits"
    sums = store.put_bytes(key, os.urandom(3 << 20))
    faulty = _FaultyDisk("site-f", tmp_path / "faulty")
    with pytest.raises(ChecksumMismatchError):
        copy(store, key, faulty, key, expected=sums)
    assert not faulty.exists(key)


def test_many_small_objects_copy(store: Store, other_store: Store) -> None:
    keys = {}
    for _ in range(100):
        key = replica_key("small", uuid.uuid4(), ".dat")
        keys[key] = store.put_bytes(key, os.urandom(10_000))
    for key, sums in keys.items():
        assert copy(store, key, other_store, key, expected=sums).verified
    assert {o.key for o in other_store.list("small/")} == set(keys)
