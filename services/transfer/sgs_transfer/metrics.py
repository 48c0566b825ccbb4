"""Prometheus metrics, one registry per app (several apps in one test process must not collide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class TransferMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Histogram(
            "sgs_transfer_request_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.events = Counter(
            "sgs_transfer_events_total", "Archive events consumed, by subject.", ["subject"], registry=self.registry
        )
        self.redelivered = Counter(
            "sgs_transfer_events_redelivered_total",
            "Archive events delivered again (a batch that failed, or was not acknowledged in time).",
            ["subject"],
            registry=self.registry,
        )
        self.queued = Counter(
            "sgs_transfer_queued_total", "Transfers queued (or re-queued) by rule evaluation.", registry=self.registry
        )
        self.copies = Counter(
            "sgs_transfer_copies_total",
            "Transfers finished, by destination and outcome (done, retry, stuck).",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "sgs_transfer_bytes_total", "Bytes copied, by destination.", ["destination"], registry=self.registry
        )
        self.copy_seconds = Histogram(
            "sgs_transfer_copy_seconds",
            "Copy + verification time of one transfer.",
            ["destination"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.register_seconds = Histogram(
            "sgs_transfer_register_seconds",
            "Copy verified -> registered as available at the destination's archive.",
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.paused = Gauge(
            "sgs_transfer_destination_paused",
            "1 while a destination is paused.",
            ["destination"],
            registry=self.registry,
        )
        self.rules = Gauge(
            "sgs_transfer_rules",
            "Replication rules by state (OK, REPLICATING, STUCK, SUSPENDED).",
            ["state"],
            registry=self.registry,
        )
        self.transfers = Gauge(
            "sgs_transfer_transfers",
            "Open transfers by destination and state (QUEUED, ACTIVE, STUCK).",
            ["destination", "state"],
            registry=self.registry,
        )
        self.consumer_pending = Gauge(
            "sgs_transfer_consumer_pending",
            "Events in the stream the consumer has not been delivered yet (how far behind it is).",
            ["consumer"],
            registry=self.registry,
        )
        self.consumer_ack_pending = Gauge(
            "sgs_transfer_consumer_ack_pending",
            "Events delivered to the consumer and not acknowledged yet.",
            ["consumer"],
            registry=self.registry,
        )
        self.reaped = Counter("sgs_transfer_reaped_total", "Copies deleted by the reaper.", registry=self.registry)
        self.reaper_passes = Counter(
            "sgs_transfer_reaper_passes_total",
            "Reaper passes, by outcome: ran, or paused (rule evaluation lagging).",
            ["outcome"],
            registry=self.registry,
        )
        self.repaired = Counter(
            "sgs_transfer_repaired_total",
            "Copies re-queued by the repair pass, by reason.",
            ["reason"],
            registry=self.registry,
        )
