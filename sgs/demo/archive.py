"""Where the demo records what exists and where: a narrow archive interface and a local implementation.

The archive service (PostgreSQL behind FastAPI) will implement :class:`Archive` over HTTP; until then
:class:`LocalArchive` keeps the same records as JSON lines under ``<root>/archive/``. Registration is
idempotent (keyed by dataset id, by (dataset, site) for replicas), so re-running the demo duplicates nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from sgs.model.dataset import DatasetRef, Lineage, Placement, Replica

CHUNK = 1 << 20
M = TypeVar("M", bound=BaseModel)


class Archive(Protocol):
    """What the demo needs from an archive: register datasets, their replicas, lineage and placement."""

    def register_datasets(self, refs: Sequence[DatasetRef]) -> None: ...

    def register_replicas(self, replicas: Sequence[Replica]) -> None: ...

    def register_lineage(self, lineage: Sequence[Lineage]) -> None: ...

    def register_placements(self, placements: Sequence[Placement]) -> None: ...

    def replicas_of(self, dataset_id: str) -> list[Replica]: ...


@dataclass(frozen=True)
class Checksums:
    size: int
    adler32: str
    sha256: str


def checksums(path: Path) -> Checksums:
    """Size, adler32 and sha256 of a file, read once in chunks."""
    adler = 1
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            adler = zlib.adler32(chunk, adler)
            sha.update(chunk)
            size += len(chunk)
    return Checksums(size=size, adler32=f"{adler & 0xFFFFFFFF:08x}", sha256=sha.hexdigest())


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

    def _append(self, kind: str, store: dict[str, M], records: Iterable[M], key: Callable[[M], str]) -> None:
        with self._lock:
            fresh = [r for r in records if store.get(key(r)) != r]
            if not fresh:
                return
            with self._path(kind).open("a") as stream:
                for record in fresh:
                    store[key(record)] = record
                    stream.write(record.model_dump_json() + "\n")

    def register_datasets(self, refs: Sequence[DatasetRef]) -> None:
        self._append("datasets", self._datasets, refs, _dataset_key)

    def register_replicas(self, replicas: Sequence[Replica]) -> None:
        self._append("replicas", self._replicas, replicas, _replica_key)

    def register_lineage(self, lineage: Sequence[Lineage]) -> None:
        self._append("lineage", self._lineage, lineage, _lineage_key)

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
