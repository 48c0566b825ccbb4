"""The trigger service's process: two Kubernetes watches (Pipelines, Sites), one JetStream consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from prometheus_client import start_http_server

from sgs.kube import KubeClient, Watch
from sgs.model.base import GROUP, VERSION
from sgs.telemetry import Tracing, TracingSettings, configure
from sgs_trigger.archive import ArchiveReader
from sgs_trigger.book import PipelineBook, SiteBook
from sgs_trigger.consumer import Consumer
from sgs_trigger.metrics import TriggerMetrics
from sgs_trigger.settings import TriggerSettings

log = logging.getLogger(__name__)

READY_MESSAGE = "sgs trigger ready"
START_RETRY_S = 1.0
SHUTDOWN_GRACE_S = 5.0


def resource_path(plural: str, namespace: str | None) -> str:
    if namespace:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return f"/apis/{GROUP}/{VERSION}/{plural}"


async def serve(
    settings: TriggerSettings, stopped: asyncio.Event | None = None, tracing: Tracing | None = None
) -> None:
    """Until ``stopped``: Runs created for complete groups. Events are consumed only once both watches have
    listed (a trigger not yet known would let its events be acknowledged unmatched). ``tracing`` defaults to
    the environment's (``SGS_TRACING_*``: off unless an endpoint is set)."""
    stopped = stopped or asyncio.Event()
    tracing = tracing or configure("sgs-trigger", TracingSettings(), resource={"sgs.consumer": settings.durable})
    metrics = TriggerMetrics()
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    kube = await KubeClient.connect(settings.kubeconfig)
    token = settings.archive_token.get_secret_value() if settings.archive_token else None
    archive = ArchiveReader(settings.archive_url, token, settings.archive_timeout_s, tracing)
    pipelines, sites = PipelineBook(), SiteBook()
    watches = [
        Watch(kube, resource_path("pipelines", settings.namespace), pipelines),
        Watch(kube, resource_path("sites", settings.namespace), sites),
    ]
    tasks = [asyncio.create_task(w.run(stopped), name=f"watch {w.path}") for w in watches]
    nc = None
    try:
        for watch in watches:
            await watch.synced.wait()
        nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        consumer = Consumer(settings, nc.jetstream(), kube, archive, pipelines, sites, metrics, tracing)
        while True:  # the archive must be up to check the triggers' expressions against its dimensions
            try:
                pipelines.triggers(await consumer.universe.get())
                break
            except Exception as error:
                log.warning("archive at %s not answering (%s); retrying", settings.archive_url, error)
                await asyncio.sleep(START_RETRY_S)
        subscription = await consumer.subscribe()
        tasks.append(asyncio.create_task(consumer.run(subscription), name="consumer"))
        tasks.append(asyncio.create_task(consumer.refresh_pending(stopped), name="consumer pending"))
        log.info("%s: %d pipeline(s) with triggers, consumer %s", READY_MESSAGE, pipelines.pipelines, settings.durable)
        await stopped.wait()
    finally:
        stopped.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, SHUTDOWN_GRACE_S)
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), SHUTDOWN_GRACE_S)
        await archive.close()
        await kube.close()
        await asyncio.to_thread(tracing.shutdown)  # exports what is still buffered
