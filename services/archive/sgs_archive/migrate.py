"""Versioned SQL migrations plus the dimension columns derived from the universe.

Migrations are the packaged ``migrations/NNNN_name.sql`` files, applied in order, each in its own transaction,
recorded with a checksum (an edited, already-applied file is refused). An advisory lock serialises several
replicas starting at once. The universe then adds one indexed column per dimension to ``dataset``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sgs.model.dataset import DimensionKeyType, DimensionUniverse

log = logging.getLogger(__name__)

MIGRATION_LOCK_ID = 0x5A5C_0001  # arbitrary but constant: one lock shared by every archive replica
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this code expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def packaged_migrations() -> list[Migration]:
    folder = resources.files("sgs_archive").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(dsn: str, universe: DimensionUniverse) -> list[str]:
    """Apply pending migrations and dimension columns; returns the names of what was applied."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            _ensure_migration_table(conn)
            done = _applied_versions(conn)
            for migration in packaged_migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied"
                        )
                    continue
                _apply(conn, migration)
                applied.append(f"{migration.version:04d}_{migration.name}")
            applied.extend(sync_universe(conn, universe))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied


def _ensure_migration_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migration (
               version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def _applied_versions(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migration").fetchall()
    return {int(str(version)): str(checksum) for version, checksum in rows}


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    log.info("applying migration %04d_%s", migration.version, migration.name)
    with conn.transaction():
        conn.execute(migration.sql.encode())
        conn.execute(
            "INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
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
