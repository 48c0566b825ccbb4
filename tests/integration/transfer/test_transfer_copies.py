"""Copies end to end on POSIX Sites: a rule makes verified copies that the destination's archive registers as
available with the source's checksums (and announces on sgs.replica.available); deleting the rule lets the
reaper remove them, never the last copy."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from transfer_kit import (
    ArchiveUnderTest,
    TransferUnderTest,
    archive_service,
    checksums,
    eventually,
    known_sites,
    posix_site,
    posix_store,
    put_source,
    transfer_service,
)

from sgs.events import STREAM
from sgs.model.site import Site
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = [pytest.mark.integration]

LABELS = {"site-a": {"tier": "primary"}, "site-b": {"tier": "primary"}, "site-c": {"tier": "secondary"}}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[ArchiveUnderTest]:
    with archive_service(postgres, nats_server.url) as archive:
        archive.issue_site_tokens(list(LABELS))
        archive.dataset_type("raw", ["exposure", "detector"])
        yield archive


@pytest.fixture(scope="module")
def sites(archive: ArchiveUnderTest, tmp_path_factory: pytest.TempPathFactory) -> list[Site]:
    root = tmp_path_factory.mktemp("sites")
    return [posix_site(name, root, archive.url, labels) for name, labels in LABELS.items()]


@pytest.fixture(scope="module")
def transfer(archive: ArchiveUnderTest, nats_server: NatsPart, sites: list[Site]) -> Iterator[TransferUnderTest]:
    book = known_sites(sites, archive.site_tokens, posix_store)
    with transfer_service(archive.dsn, nats_server.url, archive.url, book, embedded_worker=True) as transfer:
        yield transfer


def ingest_files(
    archive: ArchiveUnderTest, sites: list[Site], run: str, count: int, at: str = "site-a"
) -> dict[str, bytes]:
    """``count`` datasets with real files at Site ``at``; returns content by dataset id."""
    store = posix_store(next(s for s in sites if s.metadata.name == at))
    contents: dict[str, bytes] = {}
    datasets = []
    for i in range(count):
        dataset_id = uuid.uuid4()
        content = f"{run}:{i}:".encode() * (50 + i)
        uri = put_source(store, "raw", dataset_id, content)
        contents[str(dataset_id)] = content
        datasets.append(
            {
                "id": str(dataset_id),
                "dataset_type": "raw",
                "data_id": {"instrument": "VIS", "exposure": 1000 + i, "detector": 1},
                "run": run,
                "replicas": [{"site": at, "uri": uri, **checksums(content)}],
            }
        )
    archive.collection(run)
    archive.ok("POST", "/datasets/ingest", json={"datasets": datasets})
    return contents


async def available_events(nats_url: str, run_ids: set[str]) -> list[dict[str, Any]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe("sgs.replica.available", durable=None, stream=STREAM)
        found = []
        while True:
            try:
                messages = await subscription.fetch(batch=500, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for message in messages:
                await message.ack()
                payload = json.loads(message.data)
                if payload["dataset_id"] in run_ids:
                    found.append(payload)
        await subscription.unsubscribe()
        return found
    finally:
        await nc.close()


def test_a_rule_makes_verified_copies_that_arrive_as_available_replicas(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, sites: list[Site], nats_server: NatsPart
) -> None:
    run = f"copies/{uuid.uuid4().hex[:8]}"
    contents = ingest_files(archive, sites, run, 20)
    rule = transfer.call(
        "POST", "/rules", (201,), json={"collections": [run], "copies": 2, "site_expression": "tier=primary"}
    )
    done = transfer.wait_rule(rule["id"], ("OK",), timeout_s=60)
    assert done["locks"] == {"ok": 40, "replicating": 0, "stuck": 0}
    destination = posix_store(next(s for s in sites if s.metadata.name == "site-b"))
    for dataset_id, content in contents.items():
        replicas = {r["site"]: r for r in archive.replicas(dataset_id)}
        copy = replicas["site-b"]
        assert copy["state"] == "available"
        assert {k: copy[k] for k in ("size", "adler32", "sha256")} == checksums(content)
        assert destination.read_bytes(destination.key_of(copy["uri"])) == content
    events = asyncio.run(available_events(nats_server.url, set(contents)))
    at_b = [e for e in events if e["site"] == "site-b"]
    assert len(at_b) == 20 and len({e["dataset_id"] for e in at_b}) == 20, "one sgs.replica.available per copy"
    transfers = transfer.transfers(rule=rule["id"])
    assert {t["state"] for t in transfers} == {"DONE"} and len(transfers) == 20
    assert all(t["source"] == "site-a" and t["bytes"] == len(contents[t["dataset_id"]]) for t in transfers)
    print(f"20 copies verified and registered at site-b; {len(at_b)} sgs.replica.available events")


def test_deleting_a_rule_lets_the_reaper_remove_its_copies_but_never_the_last(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, sites: list[Site]
) -> None:
    run = f"reap/{uuid.uuid4().hex[:8]}"
    contents = ingest_files(archive, sites, run, 5)
    body = {"collections": [run], "copies": 2, "site_expression": "site-b | site-c"}
    rule = transfer.call("POST", "/rules", (201,), json=body)
    transfer.wait_rule(rule["id"], ("OK",), timeout_s=60)
    copies = {d: {r["site"] for r in archive.replicas(d) if r["state"] == "available"} for d in contents}
    assert all(found == {"site-a", "site-b", "site-c"} for found in copies.values())
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))

    def reaped() -> bool:
        return all(
            {r["site"] for r in archive.replicas(d) if r["state"] == "available"} == {"site-a"} for d in contents
        )

    eventually(reaped, what="the reaper to delete both copies", timeout_s=30)
    for name in ("site-b", "site-c"):
        store = posix_store(next(s for s in sites if s.metadata.name == name))
        assert not [o for o in store.list("raw/") if any(d in o.key for d in contents)], f"bytes left at {name}"
    source = posix_store(next(s for s in sites if s.metadata.name == "site-a"))
    assert all(any(d in o.key for o in source.list("raw/")) for d in contents), "the original copies are kept"
    print(f"{len(contents) * 2} copies reaped after the rule was deleted; {len(contents)} originals kept")


def test_the_only_copy_is_never_reaped_even_when_unlocked(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, sites: list[Site]
) -> None:
    run = f"last/{uuid.uuid4().hex[:8]}"
    contents = ingest_files(archive, sites, run, 3, at="site-c")
    rule = transfer.call(
        "POST", "/rules", (201,), json={"collections": [run], "copies": 1, "site_expression": "site-b"}
    )
    transfer.wait_rule(rule["id"], ("OK",), timeout_s=60)
    # The original at site-c is lost (declared bad): the copy at site-b is now the only available one.
    for dataset_id in contents:
        original = next(r for r in archive.replicas(dataset_id) if r["site"] == "site-c")
        archive.ok("PATCH", f"/replicas/{original['id']}", json={"state": "bad"})
    passes = metric(transfer, "sgs_transfer_reaper_passes_total", 'outcome="ran"')
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))
    eventually(
        lambda: metric(transfer, "sgs_transfer_reaper_passes_total", 'outcome="ran"') >= passes + 3,
        what="three reaper passes that were not paused",
        timeout_s=20,
    )
    for dataset_id, content in contents.items():
        kept = [r for r in archive.replicas(dataset_id) if r["site"] == "site-b"]
        assert kept and kept[0]["state"] == "available", "the last available copy must never be reaped"
        store = posix_store(next(s for s in sites if s.metadata.name == "site-b"))
        assert store.read_bytes(store.key_of(kept[0]["uri"])) == content
    print(f"{len(contents)} last copies kept by the reaper")


def metric(transfer: TransferUnderTest, name: str, labels: str = "") -> float:
    """The sum of a metric's samples (those whose labels include ``labels``) from /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in transfer.client.get("/metrics").text.splitlines()
        if line.startswith(name) and not line.startswith("#") and labels in line
    )


def test_sites_endpoint_reports_each_destination(transfer: TransferUnderTest, tmp_path: Path) -> None:
    found = {s["name"]: s for s in transfer.call("GET", "/sites")}
    assert set(found) == set(LABELS)
    assert found["site-b"]["labels"] == {"tier": "primary"} and found["site-b"]["paused"] is False
