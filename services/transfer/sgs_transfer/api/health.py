from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sgs_transfer import gauges
from sgs_transfer.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers; reports the event consumer and worker.")
async def readyz(state: StateDep) -> JSONResponse:
    try:
        async with state.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1 FROM schema_migration LIMIT 1")
    except Exception as error:  # any failure here means "not ready", never a 500
        return JSONResponse({"status": "unavailable", "database": str(error)[:200]}, status_code=503)
    evaluator = state.evaluator
    events = "disabled" if evaluator is None else ("connected" if evaluator.connected else "connecting")
    worker = "none" if state.worker is None else ("running" if state.worker.running else "starting")
    return JSONResponse({"status": "ready", "database": "ok", "events": events, "worker": worker})


@router.get("/metrics", summary="Prometheus metrics.", response_class=Response)
async def metrics(state: StateDep) -> Response:
    await gauges.refresh(state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
