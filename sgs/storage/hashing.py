"""adler32 and sha256 of a stream in one pass: every chunk is fed to both while it is in memory."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Protocol

from sgs.model.checksum import Adler32, Checksums

CHUNK = 1 << 20
"""1 MiB: large enough that hashlib and zlib release the GIL for each chunk, small enough to stay in cache."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class StreamHasher:
    """Accumulates size, adler32 and sha256 over the chunks given to :meth:`update`, in order."""

    __slots__ = ("_adler", "_sha", "size")

    def __init__(self) -> None:
        self._adler = 1
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._adler = zlib.adler32(chunk, self._adler)
        self._sha.update(chunk)
        self.size += len(chunk)

    def result(self) -> Checksums:
        return Checksums(size=self.size, adler32=Adler32(self._adler & 0xFFFFFFFF), sha256=self._sha.hexdigest())


def checksum_stream(stream: Readable, chunk: int = CHUNK) -> Checksums:
    hasher = StreamHasher()
    while data := stream.read(chunk):
        hasher.update(data)
    return hasher.result()


def checksum_file(path: Path) -> Checksums:
    """Size, adler32 and sha256 of a local file, read once."""
    with path.open("rb", buffering=0) as stream:
        return checksum_stream(stream)


def checksum_bytes(data: bytes) -> Checksums:
    hasher = StreamHasher()
    hasher.update(data)
    return hasher.result()
