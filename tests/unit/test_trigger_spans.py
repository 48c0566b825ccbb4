"""The trigger service's part of the traces (SDK in-memory exporter): a consumer span per event in the event's
trace, an "evaluate group" span under it and a "create run" span under that; the Run it creates carries that
span's traceparent, and the operator links the Run's root span to it. Jaeger reads the real thing back in
tests/integration/observability/test_run_trace.py.

The archive and the API server are stand-ins recording what they were asked (the consumer's own logic and the
SDK's spans are real); the trigger's NATS, archive and API server path is tested in tests/integration/trigger.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest
from sgs_operator.tracing import RunTracer
from sgs_trigger.book import PipelineBook, SiteBook
from sgs_trigger.consumer import Consumer
from sgs_trigger.metrics import TriggerMetrics
from sgs_trigger.settings import TriggerSettings

from sgs.events import DATASET_REGISTERED, DatasetRegistered, RegisteredDataset
from sgs.model.dataset import DimensionUniverse
from sgs.model.replica import ReplicaFile
from sgs.telemetry import Tracing, TracingSettings, configure, ids
from sgs.telemetry.context import CAUSE_ANNOTATION, span_context_of
from sgs.telemetry.metrics import registry_problems

UNIVERSE = DimensionUniverse.model_validate(
    yaml.safe_load((Path(__file__).resolve().parents[2] / "services/archive/sgs_archive/dimensions.yaml").read_text())
)
UPSTREAM_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SEND_SPANS = (0xB7AD6B7169203331, 0xC7AD6B7169203332)
TRIGGER = {
    "name": "per-observation",
    "input": "exposures",
    "datasetType": "raw",
    "where": "instrument = 'NISP'",
    "groupBy": ["instrument", "observation"],
    "complete": {"count": 2},
}


@dataclass
class Message:
    """What the consumer reads of a JetStream message: subject, data, headers; ``ack`` recorded."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    acked: bool = False

    async def ack(self) -> None:
        self.acked = True


@dataclass
class Archive:
    """The archive's answers for one group: its datasets (the replica events name none here)."""

    items: list[dict[str, Any]] = field(default_factory=list)

    async def universe(self) -> DimensionUniverse:
        return UNIVERSE

    async def query(self, dataset_type: str, collections: Any, where: str) -> list[dict[str, Any]]:
        return self.items

    async def available_at(self, dataset_ids: Any, site: str) -> set[uuid.UUID]:
        return set()

    async def placement(self, observation: int) -> tuple[str, str | None] | None:
        return None  # not placed: the group completes where its data is


@dataclass
class Kube:
    created: list[dict[str, Any]] = field(default_factory=list)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body


def registered(exposure: int) -> tuple[DatasetRegistered, dict[str, Any]]:
    data_id = {"instrument": "NISP", "observation": 7, "exposure": exposure}
    replica = ReplicaFile(site="site-a", uri=f"file:///d/{exposure}", size=1, adler32="00000001", sha256="0" * 64)
    dataset = RegisteredDataset(id=uuid.uuid4(), dataset_type="raw", data_id=data_id, run="raw/x", replicas=(replica,))
    item = {"id": str(dataset.id), "data_id": data_id, "run": "raw/x"}
    return DatasetRegistered(datasets=(dataset,)), item


def consumer(tracing: Tracing, archive: Archive, kube: Kube) -> tuple[Consumer, TriggerMetrics]:
    pipelines, sites = PipelineBook(), SiteBook()
    manifest = {"metadata": {"namespace": "ns", "name": "nir"}, "spec": pipeline_spec()}
    pipelines.replace([manifest])
    sites.replace([{"metadata": {"namespace": "ns", "name": "site-a"}, "spec": {}}])
    metrics = TriggerMetrics()
    settings = TriggerSettings(durable="trigger-test")
    made = Consumer(settings, cast(Any, None), cast(Any, kube), cast(Any, archive), pipelines, sites, metrics, tracing)
    return made, metrics


def pipeline_spec() -> dict[str, Any]:
    return {
        "inputs": [{"name": "exposures"}],
        "executables": [{"name": "work", "command": "work", "inputs": [{"name": "exposures"}]}],
        "steps": [{"name": "work", "executable": "work", "inputs": {"exposures": {"input": "exposures"}}}],
        "triggers": [TRIGGER],
    }


def two_events(archive: Archive, headers: bool = True) -> list[Message]:
    """Two registrations completing the one group, each published in the upstream trace by its own span."""
    messages = []
    for exposure, send_span in zip((1, 2), SEND_SPANS, strict=True):
        event, item = registered(exposure)
        archive.items.append(item)
        carried = {"traceparent": ids.format_traceparent(UPSTREAM_TRACE, send_span)} if headers else None
        messages.append(Message(DATASET_REGISTERED, event.model_dump_json().encode(), carried))
    return messages


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return configure("sgs-trigger", TracingSettings.model_validate({"endpoint": None}), exporter=exporter), exporter


