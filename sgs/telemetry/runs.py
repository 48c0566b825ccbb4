"""The spans of a Run's trace that no single request makes: the Run itself and each task attempt.

Both are recorded once their end is known, under derived ids (``sgs.telemetry.ids``): the Run's root span by
the operator when the Run finishes, a task attempt's span by whoever ran it (the bridge, the task wrapper), so
spans made inside the task (its ``TRACEPARENT``) hang under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from opentelemetry.trace import SpanContext

from sgs.telemetry.ids import parse_traceparent, run_span_id, run_trace_id
from sgs.telemetry.tracing import Attributes, FinishedSpan

RUN_UID_ENV = "SGS_RUN_UID"
TASK_ENV = "SGS_TASK_ID"
ATTEMPT_ENV = "SGS_ATTEMPT"
RUN_ENV = "SGS_RUN"


def ns(moment: datetime | float) -> int:
    """Nanoseconds since the epoch of a datetime or a time.time() value."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return int(seconds * 1e9)


def run_span(
    run_uid: str,
    name: str,
    start: datetime,
    end: datetime,
    attributes: Attributes,
    error: str | None = None,
    links: tuple[SpanContext, ...] = (),
) -> FinishedSpan:
    """The Run's root span: from its start to its completion; ``links``: the spans that caused the Run (the
    trigger service's "create run", in the trace of the event that completed the group)."""
    return FinishedSpan(
        name=f"run {name}",
        trace_id=run_trace_id(run_uid),
        span_id=run_span_id(run_uid),
        parent_span_id=None,
        start_ns=ns(start),
        end_ns=ns(end),
        attributes={"sgs.run": name, "sgs.run.uid": run_uid, **attributes},
        error=error,
        links=links,
    )


def task_span_from_env(
    env: Mapping[str, str], start: datetime | float, end: datetime | float, attributes: Attributes, error: str | None
) -> FinishedSpan | None:
    """A task attempt's span from the environment its Job gave it (``TRACEPARENT``, ``SGS_RUN_UID``, ...);
    None for a process that is not a Run's task."""
    parsed = parse_traceparent(env.get("TRACEPARENT"))
    uid = env.get(RUN_UID_ENV)
    if parsed is None or not uid:
        return None
    trace_id, span_id, _ = parsed
    if trace_id != run_trace_id(uid):
        return None  # not the trace of the Run it claims: record nothing rather than a stray tree
    task = env.get(TASK_ENV, "")
    identity: dict[str, Any] = {"sgs.run": env.get(RUN_ENV, ""), "sgs.task": task}
    if env.get(ATTEMPT_ENV, "").isdigit():
        identity["sgs.attempt"] = int(env[ATTEMPT_ENV])
    return FinishedSpan(
        name=f"task {task}",
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=run_span_id(uid),
        start_ns=ns(start),
        end_ns=ns(end),
        attributes={**identity, **attributes},
        error=error,
    )


def usage_attributes(usage: Mapping[str, Any] | None, cpus: float, memory_bytes: int) -> dict[str, float]:
    """Used vs requested resources of a task attempt as span attributes (base units)."""
    used = usage or {}
    attributes = {"sgs.cpu.requested": float(cpus), "sgs.memory.requested_bytes": float(memory_bytes)}
    if "cpu_s" in used:
        attributes["sgs.cpu.used_seconds"] = float(used["cpu_s"])
    if "max_rss_mb" in used:
        attributes["sgs.memory.max_rss_bytes"] = float(used["max_rss_mb"]) * 2**20
    if "wall_s" in used:
        attributes["sgs.wall_seconds"] = float(used["wall_s"])
    return attributes
