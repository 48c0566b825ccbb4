"""FastAPI plumbing the services share: error answers naming the field, request metrics, bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sgs.service.errors import ServiceError

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors, request validation and values PostgreSQL cannot store, all as FastAPI's 4xx shape."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in error.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(psycopg.DataError)
    async def data_error(_: Request, error: psycopg.DataError) -> JSONResponse:
        # Values PostgreSQL cannot store (a NUL character in text, a number out of range) are bad input.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": f"value not storable: {message}", "type": "invalid"}]},
            status_code=422,
        )


class RequestMetricsMiddleware:
    """Request latency by route template, method and status, as plain ASGI.

    Starlette's ``@app.middleware("http")`` runs every request in an extra task with memory streams between the
    two halves; on these services' small queries that cost more than the database.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(template, scope["method"], str(status)).observe(time.perf_counter() - start)


async def stop_within(task: asyncio.Task[None], grace_s: float) -> None:
    """Cancel a background task and wait for it a bounded time: shutdown must never hang on a stuck client
    (asyncio.wait, unlike wait_for, does not wait again for the cancellation it gives up on)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        log.warning(
            "%s did not stop within %.0f s of being cancelled; shutting down without it", task.get_name(), grace_s
        )
        return
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
