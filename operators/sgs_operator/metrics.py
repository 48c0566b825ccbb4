"""Prometheus metrics: Jobs created, tasks finished, and used vs requested resources per executable.

The profiling follows the Euclid Pipeline Run Server (seed 002): CPU efficiency (cpu time / (wall × cores
asked)), peak memory against the limit, and I/O volume, so undersized and oversized requests show up.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

from sgs.model.pipeline import Resources

RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 4.0)
BYTE_BUCKETS = tuple(mib * 2**20 for mib in (1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 64000))

JOBS_CREATED = Counter("sgs_operator_jobs_created_total", "Jobs created by the operator", ["site"])
TASKS_FINISHED = Counter(
    "sgs_operator_task_attempts_finished_total", "Task attempts that ended, by outcome", ["executable", "outcome"]
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
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)


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


def observe_attempt(executable: str, outcome: str, usage: dict[str, Any] | None, requested: Resources) -> None:
    TASKS_FINISHED.labels(executable, outcome).inc()
    if not usage:
        return
    summary = profile_summary(usage, requested)
    CPU_EFFICIENCY.labels(executable).observe(summary["cpu_efficiency"])
    MEMORY_USED_RATIO.labels(executable).observe(summary["memory_used_ratio"])
    MAX_RSS.labels(executable).observe(float(usage.get("max_rss_mb") or 0.0) * 2**20)
    IO_BYTES.labels(executable, "read").observe(float(usage.get("read_mb") or 0.0) * 2**20)
    IO_BYTES.labels(executable, "write").observe(float(usage.get("write_mb") or 0.0) * 2**20)
    WALL.labels(executable).observe(float(usage.get("wall_s") or 0.0))
