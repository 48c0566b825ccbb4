"""Sites' stores behind one small interface: POSIX directories and S3 buckets, streaming verified copies.

What a caller uses (the transfer service, the operator, ``sgs demo``)::

    from sgs.storage import PosixStore, S3Store, copy, replica_key, verify

    source = PosixStore("sdc-it", Path("/data/sdc-it"))
    destination = S3Store.connect("sdc-fr", endpoint="s3.sdc-fr:9000", bucket="sgs", access_key=..., secret_key=...)
    key = replica_key("nir_stack", dataset_id, ".fits")          # the same at every Site
    result = copy(source, key, destination, key, expected=replica.checksums)
    result.checksums, result.verified                           # Checksums(size, adler32, sha256), True

- :class:`Store` — ``stat``, ``open`` (a read stream), ``writer`` (an object invisible until committed), ``put``
  / ``get`` (streams), ``delete``, ``list``, ``uri`` / ``key_of`` (replica URIs), ``clean_partials`` (what a
  crash left behind). :class:`PosixStore` writes a temporary file, fsyncs and renames it; :class:`S3Store`
  uploads big objects in parts (a bounded number in flight) and completes the upload only at the end.
- :func:`copy` — source → destination, streaming, adler32 + sha256 computed in the same pass, refusing to
  publish content that differs from ``expected``, then :func:`verify` (a re-read at the destination).
- :func:`replica_key` — the deterministic layout (:mod:`sgs.storage.layout`): a retried copy lands on the same
  key. :func:`check_key` is what every store applies to a key before touching anything.
- Checksums are :class:`sgs.model.checksum.Checksums`; adler32 compares as a number (:class:`Adler32`).
- The Sites loader: :func:`sgs.storage.sites.load_sites_file` (a Sites file of Site + Secret manifests, the
  embedded default) and :mod:`sgs.storage.site_watch` (``load_sites_from_cluster``, ``SitesWatch``: the Site
  resources of a cluster, watched) both give :class:`~sgs.storage.sites.Sites` — each
  :class:`~sgs.storage.sites.LoadedSite` has its Site resource, resolved S3 credentials, labels, maintenance
  windows and archive URL, and ``.store()`` opens its :class:`Store` (open it once and share it).

**Blocking, thread-safe, not async.** The minio SDK is synchronous (urllib3), and so is file I/O. The heavy
parts — socket reads and writes, sha256, adler32 — release the GIL, so copies running in threads overlap for
real; an async facade would only wrap each call in ``asyncio.to_thread`` and hide how many threads run. So the
interface stays synchronous and every store is safe to share between threads. Async callers (the transfer
workers) run each copy in a thread pool they size themselves — that pool is their concurrency limit — with
``await asyncio.to_thread(copy, ...)`` or ``loop.run_in_executor(pool, ...)``, and stop one with its ``abort``
event (a thread cannot be cancelled; the copy checks the event between chunks and aborts its upload).
"""

from sgs.model.checksum import Adler32, Checksums
from sgs.storage.base import ObjectInfo, ReadStream, Store, Writer
from sgs.storage.copy import CopyResult, copy, verify
from sgs.storage.errors import (
    ChecksumMismatchError,
    CopyAbortedError,
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    StoreUnavailableError,
)
from sgs.storage.hashing import StreamHasher, checksum_bytes, checksum_file, checksum_stream
from sgs.storage.layout import check_key, replica_key, suffix_of
from sgs.storage.posix import PosixStore
from sgs.storage.s3 import S3Store

__all__ = [
    "Adler32",
    "ChecksumMismatchError",
    "Checksums",
    "CopyAbortedError",
    "CopyResult",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PosixStore",
    "ReadStream",
    "S3Store",
    "StorageError",
    "Store",
    "StoreUnavailableError",
    "StreamHasher",
    "Writer",
    "check_key",
    "checksum_bytes",
    "checksum_file",
    "checksum_stream",
    "copy",
    "replica_key",
    "suffix_of",
    "verify",
]
