from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration


def test_psycopg_round_trip_over_tcp(pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE t (id int primary key, payload jsonb)")
        conn.execute("INSERT INTO t VALUES (%s, %s)", (7, Jsonb({"band": "H"})))
        conn.commit()
    with psycopg.connect(pg_database) as conn:
        row = conn.execute("SELECT id, payload FROM t").fetchone()
        server_port = conn.execute("SELECT inet_server_port()").fetchone()
    assert row == (7, {"band": "H"})
    assert server_port is not None and server_port[0] is not None  # TCP, not a Unix socket


def test_each_test_gets_its_own_empty_database(postgres: PostgresPart, pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        name = conn.execute("SELECT current_database()").fetchone()
    assert tables == (0,)
    assert name is not None and name[0] != "postgres"
    assert pg_database != postgres.dsn


def test_a_restarted_server_keeps_its_data(tmp_path: Path) -> None:

    workdir = tmp_path / "pg"
    with PostgresPart(workdir) as first, psycopg.connect(first.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")
    with PostgresPart(workdir) as second, psycopg.connect(second.dsn) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]
