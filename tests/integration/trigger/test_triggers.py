"""Triggers end to end: datasets registered in the archive (real HTTP server on PostgreSQL, its outbox relayed to
NATS JetStream) become Runs on the real API server, created by a real `sgs trigger` process — one Run per
complete group, none for an incomplete one, one for an event delivered twice, none lost or doubled across a
kill -9, and a Gaia-style chain where one pipeline's registered outputs trigger the next."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from trigger_kit import API, Archive, Namespace, TriggerProcess, archive_service, eventually, pipeline, publish

from sgs.events import DATASET_REGISTERED, DatasetRegistered, RegisteredDataset, ReplicaStateChanged, replica_subject
from sgs.model.replica import ReplicaFile, ReplicaState
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration

PER_OBSERVATION: dict[str, Any] = {
    "name": "per-observation",
    "input": "exposures",
    "datasetType": "raw",
    "where": "instrument = 'NISP'",
    "groupBy": ["instrument", "observation"],
    "complete": {"count": 4},
}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[Archive]:
    with archive_service(postgres, nats_server.url) as archive:
        archive.dataset_type("raw", ["instrument", "exposure"])
        archive.dataset_type("nir_stack", ["instrument", "observation"])
        yield archive


@pytest.fixture(scope="module")
def trigger(
    kube: KubePart, nats_server: NatsPart, archive: Archive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TriggerProcess]:
    service = TriggerProcess(kube, nats_server.url, archive.url, tmp_path_factory.mktemp("trigger"))
    service.start()
    yield service
    service.stop()


@pytest.fixture
def namespace(kube: KubePart) -> Iterator[Namespace]:
    ns = Namespace(kube, f"trig-{uuid.uuid4().hex[:8]}")
    ns.site("site-a", {"tier": "primary"})
    ns.site("site-b", {"tier": "secondary"})
    yield ns
    ns.close()


def dithers(observation: int, exposures: range, instrument: str = "NISP") -> list[dict[str, Any]]:
    return [{"instrument": instrument, "exposure": observation * 10 + e, "observation": observation} for e in exposures]


def own(rule: dict[str, Any], ns: Namespace) -> dict[str, Any]:
    """The rule restricted to the test's own RUN collection (the service serves every namespace's Pipelines)."""
    return {**rule, "collections": [f"raw/{ns.name}"]}


def serve(trigger: TriggerProcess, ns: Namespace, manifest: dict[str, Any]) -> None:
    """Create the Pipeline and wait until the service serves it (it logs every change of its trigger set)."""
    before = trigger.log.read_text().count("serving ")
    ns.create("pipelines", manifest)
    eventually(lambda: trigger.log.read_text().count("serving ") > before, "the service to see the Pipeline")


def test_an_incomplete_group_creates_no_run_until_it_is_completed(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    serve(trigger, namespace, pipeline("nir", [own(PER_OBSERVATION, namespace)]))
    run = f"raw/{namespace.name}"

    first = archive.ingest("raw", run, dithers(7, range(3)), ["site-a"])
    archive.ingest("raw", run, dithers(8, range(1)) + dithers(7, range(1), instrument="VIS"), ["site-a"])
    trigger.wait_drained()
    assert namespace.runs() == [], "3 of 4 dithers (and the others of other groups) make no Run"

    last = archive.ingest("raw", run, dithers(7, range(3, 4)), ["site-a"])

    runs = eventually(namespace.runs, "the Run of observation 7")
    assert len(runs) == 1
    spec = runs[0]["spec"]
    assert spec["pipeline"] == "nir" and spec["site"] == "site-a"
    assert spec["inputs"]["exposures"]["datasetIds"] == first + last  # the 4 dithers, in data ID order
    group = json.loads(runs[0]["metadata"]["annotations"]["sgs.io/trigger-group"])
    assert group == {"key": {"instrument": "NISP", "observation": 7}, "site": "site-a", "trigger": "per-observation"}
    trigger.wait_drained()
    assert len(namespace.runs()) == 1


def test_an_event_delivered_twice_creates_one_run(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    serve(trigger, namespace, pipeline("nir", [own({**PER_OBSERVATION, "complete": {"count": 2}}, namespace)]))
    run = f"raw/{namespace.name}"
    ids = archive.ingest("raw", run, dithers(3, range(2)), ["site-b"])
    eventually(namespace.runs, "the Run of observation 3")
    trigger.wait_drained()
    existing = trigger.metric("sgs_trigger_runs_total", 'outcome="existing"')

    # The same registration again, as JetStream hands out a message whose acknowledgement was lost.
    again = DatasetRegistered(
        datasets=tuple(
            RegisteredDataset(
                id=uuid.UUID(i),
                dataset_type="raw",
                data_id=d,
                run=run,
                replicas=(ReplicaFile(site="site-b", uri="file:///x", size=1, adler32="00000001", sha256="0" * 64),),
            )
            for i, d in zip(ids, dithers(3, range(2)), strict=True)
        )
    )
    for _ in range(2):  # one at a time: two copies in one batch are one group, evaluated once
        publish(trigger.nats_url, DATASET_REGISTERED, again.model_dump_json().encode())
        trigger.wait_drained()

    assert len(namespace.runs()) == 1
    assert trigger.metric("sgs_trigger_runs_total", 'outcome="existing"') == existing + 2, "both copies were handled"


def test_a_replica_arriving_completes_an_all_known_group_at_that_site(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    """Four dithers registered together at site-a, then copied to site-b one by one (sgs.replica.available)."""
    rule = {**PER_OBSERVATION, "sites": "tier=secondary", "complete": {"allKnown": True}}
    serve(trigger, namespace, pipeline("nir", [own(rule, namespace)]))
    ids = archive.ingest("raw", f"raw/{namespace.name}", dithers(5, range(4)), ["site-a"])
    for dataset_id in ids[:3]:
        archive.add_replica(dataset_id, "site-b")
    trigger.wait_drained()
    assert namespace.runs() == [], "site-a is not a secondary Site, and site-b holds 3 of the 4"

    archive.add_replica(ids[3], "site-b")

    runs = eventually(namespace.runs, "the Run at site-b")
    assert [r["spec"]["site"] for r in runs] == ["site-b"]
    assert sorted(runs[0]["spec"]["inputs"]["exposures"]["datasetIds"]) == sorted(ids)


def test_a_restart_mid_group_loses_nothing_and_duplicates_nothing(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    serve(trigger, namespace, pipeline("nir", [own(PER_OBSERVATION, namespace)]))
    run = f"raw/{namespace.name}"
    archive.ingest("raw", run, dithers(9, range(2)) + dithers(10, range(4)), ["site-a"])
    eventually(namespace.runs, "the Run of observation 10")
    trigger.wait_drained()

    trigger.kill9()
    archive.ingest("raw", run, dithers(9, range(2, 3)), ["site-a"])  # while it is down
    trigger.start()
    archive.ingest("raw", run, dithers(9, range(3, 4)), ["site-a"])

    eventually(lambda: len(namespace.runs()) == 2, "the Run of observation 9")
    trigger.wait_drained()
    runs = {
        json.loads(r["metadata"]["annotations"]["sgs.io/trigger-group"])["key"]["observation"]: r
        for r in namespace.runs()
    }
    assert sorted(runs) == [9, 10]
    assert len(runs[9]["spec"]["inputs"]["exposures"]["datasetIds"]) == 4


def test_a_gaia_style_chain_fires_on_the_first_pipelines_registered_outputs(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    """Pipeline A stacks an observation's dithers; pipeline B fires on A's nir_stack products. A's outputs are
    registered here through the archive's API, as the operator registers a task's outputs (issue #15 item 5),
    in the RUN collection named after A's Run."""
    serve(trigger, namespace, pipeline("stack", [own(PER_OBSERVATION, namespace)]))
    catalogue = {
        "name": "per-stack",
        "input": "stacks",
        "datasetType": "nir_stack",
        "groupBy": ["instrument", "observation"],
        "complete": {"count": 1},
    }
    serve(trigger, namespace, pipeline("catalogue", [catalogue], inputs=("stacks",)))
    archive.ingest("raw", f"raw/{namespace.name}", dithers(4, range(4)), ["site-a"])
    first = eventually(namespace.runs, "pipeline A's Run")
    assert [r["spec"]["pipeline"] for r in first] == ["stack"]

    stacked = archive.ingest(
        "nir_stack", first[0]["metadata"]["name"], [{"instrument": "NISP", "observation": 4}], ["site-a"]
    )

    runs = eventually(lambda: [r for r in namespace.runs() if r["spec"]["pipeline"] == "catalogue"], "pipeline B's Run")
    assert runs[0]["spec"]["inputs"]["stacks"]["datasetIds"] == stacked
    assert runs[0]["spec"]["site"] == "site-a"


def set_phase(namespace: Namespace, site: str, phase: str) -> None:
    """The Site's status as the operator writes it (no operator runs in this module)."""
    path = f"{API}/namespaces/{namespace.name}/sites/{site}/status"
    body = json.dumps({"status": {"phase": phase}})
    response = namespace.call("PATCH", path, content=body, headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text


def test_a_placed_observation_held_at_two_sites_runs_once_at_its_placed_site(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    """Replicated to both Sites, each observation's group completes at both: its placement picks one — the
    primary, or the secondary while the primary is in maintenance. Unplaced, it would run at both."""
    namespace.site("site-c")
    for site, phase in (("site-a", "Ready"), ("site-b", "Ready"), ("site-c", "Maintenance")):
        set_phase(namespace, site, phase)
    placements = [
        {"dimension": "observation", "value": 51, "primary_site": "site-b", "secondary_site": "site-a"},
        {"dimension": "observation", "value": 52, "primary_site": "site-c", "secondary_site": "site-a"},
    ]
    archive.ok("PUT", "/placements", json={"placements": placements})
    serve(trigger, namespace, pipeline("nir", [own(PER_OBSERVATION, namespace)]))
    run = f"raw/{namespace.name}"

    archive.ingest("raw", run, dithers(51, range(4)) + dithers(52, range(4)), ["site-a", "site-b"])

    eventually(lambda: len(namespace.runs()) >= 2, "a Run per observation")
    trigger.wait_drained()
    where = sorted((r["spec"]["site"], group_of(r)) for r in namespace.runs())
    assert where == [("site-a", 52), ("site-b", 51)]


def group_of(run: dict[str, Any]) -> int:
    observation: int = json.loads(run["metadata"]["annotations"]["sgs.io/trigger-group"])["key"]["observation"]
    return observation


def test_a_replica_event_without_its_data_id_is_completed_from_the_archive(
    trigger: TriggerProcess, archive: Archive, namespace: Namespace
) -> None:
    """An archive older than the event's data_id/run fields names only the dataset: the trigger looks it up."""
    serve(trigger, namespace, pipeline("nir", [own({**PER_OBSERVATION, "complete": {"count": 2}}, namespace)]))
    run = f"raw/{namespace.name}"
    ids = archive.ingest("raw", run, dithers(61, range(2)), ["site-a"])
    eventually(lambda: len(namespace.runs()) == 1, "the Run at site-a")
    for number, dataset_id in enumerate(ids):
        change = ReplicaStateChanged(
            replica_id=10_000 + number,
            dataset_id=uuid.UUID(dataset_id),
            dataset_type="raw",
            site="site-b",
            uri=f"file:///data/site-b/{dataset_id}.fits",
            size=1,
            adler32="00000001",
            sha256="0" * 64,
        )
        assert change.data_id is None and change.run is None
        publish(trigger.nats_url, replica_subject(ReplicaState.AVAILABLE), change.model_dump_json().encode())

    runs = eventually(lambda: [r for r in namespace.runs() if r["spec"]["site"] == "site-b"], "the Run at site-b")
    assert sorted(runs[0]["spec"]["inputs"]["exposures"]["datasetIds"]) == sorted(ids)
