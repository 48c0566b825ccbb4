"""Trace context across NATS: injected into a message's headers on publish, taken out on consume.

nats.py has no OpenTelemetry instrumentation; these two helpers make the producer and consumer spans (the
messaging semantic conventions) and carry ``traceparent`` beside ``Nats-Msg-Id``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from sgs.telemetry.context import extract, inject
from sgs.telemetry.tracing import Tracing

MSG_ID_HEADER = "Nats-Msg-Id"


def _attributes(subject: str, operation: str, msg_id: str | None) -> dict[str, str]:
    attributes = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
    }
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    return attributes


@contextlib.contextmanager
def publishing(
    tracing: Tracing, subject: str, headers: MutableMapping[str, str], parent: Context | None = None
) -> Iterator[trace.Span]:
    """A producer span for one publish, whose context is added to ``headers`` (publish inside the block)."""
    attributes = _attributes(subject, "send", headers.get(MSG_ID_HEADER))
    with tracing.tracer.start_as_current_span(
        f"send {subject}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        if span.is_recording():
            inject(headers)
        yield span


def _consumer_span_args(msg: Any, name: str | None) -> tuple[str, Context | None, dict[str, str | int]]:
    headers: Mapping[str, str] = getattr(msg, "headers", None) or {}
    subject = str(getattr(msg, "subject", ""))
    attributes: dict[str, str | int] = dict(_attributes(subject, "process", headers.get(MSG_ID_HEADER)))
    with contextlib.suppress(Exception):  # metadata exists only on JetStream messages
        attributes["messaging.nats.delivered"] = int(msg.metadata.num_delivered)
    return name or f"process {subject}", extract(headers), attributes


@contextlib.contextmanager
def consuming(tracing: Tracing, msg: Any, name: str | None = None) -> Iterator[trace.Span]:
    """A consumer span for handling one message, child of the publisher's span when the headers carry one.

    ``msg`` is a nats.py ``Msg`` (``.subject``, ``.headers``); redeliveries are counted in an attribute."""
    span_name, parent, attributes = _consumer_span_args(msg, name)
    with tracing.tracer.start_as_current_span(
        span_name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


@contextlib.contextmanager
def consuming_batch(tracing: Tracing, messages: Sequence[Any], name: str | None = None) -> Iterator[list[trace.Span]]:
    """One consumer span per message of a batch handled as a whole, each in its publisher's trace and lasting
    as long as the batch (none of them is made current: they belong to different traces)."""
    spans = []
    for msg in messages:
        span_name, parent, attributes = _consumer_span_args(msg, name)
        attributes["messaging.batch.message_count"] = len(messages)
        spans.append(
            tracing.tracer.start_span(span_name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        )
    try:
        yield spans
    except BaseException as error:
        for span in spans:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        raise
    finally:
        for span in spans:
            span.end()
