"""Smoke test of the Jaeger part: spans exported over OTLP/HTTP by sgs.telemetry are read back by trace id."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from sgs.telemetry import TracingSettings, configure, context, ids, runs
from sgs.testing.jaeger import JaegerPart, parent_of, span_tags

pytestmark = pytest.mark.integration


def test_spans_exported_by_a_component_are_queryable(jaeger: JaegerPart) -> None:
    tracing = configure("sgs-smoke", TracingSettings.model_validate({"endpoint": jaeger.otlp_endpoint}))
    uid = f"smoke-{time.time_ns()}"
    start = datetime.now(UTC)
    try:
        with tracing.tracer.start_as_current_span("reconcile", context=context.run_context(uid)) as span:
            span.set_attribute("sgs.site", "site-a")
        tracing.record(runs.run_span(uid, "smoke/r", start, start + timedelta(seconds=1), {}))
        assert tracing.flush()
    finally:
        tracing.shutdown()
    deadline = time.monotonic() + 30
    while len(spans := jaeger.trace(ids.run_trace_id(uid))) < 2:
        assert time.monotonic() < deadline, f"spans of the trace: {spans}"
        time.sleep(0.25)
    by_name = {span["operationName"]: span for span in spans}
    root, reconcile = by_name["run smoke/r"], by_name["reconcile"]
    assert root["spanID"] == f"{ids.run_span_id(uid):016x}" and parent_of(root) is None
    assert parent_of(reconcile) == root["spanID"]
    assert span_tags(reconcile)["sgs.site"] == "site-a"
    assert reconcile["process"]["serviceName"] == "sgs-smoke"
    assert "sgs-smoke" in jaeger.services()


def test_an_unknown_trace_is_empty(jaeger: JaegerPart) -> None:
    assert jaeger.trace(ids.run_trace_id("never-traced")) == []
