"""A stream publisher cut off from the broker drops what it cannot send (it is stored: the
stream is published after commit) and announces it when it is back; a front's hub hears that
and runs its replay callbacks, as it does after its own reconnection."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from bridge.hub import Hub
from ingest.mqtt import MqttEndpoint
from ingest.stream import StreamPublisher
from ingest.topics import Topics
from tests.helpers import BrokerInfo, MqttPeer, wait_until


def _listening_publisher(
    broker: BrokerInfo, **options: int
) -> tuple[Topics, MqttPeer, StreamPublisher]:
    """A stream publisher with a resync topic, and a peer already subscribed to that topic."""
    topics = Topics(f"rs{uuid.uuid4().hex[:6]}")
    peer = MqttPeer(broker.url)
    peer.subscribe(topics.stream_resync(), qos=0)
    stream = StreamPublisher(
        MqttEndpoint.from_url(broker.url),
        f"pub-{uuid.uuid4().hex[:6]}",
        resync_topic=topics.stream_resync(),
        **options,
    )
    return topics, peer, stream


async def test_publisher_announces_what_it_dropped_after_reconnecting(
    broker: BrokerInfo,
) -> None:
    topics, peer, stream = _listening_publisher(broker)
    await stream.start()
    try:
        await asyncio.wait_for(stream.connected.wait(), 10)
        assert stream._proto is not None and stream._proto.transport is not None
        stream._proto.transport.close()  # the connection drops; it reconnects after a backoff

        async def cut_off() -> bool:
            return not stream.connected.is_set()

        await wait_until(cut_off, interval=0.001)
        stream.publish_many([(topics.telemetry("d1", "t"), b"{}")] * 3)
        assert stream.dropped == 3

        async def announced() -> bool:
            return bool(peer.messages(topics.stream_resync()))

        await wait_until(announced)
        message = peer.messages(topics.stream_resync())[0]
        assert orjson.loads(message.payload) == {"dropped": 3}
    finally:
        peer.close()
        await stream.stop()


async def test_drops_while_connected_are_announced_with_the_next_publish(
    broker: BrokerInfo,
) -> None:
    # max_buffer=-1: every write "backed up", so dropped while connected
    topics, peer, stream = _listening_publisher(broker, max_buffer=-1)
    await stream.start()
    try:
        await asyncio.wait_for(stream.connected.wait(), 10)
        stream.publish_many([(topics.telemetry("d1", "t"), b"{}")] * 2)
        assert stream.dropped == 2 and not peer.messages(topics.stream_resync())
        stream.max_buffer = 1 << 20  # the broker caught up
        stream.publish_many([(topics.telemetry("d1", "t"), b"{}")])

        async def announced() -> bool:
            return bool(peer.messages(topics.stream_resync()))

        await wait_until(announced)
        assert orjson.loads(peer.messages(topics.stream_resync())[0].payload) == {"dropped": 2}
    finally:
        peer.close()
        await stream.stop()


async def test_hub_runs_replay_callbacks_on_a_resync_announcement(broker: BrokerInfo) -> None:
    topics = Topics(f"rs{uuid.uuid4().hex[:6]}")
    hub = Hub(MqttEndpoint.from_url(broker.url), topics, f"front-{uuid.uuid4().hex[:6]}")
    calls: list[int] = []
    hub.on_resubscribed(lambda: calls.append(1))
    task = asyncio.create_task(hub.run())
    peer = MqttPeer(broker.url)
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        peer.publish(topics.stream_resync(), b'{"dropped": 5}', qos=1)

        async def called() -> bool:
            return len(calls) == 1

        await wait_until(called)
    finally:
        peer.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
