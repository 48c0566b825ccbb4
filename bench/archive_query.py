"""Archive dimension-query latency at 1,000,000 datasets: p50/p99 through the HTTP API, with EXPLAIN.

Target: p99 < 20 ms. Rows are loaded with COPY (this measures queries, not ingest) into the real schema on an
embedded PostgreSQL started here; queries go through a real uvicorn process, timed at the client.

Data shape (default 1,000,000): 60 % raw (instrument NISP, exposure, detector 0-35, band implied),
30 % calexp (same dimensions), 10 % coadd (tile, band, skypix at HEALPix order 10 around the tile centre);
6 bands; 10 RUN collections, plus a CHAINED collection over two of them.

    .venv/bin/python bench/archive_query.py [--datasets 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from astropy import units as u
from astropy_healpix import HEALPix
from psycopg import sql
from psycopg.rows import dict_row
from sgs_archive.migrate import migrate
from sgs_archive.registry import query as query_ops
from sgs_archive.registry.dataset_types import TypeCatalog
from sgs_archive.schemas import DatasetQuery
from sgs_archive.universe import load_universe

from sgs.model.dataset import DatasetType, dataset_uuid
from sgs.testing._process import free_port
from sgs.testing.postgres import PostgresPart

TARGET_P99_MS = 20.0
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
BANDS = ["VIS", "Y", "J", "H", "g", "r"]
DETECTORS = 36
RUNS = 10


def load(dsn: str, count: int) -> dict[str, int]:
    """COPY ``count`` datasets into the schema; returns the shape's maxima for query generation."""
    universe = load_universe()
    hp = HEALPix(nside=2**10, order="nested")
    rng = random.Random(42)
    with psycopg.connect(dsn, autocommit=True) as conn:
        type_ids = {}
        for name, dims in (
            ("raw", ["instrument", "exposure", "detector"]),
            ("calexp", ["instrument", "exposure", "detector"]),
            ("coadd", ["tile", "band", "skypix"]),
        ):
            row = conn.execute(
                "INSERT INTO dataset_type (name, dimensions, implied, storage_class) VALUES (%s, %s, %s, 'Fits') "
                "RETURNING id",
                (name, dims, ["band"] if name != "coadd" else []),
            ).fetchone()
            assert row is not None
            type_ids[name] = int(row[0])
        run_ids = []
        for index in range(RUNS):
            row = conn.execute(
                "INSERT INTO collection (name, type) VALUES (%s, 'RUN') RETURNING id", (f"run/{index}",)
            ).fetchone()
            assert row is not None
            run_ids.append(int(row[0]))
        conn.execute("INSERT INTO collection (name, type) VALUES ('chain', 'CHAINED')")
        conn.execute(
            "INSERT INTO collection_chain SELECT (SELECT id FROM collection WHERE name = 'chain'), p, c "
            "FROM unnest(%s::bigint[], %s::int[]) AS x(c, p)",
            (run_ids[:2], [0, 1]),
        )
    raw_n, calexp_n = int(count * 0.6), int(count * 0.3)
    coadd_n = count - raw_n - calexp_n
    tiles = coadd_n // len(BANDS)
    columns = ["id", "dataset_type_id", "run_id", "data_id", "data_id_key"] + [f"dim_{n}" for n in universe.names]
    key_types = {
        "raw": DatasetType(name="raw", dimensions=("instrument", "exposure", "detector"), storage_class="Fits"),
        "coadd": DatasetType(name="coadd", dimensions=("band", "tile", "skypix"), storage_class="Fits"),
    }
    tile_pix = hp.lonlat_to_healpix(
        np.array([rng.uniform(0, 360) for _ in range(tiles)]) * u.deg,
        np.array([rng.uniform(-60, 30) for _ in range(tiles)]) * u.deg,
    )
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        statement = sql.SQL("COPY dataset ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
        with cursor.copy(statement) as copy:
            for kind, n in (("raw", raw_n), ("calexp", calexp_n)):
                for i in range(n):
                    exposure, detector = i // DETECTORS, i % DETECTORS
                    data_id: dict[str, int | str] = {
                        "instrument": "NISP",
                        "band": BANDS[exposure % 6],
                        "exposure": exposure,
                        "detector": detector,
                    }
                    key = key_types["raw"].data_id_key(data_id)
                    run = run_ids[exposure % RUNS]
                    copy.write_row(
                        (
                            dataset_uuid(kind, key, f"run/{run}"),
                            type_ids[kind],
                            run,
                            json.dumps(data_id),
                            key,
                            *(data_id.get(n) for n in universe.names),
                        )
                    )
            for i in range(coadd_n):
                tile, band = i // len(BANDS), BANDS[i % len(BANDS)]
                coadd_id: dict[str, int | str] = {
                    "band": band,
                    "tile": 100_000 + tile,
                    "skypix": int(tile_pix[tile % tiles]),
                }
                key = key_types["coadd"].data_id_key(coadd_id)
                copy.write_row(
                    (
                        dataset_uuid("coadd", key, "run/0"),
                        type_ids["coadd"],
                        run_ids[0],
                        json.dumps(coadd_id),
                        key,
                        *(coadd_id.get(n) for n in universe.names),
                    )
                )
        conn.commit()
        conn.execute("ANALYZE dataset")
        conn.commit()
    print(
        f"loaded {count:,} datasets in {time.perf_counter() - started:.0f} s "
        f"({raw_n:,} raw, {calexp_n:,} calexp, {coadd_n:,} coadd over {tiles:,} tiles)"
    )
    return {"exposures": raw_n // DETECTORS, "tiles": tiles}


def query_forms(shape: dict[str, int], rng: random.Random) -> dict[str, Any]:
    """One random instance of each query form."""
    tile = 100_000 + rng.randrange(shape["tiles"])
    exposure = rng.randrange(shape["exposures"])
    return {
        "band IN + tile (issue example)": {"where": f"band IN ('VIS','Y') AND tile = {tile}"},
        "raw exposure + detector range": {
            "dataset_type": "raw",
            "where": f"instrument = 'NISP' AND exposure = {exposure} AND detector IN (1..4)",
        },
        "coadd region overlap": {
            "dataset_type": "coadd",
            "where": f"region OVERLAPS CIRCLE({rng.uniform(0, 360):.3f}, {rng.uniform(-60, 30):.3f}, 0.2)",
        },
        "chained collection, find-first": {
            "collections": ["chain"],
            "find_first": True,
            "dataset_type": "raw",
            "where": f"exposure = {exposure}",
        },
    }


def measure(url: str, shape: dict[str, int], queries: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    timings: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        for warm in range(20):  # connections, plan caches
            for body in query_forms(shape, random.Random(warm)).values():
                client.post("/datasets/query", json=body).raise_for_status()
        for _ in range(queries):
            for name, body in query_forms(shape, rng).items():
                start = time.perf_counter()
                response = client.post("/datasets/query", json={**body, "limit": 100})
                elapsed = (time.perf_counter() - start) * 1000
                response.raise_for_status()
                timings.setdefault(name, []).append(elapsed)
    return timings


async def explain(dsn: str, body: dict[str, Any]) -> str:
    universe = load_universe()
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        return await query_ops.explain(conn, universe, TypeCatalog(universe), DatasetQuery(**body, limit=100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="iterations of each query form")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgs-bench-") as tmp, PostgresPart(Path(tmp) / "pg") as postgres:
        dsn = postgres.dsn
        migrate(dsn, load_universe())
        shape = load(dsn, args.datasets)
        port = free_port()
        env = {**os.environ, "SGS_ARCHIVE_DSN": dsn, "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN}
        argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--port", str(port)]
        server = subprocess.Popen([*argv, "--log-level", "warning"], env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            timings = measure(url, shape, args.queries)
        finally:
            server.terminate()
            server.wait(timeout=30)
        example = query_forms(shape, random.Random(1))["band IN + tile (issue example)"]
        plan = asyncio.run(explain(dsn, example))
    print(f"\nEXPLAIN ANALYZE of: {example['where']}\n{plan}\n")
    every: list[float] = []
    for name, values in timings.items():
        every.extend(values)
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:34s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   (n={len(values)})")
    p50, p99 = np.percentile(every, [50, 99])
    print(
        f"{'all forms':34s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
        f"(target p99 < {TARGET_P99_MS:.0f} ms: ratio {p99 / TARGET_P99_MS:.2f})"
    )


if __name__ == "__main__":
    main()
