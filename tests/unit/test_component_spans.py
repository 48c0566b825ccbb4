"""The operator's and the bridge's spans in a Run's trace (SDK in-memory exporter; Jaeger reads them back in
tests/integration/observability)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sgs_bridge.state import JobState, Phase
from sgs_bridge.tracing import container_env, requested, task_span
from sgs_operator.tracing import RunTracer

from sgs.telemetry import Tracing, TracingSettings, configure, ids

UID = "0d3c8f0e-4a8b-4b8e-8f43-6b1c2a9e7d10"
START = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return configure("sgs-test", TracingSettings.model_validate({"endpoint": None}), exporter=exporter), exporter


def spans(tracing: Tracing, exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    assert tracing.flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_reconcile_that_created_jobs_is_their_parent_under_the_runs_root() -> None:
    tracing, exporter = traced()
    tracer = RunTracer(tracing, UID, "ns/r1")
    with tracer.reconcile("site-a"):
        tracer.count(started=1)
        with tracer.job_creation("r1-a-1", "a[0]", 1, "site-a"):
            tracer.count(created=1)
    found = spans(tracing, exporter)
    reconcile, job = found["reconcile"], found["create job"]
    assert reconcile.context is not None and job.context is not None and job.parent is not None
    assert reconcile.context.trace_id == job.context.trace_id == ids.run_trace_id(UID)
    assert reconcile.parent is not None and reconcile.parent.span_id == ids.run_span_id(UID)
    assert job.parent.span_id == reconcile.context.span_id and job.kind is SpanKind.CLIENT
    assert job.attributes is not None and job.attributes["sgs.task"] == "a[0]" and job.attributes["sgs.attempt"] == 1
    assert reconcile.attributes is not None and reconcile.attributes["sgs.jobs.created"] == 1


def test_a_reconcile_that_did_nothing_is_not_recorded() -> None:
    tracing, exporter = traced()
    tracer = RunTracer(tracing, UID, "ns/r1")
    for _ in range(3):
        with tracer.reconcile("site-a"):
            pass
    assert spans(tracing, exporter) == {}


def test_the_runs_root_span_has_the_derived_ids_and_a_failed_runs_error() -> None:
    tracing, exporter = traced()
    RunTracer(tracing, UID, "ns/r1").run_ended(
        START, START + timedelta(seconds=30), "Failed", "site-a", "nir", {"total": 3, "failed": 1}
    )
    root = spans(tracing, exporter)["run ns/r1"]
    assert root.context is not None and root.parent is None
    assert (root.context.trace_id, root.context.span_id) == (ids.run_trace_id(UID), ids.run_span_id(UID))
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None and root.attributes["sgs.tasks.failed"] == 1


def test_with_tracing_off_the_operator_records_nothing_and_raises_nothing() -> None:
    tracer = RunTracer(Tracing.off(), UID, "ns/r1")
    with tracer.reconcile("site-a"), tracer.job_creation("j", "a[0]", 1, "site-a") as span:
        tracer.count(created=1)
        assert not span.is_recording()
    tracer.run_ended(START, START, "Succeeded", "site-a", "nir", {})


def pod(env: list[dict[str, Any]], resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    container = {"name": "task", "env": env, "resources": resources or {}}
    return {"metadata": {"name": "r1-a-0-1", "uid": "pod-uid"}, "spec": {"containers": [container]}}


def task_env(attempt: int = 2) -> list[dict[str, Any]]:
    return [
        {"name": "TRACEPARENT", "value": ids.task_traceparent(UID, "a[0]", attempt)},
        {"name": "SGS_RUN_UID", "value": UID},
        {"name": "SGS_RUN", "value": "r1"},
        {"name": "SGS_TASK_ID", "value": "a[0]"},
        {"name": "SGS_ATTEMPT", "value": str(attempt)},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]


def test_the_bridges_task_span_carries_attempt_site_node_exit_and_used_vs_requested() -> None:
    usage = {"wall_s": 4.0, "cpu_s": 3.0, "max_rss_mb": 512.0}
    state = JobState(Phase.FAILED, "4711", reason="OOMKilled", message="limit", exit_code=137, usage=usage)
    resources = {"requests": {"cpu": "2"}, "limits": {"memory": "1Gi"}}
    span = task_span(
        pod(task_env(), resources),
        state,
        site="site-a",
        node="sgs-site-a",
        provider="slurm",
        start=START,
        end=START + timedelta(seconds=4),
    )
    assert span is not None
    assert (span.trace_id, span.span_id) == (ids.run_trace_id(UID), ids.task_span_id(UID, "a[0]", 2))
    assert span.parent_span_id == ids.run_span_id(UID)
    attributes = dict(span.attributes)
    assert attributes["sgs.attempt"] == 2 and attributes["sgs.site"] == "site-a"
    assert attributes["k8s.node.name"] == "sgs-site-a" and attributes["sgs.exit.reason"] == "OOMKilled"
    assert attributes["sgs.exit.code"] == 137 and attributes["sgs.backend.job_id"] == "4711"
    assert attributes["sgs.cpu.requested"] == 2.0 and attributes["sgs.cpu.used_seconds"] == 3.0
    assert attributes["sgs.memory.requested_bytes"] == 2.0**30 and attributes["sgs.memory.max_rss_bytes"] == 2.0**29
    assert span.error == "OOMKilled: limit"


def test_a_pod_that_is_no_runs_task_gets_no_span() -> None:
    state = JobState(Phase.SUCCEEDED, "1", reason="Completed", exit_code=0)
    assert task_span(pod([]), state, site="s", node="n", provider="process", start=START, end=START) is None
    forged = [{"name": "TRACEPARENT", "value": ids.task_traceparent("another-run", "a", 1)}, task_env()[1]]
    assert task_span(pod(forged), state, site="s", node="n", provider="process", start=START, end=START) is None


def test_env_from_secrets_and_odd_quantities_do_not_break_the_span() -> None:
    assert "TOKEN" not in container_env(pod(task_env()))
    assert requested(pod([], {"requests": {"cpu": "lots"}, "limits": {"memory": "2Mi"}})) == (1.0, 2 * 2**20)
