"""The connection pool (dict rows, the service's own schema first on the search path) and the migrations."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from sgs.service.migrations import apply_migrations, packaged_migrations
from sgs.telemetry import Tracing
from sgs.telemetry.instrument import instrument_connection

Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]

MIGRATION_LOCK_ID = 0x5A5C_0002  # arbitrary but constant: one lock shared by every transfer replica


def migrate(dsn: str, schema: str) -> list[str]:
    """Apply pending migrations inside ``schema``; returns the names of what was applied."""
    return apply_migrations(dsn, packaged_migrations("sgs_transfer"), MIGRATION_LOCK_ID, schema=schema)


def create_pool(
    dsn: str, schema: str, min_size: int, max_size: int, name: str = "sgs-transfer", tracing: Tracing | None = None
) -> Pool:
    """A closed pool (open it with ``await pool.open(wait=True)``) whose connections see ``schema`` first."""
    traced = tracing or Tracing.off()

    async def configure(conn: Conn) -> None:
        instrument_connection(conn, traced)

    return AsyncConnectionPool(
        dsn,
        connection_class=AsyncConnection[DictRow],
        kwargs={"row_factory": dict_row, "options": f"-c search_path={schema}"},
        min_size=min_size,
        max_size=max(min_size, max_size),
        open=False,
        name=name,
        configure=configure,
    )
