"""Rules through the REST API: bad input refused naming the field, unsatisfiable rules accepted as STUCK with
the reason, tokens checked, suspend / resume / delete; and rule evaluation from the archive's events and in
bulk, idempotent under redelivery."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
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
    transfer_service,
)

from sgs.events import DATASET_REGISTERED, MSG_ID_HEADER
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = [pytest.mark.integration]

SITES = {
    "site-a": {"tier": "primary", "country": "fr"},
    "site-b": {"tier": "primary", "country": "it"},
    "site-c": {"tier": "secondary", "country": "de"},
}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[ArchiveUnderTest]:
    with archive_service(postgres, nats_server.url) as archive:
        archive.issue_site_tokens(list(SITES))
        archive.dataset_type("raw", ["exposure", "detector"])
        archive.dataset_type("calexp", ["exposure", "detector"])
        archive.collection("tagged/things", "TAGGED")
        yield archive


@pytest.fixture(scope="module")
def transfer(
    archive: ArchiveUnderTest, nats_server: NatsPart, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransferUnderTest]:
    root = tmp_path_factory.mktemp("sites")
    sites = [posix_site(name, root, archive.url, labels) for name, labels in SITES.items()]
    with transfer_service(archive.dsn, nats_server.url, archive.url, known_sites(sites, archive.site_tokens)) as t:
        yield t


def ingest(
    archive: ArchiveUnderTest, run: str, count: int, dataset_type: str = "raw", site: str = "site-a"
) -> list[str]:
    datasets = [
        {
            "dataset_type": dataset_type,
            "data_id": {"instrument": "VIS", "exposure": 100 + i, "detector": i % 4},
            "run": run,
            "replicas": [
                {"site": site, "uri": f"file:///data/{site}/{run}/{i}.fits", **checksums(f"{run}{i}".encode())}
            ],
        }
        for i in range(count)
    ]
    result = archive.ok("POST", "/datasets/ingest", json={"datasets": datasets})
    ids: list[str] = result["ids"]
    return ids


def rule_body(**overrides: Any) -> dict[str, Any]:
    return {"dataset_type": "raw", "copies": 2, "site_expression": "tier=primary", **overrides}


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"where": "exposure >"}, "where", "expected a value"),
        ({"where": "colour = 'red'"}, "where", "unknown dimension 'colour'"),
        ({"where": "tile = 3"}, "where", "'tile' is not a dimension of the dataset type queried"),
        ({"site_expression": "tier=primary & contry=fr"}, "site_expression", "unknown Site label 'contry'"),
        ({"site_expression": "site-x"}, "site_expression", "unknown Site or label 'site-x'"),
        ({"site_expression": "(site-a | site-b"}, "site_expression", "expected ')'"),
        ({"source_expression": "nowhere"}, "source_expression", "unknown Site or label 'nowhere'"),
        ({"dataset_type": "nothing_like_it"}, "dataset_type", "unknown dataset type 'nothing_like_it'"),
        ({"collections": ["no/such/run"]}, "collections", "no collection 'no/such/run'"),
        ({"collections": ["tagged/things"]}, "collections", "is a TAGGED collection"),
        ({"copies": 0}, "copies", "greater than or equal to 1"),
        ({"dataset_ids": [str(uuid.uuid4())]}, "dataset_ids", "leave dataset_type unset"),
        ({"dataset_type": None, "where": "exposure = 1", "dataset_ids": [str(uuid.uuid4())]}, "dataset_ids", "where"),
        ({"dataset_type": None, "dataset_ids": [str(uuid.uuid4())] * 10_001}, "dataset_ids", "at most 10000"),
        ({"dataset_type": None, "dataset_ids": ["not-a-uuid"]}, "dataset_ids", "valid UUID"),
        ({"grouping": "some"}, "grouping", "'all' or 'dataset'"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(
    transfer: TransferUnderTest, overrides: dict[str, Any], field: str, message: str
) -> None:
    before = len(transfer.call("GET", "/rules", params={"limit": 1000})["items"])
    answer = transfer.call("POST", "/rules", (422,), json=rule_body(**overrides))
    problems = answer["detail"]
    assert any(p["loc"][:2] == ["body", field] and message in p["msg"] for p in problems), problems
    after = len(transfer.call("GET", "/rules", params={"limit": 1000})["items"])
    assert after == before, "a refused rule must leave nothing behind"


def test_more_copies_than_matching_sites_is_accepted_as_stuck_with_the_reason(transfer: TransferUnderTest) -> None:
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(copies=3))
    assert rule["state"] == "STUCK"
    assert rule["reason"] == "3 copies asked, but only 2 Sites match the Site expression (site-a, site-b)"
    assert transfer.wait_rule(rule["id"], ("STUCK",))["reason"].startswith("3 copies asked")
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))


# ------------------------------------------------------------------------------------------ tokens


def test_every_endpoint_needs_a_valid_token(transfer: TransferUnderTest) -> None:
    for method, path in (("GET", "/rules"), ("POST", "/rules"), ("GET", "/transfers"), ("GET", "/sites")):
        assert transfer.client.request(method, path, json=rule_body()).status_code == 401
        response = transfer.client.request(method, path, headers={"Authorization": "Bearer sgs_forged"})
        assert response.status_code == 401
    assert transfer.client.get("/healthz").status_code == 200


def test_a_named_token_owns_its_rules_and_nothing_more(transfer: TransferUnderTest) -> None:
    alice = transfer.call("POST", "/tokens", (201,), json={"name": "alice"})["token"]
    bob = transfer.call("POST", "/tokens", (201,), json={"name": "bob"})["token"]
    transfer.call("POST", "/tokens", (409,), json={"name": "bob"})
    rule = transfer.call("POST", "/rules", (201,), token=alice, json=rule_body())
    assert rule["owner"] == "alice"
    for path in (f"/rules/{rule['id']}/suspend", f"/rules/{rule['id']}/resume"):
        answer = transfer.call("POST", path, (403,), token=bob)
        assert "may not change a rule owned by 'alice'" in answer["detail"][0]["msg"]
    transfer.call("DELETE", f"/rules/{rule['id']}", (403,), token=bob)
    transfer.call("POST", "/rules", (403,), token=bob, json=rule_body(owner="alice"))
    transfer.call("POST", "/tokens", (403,), token=bob, json={"name": "mallory", "admin": True})
    assert transfer.call("GET", f"/rules/{rule['id']}", token=bob)["owner"] == "alice"  # reads are open to tokens
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,), token=alice)


def test_a_reader_token_reads_everything_and_changes_nothing(transfer: TransferUnderTest) -> None:
    """What the console reads with: it passes on rule changes only with the person's own token."""
    refused = transfer.call("POST", "/tokens", (422,), json={"name": "both", "admin": True, "reader": True})
    assert refused["detail"][0]["loc"] == ["body", "reader"], refused
    reader = transfer.call("POST", "/tokens", (201,), json={"name": "console-reader", "reader": True})
    assert reader["reader"] is True and reader["admin"] is False
    listed = {t["name"]: t for t in transfer.call("GET", "/tokens")}
    assert listed["console-reader"]["reader"] is True
    token = reader["token"]
    rule = transfer.call("POST", "/rules", (201,), json=rule_body())
    assert transfer.call("GET", f"/rules/{rule['id']}", token=token)["id"] == rule["id"]
    transfer.call("GET", "/transfers", token=token)
    transfer.call("GET", "/transfers/counts", token=token)
    transfer.call("GET", "/sites", token=token)
    answer = transfer.call("POST", "/rules", (403,), token=token, json=rule_body())
    assert "'console-reader' is a reader token: it may not change rules" in answer["detail"][0]["msg"]
    for path in (f"/rules/{rule['id']}/suspend", f"/rules/{rule['id']}/resume"):
        transfer.call("POST", path, (403,), token=token)
    transfer.call("DELETE", f"/rules/{rule['id']}", (403,), token=token)
    transfer.call("POST", "/tokens", (403,), token=token, json={"name": "escalate", "admin": True})
    assert transfer.rule(rule["id"])["state"] != "SUSPENDED"
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))


