"""Where a replica lives in a Site's store: a deterministic key from its dataset, and what a key may be.

The layout (like Rucio's deterministic RSEs, ``scope/md5[0:2]/md5[2:4]/name``)::

    <dataset type>/<id[0:2]>/<id[2:4]>/<dataset id><suffix>
    nir_stack/3f/a2/3fa2c81e-9d0b-5c1e-8a57-0e6f4b1d2c3a.fits

- The **dataset id** names the file: it is derived from (dataset type, data ID, RUN collection) by
  :func:`sgs.model.dataset.dataset_uuid`, so the same dataset has the same key at every Site and in every
  attempt — a retried copy lands on the same key and replaces a partial one instead of making a second. Data
  ID values are arbitrary strings (unsafe in paths); the id is not.
- Its first four hex digits **shard** the objects over 65,536 directories per type (the id is a uuid5, i.e.
  SHA-1 based, so they are uniform), keeping POSIX directories small.
- The **dataset type** comes first so an operator can list, size or expire one type by prefix.
- The **suffix** (``.fits``, ``.fits.gz``) is kept from the producer's file so tools recognise the format.
"""

from __future__ import annotations

import re
import uuid

from sgs.model.dataset import DATASET_TYPE_PATTERN
from sgs.storage.errors import InvalidKeyError

MAX_KEY_BYTES = 1024
"""S3's limit on object names."""
SUFFIX_PATTERN = re.compile(r"(\.[A-Za-z0-9]{1,16}){1,3}")
_DATASET_TYPE = re.compile(DATASET_TYPE_PATTERN)
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def replica_key(dataset_type: str, dataset_id: uuid.UUID, suffix: str = "") -> str:
    """The key of a dataset's file at any Site (see the module docstring)."""
    if _DATASET_TYPE.fullmatch(dataset_type) is None:
        raise ValueError(f"dataset_type: {dataset_type!r} does not match {DATASET_TYPE_PATTERN}")
    if suffix and SUFFIX_PATTERN.fullmatch(suffix) is None:
        raise ValueError(f"suffix: {suffix!r} must be 1 to 3 parts like '.fits' or '.fits.gz'")
    text = str(dataset_id)
    return f"{dataset_type}/{text[0:2]}/{text[2:4]}/{text}{suffix}"


def suffix_of(name: str) -> str:
    """The file-format suffix of a file name (``x.fits.gz`` -> ``.fits.gz``), ``""`` if it has none usable."""
    base = name.rsplit("/", 1)[-1]
    parts = base.split(".")[1:][-3:]
    while parts:
        suffix = "." + ".".join(parts)
        if SUFFIX_PATTERN.fullmatch(suffix):
            return suffix
        parts = parts[1:]
    return ""


def check_key(key: str) -> str:
    """The key if a store may hold it, else :class:`~sgs.storage.errors.InvalidKeyError` saying why.

    A key is relative and ``/``-separated; no part is empty or starts with ``.`` (which rules out ``.`` and
    ``..``, and keeps the names of partial writes, which start with ``.``, out of reach); no control
    characters or backslashes; at most 1,024 bytes.
    """
    if not key:
        raise InvalidKeyError("key: must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key: longer than {MAX_KEY_BYTES} bytes")
    if _FORBIDDEN_CHARS.search(key):
        raise InvalidKeyError(f"key {key!r}: control characters and backslashes are not allowed")
    for part in key.split("/"):
        if not part:
            raise InvalidKeyError(f"key {key!r}: must be relative, without empty parts")
        if part.startswith("."):
            raise InvalidKeyError(f"key {key!r}: no part may start with '.' ({part!r})")
    return key
