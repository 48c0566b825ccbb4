"""Task outputs become datasets at the Site's archive, with a replica (size, adler32, sha256) and lineage.

An outbox: when a task succeeds, one row per output (``sgs_registration``) is written in the same transaction as
the task's outcome, carrying what the task's end knew (file, checksums, the input paths each output derives
from, executable, command, image, attempt). Each reconcile then registers the Run's pending rows in the order
their tasks ended, and marks each done. A crash between the two leaves rows pending; the next operator registers
them; a second try of one already registered is a no-op at the archive, which identifies a dataset by (type,
data ID, RUN collection) and answers identical content as "existing". So kill -9 anywhere registers exactly once.

The data ID is derived here, not at the task's end: it is made of the data IDs of the output's inputs — archive
inputs (recorded at the Run's start) or upstream outputs (registered before it) — by the output's rule
(``OutputSpec.derive_data_id``), then kept to the dimensions the archive's dataset type has. Outputs with
``register: false`` are not registered but still carry a data ID and their inputs forward, so what derives from
them gets both. A failed task registers nothing (no row is written).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import sgs
from sgs.model.checksum import Checksums
from sgs.model.dataset import DataIdError
from sgs.model.pipeline import OutputSpec
from sgs.planner import Task
from sgs.planner.planner import Value
from sgs.storage import checksum_file
from sgs_operator.archive import ArchiveClient, ArchiveError, SiteArchive
from sgs_operator.crash import crash_point
from sgs_operator.records import InputRow, Registration, RegistrationRow, TaskStore

REGISTERED, SKIPPED, FAILED, PENDING = "registered", "skipped", "failed", "pending"
DRAIN_PER_STEP = 200  # rows registered per reconcile (a 100k-task Run's outputs spread over reconciles)
BATCH = 50  # rows per ingest call: independent rows of one reconcile share a transaction at the archive
RETRY_AFTER_S = 5.0  # a retryable failure (archive down, type not registered yet) is tried again this much later


def run_collection(namespace: str, run: str, uid: str) -> str:
    """The RUN collection of a Run's outputs: a re-created Run of the same name gets its own."""
    return f"{namespace}/{run}/{uid[:8]}"


def output_facts(
    task: Task,
    outputs: Mapping[str, str],
    inputs: Mapping[str, Value],
    argv: Sequence[str],
    image: str,
    pipeline_digest: str,
    checksums: Callable[[str], Checksums] | None = None,
) -> list[Registration]:
    """Outbox rows of a succeeded task: one per output, checksums read now (blocking: call off the loop) — of the
    file, or at an S3 Site those the wrapper recorded with the object (``checksums``: output → its checksums)."""
    checksums = checksums or file_checksums
    rows: list[Registration] = []
    declared = [p.name for p in task.executable.inputs]
    config = hashlib.sha256(json.dumps({"argv": list(argv), "pipeline": pipeline_digest}).encode()).hexdigest()
    for out in task.executable.outputs:
        path = outputs[out.name]
        ports = out.lineage if out.lineage is not None else declared
        facts: dict[str, Any] = {
            "spec": out.model_dump(mode="json", by_alias=True, exclude_none=True),
            "inputs": sorted({p for port in ports if port in inputs for p in _paths(inputs[port])}),
            "executable": task.executable.name,
            "command": task.executable.command,
            "image": image,
            "config_digest": f"sha256:{config}",
            "version": sgs.__version__,
        }
        if out.register_dataset:
            sums = checksums(path)
            facts |= {"size": sums.size, "adler32": str(sums.adler32), "sha256": str(sums.sha256)}
        rows.append(Registration(task.id, task.attempt, out.name, path, facts))
    return rows


def pinned_image(image: str, digest: str) -> str:
    """``image`` pinned to the manifest digest it ran (``repo@sha256:…``, its tag dropped); as given without one."""
    if not digest:
        return image
    repository = image.split("@", 1)[0]
    last_slash = repository.rfind("/")
    colon = repository.rfind(":")
    if colon > last_slash:  # a tag, not a registry's port
        repository = repository[:colon]
    return f"{repository}@{digest}"


def file_checksums(path: str) -> Checksums:
    return checksum_file(Path(path))


def replica_uri(path: str) -> str:
    """What the archive records: an object's own ``s3://`` URI, a file's ``file://`` URI."""
    return path if path.startswith("s3://") else Path(path).as_uri()


