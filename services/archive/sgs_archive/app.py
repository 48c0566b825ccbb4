"""The FastAPI application: ``create_app(settings)``; ``uvicorn --factory sgs_archive.app:create_app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from sgs.runtime import quieten_gc
from sgs.service.http import RequestMetricsMiddleware, install_error_handlers, stop_within
from sgs.telemetry import Tracing, TracingSettings, configure
from sgs.telemetry.instrument import instrument_app
from sgs_archive.api import admin, collections, dataset_types, datasets, dimensions, health, replicas
from sgs_archive.api.datasets import ValidationFailedError
from sgs_archive.auth import hash_token
from sgs_archive.db import create_pool
from sgs_archive.deps import ArchiveState
from sgs_archive.metrics import ArchiveMetrics
from sgs_archive.migrate import migrate
from sgs_archive.outbox import OutboxRelay
from sgs_archive.registry.dataset_types import TypeCatalog
from sgs_archive.schemas import IngestRequest
from sgs_archive.settings import ArchiveSettings
from sgs_archive.universe import load_universe

log = logging.getLogger(__name__)
API_VERSION = "1.0.0"


SHUTDOWN_GRACE_S = 5.0


def create_app(settings: ArchiveSettings | None = None, tracing: Tracing | None = None) -> FastAPI:
    """The archive; ``tracing`` defaults to the environment's (``SGS_TRACING_*``: off unless an endpoint is set)."""
    settings = settings or ArchiveSettings()
    universe = load_universe(settings.universe_path)
    metrics = ArchiveMetrics()
    tracing = tracing or configure("sgs-archive", TracingSettings(), resource={"service.instance.id": settings.source})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quieten_gc()  # bulk ingests build ~10^6 short-lived objects per request
        if settings.migrate_on_start:
            applied = await asyncio.to_thread(migrate, settings.dsn, universe)
            if applied:
                log.info("archive schema: applied %s", ", ".join(applied))
        pool = create_pool(settings.dsn, universe, settings.pool_min_size, settings.pool_max_size, tracing)
        await pool.open(wait=True)
        admin_hash = hash_token(settings.admin_token.get_secret_value()) if settings.admin_token else None
        state = ArchiveState(settings, universe, pool, TypeCatalog(universe), metrics, admin_hash)
        relay_task: asyncio.Task[None] | None = None
        if settings.nats_url:
            state.relay = OutboxRelay(
                pool,
                settings.nats_url,
                batch=settings.relay_batch,
                poll_interval_s=settings.relay_poll_interval_s,
                paused=settings.relay_paused,
                crash_after_publish=settings.relay_crash_after_publish,
                published=metrics.outbox_published,
                duplicates=metrics.outbox_duplicates,
                pending=metrics.outbox_pending,
                oldest=metrics.outbox_oldest,
                tracing=tracing,
            )
            relay_task = asyncio.create_task(state.relay.run(), name="outbox-relay")
        app.state.archive = state
        try:
            yield
        finally:
            if relay_task is not None:
                await stop_within(relay_task, SHUTDOWN_GRACE_S)
            await pool.close(timeout=SHUTDOWN_GRACE_S)
            tracing.flush()

    app = FastAPI(
        title="sgs archive",
        version=API_VERSION,
        summary="Datasets by dimensions, collections, replicas and lineage across Sites.",
        lifespan=lifespan,
    )
    for router in (health, dimensions, dataset_types, datasets, replicas, collections, admin):
        app.include_router(router.router)
    install_error_handlers(app)
    _install_validation_failed_handler(app)
    app.add_middleware(RequestMetricsMiddleware, histogram=metrics.requests)
    instrument_app(app, tracing)
    _publish_ingest_schema(app)
    return app


def _install_validation_failed_handler(app: FastAPI) -> None:
    @app.exception_handler(ValidationFailedError)
    async def validation_failed(_: Request, error: ValidationFailedError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(error.errors)}, status_code=422)


def _publish_ingest_schema(app: FastAPI) -> None:
    """Add IngestRequest (validated by hand in the route) to the OpenAPI components it references."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        definition = IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, nested in definition.pop("$defs", {}).items():
            components.setdefault(name, nested)
        components["IngestRequest"] = definition
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