# ------------------------------------------------------------------------------------------ evaluation


def test_a_new_rule_is_evaluated_against_what_the_archive_holds(
    archive: ArchiveUnderTest, transfer: TransferUnderTest
) -> None:
    run = f"bulk/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    ids = ingest(archive, run, 12)
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(collections=[run]))
    evaluated = transfer.wait_rule(rule["id"], ("REPLICATING", "OK"))
    # Every dataset is at site-a already (1 lock OK), and needs site-b (1 transfer each).
    assert evaluated["locks"] == {"ok": 12, "replicating": 12, "stuck": 0}
    queued = transfer.transfers(rule=rule["id"])
    assert sorted(t["dataset_id"] for t in queued) == sorted(ids)
    assert {t["destination"] for t in queued} == {"site-b"}
    assert {t["state"] for t in queued} == {"QUEUED"}


def test_datasets_registered_later_are_matched_from_their_event(
    archive: ArchiveUnderTest, transfer: TransferUnderTest
) -> None:
    run = f"grow/{uuid.uuid4().hex[:8]}"
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(collections=["grow/*"], where="detector IN (0, 1)"))
    transfer.wait_rule(rule["id"], ("OK",))
    for round_ in range(3):  # a growing dataset set: each batch is matched as it arrives
        ingest(archive, f"{run}-{round_}", 8)
        eventually(
            replicating_is(transfer, rule["id"], 4 * (round_ + 1)),
            what=f"batch {round_} evaluated",
            timeout_s=10,
        )
    assert len(transfer.transfers(rule=rule["id"])) == 12


