"""A Run's files at an S3 Site that shares no directory with its tasks (``storage.kind: s3``, no ``storage.path``).

Nothing is mounted: each task runs under ``sgs task exec`` (``sgs.task``), which downloads the task's inputs
from the Site's bucket into the pod's scratch directory (``$TMPDIR/sgs-task``), checks them, runs the command on
plain files there, and uploads its outputs once it succeeded, with size, adler32 and sha256 recorded as the
object's metadata. The operator's planner values are ``s3://<bucket>/<key>`` URIs; an output's key is
deterministic (``<namespace>/<run>/<task dir>/<output><suffix>``, as the POSIX layout), so a restarted operator
finds the outputs of tasks that ended while it was down, and a retried upload replaces the same object.

The operator reads what the wrapper left with its own connection to the bucket (the keys of the Site's
``storage.credentials`` Secret, read at the Run's start): one HEAD per output for its existence and checksums
(kept until the outbox row is written: the bytes are never read), and a GET of each list output (a JSON array of
the items' URIs). Tasks get the keys by ``secretKeyRef``, never in the Job's spec.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sgs.model.checksum import Checksums
from sgs.model.pipeline import ExecutableSpec
from sgs.model.site import SecretRef, SiteSpec, StorageKind
from sgs.naming import task_dir_name
from sgs.storage import ObjectNotFoundError, S3Store
from sgs.storage import StorageError as StoreError
from sgs.task.execute import EXIT_CONFIG, EXIT_DATA, EXIT_UNAVAILABLE
from sgs_operator.kube import Kube
from sgs_operator.observe import Outcome
from sgs_operator.records import InputRow
from sgs_operator.storage import Roots, RunStorage, StorageError

READABLE_MAX_BYTES = 1 << 20  # an upstream output the operator reads itself: a small resources file

S3_SCHEME = "s3://"


def runs_on_objects(site: SiteSpec, output_prefix: str | None) -> bool:
    """An S3 Site without a shared directory: its tasks stage their files through the bucket."""
    return site.storage.kind is StorageKind.S3 and not site.storage.path and output_prefix is None


WRAPPER_EXITS = {
    EXIT_DATA: "an input or output unusable: missing, or its checksums differ from those recorded",
    EXIT_UNAVAILABLE: "the Site's store stayed unreachable through every try",
    EXIT_CONFIG: "its manifest or environment unusable",
}


def wrapper_outcome(seen: Outcome) -> Outcome:
    """A failed task at an S3 Site, its exit status read as the wrapper's when it is one of the wrapper's (the
    wrapper's own line on stderr, in the pod's log, names the object)."""
    meaning = WRAPPER_EXITS.get(seen.exit_code) if seen.exit_code is not None else None
    if meaning is None or seen.succeeded:
        return seen
    message = f"{seen.message}; sgs task exec: {meaning} (the pod's log names it)"
    return Outcome(seen.reason, seen.exit_code, message, seen.usage, seen.image_id)


class CredentialsError(Exception):
    """The Site's S3 keys cannot be read; the message names the field."""


@dataclass(frozen=True)
class SiteBucket:
    """Where a Site's objects are, and the Secret holding the keys (tasks read it by secretKeyRef)."""

    site: str
    endpoint: str
    bucket: str
    secure: bool
    credentials: SecretRef | None

    @classmethod
    def of(cls, name: str, site: SiteSpec) -> SiteBucket:
        storage = site.storage
        assert storage.endpoint is not None and storage.bucket is not None  # the model requires both for s3
        return cls(name, storage.endpoint, storage.bucket, storage.secure, storage.credentials)

    def uri(self, key: str) -> str:
        """As ``S3Store.uri`` writes it (what the wrapper and the archive's replicas name)."""
        return f"{S3_SCHEME}{self.bucket}/{quote(key)}"

    def key_of(self, value: str) -> str | None:
        """The key of an ``s3://`` URI of this bucket; None for anything else (a plain value, a path)."""
        if not value.startswith(S3_SCHEME):
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.netloc != self.bucket or parts.query or parts.fragment:
            return None
        return urllib.parse.unquote(parts.path.removeprefix("/")) or None


async def open_bucket(kube: Kube, namespace: str, bucket: SiteBucket) -> S3Store:
    """The operator's own connection to the Site's bucket, with the keys its Secret holds now."""
    access_key = secret_key = None
    ref = bucket.credentials
    if ref is not None:
        where = f"Site {bucket.site!r}: spec.storage.credentials"
        secret = await kube.client.get_or_none(
            f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(ref.name, safe='')}"
        )
        if secret is None:
            raise CredentialsError(f"{where}: Secret {namespace}/{ref.name} not found")
        access_key = _secret_value(secret.get("data") or {}, ref.access_key_key, f"{where}: Secret {ref.name}")
        secret_key = _secret_value(secret.get("data") or {}, ref.secret_key_key, f"{where}: Secret {ref.name}")
    return S3Store.connect(
        bucket.site, bucket.endpoint, bucket.bucket, access_key, secret_key, secure=bucket.secure, connections=8
    )