def by_name(tracing: Tracing, exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    assert tracing.flush()
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_group_completed_by_two_events_is_traced_under_the_first_and_linked_to_the_second() -> None:
    tracing, exporter = traced()
    archive, kube = Archive(), Kube()
    made, _ = consumer(tracing, archive, kube)
    messages = two_events(archive)

    outcome = asyncio.run(made.handle(cast(Any, messages)))

    assert len(outcome.created) == 1 and all(m.acked for m in messages)
    spans = by_name(tracing, exporter)
    consumed = spans["trigger"]
    assert len(consumed) == 2 and {s.kind for s in consumed} == {SpanKind.CONSUMER}
    assert all(s.context is not None and s.context.trace_id == UPSTREAM_TRACE for s in consumed)
    assert sorted(s.parent.span_id for s in consumed if s.parent is not None) == sorted(SEND_SPANS)
    first = next(s for s in consumed if s.parent is not None and s.parent.span_id == SEND_SPANS[0])
    second = next(s for s in consumed if s is not first)

    (group,) = spans["evaluate group"]
    assert group.parent is not None and first.context is not None and group.parent.span_id == first.context.span_id
    assert second.context is not None and [link.context.span_id for link in group.links] == [second.context.span_id]
    assert group.attributes is not None and group.attributes["sgs.group.complete"] is True
    assert group.attributes["sgs.pipeline"] == "nir" and group.attributes["sgs.site"] == "site-a"

    (create,) = spans["create run"]
    assert create.kind is SpanKind.CLIENT and create.parent is not None and group.context is not None
    assert create.parent.span_id == group.context.span_id and create.context is not None
    assert create.attributes is not None and create.attributes["sgs.run.existed"] is False

    (run,) = kube.created
    cause = span_context_of(run["metadata"]["annotations"][CAUSE_ANNOTATION])
    assert cause is not None and (cause.trace_id, cause.span_id) == (UPSTREAM_TRACE, create.context.span_id)


def test_the_operator_links_a_triggered_runs_root_span_to_the_create_run_span() -> None:
    tracing, exporter = traced()
    archive, kube = Archive(), Kube()
    made, _ = consumer(tracing, archive, kube)
    asyncio.run(made.handle(cast(Any, two_events(archive))))
    (run,) = kube.created
    uid = str(uuid.uuid4())
    start = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

    tracer = RunTracer(tracing, uid, "ns/r", run["metadata"]["annotations"][CAUSE_ANNOTATION])
    tracer.run_ended(start, start + timedelta(seconds=5), "Succeeded", "site-a", "nir", {})

    spans = by_name(tracing, exporter)
    (root,) = spans["run ns/r"]
    (create,) = spans["create run"]
    assert root.context is not None and root.context.trace_id == ids.run_trace_id(uid)
    assert create.context is not None
    assert [(link.context.trace_id, link.context.span_id) for link in root.links] == [
        (UPSTREAM_TRACE, create.context.span_id)
    ]


def test_a_run_without_a_cause_or_with_a_malformed_one_has_no_link() -> None:
    tracing, exporter = traced()
    start = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    for key, cause in (("ns/a", None), ("ns/b", "00-not-a-traceparent-01"), ("ns/c", f"00-{'0' * 32}-{'1' * 16}-01")):
        RunTracer(tracing, str(uuid.uuid4()), key, cause).run_ended(start, start, "Succeeded", "s", "p", {})
    roots = [s for s in exporter.get_finished_spans() if s.name.startswith("run ")] if tracing.flush() else []
    assert len(roots) == 3 and all(not root.links for root in roots)


def test_off_the_run_still_names_the_events_context_and_nothing_is_recorded() -> None:
    archive, kube = Archive(), Kube()
    made, _ = consumer(Tracing.off("sgs-trigger"), archive, kube)
    asyncio.run(made.handle(cast(Any, two_events(archive))))
    (run,) = kube.created
    cause = span_context_of(run["metadata"]["annotations"][CAUSE_ANNOTATION])
    assert cause is not None and (cause.trace_id, cause.span_id) == (UPSTREAM_TRACE, SEND_SPANS[0])


def test_events_without_trace_context_make_a_run_without_a_cause() -> None:
    archive, kube = Archive(), Kube()
    made, _ = consumer(Tracing.off("sgs-trigger"), archive, kube)
    asyncio.run(made.handle(cast(Any, two_events(archive, headers=False))))
    (run,) = kube.created
    assert CAUSE_ANNOTATION not in run["metadata"]["annotations"]


def test_the_trigger_metrics_follow_the_conventions_and_count_a_creation() -> None:
    archive, kube = Archive(), Kube()
    made, metrics = consumer(Tracing.off("sgs-trigger"), archive, kube)
    text = generate_latest(metrics.registry).decode()
    assert 'sgs_trigger_runs_total{outcome="existing"} 0.0' in text  # known series at 0 before anything happens
    assert 'sgs_trigger_consumer_pending{consumer="trigger-test"} 0.0' in text

    asyncio.run(made.handle(cast(Any, two_events(archive))))

    text = generate_latest(metrics.registry).decode()
    assert 'sgs_trigger_runs_total{outcome="created"} 1.0' in text
    assert f'sgs_trigger_events_total{{subject="{DATASET_REGISTERED}"}} 2.0' in text
    assert "sgs_trigger_group_evaluation_seconds_count 1.0" in text
    assert [str(p) for p in registry_problems(metrics.registry)] == []
