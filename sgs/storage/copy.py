"""A streaming copy between two Sites' stores, checksummed on the way, verified at the destination."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sgs.model.checksum import Checksums
from sgs.storage.base import Store
from sgs.storage.errors import ChecksumMismatchError, CopyAbortedError, ObjectNotFoundError, StorageError
from sgs.storage.hashing import checksum_stream

Progress = Callable[[int], None]
"""Called with the number of bytes just copied."""
VERIFY_CHUNK = 8 << 20
"""Read-back chunk: big enough that hashing runs in its helper thread beside the next read."""


@dataclass(frozen=True)
class CopyResult:
    source_uri: str
    destination_uri: str
    checksums: Checksums
    seconds: float
    copied: bool
    """False when the destination already held the expected content and nothing was written."""
    verified: bool
    """True when the destination's bytes were re-read and matched."""


def verify(store: Store, key: str, expected: Checksums) -> Checksums:
    """Re-read an object and check its size and checksums; :class:`ChecksumMismatchError` if they differ."""
    with store.open(key) as stream:
        actual = checksum_stream(stream, VERIFY_CHUNK)
    if actual != expected:
        raise ChecksumMismatchError(f"{store.site}:{key}", expected, actual)
    return actual


def copy(
    source: Store,
    source_key: str,
    destination: Store,
    destination_key: str,
    *,
    expected: Checksums | None = None,
    verify_destination: bool = True,
    reuse_existing: bool = False,
    abort: threading.Event | None = None,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy one object, never holding more of it in memory than the destination's parts in flight.

    The bytes are hashed once as they stream through (size, adler32, sha256). With ``expected`` (the source
    replica's recorded checksums), content that differs is never published: the destination write is aborted
    and :class:`ChecksumMismatchError` raised. With ``verify_destination`` the published object is read back and
    checked; if that fails it is deleted and :class:`ChecksumMismatchError` raised. ``reuse_existing`` (needs
    ``expected``) first verifies what the destination already holds under the key and, if it matches, copies
    nothing — a retried copy after a crash costs one read. Setting ``abort`` stops the copy at the next chunk
    with :class:`CopyAbortedError`, leaving nothing under the destination key.

    Blocking: call it from a worker thread (``await asyncio.to_thread(copy, ...)``).
    """
    if source is destination and source_key == destination_key:
        raise StorageError(f"{source.site}:{source_key}: source and destination are the same object")
    started = time.perf_counter()
    source_uri, destination_uri = source.uri(source_key), destination.uri(destination_key)
    if reuse_existing and expected is not None:
        try:
            sums = verify(destination, destination_key, expected)
        except (ObjectNotFoundError, ChecksumMismatchError):
            pass
        else:
            return CopyResult(source_uri, destination_uri, sums, time.perf_counter() - started, False, True)
    sums = _stream(source, source_key, destination, destination_key, expected, abort, progress)
    if verify_destination:
        try:
            verify(destination, destination_key, sums)
        except ChecksumMismatchError:
            destination.delete(destination_key)
            raise
    return CopyResult(source_uri, destination_uri, sums, time.perf_counter() - started, True, verify_destination)


def _stream(
    source: Store,
    source_key: str,
    destination: Store,
    destination_key: str,
    expected: Checksums | None,
    abort: threading.Event | None,
    progress: Progress | None,
) -> Checksums:
    with source.open(source_key) as stream, destination.writer(destination_key, expected) as writer:
        while chunk := stream.read(writer.preferred_chunk):
            if abort is not None and abort.is_set():
                raise CopyAbortedError(f"copy of {source.site}:{source_key} to {destination.site}:{destination_key}")
            writer.write(chunk)
            if progress is not None:
                progress(len(chunk))
        return writer.commit(expected)
