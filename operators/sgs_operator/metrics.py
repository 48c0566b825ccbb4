"""Prometheus metrics: Runs by phase, Sites by phase, tasks started and finished, queue wait and attempt time,
Jobs created, reconcile time, the webhook certificate's expiry, and used vs requested resources.

The profiling follows the Euclid Pipeline Run Server (seed 002): CPU efficiency (cpu time / (wall × cores
asked)), peak memory against the limit, and I/O volume, so undersized and oversized requests show up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sgs.model.pipeline import Resources

RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 4.0)
BYTE_BUCKETS = tuple(mib * 2**20 for mib in (1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 64000))

TIME_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
RUN_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
SITE_PHASES = ("Pending", "Ready", "Degraded", "Maintenance")

JOBS_CREATED = Counter("sgs_operator_jobs_created_total", "Jobs created by the operator", ["site"])
TASKS_STARTED = Counter(
    "sgs_operator_tasks_started_total", "Task attempts started (recorded Running)", ["site", "pipeline"]
)
TASKS_FINISHED = Counter(
    "sgs_operator_task_attempts_finished_total",
    "Task attempts that ended, by outcome (Completed, Error, OOMKilled, DeadlineExceeded)",
    ["site", "executable", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "sgs_operator_task_attempt_seconds", "Job created -> outcome recorded", ["site"], buckets=TIME_BUCKETS
)
QUEUE_WAIT = Histogram(
    "sgs_operator_task_queue_wait_seconds",
    "Job created -> task started: the attempt's time less the task's own wall time",
    ["site"],
    buckets=TIME_BUCKETS,
)
RECONCILE_SECONDS = Histogram(
    "sgs_operator_reconcile_seconds",
    "One reconcile of one Run",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CPU_USED = Counter("sgs_task_cpu_used_seconds_total", "CPU seconds task attempts used", ["site"])
CPU_REQUESTED = Counter(
    "sgs_task_cpu_requested_seconds_total", "Cores requested x wall seconds of task attempts", ["site"]
)
SITES = Gauge("sgs_operator_sites", "1 for the phase each Site is in, 0 for the others", ["site", "phase"])
WEBHOOK_CERT_EXPIRY = Gauge(
    "sgs_operator_webhook_certificate_expiry_timestamp_seconds",
    "When the admission webhook's certificates expire (kind: serving, ca)",
    ["kind"],
)
CPU_EFFICIENCY = Histogram(
    "sgs_task_cpu_efficiency_ratio",
    "CPU seconds used / (wall seconds × cores requested)",
    ["executable"],
    buckets=RATIO_BUCKETS,
)
MEMORY_USED_RATIO = Histogram(
    "sgs_task_memory_used_ratio", "Peak RSS / memory requested", ["executable"], buckets=RATIO_BUCKETS
)
MAX_RSS = Histogram("sgs_task_max_rss_bytes", "Peak RSS of a task attempt", ["executable"], buckets=BYTE_BUCKETS)
IO_BYTES = Histogram(
    "sgs_task_io_bytes", "Bytes read or written by a task attempt", ["executable", "direction"], buckets=BYTE_BUCKETS
)
WALL = Histogram(
    "sgs_task_wall_seconds",
    "Wall time of a task attempt",
    ["executable"],
    buckets=TIME_BUCKETS,
)


class RunPhases(Collector):
    """Runs by Site, Pipeline and phase, from what each Run's controller last wrote (counted at scrape time, so a
    deleted Run leaves no series behind; every phase is shown, 0 included)."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[str, str, str]] = {}

    def set(self, key: str, site: str, pipeline: str, phase: str) -> None:
        self.runs[key] = (site, pipeline, phase)

    def forget(self, key: str) -> None:
        self.runs.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("sgs_operator_runs", "Runs by phase", labels=["site", "pipeline", "phase"])
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for site, pipeline, phase in list(self.runs.values()):
            per_phase = counts.setdefault((site, pipeline), dict.fromkeys(RUN_PHASES, 0))
            per_phase[phase] = per_phase.get(phase, 0) + 1
        for (site, pipeline), per_phase in sorted(counts.items()):
            for phase, count in per_phase.items():
                family.add_metric([site, pipeline, phase], count)
        yield family


RUNS = RunPhases()
REGISTRY.register(RUNS)


OUTCOMES = ("Completed", "Error", "OOMKilled", "DeadlineExceeded")


def known_series(site: str, pipeline: str, executables: Iterable[str]) -> None:
    """A Run's series at 0 before its first task ends: a failure rate reads 0, not nothing, until one fails."""
    TASKS_STARTED.labels(site, pipeline)
    JOBS_CREATED.labels(site)
    for executable in executables:
        for outcome in OUTCOMES:
            TASKS_FINISHED.labels(site, executable, outcome)


def site_phase(site: str, phase: str) -> None:
    for each in SITE_PHASES:
        SITES.labels(site, each).set(1 if each == phase else 0)


def webhook_certificates(serving: Path, ca: Path) -> None:
    """The expiry of the webhook's serving certificate and CA (for the certificate-expiry alert)."""
    for kind, path in (("serving", serving), ("ca", ca)):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        WEBHOOK_CERT_EXPIRY.labels(kind).set(cert.not_valid_after_utc.timestamp())


def serve(port: int, address: str = "127.0.0.1") -> None:
    start_http_server(port, addr=address)


def profile_summary(usage: dict[str, Any], requested: Resources) -> dict[str, float]:
    """Used vs requested, as stored with the task record."""
    wall = float(usage.get("wall_s") or 0.0)
    cpu = float(usage.get("cpu_s") or 0.0)
    rss = float(usage.get("max_rss_mb") or 0.0)
    return {
        "cpu_efficiency": round(cpu / (wall * requested.cores), 3) if wall > 0 else 0.0,
        "memory_used_ratio": round(rss / (requested.ram * 1024), 3),
        "cores_requested": float(requested.cores),
        "memory_requested_mb": round(requested.ram * 1024, 1),
    }


def observe_attempt(
    site: str,
    executable: str,
    outcome: str,
    usage: dict[str, Any] | None,
    requested: Resources,
    attempt_s: float | None = None,
) -> None:
    """One attempt's end; ``attempt_s``: Job created -> outcome, when this operator saw the creation."""
    TASKS_FINISHED.labels(site, executable, outcome).inc()
    wall = float((usage or {}).get("wall_s") or 0.0)
    if attempt_s is not None:
        ATTEMPT_SECONDS.labels(site).observe(attempt_s)
        if usage:
            QUEUE_WAIT.labels(site).observe(max(0.0, attempt_s - wall))
    if not usage:
        return
    CPU_USED.labels(site).inc(float(usage.get("cpu_s") or 0.0))
    CPU_REQUESTED.labels(site).inc(wall * requested.cores)
    summary = profile_summary(usage, requested)
    CPU_EFFICIENCY.labels(executable).observe(summary["cpu_efficiency"])
    MEMORY_USED_RATIO.labels(executable).observe(summary["memory_used_ratio"])
    MAX_RSS.labels(executable).observe(float(usage.get("max_rss_mb") or 0.0) * 2**20)
    IO_BYTES.labels(executable, "read").observe(float(usage.get("read_mb") or 0.0) * 2**20)
    IO_BYTES.labels(executable, "write").observe(float(usage.get("write_mb") or 0.0) * 2**20)
    WALL.labels(executable).observe(float(usage.get("wall_s") or 0.0))
