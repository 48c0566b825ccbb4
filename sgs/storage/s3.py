"""A Site's store in an S3 bucket (MinIO or any S3 service), through the minio SDK.

An object up to one part (16 MiB by default) is one PUT, atomic by S3's rules. A bigger one is a multipart
upload: parts upload in the background, at most ``parts_in_flight`` at a time (the writer blocks until one
finishes, so memory stays under ``(parts_in_flight + 1) × part_size`` per stream), and the upload is completed
— made visible — only by :meth:`~sgs.storage.base.Writer.commit`, after the checksums of everything written
matched. An abort (or any error) aborts the upload; one a killed process left behind is removed by
:meth:`S3Store.clean_partials`, and a new write to the same key removes those older than ``stale_upload_s``.

The SDK's public ``put_object`` is not used for multipart: it completes the upload as soon as the stream ends
(no chance to refuse content with the wrong checksums) and leaves its upload threads blocked when the stream
raises. Its multipart primitives (``_create_multipart_upload``, ``_upload_part``, ...) are the S3 calls
themselves; they are stable across minio 7.x.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

from sgs.model.checksum import Adler32, Checksums
from sgs.model.site import StorageKind
from sgs.storage.base import ObjectInfo, ReadStream, Store, Writer
from sgs.storage.errors import InvalidKeyError, ObjectNotFoundError, StorageError, StoreUnavailableError
from sgs.storage.layout import check_key

log = logging.getLogger(__name__)

PART_SIZE = 16 << 20
PARTS_IN_FLIGHT = 3
MIN_PART_SIZE = 5 << 20
"""S3's smallest part (all but the last)."""
MAX_PARTS = 10_000
STALE_UPLOAD_S = 3600.0
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_META = {"adler32": "x-amz-meta-sgs-adler32", "sha256": "x-amz-meta-sgs-sha256"}


Headers = dict[str, str | list[str] | tuple[str]]
"""The minio SDK's header and metadata mapping."""


def _metadata(checksums: Checksums | None) -> Headers:
    if checksums is None:
        return {}
    return {"sgs-adler32": str(checksums.adler32), "sgs-sha256": checksums.sha256}


def _recorded(size: int, headers: Any) -> Checksums | None:
    adler32, sha256 = headers.get(_META["adler32"]), headers.get(_META["sha256"])
    if not adler32 or not sha256:
        return None
    try:
        return Checksums(size=size, adler32=Adler32.parse(adler32), sha256=sha256)
    except ValueError:
        return None  # metadata someone else wrote: a hint we cannot use