def _secret_value(data: Mapping[str, str], key: str, where: str) -> str:
    try:
        value = base64.b64decode(data.get(key) or "", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{where}: key {key!r} is not decodable") from None
    if not value:
        raise CredentialsError(f"{where}: no key {key!r}")
    return value


@dataclass
class BucketRunStorage:
    """A Run's outputs as objects of its Site's bucket, under ``<namespace>/<run>/``."""

    bucket: SiteBucket
    store: S3Store
    roots: Roots  # readOnlyPaths only: reference files a task may still read by path, mounted read-only
    prefix: str  # <namespace>/<run>
    seen: dict[str, Checksums] = field(default_factory=dict)  # output URI → checksums, outcome → outbox row
    inputs: dict[str, Checksums] = field(default_factory=dict)  # archive input's key → the archive's checksums
    scratch: str | None = None  # where readable() puts the objects it downloads (small: dynamic resources)

    def know_inputs(self, rows: Iterable[InputRow]) -> None:
        """The archive's checksums of the Run's archive inputs: what each task checks its download against (an
        object whose bytes and recorded metadata were both replaced is still refused). Upstream outputs are
        checked against what the wrapper recorded when it uploaded them."""
        for row in rows:
            key = self.bucket.key_of(row.path)
            if row.checksums is not None and key is not None:
                with contextlib.suppress(ValueError):  # unusable: the object's own metadata is checked instead
                    self.inputs[key] = Checksums.model_validate(row.checksums)

    @property
    def run_dir(self) -> str | None:
        """None: no directory is shared with the tasks, nothing is mounted read-write."""
        return None

    def task_path(self, tid: str) -> str:
        """The task's key prefix (its outputs' "directory")."""
        return f"{self.prefix}/{task_dir_name(tid)}"

    def output_keys(self, tid: str, executable: ExecutableSpec) -> dict[str, str]:
        directory = self.task_path(tid)
        return {o.name: f"{directory}/{o.name}{o.suffix}" for o in executable.outputs}

    def outputs(self, tid: str, executable: ExecutableSpec) -> dict[str, str]:
        return {name: self.bucket.uri(key) for name, key in self.output_keys(tid, executable).items()}

    def ensure_root(self) -> None:
        """Nothing to make: a key prefix exists once an object is under it."""

    def prepare(self, tid: str) -> None:
        """Nothing to make: the wrapper makes the output directories in the pod's scratch."""

    def readable(self, path: str, what: str) -> str:
        """An upstream output the operator reads (dynamic resources): the object downloaded into a private
        directory of the operator's, checked against the checksums the wrapper uploaded it with; its path."""
        key = self._key(path, what)
        try:
            info = self.store.stat(key)
        except ObjectNotFoundError:
            raise StorageError(f"{what}: {path}: no such object") from None
        except StoreError as err:
            raise StorageError(f"{what}: {path}: {err}") from err
        if info.size > READABLE_MAX_BYTES:
            raise StorageError(f"{what}: {path} is {info.size} bytes, more than the {READABLE_MAX_BYTES} read")
        if self.scratch is None:
            self.scratch = tempfile.mkdtemp(prefix="sgs-operator-objects-")
        target = Path(self.scratch) / hashlib.sha256(key.encode()).hexdigest()[:32]
        try:
            with target.open("wb") as out:
                got = self.store.get(key, out)
        except StoreError as err:
            raise StorageError(f"{what}: {path}: {err}") from err
        if info.checksums is not None and got != info.checksums:
            raise StorageError(f"{what}: {path}: its bytes do not match the checksums it was uploaded with")
        return str(target)

    def _key(self, uri: str, what: str) -> str:
        key = self.bucket.key_of(uri)
        if key is None:
            raise StorageError(f"{what}: {uri!r} is not an object of s3://{self.bucket.bucket}")
        return key

    def missing_outputs(self, outputs: Mapping[str, str]) -> list[str]:
        """Outputs with no object (blocking: one HEAD each); those found keep their recorded checksums."""
        missing: list[str] = []
        for name, uri in outputs.items():
            try:
                info = self.store.stat(self._key(uri, f"output {name}"))
            except ObjectNotFoundError:
                missing.append(name)
                continue
            except StoreError as err:
                raise StorageError(f"output {name}: {err}") from err
            if info.checksums is None:
                raise StorageError(f"output {name}: {uri} carries no sgs checksums (not uploaded by sgs task exec?)")
            self.seen[uri] = info.checksums
        return missing

    def checksums_of(self, uri: str) -> Checksums:
        """What the wrapper recorded with the object (seen at the task's outcome, else one HEAD now)."""
        known = self.seen.pop(uri, None)
        if known is not None:
            return known
        info = self.store.stat(self._key(uri, "output"))
        if info.checksums is None:
            raise StorageError(f"{uri} carries no sgs checksums")
        return info.checksums

    def read_lists(self, outputs: Mapping[str, str], ports: Iterable[str]) -> tuple[dict[str, list[str]], set[str]]:
        """A task's list outputs: the wrapper stored each as a JSON array of its items' URIs, every one of them an
        object of this bucket (nothing to mount)."""
        lists: dict[str, list[str]] = {}
        for port in ports:
            what = f"list output {port}"
            try:
                data = json.loads(self.store.read_bytes(self._key(outputs[port], what)))
            except (StoreError, ValueError) as err:
                raise StorageError(f"{what}: cannot read {outputs[port]}: {err}") from err
            if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
                raise StorageError(f"{what}: {outputs[port]} must be a JSON array of s3:// URIs")
            for i, item in enumerate(data):
                self._key(item, f"{what}[{i}]")
            lists[port] = data
        return lists, set()


TaskStorage = RunStorage | BucketRunStorage
"""Where a Run's files are: a directory its tasks mount (POSIX, or S3 with a shared path), or a bucket."""
