"""Trace context across NATS: injected into a message's headers on publish, taken out on consume.

nats.py has no OpenTelemetry instrumentation; these two helpers make the producer and consumer spans (the
messaging semantic conventions) and carry ``traceparent`` beside ``Nats-Msg-Id``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
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


@contextlib.contextmanager
def consuming(tracing: Tracing, msg: Any) -> Iterator[trace.Span]:
    """A consumer span for handling one message, child of the publisher's span when the headers carry one.

    ``msg`` is a nats.py ``Msg`` (``.subject``, ``.headers``); redeliveries are counted in an attribute."""
    headers: Mapping[str, str] = getattr(msg, "headers", None) or {}
    subject = str(getattr(msg, "subject", ""))
    attributes: dict[str, str | int] = dict(_attributes(subject, "process", headers.get(MSG_ID_HEADER)))
    with contextlib.suppress(Exception):  # metadata exists only on JetStream messages
        attributes["messaging.nats.delivered"] = int(msg.metadata.num_delivered)
    with tracing.tracer.start_as_current_span(
        f"process {subject}", context=extract(headers), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span
