"""The transfer service's spans, read back from a real Jaeger: a dataset registered inside a Run's trace is
evaluated, copied and registered at its destination's archive, all under that Run's trace id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from transfer_kit import (
    ADMIN,
    ArchiveUnderTest,
    TransferUnderTest,
    archive_service,
    checksums,
    known_sites,
    posix_site,
    posix_store,
    put_source,
    transfer_service,
)

from sgs.model.site import Site
from sgs.telemetry import Tracing, TracingSettings, configure, context, ids
from sgs.testing.jaeger import JaegerPart, parent_of, span_tags
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = [pytest.mark.integration]

LABELS = {"site-a": {"tier": "primary"}, "site-b": {"tier": "primary"}}


@pytest.fixture(scope="module")
def tracings(jaeger: JaegerPart) -> Iterator[dict[str, Tracing]]:
    settings = TracingSettings.model_validate({"endpoint": jaeger.otlp_endpoint})
    made = {name: configure(name, settings) for name in ("sgs-archive", "sgs-transfer")}
    yield made
    for tracing in made.values():
        tracing.shutdown()


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart, tracings: dict[str, Tracing]) -> Iterator[ArchiveUnderTest]:
    with archive_service(postgres, nats_server.url, tracings["sgs-archive"]) as archive:
        archive.issue_site_tokens(list(LABELS))
        archive.dataset_type("raw", ["exposure", "detector"])
        yield archive


@pytest.fixture(scope="module")
def sites(archive: ArchiveUnderTest, tmp_path_factory: pytest.TempPathFactory) -> list[Site]:
    root = tmp_path_factory.mktemp("sites")
    return [posix_site(name, root, archive.url, labels) for name, labels in LABELS.items()]


@pytest.fixture(scope="module")
def transfer(
    archive: ArchiveUnderTest, nats_server: NatsPart, sites: list[Site], tracings: dict[str, Tracing]
) -> Iterator[TransferUnderTest]:
    book = known_sites(sites, archive.site_tokens, posix_store)
    with transfer_service(
        archive.dsn, nats_server.url, archive.url, book, tracings["sgs-transfer"], embedded_worker=True
    ) as transfer:
        yield transfer


def wait_spans(jaeger: JaegerPart, trace_id: int, wanted: set[str], timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = jaeger.trace(trace_id)
        names = {span["operationName"] for span in spans}
        if wanted <= names:
            return spans
        assert time.monotonic() < deadline, f"missing {sorted(wanted - names)}; have {sorted(names)}"
        time.sleep(0.3)


def test_a_copy_joins_the_trace_of_the_run_that_registered_its_dataset(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, sites: list[Site], jaeger: JaegerPart
) -> None:
    run = f"traced/{uuid.uuid4().hex[:8]}"
    archive.collection(run)
    rule = transfer.call("POST", "/rules", (201,), json={"collections": [run], "copies": 2, "site_expression": "*"})
    transfer.wait_rule(rule["id"], ("OK",), timeout_s=30)  # evaluated (against nothing yet) before the ingest
    uid = str(uuid.uuid4())
    store = posix_store(sites[0])
    dataset_id = uuid.uuid4()
    content = b"traced-bytes" * 100
    uri = put_source(store, "raw", dataset_id, content)
    dataset = {
        "id": str(dataset_id),
        "dataset_type": "raw",
        "data_id": {"instrument": "VIS", "exposure": 1, "detector": 1},
        "run": run,
        "replicas": [{"site": "site-a", "uri": uri, **checksums(content)}],
    }
    headers = dict(context.inject({}, context.task_context(uid, "ingest[0]", 1)))
    response = archive.client.post("/datasets/ingest", json={"datasets": [dataset]}, headers={**headers, **ADMIN})
    assert response.status_code == 200, response.text

    spans = wait_spans(
        jaeger,
        ids.run_trace_id(uid),
        {"POST /datasets/ingest", "send sgs.dataset.registered", "evaluate", "transfer", "copy", "register"},
    )
    named = {span["operationName"]: span for span in spans}
    # The registration at site-b announces sgs.replica.available, which is evaluated too: pick by subject.
    named["evaluate"] = next(
        s
        for s in spans
        if s["operationName"] == "evaluate" and span_tags(s)["messaging.destination.name"] == "sgs.dataset.registered"
    )
    service = {span["spanID"]: span["process"]["serviceName"] for span in spans}
    assert parent_of(named["evaluate"]) == named["send sgs.dataset.registered"]["spanID"]
    assert service[named["evaluate"]["spanID"]] == "sgs-transfer"
    assert parent_of(named["transfer"]) == named["evaluate"]["spanID"]
    assert parent_of(named["copy"]) == named["transfer"]["spanID"]
    assert parent_of(named["register"]) == named["transfer"]["spanID"]
    assert span_tags(named["transfer"])["sgs.destination"] == "site-b"
    assert span_tags(named["copy"])["sgs.source"] == "site-a"
    # The destination archive's request is a child of the worker's HTTP call inside "register".
    under_register = [s for s in spans if parent_of(s) == named["register"]["spanID"]]
    archive_side = [s for s in spans if parent_of(s) in {c["spanID"] for c in under_register}]
    assert any(
        service[s["spanID"]] == "sgs-archive" and s["operationName"].startswith("POST /replicas") for s in archive_side
    ), [(service[s["spanID"]], s["operationName"]) for s in archive_side]
