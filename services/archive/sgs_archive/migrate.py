"""Versioned SQL migrations plus the dimension columns derived from the universe.

Migrations are the packaged ``migrations/NNNN_name.sql`` files, applied in order, each in its own transaction,
recorded with a checksum (an edited, already-applied file is refused). An advisory lock serialises several
replicas starting at once. The universe then adds one indexed column per dimension to ``dataset``.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sgs.model.dataset import DimensionKeyType, DimensionUniverse
from sgs.service.migrations import MigrationError, apply_migrations, packaged_migrations

log = logging.getLogger(__name__)

MIGRATION_LOCK_ID = 0x5A5C_0001  # arbitrary but constant: one lock shared by every archive replica

__all__ = ["MigrationError", "migrate", "sync_universe"]


def migrate(dsn: str, universe: DimensionUniverse) -> list[str]:
    """Apply pending migrations and dimension columns; returns the names of what was applied."""
    return apply_migrations(
        dsn,
        packaged_migrations("sgs_archive"),
        MIGRATION_LOCK_ID,
        after=lambda conn: sync_universe(conn, universe),
    )


def sync_universe(conn: psycopg.Connection[tuple[object, ...]], universe: DimensionUniverse) -> list[str]:
    """Add a typed, indexed ``dim_<name>`` column per dimension; refuse a changed key type."""
    changes: list[str] = []
    with conn.transaction():
        stored = conn.execute(
            "SELECT definition FROM dimension_universe WHERE namespace = %s", (universe.namespace,)
        ).fetchone()
        if stored is not None:
            _check_compatible(stored[0], universe)
        for element in universe.elements.values():
            if _has_column(conn, f"dim_{element.name}"):
                continue
            is_int = element.key_type is DimensionKeyType.INT
            conn.execute(
                sql.SQL("ALTER TABLE dataset ADD COLUMN {} {}").format(
                    sql.Identifier(f"dim_{element.name}"), sql.SQL("bigint") if is_int else sql.SQL("text")
                )
            )
            conn.execute(
                # Partial: most dataset types lack most dimensions, and NULLs need no index entries.
                sql.SQL("CREATE INDEX {0} ON dataset ({1}) WHERE {1} IS NOT NULL").format(
                    sql.Identifier(f"dataset_dim_{element.name}"), sql.Identifier(f"dim_{element.name}")
                )
            )
            changes.append(f"dimension {element.name} ({'bigint' if is_int else 'text'})")
        conn.execute(
            """INSERT INTO dimension_universe (namespace, version, definition) VALUES (%s, %s, %s)
               ON CONFLICT (namespace) DO UPDATE SET version = EXCLUDED.version,
                   definition = EXCLUDED.definition, updated_at = now()""",
            (universe.namespace, universe.version, Jsonb(universe.model_dump(mode="json"))),
        )
    return changes


def _has_column(conn: psycopg.Connection[tuple[object, ...]], column: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'dataset' AND column_name = %s", (column,)
    ).fetchone()
    return row is not None


def _check_compatible(stored: object, universe: DimensionUniverse) -> None:
    if not isinstance(stored, dict):
        return
    previous = DimensionUniverse.model_validate(stored)
    for name, element in previous.elements.items():
        current = universe.elements.get(name)
        if current is None:
            raise MigrationError(f"dimension {name!r} is in the database but missing from the universe file")
        if current.key_type is not element.key_type:
            raise MigrationError(
                f"dimension {name!r} changed key type {element.key_type} -> {current.key_type}; not supported"
            )
        if current.healpix_order != element.healpix_order:
            raise MigrationError(f"dimension {name!r} changed healpix_order; stored pixels would be wrong")
