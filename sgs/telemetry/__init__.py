"""Traces and metrics conventions shared by every sgs component.

- ``configure(service, settings)`` → a ``Tracing`` (off, costing nothing, unless an OTLP endpoint is set);
- ``sgs.telemetry.ids``: a Run's trace id and its root/task span ids, derived from the Run's uid;
- ``sgs.telemetry.context``: traceparent in HTTP/NATS headers and in a Job's ``TRACEPARENT``;
- ``sgs.telemetry.messaging``: producer/consumer spans around NATS publish and consume;
- ``sgs.telemetry.runs``: the Run's root span and task-attempt spans, recorded after the fact;
- ``sgs.telemetry.metrics``: Prometheus naming rules, checked over every component's registry.
"""

from sgs.telemetry.settings import TracingSettings
from sgs.telemetry.tracing import FinishedSpan, Tracing, configure, remote_parent

__all__ = ["FinishedSpan", "Tracing", "TracingSettings", "configure", "remote_parent"]
