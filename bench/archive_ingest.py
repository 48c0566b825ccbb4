"""Archive bulk ingest rate: datasets/s through the HTTP API (with a replica and lineage each), compared with a
raw COPY of the same rows straight into PostgreSQL and with a naive one-INSERT-per-row loop.

Targets: >= 20,000 datasets/s through HTTP, and >= 50 % of the raw COPY rate measured in the same run.
Each path gets a fresh database with the same schema and indexes, on an embedded PostgreSQL started here.

    .venv/bin/python bench/archive_ingest.py [--datasets 100000] [--batch 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sgs_archive.migrate import migrate
from sgs_archive.universe import load_universe

from sgs.model.dataset import DatasetType, dataset_uuid
from sgs.testing._process import free_port
from sgs.testing.postgres import PostgresPart

TARGET_RATE = 20_000.0
TARGET_RATIO = 0.5
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
DETECTORS = 36
INPUTS = 1_000


def make_datasets(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``INPUTS`` raw inputs, then ``count`` calexps each with one replica and lineage to one raw."""

    def replica(name: str) -> dict[str, Any]:
        content = name.encode()
        return {
            "site": "sdc-fr",
            "uri": f"s3://sdc-fr/{name}",
            "size": 1_000_000 + len(content),
            "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
            "sha256": hashlib.sha256(content).hexdigest(),
        }

    raws: list[dict[str, Any]] = [
        {
            "dataset_type": "raw",
            "data_id": {"instrument": "NISP", "exposure": i // DETECTORS, "detector": i % DETECTORS, "band": "Y"},
            "run": "raw/all",
            "replicas": [replica(f"raw/{i}.fits")],
        }
        for i in range(INPUTS)
    ]
    raw_type = DatasetType(name="raw", dimensions=("instrument", "exposure", "detector"), storage_class="Fits")
    raw_ids = [str(dataset_uuid("raw", raw_type.data_id_key(r["data_id"]), "raw/all")) for r in raws]
    calexps = [
        {
            "dataset_type": "calexp",
            "data_id": {"instrument": "NISP", "exposure": i // DETECTORS, "detector": i % DETECTORS, "band": "Y"},
            "run": "nir/run-1",
            "task": f"nir/run-1/calibrate-{i}/0",
            "replicas": [replica(f"calexp/{i}.fits")],
            "lineage": {
                "inputs": [raw_ids[i % INPUTS]],
                "executable": "ialtest_correct_dark",
                "image": "registry.example/nir:3.1",
                "version": "3.1.0",
                "config_digest": "sha256:0f1e2d",
                "pipeline_run": "nir/run-1",
                "task": f"calibrate-{i}",
                "attempt": 0,
            },
        }
        for i in range(count)
    ]
    return raws, calexps


def fresh_database(postgres: PostgresPart, name: str) -> str:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgres.dsn_for(name)
    migrate(dsn, load_universe())
    return dsn


def setup_types_and_inputs(client: httpx.Client, raws: list[dict[str, Any]]) -> None:
    for name in ("raw", "calexp"):
        body = {"name": name, "dimensions": ["exposure", "detector"], "storage_class": "Fits"}
        client.post("/dataset-types", json=body).raise_for_status()
    client.post("/datasets/ingest", json={"datasets": raws}).raise_for_status()


def bench_http(
    postgres: PostgresPart,
    raws: list[Any],
    calexps: list[Any],
    batch: int,
    logdir: Path,
    name: str,
    in_flight: int = 1,
) -> float:
    """Datasets/s through the service, with ``in_flight`` requests outstanding (a bulk loader keeps a second one
    queued so that the service parses one batch while PostgreSQL inserts the other)."""
    dsn = fresh_database(postgres, name)
    port = free_port()
    env = {**os.environ, "SGS_ARCHIVE_DSN": dsn, "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--port", str(port)]
    argv += ["--log-level", "warning", "--workers", str(in_flight)]
    with (logdir / "archive.log").open("wb") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300) as client:
            _wait_ready(client, server)
            setup_types_and_inputs(client, raws)
            # Bodies are encoded before the clock starts: we time the service, not this client.
            bodies = [json.dumps({"datasets": calexps[i : i + batch]}).encode() for i in range(0, len(calexps), batch)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=in_flight) as pool:
                for response in pool.map(lambda body: client.post("/datasets/ingest", content=body), bodies):
                    response.raise_for_status()
            elapsed = time.perf_counter() - start
            again = client.post("/datasets/ingest", content=bodies[0]).json()
            assert again["inserted"] == 0, "re-ingest must be a no-op"
    finally:
        server.terminate()
        server.wait(timeout=30)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dataset WHERE run_id <> (SELECT id FROM collection WHERE name = 'raw/all')"
        ).fetchone()
    assert row is not None and row[0] == len(calexps), f"expected {len(calexps)} datasets, found {row}"
    return len(calexps) / elapsed


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"archive exited with {server.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("archive did not become ready")


