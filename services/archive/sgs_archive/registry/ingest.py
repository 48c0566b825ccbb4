"""Bulk ingest: datasets + replicas + lineage in one transaction.

Rows are validated in Python (naming the field of the first bad one). A batch of datasets none of which is
registered yet is COPYed straight into the tables (``direct_copy``); otherwise, or if that is refused, rows are
COPYed into per-connection staging tables, then moved by one set-based INSERT per table. Re-ingesting identical
rows is a no-op; the same (type, data ID, run) with different content is a ConflictError. New datasets are
announced through the outbox.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import pydantic_core
from psycopg import sql

from sgs.events import DATASET_REGISTERED, MAX_DATASETS_PER_EVENT, ReplicaStateChanged, replica_subject
from sgs.model.dataset import (
    DataId,
    DataIdError,
    DimensionElement,
    DimensionUniverse,
    dataset_uuid,
)
from sgs.model.replica import ReplicaRecord
from sgs.telemetry.context import current_traceparent
from sgs_archive.auth import Principal
from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from sgs_archive.outbox import OutboxRow, enqueue, outbox_row
from sgs_archive.registry import direct_copy
from sgs_archive.registry.dataset_types import StoredType, TypeCatalog
from sgs_archive.schemas import DatasetIn, IngestResult

DATASET_COLUMNS = ("ord", "id", "dataset_type_id", "run_id", "data_id", "data_id_key", "task")


@dataclass
class PlannedDataset:
    ord: int
    id: uuid.UUID
    stored: StoredType
    run: str
    data_id: DataId
    data_id_key: str
    source: DatasetIn

    @cached_property
    def id_text(self) -> str:
        """The id as text, formatted once (the COPY rows of four tables each need it)."""
        return str(self.id)


@dataclass
class IngestPlan:
    datasets: list[PlannedDataset] = field(default_factory=list)
    ids: list[uuid.UUID] = field(default_factory=list)  # per request item, duplicates included


def plan(
    universe: DimensionUniverse,
    types: dict[str, StoredType],
    items: Sequence[DatasetIn],
    principal: Principal,
) -> IngestPlan:
    """Validate every item and derive ids; the first bad item raises with its field path."""
    result = IngestPlan()
    seen: dict[tuple[int, str, str], PlannedDataset] = {}
    implied = {name: frozenset(stored.implied) for name, stored in types.items()}
    shapes: dict[tuple[str, tuple[str, ...]], list[tuple[str, DimensionElement]]] = {}
    for index, item in enumerate(items):
        loc: tuple[str | int, ...] = ("body", "datasets", index)
        stored = types.get(item.dataset_type)
        if stored is None:
            raise InvalidInputError((*loc, "dataset_type"), f"unknown dataset type {item.dataset_type!r}")
        try:
            data_id = _validated_data_id(universe, stored, item, implied[item.dataset_type], shapes)
        except DataIdError as error:
            raise InvalidInputError((*loc, "data_id", *([error.field] if error.field else [])), error.reason) from None
        key = stored.type.data_id_key(data_id)
        dataset_id = item.id or dataset_uuid(stored.type.name, key, item.run)
        _check_replicas(item, loc, principal)
        identity = (stored.id, item.run, key)
        previous = seen.get(identity)
        if previous is not None:
            if previous.id != dataset_id or previous.source.model_dump(exclude={"id"}) != item.model_dump(
                exclude={"id"}
            ):
                raise ConflictError(
                    loc, f"same dataset type, data ID and run as datasets[{previous.ord}] with different content"
                )
            result.ids.append(previous.id)
            continue
        planned = PlannedDataset(index, dataset_id, stored, item.run, data_id, key, item)
        seen[identity] = planned
        result.datasets.append(planned)
        result.ids.append(dataset_id)
    return result


def _validated_data_id(
    universe: DimensionUniverse,
    stored: StoredType,
    item: DatasetIn,
    implied: frozenset[str],
    shapes: dict[tuple[str, tuple[str, ...]], list[tuple[str, DimensionElement]]],
) -> DataId:
    """``validate_data_id``, with the key checks done once per (type, key set) of a batch: a batch of 10,000
    usually has one or two shapes, and only the values still need checking."""
    shape = (item.dataset_type, tuple(item.data_id))
    order = shapes.get(shape)
    if order is None:
        data_id = stored.type.validate_data_id(universe, item.data_id, implied)
        shapes[shape] = [(name, universe.elements[name]) for name in data_id]
        return data_id
    values = item.data_id
    return {name: element.check_value(values[name]) for name, element in order}


def _check_replicas(item: DatasetIn, loc: tuple[str | int, ...], principal: Principal) -> None:
    places: set[tuple[str, str]] = set()
    for r_index, replica in enumerate(item.replicas):
        if not principal.may_write_site(replica.site):
            raise ForbiddenError(
                (*loc, "replicas", r_index, "site"),
                f"token {principal.name!r} may not register replicas at site {replica.site!r}",
            )
        if (replica.site, replica.uri) in places:
            raise InvalidInputError((*loc, "replicas", r_index, "uri"), "the same site and URI appear twice")
        places.add((replica.site, replica.uri))


async def ingest(
    conn: Conn,
    universe: DimensionUniverse,
    catalog: TypeCatalog,
    items: Sequence[DatasetIn],
    principal: Principal,
    source: str,
) -> IngestResult:
    """Run the whole ingest in the caller's transaction; raise (and so roll back) on any conflict."""
    types = await catalog.load(conn, {item.dataset_type for item in items})
    ingest_plan = plan(universe, types, items, principal)
    run_ids = await _ensure_runs(conn, ingest_plan.datasets, principal)
    if await _ingest_new_batch_directly(conn, universe, ingest_plan.datasets, run_ids):
        new = {d.id for d in ingest_plan.datasets}
        await enqueue(conn, _events(ingest_plan.datasets, new, [], source))
        return IngestResult(inserted=len(new), existing=0, ids=ingest_plan.ids)
    await _copy_datasets(conn, universe, ingest_plan.datasets, run_ids)
    new_ids = await _insert_datasets(conn, universe)
    all_new = len(new_ids) == len(ingest_plan.datasets)
    if not all_new:
        await _check_dataset_conflicts(conn)
    await _copy_replicas(conn, ingest_plan.datasets)
    new_replicas = await _insert_replicas(conn, returning=not all_new)
    if not all_new:
        await _check_replica_conflicts(conn)
    await _copy_lineage(conn, ingest_plan.datasets)
    await _insert_lineage(conn, check_existing=not all_new)
    events = _events(ingest_plan.datasets, new_ids, new_replicas, source)
    await enqueue(conn, events)
    return IngestResult(inserted=len(new_ids), existing=len(ingest_plan.datasets) - len(new_ids), ids=ingest_plan.ids)


