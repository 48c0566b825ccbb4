"""The connection pool, and the per-connection staging tables bulk ingest COPYs into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from sgs.model.dataset import DimensionKeyType, DimensionUniverse
from sgs.telemetry import Tracing
from sgs.telemetry.instrument import instrument_connection

Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]


def staging_ddl(universe: DimensionUniverse) -> list[sql.SQL | sql.Composed]:
    """Temporary tables, emptied at every commit, created once per pooled connection (not per request)."""
    dims = sql.SQL("").join(
        sql.SQL(", {} {}").format(
            sql.Identifier(f"dim_{e.name}"),
            sql.SQL("bigint") if e.key_type is DimensionKeyType.INT else sql.SQL("text"),
        )
        for e in universe.elements.values()
    )
    return [
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS stage_dataset (ord integer, id uuid, dataset_type_id integer, "
            "run_id bigint, data_id jsonb, data_id_key text, task text{}) ON COMMIT DELETE ROWS"
        ).format(dims),
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS stage_replica (ord integer, rord integer, dataset_id uuid, "
            "site text, uri text, size bigint, adler32 text, sha256 text, state text) ON COMMIT DELETE ROWS"
        ),
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS stage_lineage (ord integer, dataset_id uuid, executable text, "
            "image text, version text, config_digest text, pipeline_run text, task text, attempt integer) "
            "ON COMMIT DELETE ROWS"
        ),
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS stage_lineage_input (ord integer, iord integer, dataset_id uuid, "
            "input_id uuid) ON COMMIT DELETE ROWS"
        ),
    ]


def _configure(universe: DimensionUniverse, tracing: Tracing) -> Callable[[Conn], Awaitable[None]]:
    ddl = staging_ddl(universe)

    async def configure(conn: Conn) -> None:
        async with conn.transaction():
            for statement in ddl:
                await conn.execute(statement)
        instrument_connection(conn, tracing)  # after the set-up DDL, which belongs to no request

    return configure


def create_pool(
    dsn: str, universe: DimensionUniverse, min_size: int, max_size: int, tracing: Tracing | None = None
) -> Pool:
    """A closed pool (open it with ``await pool.open(wait=True)``) of dict-row connections."""
    return AsyncConnectionPool(
        dsn,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row},
        min_size=min_size,
        max_size=max(min_size, max_size),
        open=False,
        configure=_configure(universe, tracing or Tracing.off()),
        name="sgs-archive",
    )
