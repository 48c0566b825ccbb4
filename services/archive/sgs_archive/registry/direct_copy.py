"""The fast path of bulk ingest: COPY a batch of new datasets straight into the archive tables.

The general path (``ingest.py``) COPYs into staging tables and moves rows with ``INSERT ... SELECT ... ON
CONFLICT``, which doubles the database work and costs a RETURNING round-trip. When none of a batch's ids is
registered yet -- the common case, a pipeline registering what it just produced -- the rows can go straight into
the real tables. The COPY runs under a savepoint: any integrity error (a concurrent writer registered the same
datasets first, a producer-chosen id collides, a lineage input is missing) rolls back to it and the caller takes
the general path, which explains the error field by field.

Rows are formatted here as PostgreSQL COPY text, a chunk at a time, instead of row by row through
``copy.write_row``: the values are validated already and mostly escape-free, and the server inserts one chunk
(on the other core) while the next is being formatted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from sgs.model.dataset import DimensionUniverse
from sgs_archive.db import Conn

if TYPE_CHECKING:
    from sgs_archive.registry.ingest import PlannedDataset

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
CHUNK_ROWS = 1_000


def text_field(value: str | None) -> str:
    """A text value in COPY text format (backslash, tab, newline and CR escaped; NULL as \\N)."""
    return NULL if value is None else value.translate(_ESCAPES)


def dimension_field(value: int | str | None) -> str:
    if value is None:
        return NULL
    if isinstance(value, int):
        return str(value)
    return value.translate(_ESCAPES)


async def any_registered(conn: Conn, ids: Sequence[uuid.UUID]) -> bool:
    cursor = await conn.execute("SELECT EXISTS (SELECT 1 FROM dataset WHERE id = ANY(%s))", (list(ids),))
    row = await cursor.fetchone()
    return bool(row and next(iter(row.values())))


def dataset_lines(
    universe: DimensionUniverse, datasets: Sequence[PlannedDataset], run_ids: dict[str, int]
) -> Iterator[str]:
    names = universe.names
    for d in datasets:
        data_id = d.data_id
        dims = "\t".join([dimension_field(data_id.get(name)) for name in names])
        data_id_json = json.dumps(data_id, separators=(",", ":")).translate(_ESCAPES)
        key = d.data_id_key.translate(_ESCAPES)
        task = text_field(d.source.task)
        yield f"{d.id_text}\t{d.stored.id}\t{run_ids[d.run]}\t{data_id_json}\t{key}\t{task}\t{dims}\n"


def replica_lines(datasets: Sequence[PlannedDataset]) -> Iterator[str]:
    # Sites, checksums and states match escape-free patterns (validated on the way in); URIs may hold anything.
    for d in datasets:
        for r in d.source.replicas:
            yield f"{d.id_text}\t{r.site}\t{text_field(r.uri)}\t{r.size}\t{r.adler32}\t{r.sha256}\t{r.state.value}\n"


def lineage_lines(datasets: Sequence[PlannedDataset]) -> Iterator[str]:
    # A batch usually comes from one executable, image and config: their escaped text is built once.
    provenance_texts: dict[tuple[str, str | None, str, str, str | None], str] = {}
    for d in datasets:
        lin = d.source.lineage
        if lin is None:
            continue
        provenance = (lin.executable, lin.image, lin.version, lin.config_digest, lin.pipeline_run)
        text = provenance_texts.get(provenance)
        if text is None:
            text = provenance_texts[provenance] = "\t".join([text_field(value) for value in provenance])
        yield f"{d.id_text}\t{text}\t{text_field(lin.task)}\t{lin.attempt}\n"


def lineage_input_lines(datasets: Sequence[PlannedDataset]) -> Iterator[str]:
    for d in datasets:
        if d.source.lineage is not None:
            # Repeated inputs are one edge (the primary key says so; the general path's ON CONFLICT agrees).
            yield from (f"{d.id_text}\t{input_id}\n" for input_id in dict.fromkeys(d.source.lineage.inputs))


def _statements(universe: DimensionUniverse) -> tuple[sql.Composed, sql.SQL, sql.SQL, sql.SQL]:
    fixed = ("id", "dataset_type_id", "run_id", "data_id", "data_id_key", "task")
    columns = [*fixed, *(f"dim_{name}" for name in universe.names)]
    return (
        sql.SQL("COPY dataset ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, columns))),
        sql.SQL("COPY replica (dataset_id, site, uri, size, adler32, sha256, state) FROM STDIN"),
        sql.SQL(
            "COPY lineage (dataset_id, executable, image, version, config_digest, pipeline_run, task, attempt) "
            "FROM STDIN"
        ),
        sql.SQL("COPY lineage_input (dataset_id, input_id) FROM STDIN"),
    )


async def copy_new_datasets(
    conn: Conn, universe: DimensionUniverse, datasets: Sequence[PlannedDataset], run_ids: dict[str, int]
) -> bool:
    """COPY every row under a savepoint; False (and nothing written) if any integrity rule refused a row."""
    dataset_copy, replica_copy, lineage_copy, input_copy = _statements(universe)
    tables: list[tuple[sql.SQL | sql.Composed, Iterator[str]]] = [
        (dataset_copy, dataset_lines(universe, datasets, run_ids)),
        (replica_copy, replica_lines(datasets)),
        (lineage_copy, lineage_lines(datasets)),
        (input_copy, lineage_input_lines(datasets)),
    ]
    try:
        async with conn.transaction(), conn.cursor() as cursor:
            for statement, lines in tables:
                chunks = _chunks(lines)
                first = next(chunks, None)
                if first is None:
                    continue
                async with cursor.copy(statement) as copy:
                    await copy.write(first)
                    for chunk in chunks:
                        await copy.write(chunk)
    except psycopg.errors.IntegrityError:
        return False
    return True


def _chunks(lines: Iterable[str]) -> Iterator[bytes]:
    iterator = iter(lines)
    while chunk := "".join(islice(iterator, CHUNK_ROWS)):
        yield chunk.encode()