def _paths(value: Value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [p for item in value for p in _paths(item)]


@dataclass
class Known:
    """What a path stands for in lineage: the datasets it is (or derives from) and the data ID it carries."""

    ids: tuple[str, ...]
    data_id: dict[str, Any]


class PermanentError(Exception):
    """This output cannot be registered as written (the message says why); the row is marked failed."""


@dataclass
class Registrar:
    """One Run's registrations at its Site's archive."""

    store: TaskStore
    client: ArchiveClient
    archive: SiteArchive
    run_uid: str
    collection: str
    pipeline_run: str
    known: dict[str, Known] = field(default_factory=dict)  # path → datasets and data ID
    types: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry_at: float = 0.0
    last_error: str | None = None
    refused: bool = False  # the archive refused the token (401/403): the Site's Secret is read again

    @classmethod
    async def load(
        cls, store: TaskStore, client: ArchiveClient, archive: SiteArchive, uid: str, collection: str, run: str
    ) -> Registrar:
        """The Run's archive inputs and its outputs already handled, so lineage finds them after a restart."""
        registrar = cls(store, client, archive, uid, collection, run)
        registrar.add_inputs(await store.load_inputs(uid))
        for row in await store.registrations(uid, pending_only=False, limit=10_000_000):
            if row.state in (REGISTERED, SKIPPED):
                ids = (row.dataset_id,) if row.dataset_id else tuple(row.input_ids or ())
                registrar.known[row.path] = Known(ids, dict(row.data_id or {}))
        return registrar

    def add_inputs(self, rows: Sequence[InputRow]) -> None:
        for row in rows:
            self.known[row.path] = Known((row.dataset_id,), dict(row.data_id))

    async def drain(self) -> int:
        """Register the Run's pending outputs in order; returns how many rows were settled."""
        if time.monotonic() < self.retry_at:
            return 0
        rows = await self.store.registrations(self.run_uid, pending_only=True, limit=DRAIN_PER_STEP)
        settled, start, size = 0, 0, BATCH
        while start < len(rows):
            batch = rows[start : start + size]
            try:
                done = await self._batch(batch)
            except ArchiveError as error:
                if error.retryable:
                    # Rows after this one may derive from it: wait, in order, rather than register them without it.
                    self.last_error = str(error)
                    self.refused = error.status in (401, 403)
                    await self.store.registration_retry(batch[0].id, str(error))
                    self.retry_at = time.monotonic() + RETRY_AFTER_S
                    break
                if len(batch) > 1:
                    size = 1  # refused: find the row it was about, one at a time
                    continue
                await self._settle(batch[0], FAILED, None, {}, [], str(error))
                done = 1
            if done == 0:
                break
            settled += done
            start += done
            size = BATCH
        return settled

    async def _batch(self, rows: Sequence[RegistrationRow]) -> int:
        """Rows whose inputs are all settled go to the archive in one ingest; the first that depends on an
        earlier row of this batch ends it (the next batch takes it, once that one is known)."""
        bodies: list[tuple[RegistrationRow, dict[str, Any], Known]] = []
        settled = 0
        in_batch: set[str] = set()
        for row in rows:
            if any(p in in_batch for p in row.facts.get("inputs", [])):
                break
            in_batch.add(row.path)
            try:
                prepared = await self._prepare(row)
            except PermanentError as error:
                await self._settle(row, FAILED, None, {}, [], str(error))
                settled += 1
                continue
            if prepared is None:
                settled += 1  # register: false
                continue
            bodies.append((row, *prepared))
        if not bodies:
            return settled
        result = await self.client.ingest(self.archive, [body for _, body, _ in bodies])
        crash_point("after-register-before-mark")
        for (row, body, known), dataset_id in zip(bodies, result["ids"], strict=True):
            await self._settle(row, REGISTERED, str(dataset_id), body["data_id"], list(known.ids))
        return settled + len(bodies)

    async def _prepare(self, row: RegistrationRow) -> tuple[dict[str, Any], Known] | None:
        try:
            out = OutputSpec.model_validate(row.facts["spec"])
        except (KeyError, ValidationError) as err:
            raise PermanentError(f"output {row.output!r}: unreadable outbox row: {err}") from err
        upstream = [self.known[p] for p in row.facts.get("inputs", []) if p in self.known]
        ids = tuple(dict.fromkeys(i for k in upstream for i in k.ids))
        try:
            derived = out.derive_data_id([k.data_id for k in upstream])
        except DataIdError as err:
            raise PermanentError(f"task {row.task}: {err}") from err
        if not out.register_dataset:
            await self._settle(row, SKIPPED, None, derived, list(ids))
            return None
        kind = await self._type(out.registered_type())
        allowed = set(kind.get("dimensions", [])) | set(kind.get("implied", []))
        data_id = {k: v for k, v in derived.items() if k in allowed}
        lacking = [d for d in kind.get("dimensions", []) if d not in data_id]
        if lacking:
            raise PermanentError(
                f"task {row.task}: output {row.output!r}: dataset type {kind['name']!r} needs {', '.join(lacking)}, "
                f"which its inputs' data IDs do not give (derived: {derived or 'none'}); name the dimensions with "
                "Output(dimensions=...) or register from inputs that carry them"
            )
        facts = row.facts
        body = {
            "dataset_type": kind["name"],
            "data_id": data_id,
            "run": self.collection,
            "task": f"{row.task}/{row.attempt}",
            "replicas": [
                {
                    "site": self.archive.site,
                    "uri": replica_uri(row.path),
                    "size": facts["size"],
                    "adler32": facts["adler32"],
                    "sha256": facts["sha256"],
                }
            ],
            "lineage": {
                "inputs": list(ids),
                "executable": f"{facts['executable']}: {facts['command']}"[:256],
                "image": facts.get("image"),
                "version": facts["version"],
                "config_digest": facts["config_digest"],
                "pipeline_run": self.pipeline_run,
                "task": row.task,
                "attempt": row.attempt,
            },
        }
        return body, Known(ids, data_id)

    async def _type(self, name: str) -> dict[str, Any]:
        kind = self.types.get(name)
        if kind is None:
            found = await self.client.dataset_type(self.archive, name)
            if found is None:
                # Types are the survey's vocabulary, registered by an admin: wait for it (retried), never guess one.
                raise ArchiveError(
                    f"dataset type {name!r} is not registered at {self.archive.url}; an archive admin registers "
                    "it (POST /dataset-types), then the outputs waiting for it are registered"
                )
            kind = self.types[name] = found
        return kind

    async def _settle(
        self,
        row: RegistrationRow,
        state: str,
        dataset_id: str | None,
        data_id: dict[str, Any],
        input_ids: list[str],
        error: str | None = None,
    ) -> None:
        await self.store.registration_done(row.id, state, dataset_id, data_id, input_ids, error)
        self.known[row.path] = Known((dataset_id,) if dataset_id else tuple(input_ids), data_id)
        if error:
            self.last_error = error
