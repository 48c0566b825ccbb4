"""Prometheus metrics of the bridge, labelled by provider and Site, served at /metrics on the kubelet port (TLS,
the API server's kubelet client certificate) and, with ``--metrics-port``, on a plain HTTP port for Prometheus."""

from __future__ import annotations

import prometheus_client
from aiohttp import web
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


async def metrics_response(_: web.Request) -> web.Response:
    """The exposition of this process's registry: the same body on either port."""
    body = prometheus_client.generate_latest()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


class MetricsServer:
    """Plain HTTP, /metrics only: a Prometheus in the cluster scrapes it without the API server's kubelet client
    certificate. Logs and every other kubelet path stay behind the kubelet port's authentication."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", metrics_response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