def _rows(calexps: list[dict[str, Any]], ids: dict[str, int]) -> dict[str, list[tuple[Any, ...]]]:
    universe = load_universe()
    calexp = DatasetType(name="calexp", dimensions=("instrument", "exposure", "detector"), storage_class="Fits")
    tables: dict[str, list[tuple[Any, ...]]] = {"dataset": [], "replica": [], "lineage": [], "lineage_input": []}
    for item in calexps:
        key = calexp.data_id_key(item["data_id"])
        dataset_id = dataset_uuid("calexp", key, item["run"])
        dims = [item["data_id"].get(name) for name in universe.names]
        tables["dataset"].append(
            (dataset_id, ids["calexp"], ids["nir/run-1"], json.dumps(item["data_id"]), key, item["task"], *dims)
        )
        r = item["replicas"][0]
        tables["replica"].append((dataset_id, r["site"], r["uri"], r["size"], r["adler32"], r["sha256"], "available"))
        lin = item["lineage"]
        tables["lineage"].append(
            (
                dataset_id,
                lin["executable"],
                lin["image"],
                lin["version"],
                lin["config_digest"],
                lin["pipeline_run"],
                lin["task"],
                lin["attempt"],
            )
        )
        tables["lineage_input"].append((dataset_id, lin["inputs"][0]))
    return tables


COLUMNS = {
    "dataset": ["id", "dataset_type_id", "run_id", "data_id", "data_id_key", "task"],
    "replica": ["dataset_id", "site", "uri", "size", "adler32", "sha256", "state"],
    "lineage": ["dataset_id", "executable", "image", "version", "config_digest", "pipeline_run", "task", "attempt"],
    "lineage_input": ["dataset_id", "input_id"],
}


def _prepare_direct(postgres: PostgresPart, name: str, raws: list[Any]) -> tuple[str, dict[str, int]]:
    """A database holding the types, runs and raw inputs, as the HTTP path had before its clock started."""
    dsn = fresh_database(postgres, name)
    port = free_port()
    env = {**os.environ, "SGS_ARCHIVE_DSN": dsn, "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--port", str(port)]
    server = subprocess.Popen([*argv, "--log-level", "warning"], env=env)
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300) as client:
            _wait_ready(client, server)
            setup_types_and_inputs(client, raws)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO collection (name, type) VALUES ('nir/run-1', 'RUN')")
        ids = {str(n): int(i) for i, n in conn.execute("SELECT id, name FROM dataset_type").fetchall()}
        ids.update({str(n): int(i) for i, n in conn.execute("SELECT id, name FROM collection").fetchall()})
    return dsn, ids


def bench_copy(postgres: PostgresPart, raws: list[Any], calexps: list[Any], name: str) -> float:
    dsn, ids = _prepare_direct(postgres, name, raws)
    universe = load_universe()
    tables = _rows(calexps, ids)
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cursor:
            for table, rows in tables.items():
                columns = COLUMNS[table] + ([f"dim_{n}" for n in universe.names] if table == "dataset" else [])
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - start
    return len(calexps) / elapsed


def bench_naive(postgres: PostgresPart, raws: list[Any], calexps: list[Any]) -> float:
    dsn, ids = _prepare_direct(postgres, "bench_naive", raws)
    universe = load_universe()
    tables = _rows(calexps, ids)
    statements = {}
    for table in tables:
        columns = COLUMNS[table] + ([f"dim_{n}" for n in universe.names] if table == "dataset" else [])
        statements[table] = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        )
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for index in range(len(calexps)):
            for table, rows in tables.items():
                conn.execute(statements[table], rows[index])
        conn.commit()
        elapsed = time.perf_counter() - start
    return len(calexps) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=5_000, help="datasets for the slow INSERT loop")
    parser.add_argument("--rounds", type=int, default=3, help="HTTP and COPY alternate; medians are reported")
    args = parser.parse_args()
    raws, calexps = make_datasets(args.datasets)
    print(
        f"data shape: {INPUTS} raw inputs, then {args.datasets} calexp datasets (instrument, exposure, "
        f"detector; band implied), each with 1 replica (size, adler32, sha256) and lineage to 1 raw; "
        f"HTTP batches of {args.batch}; {args.rounds} rounds, each path on a fresh database"
    )
    http_rates: list[float] = []
    pipelined_rates: list[float] = []
    copy_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sgs-bench-") as tmp, PostgresPart(Path(tmp) / "pg") as postgres:
        for round_ in range(args.rounds):
            # Alternating the two paths spreads this shared machine's load changes over both.
            http_rates.append(bench_http(postgres, raws, calexps, args.batch, Path(tmp), f"bench_http_{round_}"))
            copy_rates.append(bench_copy(postgres, raws, calexps, f"bench_copy_{round_}"))
            pipelined_rates.append(
                bench_http(postgres, raws, calexps, args.batch, Path(tmp), f"bench_http2_{round_}", in_flight=2)
            )
            print(
                f"  round {round_ + 1}: HTTP {http_rates[-1]:,.0f}/s, 2 in flight {pipelined_rates[-1]:,.0f}/s, "
                f"COPY {copy_rates[-1]:,.0f}/s",
                flush=True,
            )
        naive_rate = bench_naive(postgres, raws, calexps[: args.naive])
    copy_rate = statistics.median(copy_rates)
    print(f"raw COPY:               {copy_rate:10,.0f} datasets/s  (median)")
    for label, rates in (("HTTP, 1 request", http_rates), ("HTTP, 2 in flight", pipelined_rates)):
        rate = statistics.median(rates)
        ratio = statistics.median(h / c for h, c in zip(rates, copy_rates, strict=True))
        print(
            f"{label + ':':23s} {rate:10,.0f} datasets/s  (median; target {TARGET_RATE:,.0f}: ratio "
            f"{rate / TARGET_RATE:.2f}; of COPY {ratio:.2f}, target >= {TARGET_RATIO:.2f})"
        )
    print(
        f"naive INSERT loop:      {naive_rate:10,.0f} datasets/s  "
        f"(HTTP 1 request / naive = {statistics.median(http_rates) / naive_rate:.1f}x)"
    )


if __name__ == "__main__":
    main()
