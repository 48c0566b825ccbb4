"""Migration 0003 on a database written before roles and owners: admin tokens stay admins, Site tokens stay
Site tokens, existing collections become survey collections, and the new scope rule holds in SQL too."""

from __future__ import annotations

from importlib import resources

import psycopg
import pytest

pytestmark = [pytest.mark.integration]


def migration(name: str) -> bytes:
    return resources.files("sgs_archive").joinpath("migrations", name).read_bytes()


def test_roles_and_owners_migrate_existing_rows(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(migration("0001_schema.sql"))
        conn.execute(migration("0002_outbox_payload_json.sql"))
        conn.execute(
            """INSERT INTO api_token (name, site, is_admin, token_hash) VALUES
               ('ops', NULL, true, 'h1'), ('ops-fr', 'sdc-fr', true, 'h2'), ('fr', 'sdc-fr', false, 'h3')"""
        )
        conn.execute("INSERT INTO collection (name, type) VALUES ('raw/all', 'RUN')")
        conn.execute(migration("0003_roles_and_owners.sql"))
        rows = conn.execute("SELECT name, role, site FROM api_token ORDER BY name").fetchall()
        assert rows == [("fr", "site", "sdc-fr"), ("ops", "admin", None), ("ops-fr", "admin", None)]
        assert conn.execute("SELECT site FROM collection").fetchall() == [(None,)]
        for role, site in (("site", None), ("reader", "sdc-fr"), ("admin", "sdc-fr"), ("owner", None)):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(
                    "INSERT INTO api_token (name, role, site, token_hash) VALUES ('x', %s, %s, 'h4')", (role, site)
                )
