"""A Run's archive inputs: ``query`` (+ datasetType, collections) and ``datasetIds`` resolved through the archive
of the Run's Site into datasets, their replicas, the bytes each Site holds, and finally the paths of their replicas
at the Site the Run goes to (POSIX stores: the replica's file:// URI, which must lie under the Site's roots).

Resolution happens once, at the Run's start; what it found is recorded (``sgs_run_input``) before any task starts,
so a restart resolves nothing again and a dataset registered later cannot change a running Run's inputs.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgs.model.run import RunInput, RunSpec
from sgs_operator.archive import ArchiveClient, SiteArchive
from sgs_operator.records import InputRow
from sgs_operator.storage import Roots, StorageError, posix_path

MAX_ARCHIVE_INPUTS = 100_000  # per Run input, as for spec.inputs.<name>.uris
LOOKUPS_IN_FLIGHT = 16


class InputsBlockedError(Exception):
    """The Run cannot start on these inputs (yet); ``reason`` is the condition's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Found:
    """One dataset an input resolved to, with its available replicas: Site → (uri, size)."""

    input: str
    position: int
    dataset_id: uuid.UUID
    dataset_type: str
    data_id: dict[str, Any]
    replicas: dict[str, tuple[str, int]] = field(default_factory=dict)
    checksums: dict[str, dict[str, Any]] = field(default_factory=dict)  # Site → the replica's size, adler32, sha256


@dataclass(frozen=True)
class Resolution:
    found: list[Found]

    def observation(self) -> int | None:
        """The one observation every input dataset belongs to (its data ID's ``observation``), else None: a Run
        over several observations, or over datasets without one, has no placement of its own."""
        values = {item.data_id.get("observation") for item in self.found}
        if len(values) != 1:
            return None
        [value] = values
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def held_bytes(self) -> dict[str, int]:
        """Bytes of the inputs each Site holds an available replica of (what work-to-the-data weighs)."""
        held: dict[str, int] = {}
        for item in self.found:
            for site, (_, size) in item.replicas.items():
                held[site] = held.get(site, 0) + size
        return held

    def at_site(self, site: str, roots: Roots, bucket: str | None = None) -> list[InputRow]:
        """Every input as the path of its replica at ``site``, confined to the Site's roots (read-only); at an S3
        Site whose tasks stage their files (``bucket`` given), a replica in that bucket as its ``s3://`` URI
        (the task's wrapper downloads it)."""
        rows: list[InputRow] = []
        missing: list[str] = []
        for item in self.found:
            replica = item.replicas.get(site)
            where = f"spec.inputs.{item.input}"
            if replica is None:
                missing.append(f"{item.dataset_type} {item.dataset_id}")
                continue
            uri, size = replica
            try:
                path = _replica_path(uri, where, f"{where}: replica of {item.dataset_id}", roots, bucket)
            except StorageError as err:
                raise InputsBlockedError("InputReplicaUnusable", f"{err} (the archive's replica at {site})") from err
            rows.append(
                InputRow(
                    item.input,
                    item.position,
                    str(item.dataset_id),
                    item.dataset_type,
                    item.data_id,
                    site,
                    path,
                    size,
                    item.checksums.get(site),
                )
            )
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputsBlockedError(
                "InputsNotAtSite",
                f"{len(missing)} input dataset(s) have no available replica at {site}: {shown} (the operator stages "
                "inputs in with SGS_OPERATOR_TRANSFER_URL set; else replicate them there, or leave spec.site unset)",
            )
        return rows


def _replica_path(uri: str, where: str, replica: str, roots: Roots, bucket: str | None) -> str:
    if uri.startswith("s3://"):
        held = urllib.parse.urlsplit(uri).netloc
        if bucket is None:
            raise StorageError(f"{replica}: {uri} is an object, and this Site's tasks read files only")
        if held != bucket:
            raise StorageError(f"{replica}: {uri} is not in the Site's bucket s3://{bucket}")
        return uri
    return roots.confine(str(posix_path(uri, replica)), where)


def archive_inputs(spec: RunSpec) -> dict[str, RunInput]:
    return {name: given for name, given in spec.inputs.items() if given.from_archive}


async def resolve(client: ArchiveClient, archive: SiteArchive, inputs: Mapping[str, RunInput]) -> Resolution:
    """Each archive input's datasets (in the archive's order for a query, as given for ids), with replicas."""
    found: list[Found] = []
    for name, given in sorted(inputs.items()):
        datasets = await _datasets(client, archive, name, given)
        found.extend(
            Found(name, i, uuid.UUID(str(d["id"])), str(d["dataset_type"]), dict(d["data_id"]))
            for i, d in enumerate(datasets)
        )
    located = await client.locate(archive, [f.dataset_id for f in found]) if found else {}
    return Resolution([_with_replicas(item, located.get(str(item.dataset_id), [])) for item in found])


async def _datasets(client: ArchiveClient, archive: SiteArchive, name: str, given: RunInput) -> list[dict[str, Any]]:
    where = f"spec.inputs.{name}"
    if given.query is not None:
        assert given.dataset_type is not None  # the model requires it with a query
        collections = given.collections or []
        datasets = await client.query(archive, given.dataset_type, collections, given.query, MAX_ARCHIVE_INPUTS)
        if not datasets:
            searched = f" in {', '.join(collections)}" if collections else ""
            raise InputsBlockedError(
                "NoInputs",
                f"{where}.query: {given.query!r} matches no {given.dataset_type} dataset{searched} at {archive.url}",
            )
        if len(datasets) > MAX_ARCHIVE_INPUTS:
            raise InputsBlockedError(
                "TooManyInputs", f"{where}.query: {given.query!r} matches more than {MAX_ARCHIVE_INPUTS:,} datasets"
            )
        return datasets
    ids = given.dataset_ids or []
    datasets = []
    for start in range(0, len(ids), LOOKUPS_IN_FLIGHT):  # one GET per id, a few in flight (the API has no bulk get)
        chunk = ids[start : start + LOOKUPS_IN_FLIGHT]
        answers = await asyncio.gather(*(client.dataset(archive, dataset_id) for dataset_id in chunk))
        for i, (dataset_id, found) in enumerate(zip(chunk, answers, strict=True), start=start):
            if found is None:
                message = f"{where}.datasetIds[{i}]: no dataset {dataset_id} at {archive.url}"
                raise InputsBlockedError("InputNotFound", message)
            datasets.append(found)
    return datasets


def _with_replicas(item: Found, replicas: Sequence[Mapping[str, Any]]) -> Found:
    by_site: dict[str, tuple[str, int]] = {}
    sums: dict[str, dict[str, Any]] = {}
    for replica in replicas:
        site = str(replica["site"])
        if site in by_site:
            continue
        by_site[site] = (str(replica["uri"]), int(replica["size"]))
        if replica.get("adler32") and replica.get("sha256"):
            sums[site] = {"size": int(replica["size"]), "adler32": replica["adler32"], "sha256": replica["sha256"]}
    return Found(item.input, item.position, item.dataset_id, item.dataset_type, item.data_id, by_site, sums)


def values_of(rows: Sequence[InputRow]) -> dict[str, list[str]]:
    """Planner values: each archive input as the list of its datasets' paths, in resolution order."""
    values: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: (r.input, r.position)):
        values.setdefault(row.input, []).append(row.path)
    return values
