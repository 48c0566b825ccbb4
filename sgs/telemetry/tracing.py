"""One ``Tracing`` per component: its tracer, its exporter, and spans recorded after the fact with derived ids.

Each component (operator, bridge, archive, transfer service) owns a provider of its own rather than the
process-global one, so several components in one process (the demo, the tests) keep their own service names.
Off (no endpoint), nothing of the SDK is imported and every span is OpenTelemetry's non-recording one.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from sgs.telemetry.ids import SAMPLED
from sgs.telemetry.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import Sampler

log = logging.getLogger(__name__)
SCOPE = "sgs"
Attributes = Mapping[str, str | bool | int | float]

# (trace id, span id) the next span started in this context must take: see Tracing.record.
_CHOSEN_IDS: contextvars.ContextVar[tuple[int | None, int] | None] = contextvars.ContextVar(
    "sgs_telemetry_chosen_ids", default=None
)


@dataclass(frozen=True)
class FinishedSpan:
    """A span whose whole life is known when it is recorded (a task attempt, a Run), with derived ids."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    attributes: Attributes = field(default_factory=dict)
    error: str | None = None
    kind: SpanKind = SpanKind.INTERNAL
    links: tuple[SpanContext, ...] = ()


@dataclass
class Tracing:
    """What a component traces with; ``Tracing.off()`` until ``configure`` is given an endpoint."""

    service: str
    settings: TracingSettings
    provider: TracerProvider | None = None

    @classmethod
    def off(cls, service: str = "sgs") -> Tracing:
        return cls(service, TracingSettings.model_validate({"endpoint": None}))

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @property
    def tracer(self) -> trace.Tracer:
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(SCOPE)

    def record(self, span: FinishedSpan) -> None:
        """Record a span that already happened, under the ids it was given (a no-op when off or unsampled)."""
        if self.provider is None:
            return
        parent = None
        if span.parent_span_id is not None:
            parent = remote_parent(span.trace_id, span.parent_span_id)
        links = [Link(context) for context in span.links]
        token = _CHOSEN_IDS.set((span.trace_id if parent is None else None, span.span_id))
        try:
            started = self.tracer.start_span(
                span.name,
                context=parent,
                kind=span.kind,
                attributes=dict(span.attributes),
                links=links,
                start_time=span.start_ns,
            )
        finally:
            _CHOSEN_IDS.reset(token)
        if span.error is not None:
            started.set_status(Status(StatusCode.ERROR, span.error))
        started.end(end_time=max(span.end_ns, span.start_ns))

    def flush(self, timeout_s: float = 5.0) -> bool:
        if self.provider is None:
            return True
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def remote_parent(trace_id: int, span_id: int) -> Context:
    """A context whose current span is another process's span: children made in it join that trace."""
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def configure(
    service: str,
    settings: TracingSettings | None = None,
    *,
    resource: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """The component's Tracing: spans batched to the OTLP/HTTP endpoint of ``settings`` (or to ``exporter``:
    the unit tests' in-memory one); off when neither is given."""
    settings = settings or TracingSettings()
    if exporter is None and not settings.enabled:
        return Tracing(service, settings)
    if exporter is None:
        exporter = _otlp_exporter(settings)
    return Tracing(service, settings, _provider(service, settings, exporter, resource or {}))


def _otlp_exporter(settings: TracingSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = str(settings.endpoint).rstrip("/")
    return OTLPSpanExporter(
        endpoint=endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces",
        timeout=settings.export_timeout_s,
    )


def _provider(
    service: str, settings: TracingSettings, exporter: SpanExporter, resource: Mapping[str, str]
) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

    ratio = TraceIdRatioBased(settings.sampling)
    # A remote parent flagged sampled (a Run's TRACEPARENT always is) is still judged by the trace id: every
    # component with the same share keeps the same Runs, and the Job spec needs no sampling decision.
    sampler = ParentBased(root=ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ALWAYS_OFF)
    provider = TracerProvider(
        sampler=_no_stray_clients(sampler),
        resource=Resource.create({"service.name": service, **resource}),
        id_generator=_chosen_id_generator(),
    )
    processor = BatchSpanProcessor(
        exporter,
        max_queue_size=settings.queue_size,
        max_export_batch_size=min(512, settings.queue_size),
        schedule_delay_millis=500,
        export_timeout_millis=settings.export_timeout_s * 1000,
    )
    provider.add_span_processor(processor)
    log.info("tracing: %s exports to %s (sampling %.3g)", service, settings.endpoint, settings.sampling)
    return provider


def _no_stray_clients(inner: Sampler) -> Sampler:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NoStrayClients(Sampler):
        """A client call (SQL statement, HTTP request) made outside any traced work starts no trace: the outbox
        relay's and the workers' polling would otherwise make one trace per poll."""

        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if kind is SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"NoStrayClients{{{inner.get_description()}}}"

    return NoStrayClients()


def _chosen_id_generator() -> IdGenerator:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenIdGenerator(RandomIdGenerator):
        """Random ids, except for a span started inside ``Tracing.record``, which takes the ids it was given."""

        def generate_span_id(self) -> int:
            chosen = _CHOSEN_IDS.get()
            return chosen[1] if chosen is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            chosen = _CHOSEN_IDS.get()
            if chosen is not None and chosen[0] is not None:
                return chosen[0]
            return super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return False  # Run trace ids are hashes

    return ChosenIdGenerator()
