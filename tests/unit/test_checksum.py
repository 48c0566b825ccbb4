"""Checksums as values: adler32 compares as a number (rucio#4127), sha256 case-folded; one-pass hashing."""

from __future__ import annotations

import hashlib
import io
import os
import zlib

import pytest
from pydantic import ValidationError

from sgs.model.checksum import Adler32, Checksums
from sgs.model.replica import ReplicaFile
from sgs.storage import StreamHasher, checksum_bytes, checksum_stream
from sgs.storage.hashing import PipelinedHasher


def test_adler32_with_and_without_leading_zeros_is_the_same_number() -> None:
    # The value from rucio#4127: a STORM endpoint printed 9600001, Rucio had 09600001.
    assert Adler32.parse("9600001") == Adler32.parse("09600001")
    assert Adler32.parse("0A6862D0") == Adler32.parse("a6862d0") == Adler32.parse("0x0a6862d0")
    assert str(Adler32.parse("9600001")) == "09600001"
    assert int(Adler32.parse("ffffffff")) == 2**32 - 1


def test_adler32_differs_by_value_and_never_equals_raw_text() -> None:
    assert Adler32.parse("09600001") != Adler32.parse("09600002")
    assert Adler32(1) != "00000001"  # compare parsed values, not text
    assert len({Adler32.parse("1"), Adler32.parse("00000001"), Adler32(1)}) == 1


@pytest.mark.parametrize("text", ["", "123456789", "xyz", "0x", "-1", " 1", "1 "])
def test_adler32_refuses_what_is_not_1_to_8_hex_digits(text: str) -> None:
    with pytest.raises(ValueError, match="1 to 8 hex digits"):
        Adler32.parse(text)


def test_models_accept_any_spelling_and_write_the_canonical_one() -> None:
    replica = ReplicaFile(site="site-a", uri="file:///x", size=3, adler32="9600001", sha256="AB" * 32)
    assert replica.model_dump(mode="json")["adler32"] == "09600001"
    assert replica.sha256 == "ab" * 32
    same = ReplicaFile(site="site-a", uri="file:///x", size=3, adler32="09600001", sha256="ab" * 32)
    assert replica.checksums == same.checksums
    with pytest.raises(ValidationError, match="adler32"):
        ReplicaFile(site="site-a", uri="file:///x", size=3, adler32="9600001x", sha256="ab" * 32)
    with pytest.raises(ValidationError, match="sha256"):
        ReplicaFile(site="site-a", uri="file:///x", size=3, adler32="1", sha256="ab" * 31)


def test_checksums_name_what_differs() -> None:
    a = checksum_bytes(b"one")
    b = checksum_bytes(b"two")
    assert a.differences(a) == []
    assert [d.split()[0] for d in a.differences(b)] == ["adler32", "sha256"]


@pytest.mark.parametrize("size", [0, 1, 5 * 2**20 + 3])
def test_one_pass_hashing_matches_hashlib_and_zlib(size: int) -> None:
    data = os.urandom(size)
    expected = Checksums(
        size=size, adler32=Adler32(zlib.adler32(data) & 0xFFFFFFFF), sha256=hashlib.sha256(data).hexdigest()
    )
    assert checksum_bytes(data) == expected
    assert checksum_stream(io.BytesIO(data), chunk=4099) == expected
    hasher = StreamHasher()
    for start in range(0, size, 1 << 20):
        hasher.update(memoryview(data)[start : start + (1 << 20)])
    assert hasher.result() == expected


def test_pipelined_hashing_keeps_the_order_of_mixed_chunks() -> None:
    chunks = [os.urandom(n) for n in (10, 5 << 20, 3, 6 << 20, 1 << 20, 4 << 20, 7)]
    hasher = PipelinedHasher(lag=1)
    for chunk in chunks:
        hasher.update(chunk)
    assert hasher.size == sum(map(len, chunks))
    assert hasher.result() == checksum_bytes(b"".join(chunks))
