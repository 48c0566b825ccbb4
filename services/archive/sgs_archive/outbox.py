"""The transactional outbox: events are rows written with the change they announce, relayed to JetStream.

A rolled-back write leaves no row, so nothing is published for it. The relay publishes each pending row with
``Nats-Msg-Id`` = the row's msg_id and only then stamps it; if the process dies in between, the row is
published again after restart and JetStream's duplicate window drops the copy, so consumers see it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Sequence

import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge

from sgs.events import MSG_ID_HEADER, STREAM, STREAM_SUBJECTS, Event
from sgs.telemetry import Tracing
from sgs.telemetry.context import current_traceparent, traceparent_context
from sgs.telemetry.messaging import publishing
from sgs_archive.db import Conn, Pool

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 17


OutboxRow = tuple[uuid.UUID, str, str, str | None]
"""(msg_id, subject, JSON payload, traceparent of the request that wrote it) of one event."""


CLOSE_GRACE_S = 3.0


def outbox_row(subject: str, event: Event) -> OutboxRow:
    return (event.event_id, subject, event.model_dump_json(), current_traceparent())


async def enqueue(conn: Conn, rows: Sequence[OutboxRow]) -> None:
    """Write events in the caller's transaction; they are published only if it commits."""
    if not rows:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO outbox (msg_id, subject, payload, traceparent) VALUES (%s, %s, %s::json, %s)", list(rows)
        )


class OutboxRelay:
    """Publishes pending outbox rows in id order; woken after each commit, polls as a fallback."""

    def __init__(
        self,
        pool: Pool,
        nats_url: str,
        *,
        batch: int,
        poll_interval_s: float,
        paused: bool,
        crash_after_publish: bool,
        published: Counter,
        duplicates: Counter,
        pending: Gauge,
        oldest: Gauge,
        tracing: Tracing,
    ) -> None:
        self.pool = pool
        self.nats_url = nats_url
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self.paused = paused
        self.crash_after_publish = crash_after_publish
        self.published = published
        self.duplicates = duplicates
        self.pending = pending
        self.oldest = oldest
        self.tracing = tracing
        self.connected = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: connect, make sure the stream exists, then drain the outbox as rows appear."""
        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            self.connected = True
            while True:
                if self.paused:
                    await self._sleep()
                    continue
                try:
                    published = await self.publish_pending(js)
                except Exception:  # the loop must survive a broken DB connection or NATS timeout
                    log.exception("outbox relay: publishing failed; retrying")
                    published = 0
                    await asyncio.sleep(self.poll_interval_s)
                if published < self.batch:
                    await self._sleep()
        finally:
            self.connected = False
            # Bounded: a close stuck on a half-open connection must not keep the relay (and shutdown) alive.
            closing = asyncio.ensure_future(nc.close())
            await asyncio.wait({closing}, timeout=CLOSE_GRACE_S)
            if closing.done() and not closing.cancelled():
                with contextlib.suppress(Exception):
                    closing.result()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
        self._wake.clear()

    async def publish_pending(self, js: JetStreamContext) -> int:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                """SELECT id, msg_id, subject, payload::text AS payload, traceparent FROM outbox
                   WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
                (self.batch,),
            )
            rows = await cursor.fetchall()
            for row in rows:
                headers = {MSG_ID_HEADER: str(row["msg_id"])}
                with publishing(self.tracing, row["subject"], headers, traceparent_context(row["traceparent"])):
                    ack = await js.publish(str(row["subject"]), str(row["payload"]).encode(), headers=headers)
                if ack.duplicate:
                    self.duplicates.inc()
                    log.info("outbox relay: %s was already published (dropped as duplicate)", row["msg_id"])
                if self.crash_after_publish:
                    log.error("outbox relay: crash hook: dying between publish and stamp")
                    os._exit(CRASH_EXIT_CODE)
            if rows:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([row["id"] for row in rows],)
                )
                self.published.inc(len(rows))
            backlog = await (
                await conn.execute(
                    """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                       FROM outbox WHERE published_at IS NULL"""
                )
            ).fetchone()
            self.pending.set(int(backlog["n"]) if backlog else 0)
            self.oldest.set(float(backlog["age"]) if backlog else 0.0)
        return len(rows)


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the sgs stream unless it exists (publishers own it; consumers only bind to it)."""
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(name=STREAM, subjects=list(STREAM_SUBJECTS))
