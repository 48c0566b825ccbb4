"""The storage interface every backend implements: a Site's store of objects addressed by keys."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from sgs.model.checksum import Checksums
from sgs.model.site import StorageKind
from sgs.storage.errors import ChecksumMismatchError, ObjectNotFoundError, StorageError
from sgs.storage.hashing import CHUNK, PipelinedHasher, Readable, StreamHasher


@dataclass(frozen=True)
class ObjectInfo:
    """What a store says about an object.

    ``checksums`` are those sgs recorded when it wrote the object (S3 metadata), ``None`` when unknown; they are
    a hint, never a verification — :func:`sgs.storage.verify` re-reads the bytes.
    """

    key: str
    size: int
    modified: datetime | None = None
    checksums: Checksums | None = None


class ReadStream(Readable, Protocol):
    """An open object: ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end."""


class Writer(ABC):
    """A new object being written: invisible under its key until :meth:`commit`, gone after :meth:`abort`.

    Every chunk written is hashed on the way (size, adler32, sha256 in one pass), so :meth:`commit` knows the
    checksums of what it is about to publish and refuses to publish anything but the ``expected`` content.
    Chunks are kept by reference until they are stored (an S3 part may upload in the background): pass
    ``bytes``, not a buffer you will reuse. Leaving the ``with`` block without committing aborts.
    """

    preferred_chunk: int = CHUNK

    def __init__(self, what: str) -> None:
        self.what = what
        self._hasher = PipelinedHasher()
        self._closed = False

    def write(self, chunk: bytes) -> None:
        if self._closed:
            raise StorageError(f"{self.what}: write after commit or abort")
        self._hasher.update(chunk)
        try:
            self._write(chunk)
        except BaseException:
            self.abort()
            raise

    def commit(self, expected: Checksums | None = None) -> Checksums:
        """Publish the object under its key and return its checksums.

        With ``expected``, content that does not match is never published: the write is aborted and
        :class:`ChecksumMismatchError` raised.
        """
        if self._closed:
            raise StorageError(f"{self.what}: commit after commit or abort")
        actual = self._hasher.result()
        if expected is not None and actual != expected:
            self.abort()
            raise ChecksumMismatchError(self.what, expected, actual)
        try:
            self._commit(actual)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return actual

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        if not self._closed:
            self._closed = True
            self._hasher.close()
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()

    @abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def _commit(self, checksums: Checksums) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


class Store(ABC):
    """One Site's store: objects under ``/``-separated relative keys (see :func:`sgs.storage.layout.check_key`).

    Implementations are thread-safe: one instance serves every concurrent copy of its Site.
    """

    kind: StorageKind

    def __init__(self, site: str) -> None:
        self.site = site

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.site!r}, {self.uri('')!r})"

    # ---------------------------------------------------------------------------------------- backend methods

    @abstractmethod
    def uri(self, key: str) -> str:
        """The object's URI as replicas record it (``file:///...``, ``s3://bucket/...``)."""

    @abstractmethod
    def key_of(self, uri: str) -> str:
        """The key of a URI of this store; InvalidKeyError if the URI points anywhere else."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size (and what else the store knows) of an object; ObjectNotFoundError if there is none."""

    @abstractmethod
    def open(self, key: str) -> contextlib.AbstractContextManager[ReadStream]:
        """The object's bytes as a stream; ObjectNotFoundError if there is none."""

    @abstractmethod
    def writer(self, key: str, expected: Checksums | None = None) -> Writer:
        """A writer for a new object under ``key`` (replacing any object there when committed).

        ``expected``, when known, lets the backend record the checksums with the object from the start.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; no error if there is none."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix), in key order."""

    @abstractmethod
    def clean_partials(self, older_than_s: float) -> int:
        """Remove what interrupted writes left behind (temporary files, incomplete multipart uploads) that is
        older than ``older_than_s`` seconds; returns how many were removed. Younger ones may still be live."""

    # ---------------------------------------------------------------------------------------- built on them

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def put(self, key: str, source: Readable, expected: Checksums | None = None) -> Checksums:
        """Store what ``source`` yields under ``key``, streaming; checksums of what was stored."""
        with self.writer(key, expected) as writer:
            while chunk := source.read(writer.preferred_chunk):
                writer.write(chunk)
            return writer.commit(expected)

    def put_bytes(self, key: str, data: bytes, expected: Checksums | None = None) -> Checksums:
        with self.writer(key, expected) as writer:
            writer.write(data)
            return writer.commit(expected)

    def get(self, key: str, destination: BinaryIO) -> Checksums:
        """Write the object's bytes to ``destination``, streaming; checksums of what was read."""
        hasher = StreamHasher()
        with self.open(key) as stream:
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                destination.write(chunk)
        return hasher.result()

    def read_bytes(self, key: str) -> bytes:
        """The whole object in memory: for small objects only (manifests, tests)."""
        with self.open(key) as stream:
            return stream.read()
