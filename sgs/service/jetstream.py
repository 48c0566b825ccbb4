"""Consuming the archive's event stream: one durable pull consumer per service, created at the stream's end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from sgs.events import STREAM

log = logging.getLogger(__name__)

STREAM_WAIT_S = 1.0


async def bind_new_arrivals(
    js: JetStreamContext, durable: str, subjects: Sequence[str], ack_wait_s: float, *, who: str
) -> tuple[JetStreamContext.PullSubscription, bool]:
    """Bind the durable consumer ``durable`` of the archive's stream, creating it when missing; returns the
    subscription and whether it was created now.

    A new consumer starts at the stream's end (acks explicit, redelivered without limit): what happened before
    it existed is the caller's to catch up on from the archive itself, not by replaying the stream's history.
    Waits for the stream, which the archive creates, so a service may start before the archive.
    """
    config = api.ConsumerConfig(
        durable_name=durable,
        filter_subjects=list(subjects),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        deliver_policy=api.DeliverPolicy.NEW,
        max_deliver=-1,
    )
    while True:
        try:
            await js.stream_info(STREAM)
            break
        except NotFoundError:
            log.info("%s: waiting for the %s stream (created by the archive)", who, STREAM)
            await asyncio.sleep(STREAM_WAIT_S)
    created = False
    try:
        await js.consumer_info(STREAM, durable)
    except NotFoundError:
        await js.add_consumer(STREAM, config)
        created = True
    return await js.pull_subscribe_bind(durable, stream=STREAM), created
