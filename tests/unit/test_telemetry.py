"""sgs.telemetry: derived ids, context carriers, recorded spans, sampling, and the metrics naming rules.

Spans go to the SDK's in-memory exporter here (no network); tests/integration/observability reads them back
from a real Jaeger.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sgs.telemetry import Tracing, TracingSettings, configure, context, ids, messaging, metrics, runs
from sgs.telemetry.tracing import FinishedSpan

UID = "5b0c7a1e-9d7f-4c39-9a51-2f3e0c1d2b44"


def traced(sampling: float = 1.0) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    settings = TracingSettings.model_validate({"endpoint": None, "sampling": sampling})
    return configure("sgs-test", settings, exporter=exporter), exporter


def finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.flush()
    return list(exporter.get_finished_spans())


# ------------------------------------------------------------------------------------------------ ids


def test_run_ids_are_derived_from_the_uid_alone() -> None:
    assert ids.run_trace_id(UID) == ids.run_trace_id(UID)
    assert ids.run_trace_id(UID) != ids.run_trace_id(UID + "x")
    assert ids.task_span_id(UID, "a[1]", 1) != ids.task_span_id(UID, "a[1]", 2)
    assert ids.task_span_id(UID, "a[1]", 1) != ids.run_span_id(UID)
    assert ids.run_trace_id(UID) < 2**128 and ids.run_span_id(UID) < 2**64


def test_task_traceparent_is_w3c_and_parses_back() -> None:
    text = ids.task_traceparent(UID, "correct.dark[3]", 2)
    assert len(text) == 55 and text.startswith("00-") and text.endswith("-01")
    assert ids.parse_traceparent(text) == (ids.run_trace_id(UID), ids.task_span_id(UID, "correct.dark[3]", 2), 1)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # all-zero trace id
        "00-" + "1" * 32 + "-" + "0" * 16 + "-01",  # all-zero span id
        "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",  # forbidden version
        "00-" + "1" * 31 + "-" + "1" * 16 + "-01",
    ],
)
def test_malformed_traceparents_are_refused(text: str | None) -> None:
    assert ids.parse_traceparent(text) is None
    assert context.extract({"traceparent": text or ""}) is None


# ------------------------------------------------------------------------------------------------ off


def test_off_by_default_imports_no_sdk_and_records_nothing() -> None:
    code = (
        "import sys\n"
        "from sgs.telemetry import configure\n"
        "t = configure('x')\n"
        "with t.tracer.start_as_current_span('s') as s: assert not s.is_recording()\n"
        "t.record(__import__('sgs.telemetry.runs', fromlist=['x']).run_span("
        "'u', 'r', __import__('datetime').datetime.now(), __import__('datetime').datetime.now(), {}))\n"
        "assert not t.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}  # no SGS_TRACING_* / OTEL_* inherited
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_an_endpoint_turns_tracing_on() -> None:
    settings = TracingSettings.model_validate({"SGS_TRACING_ENDPOINT": "http://127.0.0.1:9", "sampling": 0.5})
    assert settings.enabled and settings.sampling == 0.5
    assert not TracingSettings.model_validate({"endpoint": "http://x", "sampling": 0}).enabled
    with pytest.raises(ValueError, match="sampling"):
        TracingSettings.model_validate({"sampling": 1.5})


# ------------------------------------------------------------------------------------------------ spans


def test_recorded_run_and_task_spans_keep_their_derived_ids() -> None:
    tracing, exporter = traced()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tracing.record(runs.run_span(UID, "ns/r1", start, start + timedelta(seconds=9), {"sgs.site": "site-a"}))
    env = {
        "TRACEPARENT": ids.task_traceparent(UID, "t[0]", 1),
        "SGS_RUN_UID": UID,
        "SGS_RUN": "r1",
        "SGS_TASK_ID": "t[0]",
        "SGS_ATTEMPT": "1",
    }
    task = runs.task_span_from_env(env, start + timedelta(seconds=1), start + timedelta(seconds=3), {}, "OOMKilled")
    assert task is not None
    tracing.record(task)
    run_span, task_span = finished(tracing, exporter)
    assert run_span.context is not None and task_span.context is not None and task_span.parent is not None
    assert run_span.context.trace_id == task_span.context.trace_id == ids.run_trace_id(UID)
    assert run_span.parent is None and run_span.context.span_id == ids.run_span_id(UID)
    assert task_span.parent.span_id == ids.run_span_id(UID)
    assert task_span.context.span_id == ids.task_span_id(UID, "t[0]", 1)
    assert task_span.start_time == runs.ns(start + timedelta(seconds=1))
    assert task_span.attributes is not None and task_span.attributes["sgs.attempt"] == 1
    assert task_span.status.status_code is trace.StatusCode.ERROR and task_span.status.description == "OOMKilled"


def test_a_task_span_needs_the_runs_own_trace() -> None:
    env = {"TRACEPARENT": ids.task_traceparent("another-run", "t", 1), "SGS_RUN_UID": UID}
    assert runs.task_span_from_env(env, 0.0, 1.0, {}, None) is None
    assert runs.task_span_from_env({"SGS_RUN_UID": UID}, 0.0, 1.0, {}, None) is None


def test_spans_made_in_a_run_context_join_the_runs_trace() -> None:
    tracing, exporter = traced()
    reconcile = tracing.tracer.start_as_current_span("reconcile", context=context.run_context(UID))
    with reconcile, tracing.tracer.start_as_current_span("create job"):
        pass
    child, parent = finished(tracing, exporter)
    assert parent.parent is not None and parent.parent.span_id == ids.run_span_id(UID)
    assert child.parent is not None and parent.context is not None and child.parent.span_id == parent.context.span_id
    assert child.context is not None and child.context.trace_id == ids.run_trace_id(UID)


def test_sampling_is_decided_by_the_trace_id_so_components_agree() -> None:
    first, first_spans = traced(0.3)
    second, second_spans = traced(0.3)
    uids = [f"run-{i}" for i in range(400)]
    for tracing in (first, second):
        for uid in uids:
            with tracing.tracer.start_as_current_span("work", context=context.run_context(uid)):
                pass
    kept = [
        {s.context.trace_id for s in finished(t, e) if s.context}
        for t, e in ((first, first_spans), (second, second_spans))
    ]
    assert kept[0] == kept[1]
    assert 0.2 < len(kept[0]) / len(uids) < 0.4


# ------------------------------------------------------------------------------------------------ carriers


def test_env_and_headers_carry_the_current_span() -> None:
    tracing, exporter = traced()
    assert context.env_of() == {} and context.current_traceparent() is None
    with tracing.tracer.start_as_current_span("parent") as span:
        env = context.env_of()
        stored = context.current_traceparent()
        assert ids.parse_traceparent(env["TRACEPARENT"]) == (
            span.get_span_context().trace_id,
            span.get_span_context().span_id,
            1,
        )
    assert stored == env["TRACEPARENT"]
    with tracing.tracer.start_as_current_span("child", context=context.from_env(env)):
        pass
    with tracing.tracer.start_as_current_span("later", context=context.traceparent_context(stored)):
        pass
    parent, child, later = finished(tracing, exporter)
    assert parent.context is not None
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert later.parent is not None and later.parent.span_id == parent.context.span_id


@dataclass
class Message:
    """The two attributes of a nats.py Msg that consuming() reads (the integration tests use real NATS)."""

    subject: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: Any = None


def test_a_nats_hop_links_consumer_to_producer() -> None:
    tracing, exporter = traced()
    headers = {messaging.MSG_ID_HEADER: "m-1"}
    with tracing.tracer.start_as_current_span("request"), messaging.publishing(tracing, "sgs.dataset.x", headers):
        pass
    assert "traceparent" in headers
    with messaging.consuming(tracing, Message("sgs.dataset.x", headers)):
        pass
    send, request, process = finished(tracing, exporter)
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.parent is not None and request.context is not None and send.parent.span_id == request.context.span_id
    assert process.parent is not None and send.context is not None and process.parent.span_id == send.context.span_id
    assert process.attributes is not None and process.attributes["messaging.message.id"] == "m-1"


def test_a_message_without_context_starts_its_own_trace() -> None:
    tracing, exporter = traced()
    with messaging.consuming(tracing, Message("sgs.replica.available")):
        pass
    (process,) = finished(tracing, exporter)
    assert process.parent is None


def test_tracing_off_adds_no_headers() -> None:
    headers: dict[str, str] = {}
    with messaging.publishing(Tracing.off(), "sgs.x", headers):
        pass
    assert headers == {}


def test_a_recorded_span_can_link_another_trace() -> None:
    tracing, exporter = traced()
    trigger = trace.SpanContext(ids.run_trace_id("upstream"), ids.run_span_id("upstream"), is_remote=True)
    span = FinishedSpan("run next", ids.run_trace_id(UID), ids.run_span_id(UID), None, 1, 2, links=(trigger,))
    tracing.record(span)
    (recorded,) = finished(tracing, exporter)
    assert [link.context.trace_id for link in recorded.links] == [ids.run_trace_id("upstream")]


# ------------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    ("name", "kind", "labels", "problem"),
    [
        ("sgs_x_jobs_created", "counter", (), "_total"),
        ("sgs_x_pending_total", "gauge", (), "only counters"),
        ("sgs_x_latency_milliseconds", "histogram", (), "base unit"),
        ("sgs_x_rss_megabytes", "histogram", (), "base unit"),
        ("x_requests_total", "counter", (), "sgs_"),
        ("sgs_x_tasks_total", "counter", ("task",), "unbounded"),
        ("sgs_x_datasets_total", "counter", ("dataset_id",), "unbounded"),
        ("sgs_x_things_total", "counter", ("colour",), "not among the bounded labels"),
    ],
)
def test_metric_names_break_a_rule(name: str, kind: str, labels: tuple[str, ...], problem: str) -> None:
    found = metrics.name_problems(name, kind, labels)
    assert any(problem in p.problem for p in found), found


def test_a_registry_is_checked_family_by_family() -> None:
    registry = CollectorRegistry()
    Counter("sgs_x_jobs_created_total", "ok", ["site"], registry=registry).labels("a").inc()
    Histogram("sgs_x_wall_seconds", "ok", ["pipeline"], registry=registry).labels("p").observe(1)
    Gauge("sgs_x_queue_megabytes", "bad unit", ["task"], registry=registry).labels("t-1").set(1)
    problems = [str(p) for p in metrics.registry_problems(registry)]
    assert problems == [
        "sgs_x_queue_megabytes: unit 'megabytes': use a base unit (seconds, bytes, ratio, info, timestamp_seconds)",
        "sgs_x_queue_megabytes: label 'task' is unbounded (one series per object)",
    ]
    assert {"sgs_x_jobs_created_total", "sgs_x_wall_seconds_bucket"} <= metrics.exported_names(registry)


def test_client_calls_outside_traced_work_start_no_trace() -> None:
    tracing, exporter = traced()
    with tracing.tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):  # a poll, in no trace
        pass
    with (
        tracing.tracer.start_as_current_span("POST /datasets/ingest", kind=SpanKind.SERVER),
        tracing.tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT),
    ):
        pass
    assert [span.name for span in finished(tracing, exporter)] == ["INSERT", "POST /datasets/ingest"]
