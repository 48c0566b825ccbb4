"""What can go wrong in storage: each error names the store and key in its message."""

from __future__ import annotations

from sgs.model.checksum import Checksums


class StorageError(RuntimeError):
    """A storage operation failed; the message names the store and the key."""


class ObjectNotFoundError(StorageError):
    """No object under this key (or it is not a regular object, e.g. a directory)."""


class StoreUnavailableError(StorageError):
    """The store could not be reached (connection refused, timed out, reset): the Site may be down."""


class InvalidKeyError(StorageError, ValueError):
    """A key or URI is refused: not relative, has empty, '.' or '..' parts, or lies outside the store."""


class ChecksumMismatchError(StorageError):
    """Bytes read or written do not have the expected size and checksums; ``differences`` says which."""

    def __init__(self, what: str, expected: Checksums, actual: Checksums) -> None:
        self.expected = expected
        self.actual = actual
        self.differences = expected.differences(actual)
        super().__init__(f"{what}: checksums do not match ({'; '.join(self.differences)})")


class CopyAbortedError(StorageError):
    """A copy was stopped by its caller before it completed; nothing was left under the destination key."""