async def _ensure_runs(conn: Conn, datasets: Sequence[PlannedDataset], principal: Principal) -> dict[str, int]:
    """RUN collections are created on first use, owned by the ingesting token's Site (an admin's: the survey's).

    Every run of the batch must be the principal's to write; a name taken by another collection type is refused.
    """
    names = sorted({d.run for d in datasets})
    owner = principal.owner_of_new_collection(None, ("body", "datasets"))
    await conn.execute(
        """INSERT INTO collection (name, type, site) SELECT n, 'RUN', %s FROM unnest(%s::text[]) AS n
           ON CONFLICT (name) DO NOTHING""",
        (owner, names),
    )
    cursor = await conn.execute("SELECT id, name, type, site FROM collection WHERE name = ANY(%s)", (names,))
    rows = {str(row["name"]): row for row in await cursor.fetchall()}
    checked: set[str] = set()
    for planned in datasets:
        if planned.run in checked:
            continue
        row = rows[planned.run]
        loc = ("body", "datasets", planned.ord, "run")
        if row["type"] != "RUN":
            raise InvalidInputError(loc, f"collection {planned.run!r} is {row['type']}, not RUN")
        principal.require_collection(planned.run, row["site"], loc)
        checked.add(planned.run)
    return {name: int(row["id"]) for name, row in rows.items()}


async def _ingest_new_batch_directly(
    conn: Conn, universe: DimensionUniverse, datasets: Sequence[PlannedDataset], run_ids: dict[str, int]
) -> bool:
    """The fast path, when no dataset of the batch exists yet; False sends the caller down the general path."""
    if not datasets or await direct_copy.any_registered(conn, [d.id for d in datasets]):
        return False
    return await direct_copy.copy_new_datasets(conn, universe, datasets, run_ids)


def _dimension_columns(universe: DimensionUniverse) -> list[str]:
    return [f"dim_{name}" for name in universe.names]


