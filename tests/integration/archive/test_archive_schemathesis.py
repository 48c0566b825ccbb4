"""Property-based fuzzing of every operation in the OpenAPI spec: no input may produce a 500.

The archive runs as a real uvicorn process on a real database; schemathesis generates a bounded number of
requests per operation (valid and invalid), authenticated as admin so that write paths are exercised too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from archive_helpers import ADMIN, ArchiveProcess, replica
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from psycopg import sql
from schemathesis.generation import GenerationMode

from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Examples per operation and generation mode; raise it (e.g. 50) for a deeper run than the default suite's.
EXAMPLES = int(os.environ.get("SGS_FUZZ_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def running_archive(
    postgres: PostgresPart, nats_server: NatsPart, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log = Path(tmp_path_factory.mktemp("archive")) / "archive.log"
    process = ArchiveProcess(postgres.dsn_for(name), nats_server.url, log).start()
    try:
        _seed(process.url)
        yield process.url
    finally:
        process.stop()
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _seed(url: str) -> None:
    """A few real rows so that generated requests also meet existing types, runs and chains."""
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as client:
        client.post(
            "/dataset-types", json={"name": "raw", "dimensions": ["exposure", "detector"], "storage_class": "Fits"}
        ).raise_for_status()
        datasets: list[dict[str, Any]] = [
            {
                "dataset_type": "raw",
                "data_id": {"instrument": "VIS", "exposure": e, "detector": 1},
                "run": "r1",
                "replicas": [replica("sdc-fr", f"raw/{e}")],
            }
            for e in range(5)
        ]
        client.post("/datasets/ingest", json={"datasets": datasets}).raise_for_status()
        client.post("/collections", json={"name": "chain", "type": "CHAINED", "children": ["r1"]}).raise_for_status()


def test_no_input_produces_a_server_error(running_archive: str) -> None:
    # Operations are walked inside one test (schemathesis' lazy pytest loader does not work with pytest 9);
    # every operation still gets its own bounded hypothesis run, valid and invalid inputs alike.
    schema = schemathesis.openapi.from_url(f"{running_archive}/openapi.json")
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20, "the spec lost operations"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, running_archive, failures, statuses)
    assert not failures, "server errors:\n" + "\n".join(failures)
    # The fuzzing reached the handlers (successes) and their validation (4xx), not just a closed door.
    enough = 3 * EXAMPLES
    assert sum(n for code, n in statuses.items() if code < 300) >= enough, statuses
    assert sum(n for code, n in statuses.items() if 400 <= code < 500) >= enough, statuses


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, failures: list[str], statuses: Counter[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=ADMIN, timeout=30)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{operation.label} [{mode.value}] -> {response.status_code}: {case.as_curl_command()}")

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (e.g. GET /healthz takes no parameters)
        run()
