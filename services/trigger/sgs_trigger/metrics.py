"""Prometheus metrics of the trigger service (own registry: several services may share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RUN_RESULTS = ("created", "existing")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class TriggerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "sgs_trigger_events_total", "Archive events consumed.", ["subject"], registry=self.registry
        )
        self.redelivered = Counter(
            "sgs_trigger_events_redelivered_total",
            "Events delivered again (a batch failed or was not acknowledged in time).",
            ["subject"],
            registry=self.registry,
        )
        self.runs = Counter(
            "sgs_trigger_runs_total",
            "Complete groups: Runs created, or found existing (a duplicate: a redelivery, a restart, a replica).",
            ["outcome"],
            registry=self.registry,
        )
        self.failed_batches = Counter(
            "sgs_trigger_failed_batches_total", "Batches redelivered after a failure.", registry=self.registry
        )
        self.latency = Histogram(
            "sgs_trigger_event_to_run_seconds",
            "From the event's arrival in JetStream to its Run's creation.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.evaluation = Histogram(
            "sgs_trigger_group_evaluation_seconds",
            "One candidate group evaluated: its members looked up in the archive and, if complete, its Run created.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consumer_pending = Gauge(
            "sgs_trigger_consumer_pending",
            "Events in the stream the consumer has not been delivered yet (how far behind it is).",
            ["consumer"],
            registry=self.registry,
        )
        self.consumer_ack_pending = Gauge(
            "sgs_trigger_consumer_ack_pending",
            "Events delivered to the consumer and not acknowledged yet.",
            ["consumer"],
            registry=self.registry,
        )

    def known_series(self, subjects: tuple[str, ...] | list[str], consumer: str) -> None:
        """Every series whose labels are known in advance, at 0 until something happens (a rate over a series
        that appears only at its first duplicate shows nothing, not 0, until then)."""
        for subject in subjects:
            self.events.labels(subject)
            self.redelivered.labels(subject)
        for outcome in RUN_RESULTS:
            self.runs.labels(outcome)
        self.consumer_pending.labels(consumer)
        self.consumer_ack_pending.labels(consumer)
