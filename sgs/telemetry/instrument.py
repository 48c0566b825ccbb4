"""OpenTelemetry's own instrumentation of the libraries the services use, bound to a component's Tracing.

Each call is a no-op while tracing is off, so the services install them unconditionally and pay nothing.
"""

from __future__ import annotations

from typing import Any

import httpx

from sgs.telemetry.tracing import Tracing

UNTRACED_PATHS = "/healthz,/readyz,/metrics"
"""Probes and scrapes: a span per kubelet probe or Prometheus scrape would drown the Runs' traces."""


def instrument_app(app: Any, tracing: Tracing) -> None:
    """A server span per FastAPI request, child of the caller's ``traceparent`` when it sent one."""
    if tracing.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # receive/send spans (one per ASGI message) would triple the spans of a request and tell nothing.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracing.provider, excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"]
    )


def instrument_connection(connection: Any, tracing: Tracing) -> None:
    """A client span per SQL statement run through ``connection`` (psycopg 3; COPY is not traced)."""
    if tracing.provider is None:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor.instrument_connection(connection, tracer_provider=tracing.provider)


def instrument_client(client: httpx.Client | httpx.AsyncClient, tracing: Tracing) -> None:
    """A client span per request of ``client``, its context sent as ``traceparent``."""
    if tracing.provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracing.provider)