async def _copy_datasets(
    conn: Conn, universe: DimensionUniverse, datasets: Sequence[PlannedDataset], run_ids: dict[str, int]
) -> None:
    names = universe.names
    columns = [*DATASET_COLUMNS, *_dimension_columns(universe)]
    statement = sql.SQL("COPY stage_dataset ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    async with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for d in datasets:
            data_id = d.data_id
            await copy.write_row(
                (
                    d.ord,
                    d.id,
                    d.stored.id,
                    run_ids[d.run],
                    json.dumps(data_id, separators=(",", ":")),
                    d.data_id_key,
                    d.source.task,
                    *(data_id.get(name) for name in names),
                )
            )


async def _insert_datasets(conn: Conn, universe: DimensionUniverse) -> set[uuid.UUID]:
    columns = sql.SQL(", ").join(
        map(
            sql.Identifier,
            ["id", "dataset_type_id", "run_id", "data_id", "data_id_key", "task", *_dimension_columns(universe)],
        )
    )
    cursor = await conn.execute(
        sql.SQL("INSERT INTO dataset ({0}) SELECT {0} FROM stage_dataset ON CONFLICT DO NOTHING RETURNING id").format(
            columns
        )
    )
    return {row["id"] for row in await cursor.fetchall()}


async def _check_dataset_conflicts(conn: Conn) -> None:
    cursor = await conn.execute(
        """SELECT s.ord, 'its id belongs to another dataset' AS reason FROM stage_dataset s JOIN dataset d
               ON d.id = s.id
           WHERE (d.dataset_type_id, d.run_id, d.data_id_key) <> (s.dataset_type_id, s.run_id, s.data_id_key)
           UNION ALL
           SELECT s.ord, 'already registered with a different id, task or implied dimensions'
           FROM stage_dataset s JOIN dataset d USING (dataset_type_id, run_id, data_id_key)
           WHERE d.id <> s.id OR d.task IS DISTINCT FROM s.task OR d.data_id <> s.data_id
           ORDER BY 1 LIMIT 1"""
    )
    row = await cursor.fetchone()
    if row is not None:
        raise ConflictError(("body", "datasets", int(row["ord"])), str(row["reason"]))


async def _copy_replicas(conn: Conn, datasets: Sequence[PlannedDataset]) -> None:
    async with (
        conn.cursor() as cursor,
        cursor.copy(
            "COPY stage_replica (ord, rord, dataset_id, site, uri, size, adler32, sha256, state) FROM STDIN"
        ) as copy,
    ):
        for d in datasets:
            for r_index, r in enumerate(d.source.replicas):
                await copy.write_row(
                    (d.ord, r_index, d.id, r.site, r.uri, r.size, str(r.adler32), r.sha256, r.state.value)
                )


async def _insert_replicas(conn: Conn, returning: bool) -> list[ReplicaRecord]:
    insert = """INSERT INTO replica (dataset_id, site, uri, size, adler32, sha256, state)
                SELECT dataset_id, site, uri, size, adler32, sha256, state FROM stage_replica
                ON CONFLICT (dataset_id, site, uri) DO NOTHING"""
    if not returning:
        await conn.execute(insert.encode())
        return []
    cursor = await conn.execute(
        (insert + " RETURNING id, dataset_id, site, uri, size, adler32, sha256, state, updated_at").encode()
    )
    return [ReplicaRecord.model_validate(row) for row in await cursor.fetchall()]


async def _check_replica_conflicts(conn: Conn) -> None:
    cursor = await conn.execute(
        """SELECT s.ord, s.rord FROM stage_replica s JOIN replica r USING (dataset_id, site, uri)
           WHERE (r.size, r.adler32, r.sha256) <> (s.size, s.adler32, s.sha256) ORDER BY 1, 2 LIMIT 1"""
    )
    row = await cursor.fetchone()
    if row is not None:
        raise ConflictError(
            ("body", "datasets", int(row["ord"]), "replicas", int(row["rord"])),
            "a replica at this site and URI is registered with a different size or checksum",
        )


async def _copy_lineage(conn: Conn, datasets: Sequence[PlannedDataset]) -> None:
    with_lineage = [d for d in datasets if d.source.lineage is not None]
    if not with_lineage:
        return
    async with conn.cursor() as cursor:
        async with cursor.copy(
            "COPY stage_lineage (ord, dataset_id, executable, image, version, config_digest, pipeline_run, task, "
            "attempt) FROM STDIN"
        ) as copy:
            for d in with_lineage:
                lin = d.source.lineage
                assert lin is not None
                await copy.write_row(
                    (
                        d.ord,
                        d.id,
                        lin.executable,
                        lin.image,
                        lin.version,
                        lin.config_digest,
                        lin.pipeline_run,
                        lin.task,
                        lin.attempt,
                    )
                )
        async with cursor.copy("COPY stage_lineage_input (ord, iord, dataset_id, input_id) FROM STDIN") as copy:
            for d in with_lineage:
                assert d.source.lineage is not None
                for i_index, input_id in enumerate(d.source.lineage.inputs):
                    await copy.write_row((d.ord, i_index, d.id, input_id))


async def _insert_lineage(conn: Conn, check_existing: bool) -> None:
    cursor = await conn.execute(
        """SELECT s.ord, s.iord FROM stage_lineage_input s LEFT JOIN dataset d ON d.id = s.input_id
           WHERE d.id IS NULL ORDER BY 1, 2 LIMIT 1"""
    )
    missing = await cursor.fetchone()
    if missing is not None:
        raise NotFoundError(
            ("body", "datasets", int(missing["ord"]), "lineage", "inputs", int(missing["iord"])),
            "no such input dataset (register inputs first, or in the same batch)",
        )
    if check_existing:
        await _check_lineage_conflicts(conn)
    await conn.execute(
        """INSERT INTO lineage (dataset_id, executable, image, version, config_digest, pipeline_run, task, attempt)
           SELECT dataset_id, executable, image, version, config_digest, pipeline_run, task, attempt
           FROM stage_lineage ON CONFLICT (dataset_id) DO NOTHING"""
    )
    await conn.execute(
        """INSERT INTO lineage_input (dataset_id, input_id) SELECT dataset_id, input_id FROM stage_lineage_input
           ON CONFLICT DO NOTHING"""
    )


async def _check_lineage_conflicts(conn: Conn) -> None:
    cursor = await conn.execute(
        """WITH staged AS (
               SELECT s.ord, s.dataset_id, s.executable, s.image, s.version, s.config_digest, s.pipeline_run,
                      s.task, s.attempt,
                      coalesce((SELECT array_agg(DISTINCT i.input_id ORDER BY i.input_id) FROM stage_lineage_input i
                                WHERE i.dataset_id = s.dataset_id), '{}') AS inputs
               FROM stage_lineage s JOIN lineage l USING (dataset_id))
           SELECT st.ord FROM staged st JOIN lineage l USING (dataset_id)
           WHERE (l.executable, l.version, l.config_digest, l.attempt)
                 IS DISTINCT FROM (st.executable, st.version, st.config_digest, st.attempt)
              OR l.image IS DISTINCT FROM st.image OR l.pipeline_run IS DISTINCT FROM st.pipeline_run
              OR l.task IS DISTINCT FROM st.task
              OR st.inputs <> coalesce((SELECT array_agg(li.input_id ORDER BY li.input_id) FROM lineage_input li
                                        WHERE li.dataset_id = st.dataset_id), '{}')
           ORDER BY 1 LIMIT 1"""
    )
    row = await cursor.fetchone()
    if row is not None:
        raise ConflictError(
            ("body", "datasets", int(row["ord"]), "lineage"), "lineage already registered with different content"
        )


def _events(
    datasets: Sequence[PlannedDataset], new_ids: set[uuid.UUID], new_replicas: Sequence[ReplicaRecord], source: str
) -> list[OutboxRow]:
    # DatasetRegistered payloads are serialised straight from the validated request models by pydantic-core:
    # building 10,000 nested event models per batch costs more than the database work. The replicas serialise
    # as the ReplicaFile models they were validated into; the integration tests parse the published
    # payloads back into DatasetRegistered, which keeps this in step with the model.
    registered = [
        {
            "id": d.id,
            "dataset_type": d.stored.type.name,
            "data_id": d.data_id,
            "run": d.run,
            "task": d.source.task,
            "replicas": d.source.replicas,
        }
        for d in datasets
        if d.id in new_ids
    ]
    occurred_at = datetime.now(UTC).isoformat()
    traceparent = current_traceparent()
    rows: list[OutboxRow] = []
    for start in range(0, len(registered), MAX_DATASETS_PER_EVENT):
        event_id = uuid.uuid4()
        payload = {
            "event_id": event_id,
            "occurred_at": occurred_at,
            "source": source,
            "datasets": registered[start : start + MAX_DATASETS_PER_EVENT],
        }
        rows.append((event_id, DATASET_REGISTERED, pydantic_core.to_json(payload).decode(), traceparent))
    of = {d.id: d for d in datasets}
    rows.extend(
        outbox_row(
            replica_subject(r.state),
            ReplicaStateChanged.of(
                r, of[r.dataset_id].stored.type.name, source, data_id=of[r.dataset_id].data_id, run=of[r.dataset_id].run
            ),
        )
        for r in new_replicas
        if r.dataset_id not in new_ids
    )
    return rows
