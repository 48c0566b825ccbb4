from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sgs_archive.deps import Reader, StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers; reports the event relay's state.")
async def readyz(state: StateDep) -> JSONResponse:
    try:
        async with state.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1 FROM schema_migration LIMIT 1")
    except Exception as error:  # any failure here means "not ready", never a 500
        return JSONResponse({"status": "unavailable", "database": str(error)[:200]}, status_code=503)
    relay = "disabled" if state.relay is None else ("connected" if state.relay.connected else "connecting")
    return JSONResponse({"status": "ready", "database": "ok", "relay": relay})


@router.get(
    "/metrics", summary="Prometheus metrics (a read: a token unless reads are public).", response_class=Response
)
async def metrics(state: StateDep, _: Reader) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
