"""Where the demo records what exists and where: a narrow archive interface, identity rules, a local fallback.

The demo registers each observation as one :class:`Registration` (dataset types, datasets, their replicas at
the primary Site, lineage), then the secondary Site's copies and the placements. :class:`HttpArchive`
(``sgs.demo.http_archive``) sends them to the archive service; :class:`LocalArchive` keeps the same records as
JSON lines under ``<root>/archive/`` for ``--archive local``. Both are idempotent: dataset ids derive from
(type, data ID, run) exactly as the archive derives them, so re-running the demo registers nothing twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from sgs.model.dataset import (
    DatasetRef,
    DatasetType,
    DimensionUniverse,
    DimensionValue,
    Lineage,
    Placement,
    dataset_uuid,
)
from sgs.model.replica import Replica

M = TypeVar("M", bound=BaseModel)


@dataclass
class Registration:
    """One atomic batch: datasets with their types, replicas and lineage (inputs before what derives from them)."""

    dataset_types: dict[str, DatasetType] = field(default_factory=dict)
    datasets: list[DatasetRef] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    lineage: list[Lineage] = field(default_factory=list)


@dataclass(frozen=True)
class Registered:
    """What a registration changed: records new to the archive, and those it already held unchanged."""

    new: int
    existing: int

    @property
    def total(self) -> int:
        return self.new + self.existing

    def __add__(self, other: Registered) -> Registered:
        return Registered(self.new + other.new, self.existing + other.existing)


NOTHING = Registered(0, 0)


class Archive(Protocol):
    """What the demo needs from an archive: register datasets, their replicas, lineage and placement."""

    def register(self, batch: Registration) -> Registered:
        """Datasets (counted) with their replicas and lineage, all or nothing."""
        ...

    def register_replicas(self, replicas: Sequence[Replica]) -> Registered: ...

    def register_placements(self, placements: Sequence[Placement]) -> None: ...

    def replicas_of(self, dataset_id: str) -> list[Replica]: ...


# ------------------------------------------------------------------------------------------ identity


@cache
def archive_universe() -> DimensionUniverse:
    """The archive service's default dimension universe, so data IDs and ids match what it derives."""
    from sgs_archive.universe import load_universe

    return load_universe()


def dataset_type_for(name: str, data_id: Mapping[str, DimensionValue], universe: DimensionUniverse) -> DatasetType:
    """The type whose identifying dimensions are the data ID's keys that no other key requires or implies.

    An exposure requires its instrument and implies its observation and band, so a raw exposure of a tile is
    identified by (instrument, exposure, tile) and carries observation and band along, queryable.
    """
    keys = set(data_id)
    identifying = [
        key
        for key in keys
        if key not in universe.required_closure(keys - {key}) and key not in universe.implied_closure(keys - {key})
    ]
    return DatasetType(name=name, dimensions=tuple(identifying), storage_class="FitsFile").normalized(universe)


def dataset_ref(
    dataset_type: DatasetType, data_id: Mapping[str, DimensionValue], run: str, task: str | None = None
) -> DatasetRef:
    """A ref whose id is the one the archive derives for (type, data ID, run)."""
    ordered = {name: data_id[name] for name in archive_universe().names if name in data_id}
    key = dataset_type.data_id_key(ordered)
    return DatasetRef(
        id=dataset_uuid(dataset_type.name, key, run),
        dataset_type=dataset_type.name,
        data_id=ordered,
        run=run,
        task=task,
    )


# ------------------------------------------------------------------------------------------ local fallback


def _dataset_key(ref: DatasetRef) -> str:
    return str(ref.id)


def _replica_key(replica: Replica) -> str:
    return f"{replica.dataset_id}@{replica.site}"


def _lineage_key(lineage: Lineage) -> str:
    return str(lineage.dataset_id)


def _placement_key(placement: Placement) -> str:
    return f"{placement.dimension}:{placement.value}"


class LocalArchive:
    """JSON-lines files, one per record kind, loaded at start so that registration stays idempotent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._datasets = self._load("datasets", DatasetRef, _dataset_key)
        self._replicas = self._load("replicas", Replica, _replica_key)
        self._lineage = self._load("lineage", Lineage, _lineage_key)
        self._placements = self._load("placements", Placement, _placement_key)

    def _path(self, kind: str) -> Path:
        return self.root / f"{kind}.jsonl"

    def _load(self, kind: str, model: type[M], key: Callable[[M], str]) -> dict[str, M]:
        path = self._path(kind)
        if not path.exists():
            return {}
        records = (model.model_validate_json(line) for line in path.read_text().splitlines() if line.strip())
        return {key(r): r for r in records}

    def _append(self, kind: str, store: dict[str, M], records: Iterable[M], key: Callable[[M], str]) -> Registered:
        with self._lock:
            unique = {key(r): r for r in records}
            fresh = [r for k, r in unique.items() if store.get(k) != r]
            if fresh:
                with self._path(kind).open("a") as stream:
                    for record in fresh:
                        store[key(record)] = record
                        stream.write(record.model_dump_json() + "\n")
            return Registered(len(fresh), len(unique) - len(fresh))

    def register(self, batch: Registration) -> Registered:
        registered = self._append("datasets", self._datasets, batch.datasets, _dataset_key)
        self._append("replicas", self._replicas, batch.replicas, _replica_key)
        self._append("lineage", self._lineage, batch.lineage, _lineage_key)
        return registered

    def register_replicas(self, replicas: Sequence[Replica]) -> Registered:
        return self._append("replicas", self._replicas, replicas, _replica_key)

    def register_placements(self, placements: Sequence[Placement]) -> None:
        self._append("placements", self._placements, placements, _placement_key)

    def replicas_of(self, dataset_id: str) -> list[Replica]:
        return [r for r in self._replicas.values() if str(r.dataset_id) == dataset_id]

    def counts(self) -> dict[str, int]:
        return {
            "datasets": len(self._datasets),
            "replicas": len(self._replicas),
            "lineage": len(self._lineage),
            "placements": len(self._placements),
        }

    def datasets(self) -> list[DatasetRef]:
        return list(self._datasets.values())


def dumps(records: Iterable[BaseModel]) -> str:
    return json.dumps([json.loads(r.model_dump_json()) for r in records], indent=2)
