"""Prometheus metrics of the trigger service (own registry: several services may share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class TriggerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "sgs_trigger_events_total", "Archive events consumed.", ["subject"], registry=self.registry
        )
        self.runs = Counter(
            "sgs_trigger_runs_total",
            "Complete groups: Runs created, or found existing (a redelivery, a restart).",
            ["result"],
            registry=self.registry,
        )
        self.failed_batches = Counter(
            "sgs_trigger_failed_batches_total", "Batches redelivered after a failure.", registry=self.registry
        )
        self.latency = Histogram(
            "sgs_trigger_event_to_run_seconds",
            "From the event's arrival in JetStream to its Run's creation.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