def test_a_dataset_id_rule_selects_exactly_its_datasets(archive: ArchiveUnderTest, transfer: TransferUnderTest) -> None:
    run = f"ids/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    ids = ingest(archive, run, 6)
    chosen = [ids[0], ids[2], ids[4], ids[2]]  # a repeat is one dataset
    rule = transfer.call(
        "POST", "/rules", (201,), json={"dataset_ids": chosen, "copies": 2, "site_expression": "tier=primary"}
    )
    assert rule["dataset_ids"] == [ids[0], ids[2], ids[4]]
    evaluated = transfer.wait_rule(rule["id"], ("REPLICATING",))
    eventually(replicating_is(transfer, rule["id"], 3), what="the three datasets evaluated", timeout_s=10)
    assert transfer.rule(rule["id"])["locks"] == {"ok": 3, "replicating": 3, "stuck": 0}, evaluated
    assert sorted(t["dataset_id"] for t in transfer.transfers(rule=rule["id"])) == sorted([ids[0], ids[2], ids[4]])
    later = ingest(archive, f"{run}-later", 2)  # their events match no id of the rule
    other = transfer.call(
        "POST", "/rules", (201,), json={"dataset_ids": [later[0]], "copies": 2, "site_expression": "tier=primary"}
    )
    eventually(replicating_is(transfer, other["id"], 1), what="the later rule evaluated", timeout_s=10)
    assert transfer.rule(rule["id"])["locks"]["replicating"] == 3
    for made in (rule, other):
        transfer.call("DELETE", f"/rules/{made['id']}", (204,))


def test_a_dataset_id_rule_naming_an_unknown_dataset_is_stuck_with_its_id(
    archive: ArchiveUnderTest, transfer: TransferUnderTest
) -> None:
    run = f"ids/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    known = ingest(archive, run, 1)[0]
    unknown = str(uuid.uuid4())
    body = {"dataset_ids": [known, unknown], "copies": 2, "site_expression": "tier=primary"}
    rule = transfer.call("POST", "/rules", (201,), json=body)
    stuck = transfer.wait_rule(rule["id"], ("STUCK",))
    assert f"1 of the rule's dataset_ids are not in the archive: {unknown}" in stuck["reason"]
    assert [t["dataset_id"] for t in transfer.transfers(rule=rule["id"])] == [known]  # the known one is copied
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))


def replicating_is(transfer: TransferUnderTest, rule_id: str, count: int) -> Callable[[], bool]:
    return lambda: bool(transfer.rule(rule_id)["locks"]["replicating"] == count)


