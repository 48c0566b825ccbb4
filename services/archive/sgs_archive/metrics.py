"""Prometheus metrics, one registry per app (several apps in one test process must not collide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ArchiveMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Histogram(
            "sgs_archive_request_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.datasets_ingested = Counter(
            "sgs_archive_datasets_ingested_total", "Datasets newly registered by ingest.", registry=self.registry
        )
        self.outbox_published = Counter(
            "sgs_archive_outbox_published_total", "Events relayed to JetStream.", registry=self.registry
        )
        self.outbox_duplicates = Counter(
            "sgs_archive_outbox_duplicates_total",
            "Re-published events JetStream dropped as duplicates (a crash between publish and stamp).",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "sgs_archive_outbox_pending", "Events committed but not yet relayed.", registry=self.registry
        )
        self.outbox_oldest = Gauge(
            "sgs_archive_outbox_oldest_pending_age_seconds",
            "Age of the oldest event not yet relayed (0 when none is waiting).",
            registry=self.registry,
        )
