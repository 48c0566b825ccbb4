"""A Site's store on a POSIX file system: objects are files under a root directory.

A write goes to a temporary file beside its destination (``.sgs-partial-<random>-<name>``), is fsynced, renamed
over the final name, and the directory fsynced, so a crash at any moment leaves either the old object or the
new one under the key — never a partial file — plus at most a temporary file that :meth:`clean_partials`
removes. Every path is checked to stay under the root, symbolic links included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sgs.model.checksum import Checksums
from sgs.model.site import StorageKind
from sgs.storage.base import ObjectInfo, ReadStream, Store, Writer
from sgs.storage.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from sgs.storage.layout import check_key

PARTIAL_PREFIX = ".sgs-partial-"
_NAME_MAX = 255


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PosixWriter(Writer):
    def __init__(self, store: PosixStore, key: str, final: Path) -> None:
        super().__init__(f"{store.site}:{key}")
        self._final = final
        name = f"{PARTIAL_PREFIX}{secrets.token_hex(6)}-{final.name}".encode()[:_NAME_MAX]
        self._partial = final.with_name(name.decode(errors="ignore"))  # a name's limit is in bytes
        self._durable = store.durable
        self._file: BinaryIO = self._partial.open("xb")

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self, checksums: Checksums) -> None:
        self._file.flush()
        if self._durable:
            os.fsync(self._file.fileno())
        self._file.close()
        self._partial.replace(self._final)
        if self._durable:
            _fsync_directory(self._final.parent)

    def _abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


class PosixStore(Store):
    """Objects as files under ``root``; ``durable=False`` skips the fsyncs (scratch stores, tests of speed)."""

    kind = StorageKind.POSIX

    def __init__(self, site: str, root: Path, *, durable: bool = True) -> None:
        super().__init__(site)
        self.root = Path(os.path.realpath(root))
        self.durable = durable

    def __repr__(self) -> str:
        return f"PosixStore({self.site!r}, {str(self.root)!r})"

    # ------------------------------------------------------------------------------------------ paths

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _inside(self, path: Path, key: str) -> Path:
        """``path`` with symbolic links resolved, if that is still under the root; InvalidKeyError otherwise."""
        real = os.path.realpath(path)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            raise InvalidKeyError(f"{self.site}:{key}: resolves outside the store's root {self.root}")
        return Path(real)

    def _existing(self, key: str) -> Path:
        path = self._inside(self._path(key), key)
        if not path.is_file():
            raise ObjectNotFoundError(f"{self.site}:{key}: no such object under {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def key_of(self, uri: str) -> str:
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
            raise InvalidKeyError(f"{uri!r}: not a file:// URI of {self.site}'s store")
        path = Path(urllib.parse.unquote(parsed.path))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise InvalidKeyError(f"{uri!r}: outside {self.site}'s store {self.root}") from None
        return check_key(relative.as_posix())

    # ------------------------------------------------------------------------------------------ objects

    def stat(self, key: str) -> ObjectInfo:
        try:
            info = self._existing(key).stat()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.site}:{key}: no such object under {self.root}") from None
        return ObjectInfo(key=key, size=info.st_size, modified=datetime.fromtimestamp(info.st_mtime, UTC))

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ReadStream]:
        try:
            stream = self._existing(key).open("rb", buffering=0)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"{self.site}:{key}: no such object under {self.root}") from None
        with stream:
            yield stream

    def writer(self, key: str, expected: Checksums | None = None) -> Writer:
        final = self._path(key)
        self._inside(final.parent, key)  # before mkdir: never create directories through a link that leads out
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"{self.site}:{key}: a parent of the key is an object") from None
        self._inside(final.parent, key)
        if final.is_dir():
            raise StorageError(f"{self.site}:{key}: the key is a directory of other objects")
        return PosixWriter(self, key, final)

    def delete(self, key: str) -> None:
        path = self._inside(self._path(key), key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise StorageError(f"{self.site}:{key}: the key is a directory of other objects, not an object") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        directory, _, _ = prefix.rpartition("/")
        start = self._inside(self.root / check_key(directory), prefix) if directory else self.root
        for path in self._files(start):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue  # deleted while we listed
                yield ObjectInfo(key=key, size=info.st_size, modified=datetime.fromtimestamp(info.st_mtime, UTC))

    def _files(self, directory: Path, *, partial: bool = False) -> Iterator[Path]:
        """Regular files under ``directory``, sorted per directory; only partial writes if ``partial``."""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    yield from self._files(Path(entry.path), partial=partial)
            elif entry.is_file(follow_symlinks=False) and self._wanted(entry.name, partial):
                yield Path(entry.path)

    @staticmethod
    def _wanted(name: str, partial: bool) -> bool:
        return name.startswith(PARTIAL_PREFIX) if partial else not name.startswith(".")

    def clean_partials(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._files(self.root, partial=True):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
