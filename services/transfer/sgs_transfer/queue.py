"""The transfer work queue on JetStream: one subject and one durable pull consumer per destination Site.

A message only says "look at transfer row <id>, generation <g>"; the row in PostgreSQL is the truth. One
consumer per destination is what isolates destinations: a dead Site's consumer stops being fetched (its
messages wait in the stream) while every other destination keeps flowing — no head-of-line blocking, unlike a
single queue where one sink's backlog holds up the rest (rucio#7179). The stream has work-queue retention, so
acknowledged messages are gone; ``Nats-Msg-Id`` = ``<id>.<g>`` lets JetStream drop a re-publish of the same
generation (a crash between publish and the row's stamp).

Stream, subjects and consumer names carry a namespace so that several services (or tests) can share one NATS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from sgs.events import MSG_ID_HEADER
from sgs.telemetry.context import TRACEPARENT_HEADER

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class QueuedTransfer:
    id: int
    generation: int
    destination: str
    # The trace of the event that queued it (sent as a header): the copy and registration join that Run's trace.
    traceparent: str | None = field(default=None, compare=False)

    @property
    def msg_id(self) -> str:
        return f"{self.id}.{self.generation}"

    def payload(self) -> bytes:
        return json.dumps({"id": self.id, "generation": self.generation}).encode()

    def headers(self) -> dict[str, str]:
        headers = {MSG_ID_HEADER: self.msg_id}
        if self.traceparent:
            headers[TRACEPARENT_HEADER] = self.traceparent
        return headers

    @classmethod
    def parse(cls, data: bytes, destination: str) -> QueuedTransfer:
        body = json.loads(data)
        return cls(int(body["id"]), int(body["generation"]), destination)


@dataclass(frozen=True)
class QueueNames:
    namespace: str

    @property
    def stream(self) -> str:
        return f"SGS_TRANSFERS_{self.namespace.upper().replace('-', '_')}"

    @property
    def prefix(self) -> str:
        return f"sgs_transfer.{self.namespace}.queue"

    def subject(self, destination: str) -> str:
        return f"{self.prefix}.{destination}"

    def consumer(self, destination: str) -> str:
        return f"{self.namespace}-to-{destination}"


class TransferQueue:
    def __init__(self, js: JetStreamContext, names: QueueNames, ack_wait_s: float, max_ack_pending: int) -> None:
        self.js = js
        self.names = names
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self._consumers: set[str] = set()
        self._lock = asyncio.Lock()

    async def ensure_stream(self) -> None:
        try:
            await self.js.stream_info(self.names.stream)
        except NotFoundError:
            await self.js.add_stream(
                name=self.names.stream,
                subjects=[f"{self.names.prefix}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=DUPLICATE_WINDOW_S,
            )

    async def ensure_consumer(self, destination: str) -> str:
        """The destination's durable consumer (created once; an existing one is kept as it is)."""
        name = self.names.consumer(destination)
        if name in self._consumers:
            return name
        async with self._lock:
            try:
                await self.js.consumer_info(self.names.stream, name)
            except NotFoundError:
                await self.js.add_consumer(
                    self.names.stream,
                    api.ConsumerConfig(
                        durable_name=name,
                        name=name,
                        filter_subject=self.names.subject(destination),
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=self.ack_wait_s,
                        max_deliver=-1,  # the row decides when a transfer is STUCK, never the queue
                        max_ack_pending=self.max_ack_pending,
                    ),
                )
            self._consumers.add(name)
        return name

    async def publish(self, items: Sequence[QueuedTransfer]) -> None:
        """Publish every item and wait for JetStream to acknowledge them all (raises if one failed)."""
        for destination in {item.destination for item in items}:
            await self.ensure_consumer(destination)
        futures = [
            await self.js.publish_async(self.names.subject(item.destination), item.payload(), headers=item.headers())
            for item in items
        ]
        if futures:
            await asyncio.gather(*futures)

    async def pending(self, destination: str) -> int:
        info = await self.js.consumer_info(self.names.stream, self.names.consumer(destination))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
