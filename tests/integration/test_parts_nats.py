import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from sgs.testing.nats import NatsPart

pytestmark = pytest.mark.integration


async def test_jetstream_stream_with_durable_consumer(nats_server: NatsPart) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="SMOKE", subjects=["smoke.>"]))
        first = await js.publish("smoke.a", b"one", headers={"Nats-Msg-Id": "m-1"})
        again = await js.publish("smoke.a", b"one", headers={"Nats-Msg-Id": "m-1"})
        await js.publish("smoke.b", b"two", headers={"Nats-Msg-Id": "m-2"})
        assert again.duplicate and not first.duplicate

        config = ConsumerConfig(durable_name="smoke-worker", ack_policy=AckPolicy.EXPLICIT)
        await js.add_consumer("SMOKE", config)
        sub = await js.pull_subscribe_bind("smoke-worker", stream="SMOKE")
        messages = await sub.fetch(batch=10, timeout=5)
        for message in messages:
            await message.ack_sync()
        info = await js.consumer_info("SMOKE", "smoke-worker")
    finally:
        await nc.drain()
    assert [m.data for m in messages] == [b"one", b"two"]
    assert info.num_ack_pending == 0 and info.delivered.stream_seq == 2
