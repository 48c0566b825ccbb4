"""Events through the transactional outbox: delivered once, never for a rolled-back write, across crashes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from archive_helpers import (
    ADMIN,
    Archive,
    ArchiveProcess,
    events_about,
    eventually,
    outbox_counts,
    register_types,
    replica,
    wait_until,
)
from sgs_archive.outbox import CRASH_EXIT_CODE

from sgs.events import DATASET_REGISTERED, DatasetRegistered, ReplicaStateChanged
from sgs.testing.nats import NatsPart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def calexp(run: str, detector: int) -> dict[str, Any]:
    return {
        "dataset_type": "calexp",
        "data_id": {"instrument": "VIS", "exposure": 7, "detector": detector},
        "run": run,
        "replicas": [replica("sdc-de", f"{run}/{detector}.fits")],
    }


async def test_ingest_and_replica_changes_are_announced_once(archive: Archive, nats_server: NatsPart) -> None:
    await register_types(archive)
    run = f"events/{uuid.uuid4().hex}"
    body = {"datasets": [calexp(run, d) for d in range(3)]}
    first = await archive.ok("POST", "/datasets/ingest", json=body)
    await archive.ok("POST", "/datasets/ingest", json=body)  # idempotent: must not announce again

    conflicting = {"datasets": [{**calexp(run, 0), "task": "another-task"}]}
    await archive.ok("POST", "/datasets/ingest", 409, json=conflicting)

    await eventually(lambda: outbox_counts(archive.settings.dsn) == (0, 1), what="the relay to drain", timeout_s=10)
    events = await events_about(nats_server.url, DATASET_REGISTERED, run)
    assert len(events) == 1
    event = DatasetRegistered.model_validate(events[0])
    assert sorted(str(d.id) for d in event.datasets) == sorted(first["ids"])
    assert event.datasets[0].replicas[0].site == "sdc-de"

    replicas = await archive.ok("GET", f"/datasets/{first['ids'][0]}/replicas")
    await archive.ok("PATCH", f"/replicas/{replicas[0]['id']}", json={"state": "bad"})
    await archive.ok("PATCH", f"/replicas/{replicas[0]['id']}", json={"state": "bad"})  # no change, no event
    await eventually(lambda: outbox_counts(archive.settings.dsn) == (0, 2), what="the relay to drain", timeout_s=10)
    changes = await events_about(nats_server.url, "sgs.replica.bad", first["ids"][0])
    assert len(changes) == 1
    change = ReplicaStateChanged.model_validate(changes[0])
    assert (change.previous_state, change.state, change.dataset_type) == ("available", "bad", "calexp")
    assert (change.data_id, change.run) == ({"instrument": "VIS", "exposure": 7, "detector": 0}, run)


def _ingest_over_http(process: ArchiveProcess, run: str) -> list[str]:
    with httpx.Client(base_url=process.url, headers=ADMIN, timeout=30) as client:
        for body in ({"name": "calexp", "dimensions": ["exposure", "detector"], "storage_class": "Fits"},):
            assert client.post("/dataset-types", json=body).status_code in (200, 201)
        response = client.post("/datasets/ingest", json={"datasets": [calexp(run, d) for d in range(2)]})
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        return ids


async def test_killed_between_commit_and_publish_the_event_arrives_once_after_restart(
    pg_database: str, nats_server: NatsPart, tmp_path: Path
) -> None:
    run = f"crash/{uuid.uuid4().hex}"
    paused = ArchiveProcess(pg_database, nats_server.url, tmp_path / "archive.log", SGS_ARCHIVE_RELAY_PAUSED="1")
    try:
        paused.start()
        ids = _ingest_over_http(paused, run)
        assert outbox_counts(pg_database) == (1, 0), "the commit must hold the event before any publish"
        paused.kill()
    finally:
        paused.stop()
    assert await events_about(nats_server.url, DATASET_REGISTERED, run, settle_s=0.3) == []

    restarted = ArchiveProcess(pg_database, nats_server.url, tmp_path / "archive.log").start()
    try:
        wait_until(lambda: outbox_counts(pg_database) == (0, 1), what="the relay to publish", timeout_s=20)
        events = await events_about(nats_server.url, DATASET_REGISTERED, run)
        assert len(events) == 1
        assert sorted(str(d["id"]) for d in events[0]["datasets"]) == sorted(ids)
    finally:
        restarted.stop()


async def test_killed_between_publish_and_stamp_the_copy_is_deduplicated(
    pg_database: str, nats_server: NatsPart, tmp_path: Path
) -> None:
    run = f"crash2/{uuid.uuid4().hex}"
    crashing = ArchiveProcess(
        pg_database,
        nats_server.url,
        tmp_path / "archive.log",
        SGS_ARCHIVE_RELAY_CRASH_AFTER_PUBLISH="1",
        SGS_ARCHIVE_ENVIRONMENT="development",  # production refuses the crash hook
    )
    try:
        crashing.start()
        _ingest_over_http(crashing, run)
        assert crashing.wait_exit(timeout_s=20) == CRASH_EXIT_CODE
    finally:
        crashing.stop()
    assert outbox_counts(pg_database) == (1, 0), "published but never stamped"
    assert len(await events_about(nats_server.url, DATASET_REGISTERED, run, settle_s=0.3)) == 1

    restarted = ArchiveProcess(pg_database, nats_server.url, tmp_path / "archive.log").start()
    try:
        wait_until(lambda: outbox_counts(pg_database) == (0, 1), what="the relay to re-publish", timeout_s=20)
        async with httpx.AsyncClient(base_url=restarted.url, headers=ADMIN) as client:
            metrics = (await client.get("/metrics")).text
        assert "sgs_archive_outbox_duplicates_total 1.0" in metrics, "the re-publish was not deduplicated"
        assert len(await events_about(nats_server.url, DATASET_REGISTERED, run)) == 1
    finally:
        restarted.stop()
