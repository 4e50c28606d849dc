"""The client's subscription buffer: duplicates dropped, overflow reported, resume point exact."""

import asyncio
from typing import Any

import pytest

from bridge.client import BridgeError, Subscription, TelemetryUpdate
from bridge.client.errors import ConnectionLostError


def _update(i: int) -> TelemetryUpdate:
    return TelemetryUpdate("d1", "t", i, None, f"ts{i}", f"2026-01-01T00:00:0{i}Z", raw={})


def _sub(max_queue: int) -> Subscription:
    client: Any = None  # not used until close()
    return Subscription(client, {"type": "subscribe", "channel": "telemetry"}, max_queue)


async def test_overflow_ends_the_iteration_after_what_was_queued() -> None:
    sub = _sub(max_queue=2)
    for i in range(4):
        sub._deliver(_update(i))
    assert [(await anext(sub)).value, (await anext(sub)).value] == [0, 1]  # type: ignore[union-attr]
    with pytest.raises(BridgeError) as full:
        await anext(sub)
    assert full.value.code == 507
    # the resume point is the last message really queued: resuming from it loses nothing
    assert sub.resume_point == _update(1).received_at


async def test_a_message_sent_again_after_a_resume_is_dropped() -> None:
    sub = _sub(max_queue=10)
    for i in (0, 1, 1, 0, 2):
        sub._deliver(_update(i))
    assert [(await anext(sub)).value for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert sub._queue.empty()


async def test_after_its_error_the_iteration_stays_ended() -> None:
    sub = _sub(max_queue=10)
    sub._deliver(_update(0))
    sub._fail(ConnectionLostError("connection closed"))
    sub._deliver(_update(1))  # after the end: not delivered
    assert (await anext(sub)).value == 0  # type: ignore[union-attr]
    with pytest.raises(ConnectionLostError):
        await anext(sub)
    # a caller that catches the error and iterates again used to wait for ever
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(sub), 1)
    assert [update async for update in sub] == []


async def test_every_reader_waiting_sees_the_end() -> None:
    sub = _sub(max_queue=10)

    async def read() -> list[Any]:
        return [update async for update in sub]

    readers = [asyncio.create_task(read()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait on the empty queue
    sub._fail(StopAsyncIteration())
    assert await asyncio.wait_for(asyncio.gather(*readers), 1) == [[], [], []]