class _Response:
    """A GET's body as a :class:`ReadStream`."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def read(self, size: int = -1, /) -> bytes:
        return self._response.read(None if size < 0 else size)


class S3Writer(Writer):
    def __init__(self, store: S3Store, key: str, expected: Checksums | None) -> None:
        super().__init__(f"{store.site}:{key}")
        self._store = store
        self._key = key
        self._expected = expected
        self.preferred_chunk = store.part_size
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(store.parts_in_flight)
        self._futures: list[Future[Part]] = []
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------------------------------ parts

    def _write(self, chunk: bytes) -> None:
        self._raise_failure()
        size = self._store.part_size
        if not self._pending and len(chunk) == size:
            self._send_part(chunk)  # the copy's case: one read is one part, sent as it came
            return
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size < size:
            return
        data = memoryview(b"".join(self._pending))
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            self._send_part(bytes(data[start : start + size]))
        rest = bytes(data[whole:])
        self._pending, self._pending_size = ([rest] if rest else []), len(rest)

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._store.start_upload(self._key, self._expected)
            self._pool = ThreadPoolExecutor(self._store.parts_in_flight, thread_name_prefix="sgs-s3-part")
        if len(self._futures) >= MAX_PARTS:
            raise StorageError(
                f"{self.what}: larger than {MAX_PARTS} parts of {self._store.part_size} bytes; raise part_size"
            )
        self._slots.acquire()  # blocks while parts_in_flight parts are uploading: bounded memory
        self._raise_failure(release=True)
        assert self._pool is not None
        number = len(self._futures) + 1
        future = self._pool.submit(self._store.upload_part, self._key, self._upload_id, number, data)
        future.add_done_callback(self._part_done)
        self._futures.append(future)

    def _part_done(self, future: Future[Part]) -> None:
        self._slots.release()
        if not future.cancelled() and (error := future.exception()) is not None and self._failure is None:
            self._failure = error

    def _raise_failure(self, release: bool = False) -> None:
        if self._failure is not None:
            if release:
                self._slots.release()
            raise self._failure  # as it was: a StoreUnavailableError must stay one for the caller

    # ------------------------------------------------------------------------------------------ end

    def _commit(self, checksums: Checksums) -> None:
        rest = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self._upload_id is None:
            self._store.put_single(self._key, rest, checksums)
            return
        if rest:
            self._send_part(rest)
        parts = [future.result() for future in self._futures]
        self._shutdown_pool()
        self._store.complete_upload(self._key, self._upload_id, parts)

    def _abort(self) -> None:
        self._pending, self._pending_size = [], 0
        self._shutdown_pool()
        if self._upload_id is not None:
            self._store.abort_upload(self._key, self._upload_id)

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class S3Store(Store):
    """Objects in ``bucket``; one instance (one connection pool) serves every thread copying to or from it."""

    kind = StorageKind.S3

    def __init__(
        self,
        site: str,
        client: Minio,
        bucket: str,
        *,
        part_size: int = PART_SIZE,
        parts_in_flight: int = PARTS_IN_FLIGHT,
        stale_upload_s: float = STALE_UPLOAD_S,
    ) -> None:
        super().__init__(site)
        if not MIN_PART_SIZE <= part_size <= 5 << 30:
            raise ValueError(f"part_size: must be between {MIN_PART_SIZE} and {5 << 30} bytes, got {part_size}")
        if parts_in_flight < 1:
            raise ValueError("parts_in_flight: must be at least 1")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.stale_upload_s = stale_upload_s

    @classmethod
    def connect(
        cls,
        site: str,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | None,
        *,
        secure: bool = True,
        connections: int = 32,
        **options: Any,
    ) -> S3Store:
        """A store for ``endpoint`` (``host:port``, or a URL whose scheme sets ``secure``).

        ``connections`` bounds the connection pool: the copies and parts in flight to this store at once.
        """
        if "://" in endpoint:
            parsed = urllib.parse.urlsplit(endpoint)
            endpoint, secure = parsed.netloc, parsed.scheme == "https"
        http = urllib3.PoolManager(
            maxsize=connections,
            timeout=urllib3.Timeout(connect=10, read=300),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http)
        return cls(site, client, bucket, **options)

    def __repr__(self) -> str:
        return f"S3Store({self.site!r}, s3://{self.bucket} at {self.client._base_url.host})"

    # ------------------------------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        """S3 and connection errors as storage errors naming the Site, key and action."""
        try:
            yield
        except S3Error as error:
            if error.code in _NOT_FOUND:
                raise ObjectNotFoundError(f"{self.site}:{key}: no such object in s3://{self.bucket}") from None
            raise StorageError(f"{self.site}:{key}: {action} failed: {error.code} {error.message}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise StoreUnavailableError(f"{self.site}:{key}: {action} failed: store unreachable ({error})") from error

    # ------------------------------------------------------------------------------------------ keys

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{urllib.parse.quote(check_key(key))}"

    def key_of(self, uri: str) -> str:
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket or parsed.query or parsed.fragment:
            raise InvalidKeyError(f"{uri!r}: not an object of {self.site}'s bucket s3://{self.bucket}")
        return check_key(urllib.parse.unquote(parsed.path.removeprefix("/")))

    # ------------------------------------------------------------------------------------------ objects

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(check_key(key), "stat"):
            found = self.client.stat_object(self.bucket, key)
        size = int(found.size or 0)
        return ObjectInfo(key=key, size=size, modified=found.last_modified, checksums=_recorded(size, found.metadata))

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ReadStream]:
        with self._errors(check_key(key), "get"):
            response = self.client.get_object(self.bucket, key)
        try:
            with self._errors(key, "read"):
                yield _Response(response)
        finally:
            response.close()
            response.release_conn()

    def writer(self, key: str, expected: Checksums | None = None) -> Writer:
        return S3Writer(self, check_key(key), expected)

    def delete(self, key: str) -> None:
        with self._errors(check_key(key), "delete"):
            self.client.remove_object(self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._errors(prefix or "*", "list"):
            for found in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                key = found.object_name
                if key is None or found.is_dir:
                    continue
                try:
                    check_key(key)
                except InvalidKeyError:
                    log.debug("%s: skipping object %r, not a valid key", self.site, key)
                    continue
                yield ObjectInfo(key=key, size=int(found.size or 0), modified=found.last_modified)

    def clean_partials(self, older_than_s: float, prefix: str = "") -> int:
        """Abort incomplete multipart uploads older than ``older_than_s`` whose key starts with ``prefix``.

        MinIO lists every upload of the bucket (empty ``prefix``) or those of one object (its exact key), not
        those under a partial prefix.
        """
        cutoff = datetime.now(UTC).timestamp() - older_than_s
        removed = 0
        for key, upload_id, initiated in self._uploads(prefix):
            if initiated is None or initiated.timestamp() < cutoff:
                self.abort_upload(key, upload_id)
                removed += 1
        return removed

    def _uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime | None]]:
        key_marker: str | None = None
        upload_id_marker: str | None = None
        while True:
            with self._errors(prefix or "*", "list uploads"):
                page = self.client._list_multipart_uploads(
                    self.bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=upload_id_marker
                )
            for upload in page.uploads:
                if upload.upload_id:
                    yield upload.object_name, upload.upload_id, upload.initiated_time
            if not page.is_truncated or not page.uploads:
                return
            # The SDK drops NextUploadIdMarker; the last upload listed is the same marker.
            key_marker, upload_id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id

    # ------------------------------------------------------------------------------------------ S3 calls

    def put_single(self, key: str, data: bytes, checksums: Checksums) -> None:
        with self._errors(key, "put"):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), metadata=_metadata(checksums))

    def start_upload(self, key: str, expected: Checksums | None) -> str:
        self.clean_partials(self.stale_upload_s, prefix=key)
        headers: Headers = {"Content-Type": "application/octet-stream"}
        headers.update({f"x-amz-meta-{name}": value for name, value in _metadata(expected).items()})
        with self._errors(key, "start upload"):
            return self.client._create_multipart_upload(self.bucket, key, headers)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> Part:
        with self._errors(key, f"upload part {number}"):
            etag = self.client._upload_part(self.bucket, key, data, None, upload_id, number)
        return Part(number, etag)

    def complete_upload(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        with self._errors(key, "complete upload"):
            self.client._complete_multipart_upload(self.bucket, key, upload_id, [*parts])

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            with self._errors(key, "abort upload"):
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
        except ObjectNotFoundError:
            pass  # already gone
        except StorageError as error:
            if "NoSuchUpload" not in str(error):
                # Not fatal: clean_partials (or the next write to this key) removes it later.
                log.warning("%s", error)
