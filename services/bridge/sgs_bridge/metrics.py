"""Prometheus metrics of the bridge, labelled by provider and Site (served on the kubelet port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PODS = Gauge("sgs_bridge_pods", "Pods on this node by phase", ["provider", "phase"])
BACKEND_JOBS = Gauge(
    "sgs_bridge_backend_jobs",
    "Jobs the backend holds for this node's pods, by state (Pending: waiting in the Slurm queue)",
    ["site", "provider", "state"],
)
NODE_READY = Gauge("sgs_bridge_node_ready", "1 while the backend answers (the node is Ready)", ["site", "provider"])
SUBMIT_SECONDS = Histogram(
    "sgs_bridge_submit_seconds",
    "Time to hand one pod to the backend (sbatch, process spawn)",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PENDING_TO_RUNNING_SECONDS = Histogram(
    "sgs_bridge_pending_to_running_seconds",
    "From the pod's creation to the bridge reporting it Running",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
BACKEND_ERRORS = Counter("sgs_bridge_backend_errors_total", "Backend calls that failed", ["provider", "operation"])
POD_OUTCOMES = Counter("sgs_bridge_pod_outcomes_total", "Pods that ended, by reason", ["provider", "reason"])
STATUS_WRITES = Counter("sgs_bridge_status_writes_total", "Pod status updates written", ["provider"])
