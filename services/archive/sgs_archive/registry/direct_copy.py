"""The fast path of bulk ingest: COPY a batch of new datasets straight into the archive tables.

The general path (``ingest.py``) COPYs into staging tables and moves rows with ``INSERT ... SELECT ... ON
CONFLICT``, which doubles the database work and costs a RETURNING round-trip. When none of a batch's ids is
registered yet -- the common case, a pipeline registering what it just produced -- the rows can go straight into
the real tables. The COPY runs under a savepoint: any integrity error (a concurrent writer registered the same
datasets first, a producer-chosen id collides, a lineage input is missing) rolls back to it and the caller takes
the general path, which explains the error field by field.

Rows are formatted here as PostgreSQL COPY text (one write per table) rather than row by row through
``copy.write_row``: the values are already validated and mostly of known, escape-free shapes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from sgs.model.dataset import DimensionUniverse
from sgs_archive.db import Conn

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
CHUNK_ROWS = 2_000


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


class DirectRows:
    """The four tables' COPY text for a batch of planned datasets, built once per batch."""

    def __init__(self, universe: DimensionUniverse) -> None:
        self.dimension_names = universe.names
        self.dataset: list[str] = []
        self.replica: list[str] = []
        self.lineage: list[str] = []
        self.lineage_input: list[str] = []

    def add(
        self,
        dataset_id: str,
        type_id: int,
        run_id: int,
        data_id: dict[str, int | str],
        data_id_key: str,
        task: str | None,
    ) -> None:
        dims = "\t".join(dimension_field(data_id.get(name)) for name in self.dimension_names)
        data_id_json = json.dumps(data_id, separators=(",", ":")).translate(_ESCAPES)
        self.dataset.append(
            f"{dataset_id}\t{type_id}\t{run_id}\t{data_id_json}\t{data_id_key.translate(_ESCAPES)}\t"
            f"{text_field(task)}\t{dims}\n"
        )

    def add_replica(
        self, dataset_id: str, site: str, uri: str, size: int, adler32: str, sha256: str, state: str
    ) -> None:
        self.replica.append(f"{dataset_id}\t{site}\t{text_field(uri)}\t{size}\t{adler32}\t{sha256}\t{state}\n")

    def add_lineage(
        self,
        dataset_id: str,
        fields: tuple[str, str | None, str, str, str | None, str | None],
        attempt: int,
        inputs: Sequence[uuid.UUID],
    ) -> None:
        texts = "\t".join(map(text_field, fields))
        self.lineage.append(f"{dataset_id}\t{texts}\t{attempt}\n")
        self.lineage_input.extend(f"{dataset_id}\t{input_id}\n" for input_id in dict.fromkeys(inputs))


async def copy_into_tables(conn: Conn, rows: DirectRows) -> bool:
    """COPY every row under a savepoint; False (and nothing written) if any integrity rule refused a row."""
    dimension_columns = [sql.Identifier(f"dim_{name}") for name in rows.dimension_names]
    fixed_columns = ("id", "dataset_type_id", "run_id", "data_id", "data_id_key", "task")
    dataset_columns = sql.SQL(", ").join([*map(sql.Identifier, fixed_columns), *dimension_columns])
    statements: list[tuple[sql.SQL | sql.Composed, list[str]]] = [
        (sql.SQL("COPY dataset ({}) FROM STDIN").format(dataset_columns), rows.dataset),
        (
            sql.SQL("COPY replica (dataset_id, site, uri, size, adler32, sha256, state) FROM STDIN"),
            rows.replica,
        ),
        (
            sql.SQL(
                "COPY lineage (dataset_id, executable, image, version, config_digest, pipeline_run, task, attempt) "
                "FROM STDIN"
            ),
            rows.lineage,
        ),
        (sql.SQL("COPY lineage_input (dataset_id, input_id) FROM STDIN"), rows.lineage_input),
    ]
    try:
        async with conn.transaction(), conn.cursor() as cursor:
            for statement, lines in statements:
                if not lines:
                    continue
                async with cursor.copy(statement) as copy:
                    for chunk in _chunks(lines):
                        await copy.write(chunk)
    except psycopg.errors.IntegrityError:
        return False
    return True


def _chunks(lines: list[str]) -> Iterator[bytes]:
    # Bounded writes let the server start on the first rows while later ones are still being encoded.
    for start in range(0, len(lines), CHUNK_ROWS):
        yield "".join(lines[start : start + CHUNK_ROWS]).encode()
