"""The HTTP API's request and response models (Create / Public / ListPublic per resource)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr

from sgs.model.dataset import (
    DATASET_TYPE_PATTERN,
    ArchiveModel,
    CollectionName,
    CollectionType,
    DataId,
    PlacementDimension,
    SiteName,
)
from sgs.model.replica import ReplicaFile, ReplicaRecord, ReplicaState

ABSOLUTE_MAX_BATCH = 500_000
DatasetTypeName = Annotated[str, Field(min_length=1, max_length=128, pattern=DATASET_TYPE_PATTERN)]
ShortText = Annotated[str, Field(min_length=1, max_length=256)]


# ---------------------------------------------------------------------------------------------- dataset types


class DatasetTypeCreate(ArchiveModel):
    name: DatasetTypeName
    dimensions: list[Annotated[str, Field(max_length=64)]] = Field(max_length=32)
    storage_class: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_.]*$")
    doc: str = Field(default="", max_length=4096)


class DatasetTypePublic(ArchiveModel):
    name: str
    dimensions: list[str] = Field(description="Required dimensions (identify a dataset).")
    implied: list[str] = Field(description="Dimensions that may accompany a data ID and be queried.")
    storage_class: str
    doc: str


# ---------------------------------------------------------------------------------------------- ingest


class LineageIn(ArchiveModel):
    inputs: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    executable: ShortText
    image: str | None = Field(default=None, max_length=512)
    version: str = Field(min_length=1, max_length=128)
    config_digest: str = Field(min_length=1, max_length=128)
    pipeline_run: str | None = Field(default=None, max_length=253)
    task: str | None = Field(default=None, max_length=253)
    attempt: int = Field(default=0, ge=0, le=1000)


class DatasetIn(ArchiveModel):
    dataset_type: DatasetTypeName
    data_id: dict[Annotated[str, Field(max_length=64)], StrictInt | StrictStr] = Field(max_length=64)
    run: CollectionName
    id: uuid.UUID | None = Field(default=None, description="Omit to derive it from (type, data ID, run).")
    task: str | None = Field(default=None, max_length=253, description="Producing task, e.g. run/task/attempt.")
    replicas: list[ReplicaFile] = Field(default_factory=list, max_length=64)
    lineage: LineageIn | None = None


class IngestRequest(ArchiveModel):
    datasets: list[DatasetIn] = Field(min_length=1, max_length=ABSOLUTE_MAX_BATCH)


class IngestResult(ArchiveModel):
    inserted: int = Field(description="Datasets new to the archive.")
    existing: int = Field(description="Datasets already registered with the same content (no-op).")
    ids: list[uuid.UUID] = Field(description="Dataset ids in request order.")


# ---------------------------------------------------------------------------------------------- datasets


class DatasetPublic(ArchiveModel):
    id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    task: str | None
    ingested_at: datetime


class DatasetPage(ArchiveModel):
    items: list[DatasetPublic]
    next_cursor: uuid.UUID | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class DatasetQuery(ArchiveModel):
    """The body of POST /datasets/query (for expressions too long for a URL)."""

    dataset_type: DatasetTypeName | None = None
    collections: list[CollectionName] = Field(default_factory=list, max_length=100)
    where: str = Field(default="", max_length=10_000)
    find_first: bool = False
    limit: int = Field(default=100, ge=1, le=10_000)
    cursor: uuid.UUID | None = None


# ---------------------------------------------------------------------------------------------- replicas
# A replica's own shapes (ReplicaFile inside a dataset, Replica on its own, ReplicaRecord as stored) are the
# core model's, sgs.model.replica, shared with the events and the transfer service.


class ReplicaUpdate(ArchiveModel):
    state: ReplicaState


class LocateRequest(ArchiveModel):
    dataset_ids: list[uuid.UUID] = Field(min_length=1, max_length=10_000)
    site: SiteName | None = None
    state: ReplicaState | None = ReplicaState.AVAILABLE


class LocateResult(ArchiveModel):
    replicas: dict[str, list[ReplicaRecord]] = Field(description="Dataset id -> its replicas (missing: none).")


class ReplicaPage(ArchiveModel):
    items: list[ReplicaRecord]
    next_cursor: int | None


# ---------------------------------------------------------------------------------------------- collections


class CollectionCreate(ArchiveModel):
    name: CollectionName
    type: CollectionType
    doc: str = Field(default="", max_length=4096)
    children: list[CollectionName] = Field(default_factory=list, max_length=1000)
    site: SiteName | None = Field(
        default=None,
        description="Owning Site: a Site token's own Site (the default for it); an admin may name any Site, "
        "or none for a survey collection that only admins write.",
    )


class CollectionPublic(ArchiveModel):
    name: str
    type: CollectionType
    doc: str
    children: list[str]
    site: str | None = Field(description="The Site whose tokens may write it; null: admins only.")


class CollectionOwner(ArchiveModel):
    site: SiteName | None = Field(description="The new owning Site; null makes it a survey collection.")


class CollectionPage(ArchiveModel):
    items: list[CollectionPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page (also a `Link: rel=next`).")


class ChainUpdate(ArchiveModel):
    children: list[CollectionName] = Field(max_length=1000)


class ChainInsert(ArchiveModel):
    child: CollectionName
    position: int = Field(default=0, ge=0, le=1000, description="0 puts the child first in the search path.")


class TagRequest(ArchiveModel):
    dataset_ids: list[uuid.UUID] = Field(min_length=1, max_length=100_000)


class TagResult(ArchiveModel):
    changed: int


# ---------------------------------------------------------------------------------------------- lineage


class Provenance(ArchiveModel):
    executable: str
    image: str | None
    version: str
    config_digest: str
    pipeline_run: str | None
    task: str | None
    attempt: int


class LineageNode(ArchiveModel):
    id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    depth: int
    provenance: Provenance | None


class LineageEdge(ArchiveModel):
    output: uuid.UUID
    input: uuid.UUID


class LineageGraph(ArchiveModel):
    root: uuid.UUID
    direction: Literal["up", "down"]
    depth: int
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool = Field(description="True when the node limit cut the walk short.")


# ---------------------------------------------------------------------------------------------- tokens, placement


class TokenRole(StrEnum):
    """What a token may do. Every role reads; see ``sgs_archive.auth`` for the full rules."""

    ADMIN = "admin"  # everything: tokens, dataset types, placements, every Site's collections and replicas
    SITE = "site"  # one Site's replicas, the collections that Site owns, and new RUN/TAGGED/CHAINED collections
    READER = "reader"  # reads only (a console, Prometheus, a scientist's notebook)


class TokenCreate(ArchiveModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    role: TokenRole = TokenRole.SITE
    site: SiteName | None = Field(default=None, description="The Site a `site` token writes for (only that role).")


class TokenPublic(ArchiveModel):
    name: str
    role: TokenRole
    site: str | None
    created_at: datetime


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token; shown once, stored only as a hash.")


class PlacementIn(ArchiveModel):
    dimension: PlacementDimension
    value: int = Field(ge=0, le=2**63 - 1)
    primary_site: SiteName
    secondary_site: SiteName | None = None


class PlacementBatch(ArchiveModel):
    placements: list[PlacementIn] = Field(min_length=1, max_length=100_000)


class ObservationList(ArchiveModel):
    observations: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(max_length=200_000)


class PlacementPublic(PlacementIn):
    updated_at: datetime


class Count(ArchiveModel):
    count: int
