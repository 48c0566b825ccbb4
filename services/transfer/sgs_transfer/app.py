"""The FastAPI application: ``create_app(settings)``; ``uvicorn --factory sgs_transfer.app:create_app``.

Beside the API, the process runs the rule evaluator (event consumer + bulk evaluation), the repair pass and the
reaper; ``embedded_worker`` adds a transfer worker (``sgs transfer worker`` runs workers on their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import nats
from fastapi import FastAPI

from sgs.service.http import RequestMetricsMiddleware, install_error_handlers, stop_within
from sgs.service.tokens import hash_token
from sgs.telemetry import Tracing, TracingSettings, configure
from sgs.telemetry.instrument import instrument_app
from sgs_transfer.api import health, rules, tokens, transfers
from sgs_transfer.api import sites as sites_api
from sgs_transfer.archive_client import ArchiveClient
from sgs_transfer.db import create_pool, migrate
from sgs_transfer.deps import TransferState
from sgs_transfer.evaluator import Evaluator
from sgs_transfer.metrics import TransferMetrics
from sgs_transfer.queue import QueueNames, TransferQueue
from sgs_transfer.reaper import Reaper
from sgs_transfer.repair import Repair
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import SiteBook, load_site_book, watch_cluster_sites
from sgs_transfer.universe import UniverseCache

log = logging.getLogger(__name__)
API_VERSION = "1.0.0"
SHUTDOWN_GRACE_S = 5.0


def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """A background loop restarted (after a pause) if it ever fails: a NATS or DB outage must not end it."""

    async def loop() -> None:
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    return asyncio.create_task(loop(), name=name)


def create_app(
    settings: TransferSettings | None = None, sites: SiteBook | None = None, tracing: Tracing | None = None
) -> FastAPI:
    """The service; ``tracing`` defaults to the environment's (``SGS_TRACING_*``: off unless an endpoint is set)."""
    settings = settings or TransferSettings()
    metrics = TransferMetrics()
    tracing = tracing or configure(
        "sgs-transfer", TracingSettings(), resource={"service.instance.id": settings.namespace}
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            applied = await asyncio.to_thread(migrate, settings.dsn, settings.db_schema)
            if applied:
                log.info("transfer schema: applied %s", ", ".join(applied))
        pool = create_pool(
            settings.dsn, settings.db_schema, settings.pool_min_size, settings.pool_max_size, tracing=tracing
        )
        await pool.open(wait=True)
        archive = ArchiveClient(settings.archive_timeout_s, tracing)
        token = settings.archive_token.get_secret_value() if settings.archive_token else None
        admin_hash = hash_token(settings.admin_token.get_secret_value()) if settings.admin_token else None
        book = sites if sites is not None else await asyncio.to_thread(load_site_book, settings)
        state = TransferState(
            settings,
            pool,
            book,
            archive,
            UniverseCache(archive, settings.archive_url, token),
            metrics,
            admin_hash,
            tracing,
        )
        app.state.transfer = state
        tasks: list[asyncio.Task[None]] = []
        nc = None
        stopped = asyncio.Event()
        if settings.sites_from_cluster and sites is None:
            tasks.append(_supervised("sites-watch", lambda: watch_cluster_sites(settings, book, stopped)))
        try:
            if settings.nats_url:
                nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
                js = nc.jetstream()
                queue = TransferQueue(js, QueueNames(settings.namespace), settings.ack_wait_s, settings.max_ack_pending)
                await queue.ensure_stream()
                evaluator = Evaluator(state, js, queue, f"{settings.namespace}-evaluator")
                state.evaluator = evaluator
                repair, reaper = Repair(state, queue), Reaper(state)
                tasks += [
                    _supervised("evaluator-events", evaluator.run_events),
                    _supervised("evaluator-bulk", evaluator.run_bulk),
                    _supervised("repair", repair.run),
                    _supervised("reaper", reaper.run),
                ]
                if settings.embedded_worker:
                    from sgs_transfer.worker import Worker

                    state.worker = Worker(settings, pool, book, archive, queue, metrics, tracing)
                    tasks.append(_supervised("worker", state.worker.run))
            yield
        finally:
            stopped.set()
            for task in tasks:
                await stop_within(task, SHUTDOWN_GRACE_S)
            if state.worker is not None:
                state.worker.close()
            if nc is not None:
                closing = asyncio.ensure_future(nc.close())
                await asyncio.wait({closing}, timeout=SHUTDOWN_GRACE_S)
            await archive.close()
            await pool.close(timeout=SHUTDOWN_GRACE_S)
            tracing.flush()

    app = FastAPI(
        title="sgs transfer",
        version=API_VERSION,
        summary="Replication rules, verified copies between Sites, ingestion on arrival.",
        lifespan=lifespan,
    )
    for router in (health, rules, transfers, sites_api, tokens):
        app.include_router(router.router)
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, histogram=metrics.requests)
    instrument_app(app, tracing)
    return app
