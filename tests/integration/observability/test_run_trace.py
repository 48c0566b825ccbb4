"""One Run's trace, read back from the real Jaeger: the operator's root, reconcile and Job-creation spans, each
task attempt's span from the bridge (attempt, Site, node, exit reason, used vs requested), the archive requests
the tasks made, the NATS hop (the outbox's publish, the transfer service's consumption) and the replication it
caused — all under the one trace id derived from the Run's uid, each span under the right parent. And the trigger
hop: the Runs the trigger service starts from those registrations have a root span linked to its `create run`
span, which sits in the upstream Run's trace under its consumption of the archive's event."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from observed_stack import OTHER, SITE, Observed, observed_stack, run_through, serve_trigger, triggered_runs
from operator_kit import OperatorProcess, wait_for

from sgs.telemetry import Tracing, TracingSettings, configure, ids
from sgs.telemetry.context import CAUSE_ANNOTATION
from sgs.testing.jaeger import JaegerPart, links_of, parent_of, span_tags
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.prometheus import PrometheusPart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

FAN_OUT = 3


@pytest.fixture(scope="module")
def operator_settings(jaeger: JaegerPart) -> dict[str, str]:
    return {"SGS_TRACING_ENDPOINT": jaeger.otlp_endpoint}


@pytest.fixture(scope="module")
def tracings(jaeger: JaegerPart) -> Iterator[dict[str, Tracing]]:
    settings = TracingSettings.model_validate({"endpoint": jaeger.otlp_endpoint})
    made = {name: configure(name, settings) for name in ("sgs-archive", "sgs-transfer")}
    yield made
    for tracing in made.values():
        tracing.shutdown()


@pytest.fixture(scope="module")
def traced(
    kube: KubePart,
    operator: OperatorProcess,
    postgres: PostgresPart,
    nats_server: NatsPart,
    prometheus: PrometheusPart,
    jaeger: JaegerPart,
    tracings: dict[str, Tracing],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("traced")
    with observed_stack(
        kube, operator, postgres, nats_server, prometheus, workdir, tracings, jaeger.otlp_endpoint
    ) as stack:
        yield stack


def wait_trace(jaeger: JaegerPart, trace_id: int, complete: Any, timeout_s: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = jaeger.trace(trace_id)
        if complete(spans):
            return spans
        names = sorted({s["operationName"] for s in spans})
        assert time.monotonic() < deadline, f"trace {trace_id:032x} incomplete after {timeout_s} s: {names}"
        time.sleep(0.5)


def has_root(spans: list[dict[str, Any]]) -> bool:
    return any(s["operationName"].startswith("run ") for s in spans)


def test_a_runs_trace_holds_the_operator_every_task_the_archive_the_nats_hop_and_the_copies(
    traced: Observed, jaeger: JaegerPart
) -> None:
    run = f"traced-{uuid.uuid4().hex[:6]}"
    traced.archive.collection(run)
    rule = {"collections": [run], "copies": 2, "site_expression": f"{SITE} | {OTHER}"}
    traced.transfer.call("POST", "/rules", (201,), json=rule)
    status = run_through(traced, run, "obs-traced", FAN_OUT)
    assert status["tasks"]["succeeded"] == FAN_OUT, status
    trace_id = ids.run_trace_id(status["uid"])

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = [s["operationName"] for s in spans]
        return (
            any(n.startswith("run ") for n in names)
            and sum(n.startswith("task ") for n in names) == FAN_OUT + 1
            and names.count("POST /datasets/ingest") == FAN_OUT
            and names.count("register") >= FAN_OUT
        )

    spans = wait_trace(jaeger, trace_id, complete)
    by_id = {s["spanID"]: s for s in spans}
    service = {s["spanID"]: s["process"]["serviceName"] for s in spans}
    assert {s["traceID"].rjust(32, "0") for s in spans} == {f"{trace_id:032x}"}

    (root,) = [s for s in spans if s["operationName"].startswith("run ")]
    assert root["spanID"] == f"{ids.run_span_id(status['uid']):016x}" and parent_of(root) is None
    assert service[root["spanID"]] == "sgs-operator" and span_tags(root)["sgs.phase"] == "Failed"

    reconciles = {s["spanID"] for s in spans if s["operationName"] == "reconcile"}
    assert reconciles and all(parent_of(by_id[r]) == root["spanID"] for r in reconciles)
    creations = [s for s in spans if s["operationName"] == "create job"]
    assert len(creations) == FAN_OUT + 1 and all(parent_of(c) in reconciles for c in creations)

    tasks = {span_tags(s)["sgs.task"]: s for s in spans if s["operationName"].startswith("task ")}
    assert len(tasks) == FAN_OUT + 1
    for tid, task in tasks.items():
        tags = span_tags(task)
        assert service[task["spanID"]] == "sgs-bridge" and parent_of(task) == root["spanID"]
        assert task["spanID"] == f"{ids.task_span_id(status['uid'], tid, 0):016x}"  # the first attempt is 0
        assert (
            tags["sgs.attempt"] == 0 and tags["sgs.site"] == SITE and tags["k8s.node.name"] == traced.bridge.node_name
        )
        assert tags["sgs.cpu.requested"] == 1.0 and tags["sgs.memory.requested_bytes"] == 0.25 * 2**30
        assert tags["sgs.wall_seconds"] > 0 and "sgs.memory.max_rss_bytes" in tags and "sgs.cpu.used_seconds" in tags
        assert tags["sgs.exit.reason"] == ("Error" if tid == "fail" else "Completed")
    task_ids = {t["spanID"] for t in tasks.values()}

    ingests = [s for s in spans if s["operationName"] == "POST /datasets/ingest"]
    assert all(service[s["spanID"]] == "sgs-archive" and parent_of(s) in task_ids for s in ingests)
    ingest_ids = {s["spanID"] for s in ingests}
    sends = [s for s in spans if s["operationName"] == "send sgs.dataset.registered"]
    assert len(sends) == FAN_OUT and all(parent_of(s) in ingest_ids for s in sends)
    send_ids = {s["spanID"] for s in sends}
    evaluations = [s for s in spans if s["operationName"] == "evaluate" and parent_of(s) in send_ids]
    assert len(evaluations) == FAN_OUT and {service[s["spanID"]] for s in evaluations} == {"sgs-transfer"}
    evaluation_ids = {s["spanID"] for s in evaluations}
    copies = [s for s in spans if s["operationName"] == "transfer" and parent_of(s) in evaluation_ids]
    assert len(copies) == FAN_OUT and {span_tags(s)["sgs.destination"] for s in copies} == {OTHER}
    print(f"trace {trace_id:032x}: {len(spans)} spans over {sorted(set(service.values()))}")


def test_a_triggered_runs_root_links_to_the_trigger_span_that_created_it_in_the_upstream_runs_trace(
    traced: Observed, jaeger: JaegerPart
) -> None:
    """Upstream Run → its tasks' registrations → the outbox's publish → the trigger service's consumption,
    group evaluation and Run creation, all in the upstream Run's trace; each triggered Run's own trace (from its
    uid) has a root span whose link is the `create run` span its annotation names."""
    run = f"upstream-{uuid.uuid4().hex[:6]}"
    traced.archive.collection(run)
    serve_trigger(traced, "obs-traced-next", run)
    status = run_through(traced, run, "obs-traced-up", FAN_OUT)
    assert status["tasks"]["succeeded"] == FAN_OUT, status
    upstream = f"{ids.run_trace_id(status['uid']):032x}"
    wait_for(lambda: len(triggered_runs(traced, "obs-traced-next")) >= FAN_OUT, "a triggered Run per exposure", 90)
    triggered = triggered_runs(traced, "obs-traced-next")
    assert len(triggered) == FAN_OUT

    causes: dict[str, tuple[str, str]] = {}  # triggered Run → (trace id, span id) of its annotation
    for item in triggered:
        name = item["metadata"]["name"]
        version, trace_hex, span_hex, _ = item["metadata"]["annotations"][CAUSE_ANNOTATION].split("-")
        assert version == "00" and trace_hex == upstream, (name, trace_hex)  # the upstream Run's trace
        causes[name] = (trace_hex, span_hex)
        assert traced.cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=180)["phase"] == "Succeeded"

    def trigger_hop_complete(spans: list[dict[str, Any]]) -> bool:
        created = {s["spanID"] for s in spans if s["operationName"] == "create run"}
        return {span for _, span in causes.values()} <= created

    spans = wait_trace(jaeger, int(upstream, 16), trigger_hop_complete)
    by_id = {s["spanID"]: s for s in spans}
    service = {s["spanID"]: s["process"]["serviceName"] for s in spans}
    for name, (_, span_id) in causes.items():
        create = by_id[span_id]
        assert service[span_id] == "sgs-trigger" and span_tags(create)["sgs.run"].endswith(f"/{name}")
        assert span_tags(create)["sgs.run.existed"] is False
        group = by_id[str(parent_of(create))]
        assert group["operationName"] == "evaluate group" and span_tags(group)["sgs.pipeline"] == "obs-traced-next"
        assert span_tags(group)["sgs.group.complete"] is True
        consumed = by_id[str(parent_of(group))]
        assert (consumed["operationName"], service[consumed["spanID"]]) == ("trigger", "sgs-trigger")
        publish = by_id[str(parent_of(consumed))]  # the consumer span is in its publisher's trace, under it
        assert publish["operationName"].startswith("send ") and service[publish["spanID"]] == "sgs-archive"
        ingest = by_id[str(parent_of(publish))]
        assert ingest["operationName"] == "POST /datasets/ingest"
        assert by_id[str(parent_of(ingest))]["operationName"].startswith("task ")  # the upstream task's span

    for item in triggered:
        name, uid = item["metadata"]["name"], item["metadata"]["uid"]
        own = wait_trace(jaeger, ids.run_trace_id(uid), has_root)
        (root,) = [s for s in own if s["operationName"].startswith("run ")]
        assert root["spanID"] == f"{ids.run_span_id(uid):016x}" and parent_of(root) is None
        assert span_tags(root)["sgs.pipeline"] == "obs-traced-next" and span_tags(root)["sgs.phase"] == "Succeeded"
        assert links_of(root) == [causes[name]]
    print(f"trace {upstream}: {len(spans)} spans; {FAN_OUT} triggered Runs link back to it")
