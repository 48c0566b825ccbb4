"""Versioned SQL migrations of a service: packaged ``migrations/NNNN_name.sql`` files applied in order.

Each file runs in its own transaction and is recorded with its checksum (an edited, already-applied file is
refused); an advisory lock serialises several replicas starting at once. A service may keep its tables in a
PostgreSQL schema of its own, so that two services can share one database without their tables (or their
``schema_migration`` records) meeting.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
SyncConnection = psycopg.Connection[tuple[object, ...]]


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


def packaged_migrations(package: str, folder: str = "migrations") -> list[Migration]:
    directory = resources.files(package).joinpath(folder)
    found = []
    for entry in directory.iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def apply_migrations(
    dsn: str,
    migrations: list[Migration],
    lock_id: int,
    *,
    schema: str | None = None,
    after: Callable[[SyncConnection], list[str]] | None = None,
) -> list[str]:
    """Apply the pending ``migrations`` (inside ``schema`` when given), then ``after`` under the same lock.

    Returns the names of what was applied.
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
        try:
            if schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            _ensure_migration_table(conn)
            done = _applied_versions(conn)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied"
                        )
                    continue
                _apply(conn, migration)
                applied.append(f"{migration.version:04d}_{migration.name}")
            if after is not None:
                applied.extend(after(conn))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
    return applied


def _ensure_migration_table(conn: SyncConnection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migration (
               version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )


def _applied_versions(conn: SyncConnection) -> dict[int, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migration").fetchall()
    return {int(str(version)): str(checksum) for version, checksum in rows}


def _apply(conn: SyncConnection, migration: Migration) -> None:
    log.info("applying migration %04d_%s", migration.version, migration.name)
    with conn.transaction():
        conn.execute(migration.sql.encode())
        conn.execute(
            "INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )
