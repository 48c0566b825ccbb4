"""Dataset types: registered once, immutable afterwards, cached in memory by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from sgs.model.dataset import DataIdError, DatasetType, DimensionUniverse
from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, InvalidInputError, NotFoundError, field_loc


@dataclass(frozen=True)
class StoredType:
    id: int
    type: DatasetType  # normalized: dimensions closed under 'requires'
    implied: tuple[str, ...]


@dataclass
class TypeCatalog:
    """Name -> stored type. Types never change once registered, so entries never go stale."""

    universe: DimensionUniverse
    by_name: dict[str, StoredType] = field(default_factory=dict)
    by_id: dict[int, StoredType] = field(default_factory=dict)

    def _remember(self, stored: StoredType) -> StoredType:
        self.by_name[stored.type.name] = stored
        self.by_id[stored.id] = stored
        return stored

    async def load(self, conn: Conn, names: set[str]) -> dict[str, StoredType]:
        """The known types among ``names`` (unknown names are simply absent)."""
        missing = [n for n in names if n not in self.by_name]
        if missing:
            await self._fetch(conn, "name = ANY(%s)", missing)
        return {n: self.by_name[n] for n in names if n in self.by_name}

    async def get(self, conn: Conn, name: str, loc: tuple[str | int, ...]) -> StoredType:
        found = await self.load(conn, {name})
        if name not in found:
            raise NotFoundError(loc, f"unknown dataset type {name!r}")
        return found[name]

    async def by_ids(self, conn: Conn, ids: set[int]) -> dict[int, StoredType]:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            await self._fetch(conn, "id = ANY(%s)", missing)
        return {i: self.by_id[i] for i in ids}

    async def _fetch(self, conn: Conn, condition: str, values: list[str] | list[int]) -> None:
        query = "SELECT id, name, dimensions, implied, storage_class, doc FROM dataset_type WHERE " + condition
        cursor = await conn.execute(query.encode(), (values,))
        for row in await cursor.fetchall():
            self._remember(_stored(row))

    async def all(self, conn: Conn) -> list[StoredType]:
        cursor = await conn.execute(
            "SELECT id, name, dimensions, implied, storage_class, doc FROM dataset_type ORDER BY name"
        )
        return [self._remember(_stored(row)) for row in await cursor.fetchall()]

    async def register(self, conn: Conn, requested: DatasetType) -> tuple[StoredType, bool]:
        """Register ``requested``; the same definition again is a no-op, a different one a ConflictError."""
        try:
            normalized = requested.normalized(self.universe)
        except DataIdError as error:
            raise InvalidInputError(("body", *field_loc(error.field or "dimensions")), error.reason) from None
        implied = normalized.implied(self.universe)
        cursor = await conn.execute(
            """INSERT INTO dataset_type (name, dimensions, implied, storage_class, doc)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id""",
            (normalized.name, list(normalized.dimensions), list(implied), normalized.storage_class, normalized.doc),
        )
        row = await cursor.fetchone()
        if row is not None:
            return self._remember(StoredType(int(row["id"]), normalized, implied)), True
        existing = await self.get(conn, normalized.name, ("body", "name"))
        if existing.type.model_dump(exclude={"doc"}) != normalized.model_dump(exclude={"doc"}):
            raise ConflictError(
                ("body", "name"),
                f"dataset type {normalized.name!r} already exists with dimensions "
                f"{list(existing.type.dimensions)} and storage class {existing.type.storage_class}",
            )
        return existing, False


def _stored(row: dict[str, object]) -> StoredType:
    dimensions = row["dimensions"]
    implied = row["implied"]
    assert isinstance(dimensions, list) and isinstance(implied, list)
    dataset_type = DatasetType(
        name=str(row["name"]),
        dimensions=tuple(dimensions),
        storage_class=str(row["storage_class"]),
        doc=str(row["doc"]),
    )
    return StoredType(int(str(row["id"])), dataset_type, tuple(implied))
