"""The archive's spans, read back from a real Jaeger: a request made inside a task's trace, its SQL statements,
and the outbox relay's publish of the event it wrote, whose NATS headers carry the trace on."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from archive_helpers import ADMIN, Archive, register_types, replica, settings_for
from sgs_archive.app import create_app

from sgs.events import DATASET_REGISTERED, STREAM
from sgs.telemetry import TracingSettings, configure, context, ids
from sgs.testing.jaeger import JaegerPart, parent_of
from sgs.testing.nats import NatsPart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def traced_archive(pg_database: str, nats_server: NatsPart, jaeger: JaegerPart) -> AsyncIterator[Archive]:
    settings = settings_for(pg_database, nats_server.url, source="traced-archive")
    tracing = configure("sgs-archive", TracingSettings.model_validate({"endpoint": jaeger.otlp_endpoint}))
    app = create_app(settings, tracing)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://archive") as client,
    ):
        yield Archive(client, settings)
    tracing.shutdown()


async def wait_spans(jaeger: JaegerPart, trace_id: int, names: set[str], timeout_s: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = await asyncio.to_thread(jaeger.trace, trace_id)
        if names <= {span["operationName"] for span in spans}:
            return spans
        assert time.monotonic() < deadline, f"missing {names - {s['operationName'] for s in spans}} in {spans}"
        await asyncio.sleep(0.3)


async def first_event_headers(nats_url: str, run: str) -> dict[str, str]:
    nc = await nats.connect(nats_url)
    try:
        subscription = await nc.jetstream().pull_subscribe(DATASET_REGISTERED, durable=None, stream=STREAM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with_timeout = await subscription.fetch(batch=100, timeout=5)
            for message in with_timeout:
                await message.ack()
                if run in json.loads(message.data)["datasets"][0]["run"]:
                    return dict(message.headers or {})
        raise AssertionError(f"no {DATASET_REGISTERED} event about {run}")
    finally:
        await nc.close()


async def test_a_tasks_ingest_its_sql_and_the_event_publish_share_the_runs_trace(
    traced_archive: Archive, nats_server: NatsPart, jaeger: JaegerPart
) -> None:
    await register_types(traced_archive)
    uid = str(uuid.uuid4())
    run = f"traced/{uid}"
    task_headers = dict(context.inject({}, context.task_context(uid, "calibrate[0]", 1)))
    body = {
        "datasets": [
            {
                "dataset_type": "calexp",
                "data_id": {"instrument": "VIS", "exposure": 1, "detector": 1},
                "run": run,
                "replicas": [replica("sdc-de", f"{run}/1.fits")],
            }
        ]
    }
    await traced_archive.ok("POST", "/datasets/ingest", json=body, headers={**ADMIN, **task_headers})
    headers = await first_event_headers(nats_server.url, run)

    spans = await wait_spans(jaeger, ids.run_trace_id(uid), {"POST /datasets/ingest", f"send {DATASET_REGISTERED}"})
    by_id = {span["spanID"]: span for span in spans}
    request = next(s for s in spans if s["operationName"] == "POST /datasets/ingest")
    send = next(s for s in spans if s["operationName"] == f"send {DATASET_REGISTERED}")
    assert parent_of(request) == f"{ids.task_span_id(uid, 'calibrate[0]', 1):016x}"
    assert parent_of(send) == request["spanID"]  # written in the request's transaction, published later
    sql = [s for s in spans if s["process"]["serviceName"] == "sgs-archive" and parent_of(s) == request["spanID"]]
    assert any(s["operationName"] in ("INSERT", "SELECT", "WITH") for s in sql), [s["operationName"] for s in sql]
    parsed = ids.parse_traceparent(headers.get("traceparent"))
    assert parsed is not None and parsed[0] == ids.run_trace_id(uid)
    assert f"{parsed[1]:016x}" == send["spanID"] and send["spanID"] in by_id


async def test_probes_and_scrapes_make_no_spans(traced_archive: Archive, jaeger: JaegerPart) -> None:
    uid = str(uuid.uuid4())
    probe_headers = dict(context.inject({}, context.run_context(uid)))
    for path in ("/healthz", "/readyz"):
        assert (await traced_archive.client.get(path, headers=probe_headers)).status_code == 200
    assert (await traced_archive.client.get("/metrics", headers={**ADMIN, **probe_headers})).status_code == 200
    await asyncio.sleep(2)
    assert await asyncio.to_thread(jaeger.trace, ids.run_trace_id(uid)) == []
