"""Carrying a trace between processes: W3C ``traceparent`` in HTTP and NATS headers, ``TRACEPARENT`` in a Job's
environment (the OpenTelemetry environment-carrier convention), and the contexts of a Run's derived spans."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sgs.telemetry.ids import (
    TRACEPARENT_ENV,
    TRACESTATE_ENV,
    format_traceparent,
    parse_traceparent,
    run_span_id,
    run_trace_id,
    task_span_id,
)
from sgs.telemetry.tracing import remote_parent

TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
CAUSE_ANNOTATION = "sgs.io/cause-traceparent"
"""On a Run made by another component (the trigger service): the traceparent of the span that created it. The
Run's own trace is derived from its uid, unknown until the API server answers, so the creator cannot be its
parent; the operator links the Run's root span to this context instead (a span link, not a parent)."""
_W3C = TraceContextTextMapPropagator()


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> MutableMapping[str, str]:
    """Add ``traceparent`` (and ``tracestate``) of ``context`` (default: the current one) to ``headers``."""
    _W3C.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The context ``headers`` carry, or None when they carry none (or a malformed one)."""
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    if parse_traceparent(lowered.get(TRACEPARENT_HEADER)) is None:
        return None
    return _W3C.extract(lowered)


def from_env(environ: Mapping[str, str] | None = None) -> Context | None:
    """The context a process was started in (``TRACEPARENT``/``TRACESTATE``), e.g. a task by its Job."""
    env = os.environ if environ is None else environ
    headers = {TRACEPARENT_HEADER: env.get(TRACEPARENT_ENV, "")}
    if env.get(TRACESTATE_ENV):
        headers[TRACESTATE_HEADER] = env[TRACESTATE_ENV]
    return extract(headers)


def env_of(context: Context | None = None) -> dict[str, str]:
    """``TRACEPARENT`` (and ``TRACESTATE``) for a child process started in ``context`` (default: current)."""
    headers = inject({}, context)
    env = {TRACEPARENT_ENV: headers[TRACEPARENT_HEADER]} if TRACEPARENT_HEADER in headers else {}
    if TRACESTATE_HEADER in headers:
        env[TRACESTATE_ENV] = headers[TRACESTATE_HEADER]
    return env


def current_traceparent() -> str | None:
    """The current span as a traceparent (to store beside work done later, e.g. an outbox row), if any."""
    return traceparent_of(trace.get_current_span())


def traceparent_of(span: trace.Span) -> str | None:
    """A (possibly non-current) span as a traceparent, to hand its context to later work."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format_traceparent(context.trace_id, context.span_id, int(context.trace_flags))


def traceparent_context(text: str | None) -> Context | None:
    """The context of a stored traceparent (see ``current_traceparent``)."""
    return extract({TRACEPARENT_HEADER: text}) if text else None


def span_context_of(text: str | None) -> SpanContext | None:
    """A stored traceparent (e.g. ``CAUSE_ANNOTATION``) as a remote span context, to link to; None if malformed."""
    parsed = parse_traceparent(text)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))


def run_context(run_uid: str) -> Context:
    """Inside a Run's trace, under its root span: the operator's reconciles and Job creations go here."""
    return remote_parent(run_trace_id(run_uid), run_span_id(run_uid))


def task_context(run_uid: str, tid: str, attempt: int) -> Context:
    """Under one task attempt's span: what the task does (archive registrations, stage-in) goes here."""
    return remote_parent(run_trace_id(run_uid), task_span_id(run_uid, tid, attempt))


def headers_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``traceparent`` headers for a request made by a process started in a trace (a task calling the archive):
    the server's span joins the task's, even where this process records no span of its own."""
    found = from_env(environ)
    return dict(inject({}, found)) if found is not None else {}
