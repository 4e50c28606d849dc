"""A broker-link gap announced while a ``since`` replay is reading storage: that replay may have
read before what the gap lost was committed, so one more replay must run after it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.auth import Principal
from bridge.hub import Hub
from bridge.limits import FrontLimits
from bridge.session import REGISTRY, Session
from ingest.mqtt_endpoint import MqttEndpoint
from ingest.topics import Topics

READER = Principal("u1", frozenset({"telemetry:read"}))


class BlockingHistory:
    """Stored messages: none, but the first read waits until released."""

    def __init__(self) -> None:
        self.reads: list[datetime] = []
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def replay(
        self, _selector: Any, _principal: Any, since: datetime, _limit: int
    ) -> tuple[list[Any], bool]:
        self.reads.append(since)
        if len(self.reads) == 1:
            self.reading.set()
            await self.release.wait()
        return [], False


async def test_a_gap_during_a_since_replay_replays_again_after_it() -> None:
    history = BlockingHistory()
    session = Session(
        client_id="c1",
        hub=Hub(MqttEndpoint("127.0.0.1", 1), Topics(""), "test"),  # never connects
        verifier=None,
        auth_required=False,
        limits=FrontLimits(),
        principal=READER,
        wake=lambda: None,
        history=history,  # type: ignore[arg-type]
    )
    since = datetime.now(UTC) - timedelta(minutes=5)
    msg = {
        "type": "subscribe",
        "channel": "telemetry",
        "device_id": "d1",
        "since": since.isoformat(),
    }
    sent: list[dict[str, Any]] = []
    subscribing = asyncio.create_task(
        REGISTRY.dispatch(session, "subscribe", msg, "s1", sent.append)
    )
    await asyncio.wait_for(history.reading.wait(), 5)
    session._broker_link_restored()  # the stream publisher announced a gap meanwhile
    history.release.set()
    await asyncio.wait_for(subscribing, 5)
    for _ in range(50):  # the second replay runs in the connection's gap-replay task
        if len(history.reads) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(history.reads) == 2, "the gap announced during the replay was never replayed"
    assert history.reads[1] >= since