def test_suspend_resume_and_delete(archive: ArchiveUnderTest, transfer: TransferUnderTest) -> None:
    run = f"susp/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    ingest(archive, run, 3)
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(collections=[run]))
    transfer.wait_rule(rule["id"], ("REPLICATING",))
    suspended = transfer.call("POST", f"/rules/{rule['id']}/suspend")
    assert suspended["state"] == "SUSPENDED" and suspended["reason"] == "suspended by admin"
    assert rule["id"] in [r["id"] for r in transfer.call("GET", "/rules", params={"state": "SUSPENDED"})["items"]]
    resumed = transfer.call("POST", f"/rules/{rule['id']}/resume")
    assert resumed["state"] == "REPLICATING"
    transfer.wait_rule(rule["id"], ("REPLICATING",))
    wanted = transfer.transfers(rule=rule["id"])
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))
    transfer.call("GET", f"/rules/{rule['id']}", (404,))
    states = {transfer.call("GET", f"/transfers/{t['id']}")["state"] for t in wanted}
    assert len(wanted) == 3 and states == {"CANCELLED"}, "transfers no rule wants any more are cancelled"


def test_grouping_all_puts_every_dataset_at_the_same_sites(
    archive: ArchiveUnderTest, transfer: TransferUnderTest
) -> None:
    run = f"all/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    ingest(archive, run, 10)
    body = rule_body(collections=[run], copies=1, site_expression="site-b | site-c", grouping="all")
    rule = transfer.wait_rule(transfer.call("POST", "/rules", (201,), json=body)["id"], ("REPLICATING",))
    assert rule["chosen_sites"] is not None and len(rule["chosen_sites"]) == 1
    assert {t["destination"] for t in transfer.transfers(rule=rule["id"])} == set(rule["chosen_sites"])


async def test_an_event_delivered_twice_changes_nothing(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, nats_server: NatsPart
) -> None:
    run = f"twice/{uuid.uuid4().hex[:8]}"
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(collections=["twice/*"]))
    transfer.wait_rule(rule["id"], ("OK",))
    ingest(archive, run, 5)
    eventually(lambda: transfer.rule(rule["id"])["locks"]["replicating"] == 5, what="the event", timeout_s=10)
    before = transfer.transfers(rule=rule["id"])
    seen = events_seen(transfer)
    # Re-publish the archive's event under a new message id (JetStream's dedupe cannot drop it): as a consumer
    # redelivery would hand it over again.
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe(DATASET_REGISTERED, durable=None)
        ours: list[bytes] = []
        while True:
            try:
                messages = await subscription.fetch(batch=100, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for message in messages:
                await message.ack()
                if run in message.data.decode():
                    ours.append(message.data)
        await subscription.unsubscribe()
        replayed = 0
        for data in ours:
            await js.publish(DATASET_REGISTERED, data, headers={MSG_ID_HEADER: str(uuid.uuid4())})
            replayed += len(json.loads(data)["datasets"])
    finally:
        await nc.close()
    assert replayed == 5
    eventually(lambda: events_seen(transfer) >= seen + 1, what="the replayed event to be evaluated", timeout_s=10)
    after = transfer.transfers(rule=rule["id"])
    assert [(t["id"], t["state"]) for t in after] == [(t["id"], t["state"]) for t in before]
    assert transfer.rule(rule["id"])["locks"] == {"ok": 5, "replicating": 5, "stuck": 0}
    print(f"replayed {replayed} datasets: {len(after)} transfers before and after, no duplicate")


def events_seen(transfer: TransferUnderTest) -> float:
    metrics = transfer.client.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sgs_transfer_events_total{") and DATASET_REGISTERED in line
    )


def scraped(transfer: TransferUnderTest, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(transfer.client.get("/metrics").text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def test_stuck_rules_open_transfers_and_the_consumers_backlog_are_counted_at_scrape(
    transfer: TransferUnderTest,
) -> None:
    stuck_before = scraped(transfer, "sgs_transfer_rules", state="STUCK")
    assert stuck_before is not None
    rule = transfer.call("POST", "/rules", (201,), json=rule_body(copies=3))
    assert scraped(transfer, "sgs_transfer_rules", state="STUCK") == stuck_before + 1
    transfer.call("DELETE", f"/rules/{rule['id']}", (204,))
    assert scraped(transfer, "sgs_transfer_rules", state="STUCK") == stuck_before
    eventually(
        lambda: scraped(transfer, "sgs_transfer_consumer_pending", consumer="evaluator") is not None,
        what="the event consumer's backlog to be exported",
        timeout_s=10,
    )
    for site in SITES:
        assert scraped(transfer, "sgs_transfer_transfers", destination=site, state="STUCK") is not None
